from datetime import UTC, date, datetime, time

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_holidays, load_instruments
from core.calendar import TradingCalendar
from core.models import ContractRef
from core.roll_schedule import (
    cutoff_date,
    entry_contract,
    next_contract,
    roll_day,
    roll_due,
    roll_moment,
)
from core.signals import INDIA

SPECS = load_instruments(DEFAULT_CONFIG_DIR / "instruments.json")
GOLD_MINI = SPECS["GOLD_MINI"]  # cut-off 3, lead 2
COPPER = SPECS["COPPER"]  # cut-off 8, lead 2
BANK_NIFTY = SPECS["BANK_NIFTY"]  # cut-off 0, lead 2
SHIPPED = load_holidays(DEFAULT_CONFIG_DIR / "holidays.json")
WEEKDAYS = TradingCalendar({})

GOLDM_DEC = ContractRef("GOLDM26DECFUT", "MCX", date(2026, 12, 4))  # the 5th is a Saturday
GOLDM_JAN = ContractRef("GOLDM27JANFUT", "MCX", date(2027, 1, 5))
GOLDM_FEB = ContractRef("GOLDM27FEBFUT", "MCX", date(2027, 2, 5))
GOLDM = [GOLDM_FEB, GOLDM_DEC, GOLDM_JAN]  # unordered, as a dump may be


def ist(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=INDIA)


# --- cut-off and roll day ------------------------------------------------------------


def test_goldm_february_2027() -> None:
    # Fri 5 Feb 2027, cut-off 3 calendar days: Tue 2 Feb; two trading days back: Fri 29 Jan.
    assert cutoff_date(GOLD_MINI, date(2027, 2, 5)) == date(2027, 2, 2)
    assert roll_day(GOLD_MINI, WEEKDAYS, date(2027, 2, 5)) == date(2027, 1, 29)


def test_holiday_in_the_lead_window_moves_the_roll_one_day_back() -> None:
    calendar = TradingCalendar({"MCX": [date(2027, 2, 1)]})
    assert roll_day(GOLD_MINI, calendar, date(2027, 2, 5)) == date(2027, 1, 28)
    # Another exchange's holiday changes nothing.
    other = TradingCalendar({"NFO": [date(2027, 2, 1)]})
    assert roll_day(GOLD_MINI, other, date(2027, 2, 5)) == date(2027, 1, 29)


def test_cutoff_on_a_sunday_counts_the_lead_from_friday() -> None:
    # GOLDM Wed 5 Aug 2026: cut-off Sun 2 Aug -> Fri 31 Jul; two back: Wed 29 Jul.
    assert cutoff_date(GOLD_MINI, date(2026, 8, 5)) == date(2026, 8, 2)
    assert roll_day(GOLD_MINI, SHIPPED, date(2026, 8, 5)) == date(2026, 7, 29)


def test_cutoff_on_a_holiday_counts_the_lead_from_the_trading_day_before() -> None:
    # COPPER Mon 30 Nov 2026 (hypothetical): cut-off 8 days earlier, Sun 22 Nov -> Fri 20 Nov;
    # two back: Wed 18 Nov. With Fri 20 Nov a holiday: Thu 19 -> Tue 17 Nov.
    assert roll_day(COPPER, WEEKDAYS, date(2026, 11, 30)) == date(2026, 11, 18)
    holiday = TradingCalendar({"MCX": [date(2026, 11, 20)]})
    assert roll_day(COPPER, holiday, date(2026, 11, 30)) == date(2026, 11, 17)


def test_bank_nifty_rolls_two_trading_days_before_expiry() -> None:
    # Tue 29 Dec 2026, cut-off 0: Mon 28, then Christmas Fri 25 is skipped: Thu 24 Dec.
    assert cutoff_date(BANK_NIFTY, date(2026, 12, 29)) == date(2026, 12, 29)
    assert roll_day(BANK_NIFTY, SHIPPED, date(2026, 12, 29)) == date(2026, 12, 24)


def test_zero_lead_on_a_non_trading_cutoff_rolls_the_trading_day_before() -> None:
    spec = GOLD_MINI.model_copy(update={"roll_lead_trading_days": 0})
    assert roll_day(spec, WEEKDAYS, date(2026, 8, 5)) == date(2026, 7, 31)


def test_roll_moment_is_roll_at_on_the_roll_day_in_india() -> None:
    moment = roll_moment(GOLD_MINI, WEEKDAYS, date(2027, 2, 5))
    assert moment == ist(2027, 1, 29, 10, 0)
    assert moment.tzinfo is INDIA
    later = GOLD_MINI.model_copy(update={"roll_at": time(18, 30)})
    assert roll_moment(later, WEEKDAYS, date(2027, 2, 5)) == ist(2027, 1, 29, 18, 30)


# --- roll due ------------------------------------------------------------------------


def test_roll_due_from_roll_at_on_the_roll_day() -> None:
    # GOLDM Dec 2026 (Fri 4 Dec): cut-off Tue 1 Dec; roll day Fri 27 Nov, 10:00 IST.
    assert not roll_due(GOLD_MINI, SHIPPED, GOLDM_DEC, ist(2026, 11, 27, 9, 59, 59))
    assert roll_due(GOLD_MINI, SHIPPED, GOLDM_DEC, ist(2026, 11, 27, 10, 0))
    assert roll_due(GOLD_MINI, SHIPPED, GOLDM_DEC, datetime(2026, 11, 27, 4, 30, tzinfo=UTC))
    assert roll_due(GOLD_MINI, SHIPPED, GOLDM_DEC, ist(2026, 12, 2, 12, 0))  # daemon was down
    assert not roll_due(GOLD_MINI, SHIPPED, GOLDM_JAN, ist(2026, 12, 2, 12, 0))


def test_roll_never_due_without_expiry() -> None:
    paper = ContractRef("GOLD_MINI", "MCX", None)
    assert not roll_due(GOLD_MINI, SHIPPED, paper, ist(2030, 1, 1, 12, 0))


def test_roll_due_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        roll_due(GOLD_MINI, SHIPPED, GOLDM_DEC, ist(2026, 11, 27, 10).replace(tzinfo=None))


# --- entry contract ------------------------------------------------------------------


def test_entry_buys_the_front_month_until_its_roll_day() -> None:
    assert entry_contract(GOLDM, GOLD_MINI, SHIPPED, ist(2026, 11, 26, 23, 29)) == GOLDM_DEC


def test_entry_switches_to_the_next_month_exactly_on_the_roll_day() -> None:
    # From midnight IST on the roll day, before roll_at: no new entry in the expiring contract.
    assert entry_contract(GOLDM, GOLD_MINI, SHIPPED, ist(2026, 11, 27, 0, 0)) == GOLDM_JAN
    # 18:30 UTC on 26 Nov is already 27 Nov in India.
    utc = datetime(2026, 11, 26, 18, 30, tzinfo=UTC)
    assert entry_contract(GOLDM, GOLD_MINI, SHIPPED, utc) == GOLDM_JAN
    assert entry_contract(GOLDM, GOLD_MINI, SHIPPED, ist(2026, 11, 26, 23, 59, 59)) == GOLDM_DEC


def test_entry_ignores_contracts_of_another_exchange() -> None:
    stray = ContractRef("GOLDM26DECFUT", "NFO", date(2026, 12, 4))
    contracts = [stray, GOLDM_JAN]
    assert entry_contract(contracts, GOLD_MINI, SHIPPED, ist(2026, 11, 20, 12)) == GOLDM_JAN


def test_entry_takes_a_contract_without_expiry() -> None:
    paper = ContractRef("GOLD_MINI", "MCX", None)
    assert entry_contract([paper], GOLD_MINI, SHIPPED, ist(2026, 12, 2, 12)) == paper
    # A dated contract still open for entries is nearer than one that never expires.
    assert entry_contract([paper, GOLDM_JAN], GOLD_MINI, SHIPPED, ist(2026, 12, 2)) == GOLDM_JAN


def test_entry_without_a_contract_left_is_a_lookup_error() -> None:
    # GOLDM Feb 2027 rolls on Fri 29 Jan 2027.
    with pytest.raises(LookupError) as info:
        entry_contract(GOLDM, GOLD_MINI, SHIPPED, ist(2027, 1, 29, 12))
    message = str(info.value)
    assert "no GOLD_MINI contract on MCX has its roll day after 2027-01-29" in message
    assert "GOLDM27FEBFUT (expiry 2027-02-05, roll day 2027-01-29)" in message
    with pytest.raises(LookupError, match="listed: none"):
        entry_contract([], GOLD_MINI, SHIPPED, ist(2027, 1, 29, 12))


def test_entry_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        entry_contract(GOLDM, GOLD_MINI, SHIPPED, ist(2026, 12, 2, 12).replace(tzinfo=None))


# --- next contract -------------------------------------------------------------------


def test_next_contract_is_the_next_expiry_on_the_same_exchange() -> None:
    stray = ContractRef("GOLDM26DECFUT", "NFO", date(2026, 12, 20))
    contracts = [*GOLDM, stray]
    assert next_contract(contracts, GOLDM_DEC) == GOLDM_JAN
    assert next_contract(contracts, GOLDM_JAN) == GOLDM_FEB
    assert next_contract(contracts, GOLDM_FEB) is None


def test_next_contract_of_a_contract_without_expiry_is_none() -> None:
    assert next_contract(GOLDM, ContractRef("GOLD_MINI", "MCX", None)) is None
