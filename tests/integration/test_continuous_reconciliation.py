"""Continuous reconciliation against real PostgreSQL: the paper venue (its own tables) and the
real kiteconnect client against the fake Kite server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from core.intents import EntryPurpose
from core.models import Side
from tests.integration.test_kite_broker import fake, gold_entry, start_trading
from tests.support.paper_venue import pnl_rows, venue_trade
from tests.support.trading import INSTRUMENTS, Clock, Trading

__all__ = ["fake"]  # the fixture, shared with the adapter's tests

D = Decimal
GOLD = "GOLD_MINI"  # the paper venue's contract is the instrument's name
PV = INSTRUMENTS[GOLD].point_value


@pytest.fixture
async def paper(db, dsn):
    trading = await Trading(db, dsn).start()
    trading.readiness.started()  # as after recovery: `reasons()` shows only what is wrong
    yield trading
    await trading.close()


def rows(postgresql, query: str, *params) -> list[tuple]:
    return postgresql.execute(query, params).fetchall()


async def until(condition, timeout_s: float = 3.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


# -- (a) the broker's square-off is booked, never sold again --------------------------------
async def test_paper_square_off_is_booked_at_the_trade_price_and_never_sold_again(
        paper, postgresql):
    entry = await paper.send("BASE_ENTRY")
    lots = entry.result["lots"]
    [layer] = await paper.db.load_live_layers()
    trade_id = venue_trade(postgresql, GOLD, "SELL", lots, "78100")

    assert await paper.reconciler.check() == []

    [closed] = rows(postgresql, "SELECT status, exit_price, exit_reason, realized_pnl "
                                "FROM portfolio_positions WHERE id = %s", layer.id)
    expected = (D("78100") - layer.entry_price) * lots * PV
    assert closed == ("closed", D("78100"), "BROKER_SQUARE_OFF", expected)
    assert pnl_rows(postgresql) == [expected]
    assert rows(postgresql, "SELECT count(*) FROM pyramiding_state") == [(0,)]
    [(details,)] = rows(postgresql, "SELECT details FROM execution_log "
                                    "WHERE event = 'broker_square_off_booked'")
    assert (details["trade_ids"], details["positions_closed"]) == ([trade_id], [layer.id])
    assert paper.readiness.reasons() == []

    assert await paper.reconciler.check() == []  # booked once, whatever runs later
    assert len(pnl_rows(postgresql)) == 1
    exit_signal = await paper.send("EXIT", price="78000")
    assert exit_signal.outcome == "ignored"
    assert rows(postgresql, "SELECT count(*) FROM paper_orders WHERE side = 'SELL'") == [(1,)]
    assert await paper.broker.positions() == {}  # flat: no naked short


async def test_square_off_of_a_pyramided_position_closes_every_layer(paper, postgresql):
    await paper.send("BASE_ENTRY")
    pyramid = await paper.send("PYRAMID", position="Long_2", price="80000", stop="79500")
    assert pyramid.outcome == "executed", pyramid
    layers = await paper.db.load_live_layers()
    held = sum(x.quantity for x in layers)
    # The broker sells in two trades; the book takes their volume-weighted price.
    venue_trade(postgresql, GOLD, "SELL", held - 2, "79000")
    venue_trade(postgresql, GOLD, "SELL", 2, "78000")
    price = ((held - 2) * D("79000") + 2 * D("78000")) / held

    assert await paper.reconciler.check() == []

    assert await paper.db.load_live_layers() == []
    closed = rows(postgresql, "SELECT exit_price, exit_reason FROM portfolio_positions")
    assert {(p.quantize(D("0.01")), r) for p, r in closed} == {
        (price.quantize(D("0.01")), "BROKER_SQUARE_OFF")}
    assert rows(postgresql, "SELECT count(*) FROM pyramiding_state") == [(0,)]


async def test_a_manual_partial_sale_closes_the_newest_layer(paper, postgresql):
    await paper.send("BASE_ENTRY")
    await paper.send("PYRAMID", position="Long_2", price="80000", stop="79500")
    base, pyramid = await paper.db.load_live_layers()
    venue_trade(postgresql, GOLD, "SELL", pyramid.quantity, "80500")

    assert await paper.reconciler.check() == []

    [left] = await paper.db.load_live_layers()
    assert left.id == base.id
    assert pnl_rows(postgresql) == [(D("80500") - pyramid.entry_price) * pyramid.lots * PV]
    assert rows(postgresql, "SELECT count(*) FROM pyramiding_state") == [(1,)]  # not flat


async def test_restart_books_a_square_off_made_while_down(runs, postgresql):
    first = await runs()
    entry = await first.send("BASE_ENTRY")
    venue_trade(postgresql, GOLD, "SELL", entry.result["lots"], "78200")
    second = await runs()
    assert await second.recover() == []
    assert rows(postgresql, "SELECT exit_reason FROM portfolio_positions") == [
        ("BROKER_SQUARE_OFF",)]


async def test_kite_square_off_is_booked_through_the_real_client(db, dsn, fake, tmp_path,
                                                                 postgresql):
    kite = await start_trading(db, dsn, fake, tmp_path)
    try:
        entry = await kite.send("BASE_ENTRY", **gold_entry())
        assert entry.outcome == "executed", entry
        [layer] = await kite.db.load_live_layers()
        [order] = fake.state.square_off(layer.tradingsymbol, "71500")
        assert (order["tag"], order["transaction_type"], order["status"]) == (
            None, "SELL", "COMPLETE")
        assert await kite.broker.positions() == {}

        assert await kite.reconciler.check() == []

        [closed] = rows(postgresql, "SELECT exit_price, exit_reason, realized_pnl "
                                    "FROM portfolio_positions")
        expected = (D("71500") - layer.entry_price) * layer.lots * PV
        assert closed == (D("71500"), "BROKER_SQUARE_OFF", expected)
        assert pnl_rows(postgresql) == [expected]
        exit_signal = await kite.send("EXIT", price="71400", **{"instrument": GOLD})
        assert exit_signal.outcome == "ignored"
        assert len(fake.state.snapshot()["orders"]) == 2  # our entry, the broker's square-off
        assert await kite.broker.positions() == {}
    finally:
        await kite.close()


async def test_kite_square_off_control_route(fake):
    import requests

    symbol = next(k for k in fake.state.market.instruments.values()
                  if k.exchange == "MCX" and k.name == "GOLDM").tradingsymbol
    fake.state.book.place("regular", {"exchange": "MCX", "tradingsymbol": symbol,
                                      "transaction_type": "BUY", "quantity": "3",
                                      "product": "NRML", "order_type": "MARKET",
                                      "market_protection": "2"})
    answer = await asyncio.to_thread(requests.post, f"{fake.url}/_test/square_off",
                                     json={"tradingsymbol": symbol, "price": "71000"},
                                     timeout=5)
    [order] = answer.json()["data"]
    assert (order["transaction_type"], order["quantity"], order["average_price"]) == (
        "SELL", 3, 71000)
    [row] = fake.state.positions()["net"]
    assert row["quantity"] == 0


# -- (b) anything else blocks that instrument's entries, and nothing is traded ---------------
async def test_unexplained_difference_blocks_only_its_instrument_until_the_venue_agrees(
        paper, postgresql):
    await paper.send("BASE_ENTRY")
    [layer] = await paper.db.load_live_layers()
    venue_trade(postgresql, GOLD, "BUY", 2, "78600")  # a manual buy in the broker's app
    orders_before = rows(postgresql, "SELECT count(*) FROM paper_orders")
    reason = f"position mismatch {GOLD}: book {layer.quantity}, broker {layer.quantity + 2}"

    with capture_logs() as logs:
        [difference] = await paper.reconciler.check()
        await paper.reconciler.check()  # the same difference again: not logged again
    assert (difference.book, difference.broker) == (layer.quantity, layer.quantity + 2)
    assert [e for e in logs if e["event"] == "reconciliation_mismatch"] == [
        {"event": "reconciliation_mismatch", "log_level": "error", "instrument": GOLD,
         "tradingsymbol": GOLD, "book": layer.quantity, "broker": layer.quantity + 2,
         "detail": reason}]
    assert paper.readiness.reasons() == [reason]
    # Once in the audit log (and so on the events stream), not at every check.
    await paper.reconciler.close()  # the audit is written beside the check: let it land
    assert rows(postgresql, "SELECT count(*) FROM execution_log "
                            "WHERE event = 'reconciliation_mismatch'") == [(1,)]
    assert rows(postgresql, "SELECT count(*) FROM event_outbox "
                            "WHERE type = 'audit.reconciliation_mismatch'") == [(1,)]
    assert rows(postgresql, "SELECT count(*) FROM paper_orders") == orders_before
    assert await paper.db.load_live_layers() == [layer]  # the book is not "fixed" either
    gauge = paper.metrics.registry.get_sample_value
    assert gauge("pm_reconciliation_mismatches", {"instrument": GOLD}) == 1

    blocked = await paper.send("PYRAMID", position="Long_2", price="80000", stop="79500")
    assert (blocked.outcome, blocked.reason) == ("rejected", f"entries blocked: {reason}")
    silver = await paper.send("BASE_ENTRY", instrument="SILVER_MINI", price="90000",
                              stop="88000")
    assert silver.outcome == "executed"

    venue_trade(postgresql, GOLD, "SELL", 2, "78700")  # the operator undoes it at the venue
    assert await paper.reconciler.check() == []
    assert paper.readiness.reasons() == []
    assert gauge("pm_reconciliation_mismatches", {"instrument": GOLD}) == 0
    pyramid = await paper.send("PYRAMID", position="Long_2", price="80000", stop="79500")
    assert pyramid.outcome == "executed"


async def test_lost_position_is_a_mismatch_not_a_square_off(paper, postgresql):
    await paper.send("BASE_ENTRY")
    postgresql.execute("DELETE FROM paper_trades")  # gone, and no trade explains it
    [difference] = await paper.reconciler.check()
    assert difference.broker == 0
    assert len(await paper.db.load_live_layers()) == 1
    assert pnl_rows(postgresql) == []


async def test_broker_position_the_book_does_not_hold_blocks_that_instrument(paper,
                                                                            postgresql):
    venue_trade(postgresql, "COPPER", "BUY", 1, "900")
    assert paper.readiness.reasons() == []
    await paper.reconciler.check()
    assert paper.readiness.reasons() == ["position mismatch COPPER: book 0, broker 1"]
    assert paper.readiness.entry_block("COPPER") is not None
    assert paper.readiness.entry_block(GOLD) is None
    assert (await paper.send("BASE_ENTRY")).outcome == "executed"


async def test_position_in_a_contract_no_instrument_trades_blocks_every_entry(paper,
                                                                             postgresql):
    venue_trade(postgresql, "ZINC", "BUY", 1, "250")
    await paper.reconciler.check()
    assert paper.readiness.entry_block(GOLD) == "position mismatch ZINC: book 0, broker 1"
    assert paper.metrics.registry.get_sample_value(
        "pm_reconciliation_mismatches", {"instrument": "unassigned"}) == 1
    venue_trade(postgresql, "ZINC", "SELL", 1, "250")
    await paper.reconciler.check()
    assert paper.readiness.reasons() == []


# -- when it checks -------------------------------------------------------------------------
async def test_instrument_with_an_intent_in_flight_is_skipped(paper, postgresql):
    await paper.send("BASE_ENTRY")
    async with paper.db.transaction() as tx:  # committed, its order not placed yet
        await paper.flow.open_intent(
            tx, None, GOLD, Side.BUY, 2, D("78600"),
            EntryPurpose(layer="Long_2", trade_id=None, initial_stop=D("77900"),
                         atr=D("700"), limiter="risk"))
    venue_trade(postgresql, GOLD, "SELL", 7, "78100")  # would be a square-off otherwise

    with capture_logs() as logs:
        assert await paper.reconciler.check() == []
    assert {"event": "reconciliation_skipped_in_flight", "log_level": "info",
            "instrument": GOLD} in logs
    assert paper.readiness.reasons() == []
    assert len(await paper.db.load_live_layers()) == 1  # compared next round, not now
    assert pnl_rows(postgresql) == []


async def test_a_fill_triggers_a_check_of_its_instrument(paper, postgresql):
    paper.flow.fill_listeners.append(paper.reconciler.after_fill)
    venue_trade(postgresql, GOLD, "BUY", 2, "78400")  # not the book's
    entry = await paper.send("BASE_ENTRY")
    assert entry.outcome == "executed"
    lots = entry.result["lots"]

    async def blocked() -> bool:
        return paper.readiness.entry_block(GOLD) is not None

    await until(blocked)  # nobody called check(): the fill did
    assert paper.readiness.reasons() == [
        f"position mismatch {GOLD}: book {lots}, broker {lots + 2}"]


async def test_the_loop_checks_only_instruments_in_their_session(db, dsn, postgresql):
    # Friday 22:30 IST: MCX trades until 23:30, NFO closed at 15:30.
    clock = Clock(datetime(2026, 11, 20, 17, 0, tzinfo=UTC))
    trading = await Trading(db, dsn, clock=clock).start()
    venue_trade(postgresql, GOLD, "BUY", 1, "78000")
    venue_trade(postgresql, "BANK_NIFTY", "BUY", 30, "52000")
    loop = asyncio.create_task(trading.reconciler.run(0.02))
    try:
        async def gold_blocked() -> bool:
            return trading.readiness.entry_block(GOLD) is not None

        await until(gold_blocked)
        assert trading.readiness.entry_block("BANK_NIFTY") is None
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await trading.close()
