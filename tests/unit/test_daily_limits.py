"""The daily loss limit's rules (§10): the trading day, the day's P&L and the breach."""

from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest

from core.accounting import layer_pnl, unrealised_pnl
from core.daily_limits import (
    DayStart,
    day_began,
    day_loss,
    day_pnl,
    loss_limit,
    trading_day,
)
from core.signals import INDIA

DAY = date(2026, 11, 20)
START = DayStart(DAY, sizing_equity=D("5000000.00"), unrealised=D("0.00"))
GOLD_PV = D("10")


def test_the_trading_day_is_the_ist_date() -> None:
    assert trading_day(datetime(2026, 11, 19, 18, 29, 59, tzinfo=UTC)) == date(2026, 11, 19)
    assert trading_day(datetime(2026, 11, 19, 18, 30, tzinfo=UTC)) == DAY  # 00:00 IST
    assert day_began(DAY) == datetime(2026, 11, 20, 0, 0, tzinfo=INDIA)
    assert day_began(DAY) == datetime(2026, 11, 19, 18, 30, tzinfo=UTC)


def test_a_naive_moment_has_no_trading_day() -> None:
    with pytest.raises(ValueError):
        trading_day(datetime(2026, 11, 20, 10, 0))  # noqa: DTZ001 - naive on purpose


def test_day_pnl_is_realised_today_plus_the_change_in_unrealised() -> None:
    assert day_pnl(D("15000.00"), D("-42000.00"), D("12000.00")) == D("-39000.00")


def test_the_limit_is_a_percent_of_equity_at_the_days_start() -> None:
    assert loss_limit(D("2"), D("5000000.00")) == D("100000")
    assert loss_limit(D("0.5"), D("5137000.00")) == D("25685")
    assert loss_limit(None, D("5000000.00")) is None
    assert loss_limit(D("2"), D("0")) is None  # nothing to measure a loss against


@pytest.mark.parametrize(("pnl", "breached"), [
    (D("-99999.99"), False), (D("-100000.00"), True), (D("-100000.01"), True),
    (D("0"), False), (D("250000"), False)])
def test_exactly_at_the_limit_breaches(pnl: D, breached: bool) -> None:
    loss = day_loss(START, realised_today=pnl, unrealised_now=D(0), limit_percent=D("2"))
    assert (loss.pnl, loss.limit, loss.breached) == (pnl, D("100000"), breached)


def test_with_the_limit_off_nothing_breaches() -> None:
    loss = day_loss(START, D("-4999999.00"), D(0), None)
    assert (loss.pnl, loss.limit, loss.breached) == (D("-4999999.00"), None, False)


def test_a_layer_opened_today_counts_all_its_unrealised_pnl() -> None:
    # Gold 7 lots bought at 78,500 today, now 78,100: no baseline, −28,000 is today's.
    now = unrealised_pnl([(D("78500"), D("78100"), 7, GOLD_PV)])
    loss = day_loss(START, D(0), now, D("0.5"))
    assert (loss.pnl, loss.limit, loss.breached) == (D("-28000.00"), D("25000"), True)


def test_a_layer_closed_today_counts_only_what_it_lost_since_the_days_start() -> None:
    # Open at the day's start 3 lots from 78,500 marked 79,500 (+30,000); closed today at
    # 79,000: it books +15,000, so the day lost 15,000 on it.
    baseline = unrealised_pnl([(D("78500"), D("79500"), 3, GOLD_PV)])
    start = DayStart(DAY, D("5000000.00"), baseline)
    booked = layer_pnl(D("78500"), D("79000"), 3, GOLD_PV)
    loss = day_loss(start, booked, D(0), D("0.3"))
    assert (baseline, booked) == (D("30000.00"), D("15000.00"))
    assert (loss.pnl, loss.limit, loss.breached) == (D("-15000.00"), D("15000"), True)


def test_a_layer_held_all_day_counts_its_move_since_the_days_start() -> None:
    baseline = unrealised_pnl([(D("52000"), D("52300"), 2, D("30"))])  # +18,000
    now = unrealised_pnl([(D("52000"), D("51900"), 2, D("30"))])  # −6,000
    loss = day_loss(DayStart(DAY, D("5000000.00"), baseline), D(0), now, D("1"))
    assert (loss.pnl, loss.limit, loss.breached) == (D("-24000.00"), D("50000"), False)
