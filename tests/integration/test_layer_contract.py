"""Every layer trades its own contract (DOMAIN.md §9): an exit after the front month changed
sells what its layers bought — never the new front month, which would leave a calendar spread
the book calls flat. Real kiteconnect client against the fake Kite server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from core.calendar import TradingCalendar
from core.roll_schedule import roll_day
from live.server import dumps, position_view
from tests.integration.test_kite_broker import fake, gold_entry, positions_agree, start_trading
from tests.support.trading import INSTRUMENTS, Clock

__all__ = ["fake"]  # the fixture, shared with the adapter's tests

D = Decimal


def fake_orders(fake):
    return fake.state.snapshot()["orders"]


def gold_roll_day(expiry):
    """The day the front month stops taking entries (the adapter's weekday calendar)."""
    return roll_day(INSTRUMENTS["GOLD_MINI"], TradingCalendar({}), expiry)


def day_before(day, days: int) -> datetime:
    return datetime.combine(day - timedelta(days=days), time(5, 0), UTC)  # 10:30 IST


async def trading_on_gold_front_month(db, dsn, fake, tmp_path):
    """A daemon whose clock is a few days before the nearest Gold Mini expiry."""
    clock = Clock(datetime.now(UTC))
    trading = await start_trading(db, dsn, fake, tmp_path, clock=clock)
    first, second = trading.broker._contracts["GOLD_MINI"][:2]
    clock.now = day_before(gold_roll_day(first.expiry), 3)
    assert trading.broker.contract("GOLD_MINI", clock.now).tradingsymbol == first.tradingsymbol
    return trading, clock, first, second


async def test_exit_after_the_front_month_rolled_sells_the_layers_own_contract(
        db, dsn, fake, tmp_path):
    trading, clock, first, second = await trading_on_gold_front_month(db, dsn, fake, tmp_path)
    try:
        entry = await trading.send("BASE_ENTRY", **gold_entry())
        assert entry.outcome == "executed", entry
        [layer] = await trading.db.live_layers("GOLD_MINI")
        assert (layer.tradingsymbol, layer.exchange, layer.expiry) == (
            first.tradingsymbol, "MCX", first.expiry)
        shown = json.loads(dumps(position_view(layer)))  # as /positions answers
        assert (shown["tradingsymbol"], shown["exchange"], shown["expiry"]) == (
            first.tradingsymbol, "MCX", first.expiry.isoformat())

        clock.now = day_before(gold_roll_day(first.expiry), 0)  # entries now buy the next
        assert trading.broker.contract("GOLD_MINI", clock.now).tradingsymbol == (
            second.tradingsymbol)
        exit_ = await trading.send("EXIT", instrument="GOLD_MINI", position="Long_1",
                                   price="72000", stop="0", reason="trend reversal")
        assert exit_.outcome == "executed", exit_
        buy, sell = fake_orders(fake)
        assert (buy["transaction_type"], sell["transaction_type"]) == ("BUY", "SELL")
        assert sell["tradingsymbol"] == buy["tradingsymbol"] == first.tradingsymbol
        assert sell["quantity"] == buy["quantity"]
        assert await trading.broker.positions() == {}  # no calendar spread left behind
        assert await positions_agree(trading)
    finally:
        await trading.close()


async def test_exit_all_of_layers_in_two_contracts_sells_each_in_its_own(
        db, dsn, fake, tmp_path, postgresql):
    trading, clock, first, second = await trading_on_gold_front_month(db, dsn, fake, tmp_path)
    try:
        base = await trading.send("BASE_ENTRY", **gold_entry())
        assert base.outcome == "executed", base
        clock.now = day_before(gold_roll_day(first.expiry), 0)
        fake.state.set_price(second.tradingsymbol, "73000", "MCX")
        pyramid = await trading.send("PYRAMID", position="Long_2",
                                     **gold_entry(price="73000", stop="72300"))
        assert pyramid.outcome == "executed", pyramid
        held = {x.layer: x.tradingsymbol for x in await trading.db.live_layers("GOLD_MINI")}
        assert held == {"Long_1": first.tradingsymbol, "Long_2": second.tradingsymbol}

        outcome = await trading.send("EXIT", instrument="GOLD_MINI", position="ALL",
                                     price="73000", stop="0", reason="trend reversal")
        assert outcome.outcome == "executed", outcome
        assert len(outcome.result["positions_closed"]) == 2
        sells = [o["tradingsymbol"] for o in fake_orders(fake)
                 if o["transaction_type"] == "SELL"]
        assert sorted(sells) == sorted(held.values())  # one order per contract, its own
        assert await trading.broker.positions() == {}
        assert await trading.db.live_layers("GOLD_MINI") == []
        [(decided,)] = postgresql.execute(
            "SELECT outcome FROM signal_log WHERE signal_type = 'EXIT'").fetchall()
        assert decided == "executed"
        decisions = postgresql.execute(
            """SELECT count(*) FROM execution_log WHERE event = 'order_filled'
               AND details->>'decided' = 'true'""").fetchone()[0]
        assert decisions == 3  # base, pyramid, and the exit once — not once per contract
    finally:
        await trading.close()
