"""Broker-resident stops on the paper venue and real PostgreSQL (DOMAIN.md §12): placed after
an entry, moved with the trail, cancelled before the daemon's own sale, and — when the venue
fires one — booked once, at the venue's price, with reason BROKER_STOP."""

from __future__ import annotations

import asyncio
from decimal import ROUND_FLOOR, Decimal

import psycopg
import pytest

from core.broker_stops import BROKER_STOP, StopStatus, stop_levels
from live.broker_stop_store import insert_stop
from tests.integration.test_operator_controls import ROOMY, enter
from tests.support.trading import Trading

D = Decimal


@pytest.fixture
async def trading(db, dsn):
    trading = await Trading(db, dsn, config=ROOMY).start()
    yield trading
    await trading.close()


async def keep(trading: Trading, instrument: str = "GOLD_MINI", *, check: bool = False
               ) -> None:
    """One round of the keeper; a periodic one (`check`) reads the venue first."""
    async with trading.engine.locks(instrument):
        if check:
            await trading.stops.check_locked(instrument)
        await trading.stops.sync_locked(instrument)


async def rows(dsn: str, query: str, *params: object) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


async def only_layer(trading: Trading, instrument: str = "GOLD_MINI"):
    (layer,) = await trading.db.live_layers(instrument)
    return layer


async def test_an_entry_gets_a_stop_at_the_venue_that_follows_the_trail(trading, dsn):
    await enter(trading)  # GOLD_MINI base at 78500, stop 76930, ATR 785
    await keep(trading)
    layer = await only_layer(trading)
    view = trading.stops.view(layer.id)
    # Trigger at the stop, limit 1 % below rounded down to the ₹1 tick; on paper a stop
    # rests until cancelled, as a GTT does.
    assert view["kind"] == "gtt" and view["status"] == "active"
    assert (view["trigger"], view["limit"]) == ("76930.0000", "76160.0000")
    venue = await rows(dsn, "SELECT stop_id, quantity, trigger_price, limit_price, status "
                            "FROM paper_stops")
    assert venue == [(view["id"], layer.quantity, D("76930"), D("76160"), "active")]

    moved = await trading.send("MARKET_DATA", price="79000", atr=D(785))
    assert moved.outcome in ("executed", "ignored")
    await keep(trading)
    layer = await only_layer(trading)
    assert layer.current_stop == D(77430)
    assert await rows(dsn, "SELECT trigger_price, limit_price, status FROM paper_stops") == [
        (D("77430"), D("76655"), "active")]
    # A lower trail never moves it down.
    await trading.send("MARKET_DATA", price="78600", atr=D(785))
    await keep(trading)
    assert (await rows(dsn, "SELECT trigger_price FROM paper_stops"))[0][0] == D("77430")
    assert trading.stops.unprotected() == []


async def test_the_daemons_own_exit_cancels_the_stop_first_and_sells_once(trading, dsn):
    await enter(trading)
    await keep(trading)
    held = (await only_layer(trading)).quantity
    outcome = await trading.send("EXIT", price="79000")
    assert outcome.outcome == "executed"
    assert await rows(dsn, "SELECT status FROM paper_stops") == [("cancelled",)]
    assert await rows(dsn, "SELECT status FROM broker_stops") == [("cancelled",)]
    sells = await rows(dsn, "SELECT quantity, price FROM paper_trades WHERE side = 'SELL'")
    assert sells == [(held, D("79000"))]
    (closed,) = await trading.db.list_positions("closed", 10)
    assert closed.exit_reason != BROKER_STOP


async def test_a_stop_the_venue_fires_is_booked_once_at_its_price(trading, dsn):
    await enter(trading)
    await keep(trading)
    layer = await only_layer(trading)
    # The venue sees 76900 first and fires the stop (fill 76900 ≥ limit 76160); the
    # daemon's own stop exit for the same bar finds it fired and does not sell again.
    await trading.send("MARKET_DATA", price="76900", atr=D(785))
    await trading.exits.attempt_due()
    (closed,) = await trading.db.list_positions("closed", 10)
    assert (closed.exit_reason, closed.exit_price) == (BROKER_STOP, D("76900"))
    assert closed.realized_pnl == (D(76900) - D(78500)) * layer.lots * 10
    sells = await rows(dsn, "SELECT quantity, price FROM paper_trades WHERE side = 'SELL'")
    assert sells == [(layer.quantity, D("76900"))]
    assert await rows(dsn, "SELECT status FROM broker_stops") == [("triggered",)]
    assert await trading.db.live_layers("GOLD_MINI") == []


async def test_a_stop_that_fired_while_the_daemon_was_down_is_booked_at_restart(db, dsn):
    first = await Trading(db, dsn, config=ROOMY).start()
    await enter(first)
    await keep(first)
    await first.broker.observe("GOLD_MINI", D(76500))  # the venue moved; nobody listened
    await first.close()

    again = await Trading(db, dsn, config=ROOMY).start()
    try:
        reasons = await again.recover()
        (closed,) = await again.db.list_positions("closed", 10)
        assert (closed.exit_reason, closed.exit_price) == (BROKER_STOP, D("76500"))
        assert not [r for r in reasons if r.startswith("unprotected")]
        assert len(await rows(dsn, "SELECT 1 FROM paper_trades WHERE side = 'SELL'")) == 1
        await again.reconciler.check()
        assert again.readiness.reasons() == []
    finally:
        await again.close()


async def test_a_gap_through_the_limit_still_sells_once_at_the_price(trading, dsn):
    await enter(trading)
    await keep(trading)
    held = (await only_layer(trading)).quantity
    # 76000 is below the limit 76160: the paper venue, with no book to rest a limit in,
    # fills where the price is — the sale the daemon's own stop would have made.
    await trading.send("MARKET_DATA", price="76000", atr=D(785))
    await trading.exits.attempt_due()
    (closed,) = await trading.db.list_positions("closed", 10)
    assert (closed.exit_reason, closed.exit_price) == (BROKER_STOP, D(76000))
    sells = await rows(dsn, "SELECT quantity FROM paper_trades WHERE side = 'SELL'")
    assert sells == [(held,)]


async def test_a_price_at_the_trigger_fires_neither_stop(trading, dsn):
    await enter(trading)
    await keep(trading)
    outcome = await trading.send("MARKET_DATA", price="76930", atr=D(785))
    assert outcome.outcome != "executed" or not await trading.db.list_positions("closed", 10)
    assert await rows(dsn, "SELECT status FROM paper_stops") == [("active",)]


async def test_a_cancel_a_crash_left_unanswered_is_settled_by_recovery(db, dsn):
    first = await Trading(db, dsn, config=ROOMY).start()
    await enter(first)
    await keep(first)
    record = first.stops.of_layer((await only_layer(first)).id)
    await first.stops._write(record, status=StopStatus.CANCELLING)  # then the crash
    await first.broker.cancel_stop(record.kind, record.broker_ref)
    await first.close()

    again = await Trading(db, dsn, config=ROOMY).start()
    try:
        await again.recover()
        statuses = await rows(dsn, "SELECT status FROM broker_stops ORDER BY id")
        # The cancelled one is recorded as such, and the open layer gets a new stop.
        assert statuses == [("cancelled",), ("active",)]
        assert again.stops.unprotected() == []
    finally:
        await again.close()


async def test_a_stop_cancelled_outside_the_daemon_is_placed_again(trading, dsn):
    await enter(trading)
    await keep(trading)
    layer = await only_layer(trading)
    record = trading.stops.of_layer(layer.id)
    await trading.broker.cancel_stop(record.kind, record.broker_ref)  # cancelled outside
    trading.readiness.started()
    await keep(trading, check=True)  # the check sees it gone and places another at once
    assert await rows(dsn, "SELECT status, reason FROM broker_stops ORDER BY id") == [
        ("lapsed", "gone from the venue"), ("active", None)]
    assert trading.stops.view(layer.id)["status"] == "active"
    assert trading.readiness.reasons() == []


async def test_a_rolled_layer_gets_its_stop_again_on_the_new_contract(db, dsn):
    from tests.integration.test_rollover import (
        DEC,
        JAN,
        ROLL_TIME,
        drive,
        held_in_december,
        start,
    )

    paper = await start(db, dsn)
    try:
        await held_in_december(paper)
        await keep(paper)
        assert await rows(paper.dsn, "SELECT tradingsymbol, status FROM paper_stops") == [
            (DEC, "active")]
        paper.clock.now = ROLL_TIME
        await paper.send("MARKET_DATA", position=None, price="79000", atr="700")
        await keep(paper)
        await paper.rollover.check()
        await drive(paper)  # the close leg cancels the December stop before it sells
        (layer,) = await paper.db.live_layers("GOLD_MINI")
        assert layer.tradingsymbol == JAN
        await keep(paper)  # a cancelled stop is replaced at once
        stops = await rows(paper.dsn, "SELECT tradingsymbol, status, trigger_price "
                                      "FROM paper_stops ORDER BY id")
        # At the layer's stop in January's terms (shifted by the spread), down to the tick.
        assert stops == [(DEC, "cancelled", stops[0][2]),
                         (JAN, "active", layer.current_stop.to_integral_value(ROUND_FLOOR))]
    finally:
        await paper.close()


async def test_a_placement_a_crash_cut_before_the_venue_is_placed_at_restart(db, dsn):
    first = await Trading(db, dsn, config=ROOMY).start()
    await enter(first)
    layer = await only_layer(first)
    async with db.transaction() as tx:  # the row was written; the crash came before the call
        await insert_stop(tx.conn, layer, "gtt", stop_levels(layer, D(1), D(1)))
    await first.close()

    again = await Trading(db, dsn, config=ROOMY).start()
    try:
        await again.recover()  # looked for until known lost, then placed: once
        assert await rows(dsn, "SELECT status FROM broker_stops ORDER BY id") == [
            ("lapsed",), ("active",)]
        assert await rows(dsn, "SELECT count(*) FROM paper_stops") == [(1,)]
        assert again.stops.unprotected() == []
    finally:
        await again.close()


async def test_the_keeper_stops_when_asked_as_an_alert_pokes_it(trading):
    """A stop request that lands in the same instant as a poke ends the keeper: with the
    cancellation lost, a burst of alerts at SIGTERM left the daemon running for ever."""
    await enter(trading)
    keeper = trading.keep_stops()
    await asyncio.sleep(0.2)  # the entry's stop placed; the keeper waits for work
    trading.stops.poke("GOLD_MINI")
    keeper.cancel()  # the daemon stopping, in the same loop turn
    done, _ = await asyncio.wait({keeper}, timeout=5)
    assert done == {keeper} and keeper.cancelled()
