"""The operator's levers on real PostgreSQL and the paper broker: the trading state (and its
race with order intents), a manual exit, the kill switch, and capital movements."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import psycopg
import pytest

from core.errors import InsufficientEquity
from core.models import LedgerType
from core.trading_state import FLATTEN, MANUAL, Actor, TradingState
from tests.support.trading import PORTFOLIO, Trading

D = Decimal
# Room for five layers on each of four instruments: the limits are not under test here.
ROOMY = PORTFOLIO.model_copy(update={
    "max_margin_utilization_percent": D(100), "paper_margin_fraction": D(1),
    "max_portfolio_risk_percent": D(100), "max_portfolio_vol_percent": D(100),
    "pyramid_risk_block": D(100), "pyramid_vol_block": D(100), "use_1r_gate": False,
    "initial_capital": D("100000000")})
BASES = {"GOLD_MINI": D(78500), "SILVER_MINI": D(90000), "COPPER": D(900),
         "BANK_NIFTY": D(52000)}
# 20 layers over 4 instruments: as many as each may pyramid.
FULL = {"GOLD_MINI": 4, "COPPER": 4, "SILVER_MINI": 6, "BANK_NIFTY": 6}


@pytest.fixture
async def trading(db, dsn):
    trading = await Trading(db, dsn, config=ROOMY).start()
    yield trading
    await trading.close()


async def enter(trading: Trading, instrument: str = "GOLD_MINI", layers: int = 1) -> None:
    """Open `layers` layers of `instrument`: a base entry, then pyramids 2.5 ATR apart."""
    base = BASES[instrument]
    atr = base / 100
    for n in range(layers):
        kind = "BASE_ENTRY" if n == 0 else "PYRAMID"
        price = base + atr * D("2.5") * n
        outcome = await trading.send(kind, instrument=instrument, position=f"Long_{n + 1}",
                                     price=str(price), stop=price - 2 * atr, atr=atr,
                                     supertrend=price - atr)
        assert outcome is not None and outcome.outcome == "executed", outcome


async def test_pause_blocks_entries_lets_exits_through_and_resume_restores(trading):
    await enter(trading)
    record, changed = await trading.control.set(TradingState.REDUCING, "lunch",
                                                Actor.OPERATOR)
    assert changed and record.state is TradingState.REDUCING and record.actor is Actor.OPERATOR

    blocked = await trading.send("BASE_ENTRY", instrument="COPPER", price="900", stop=D(890),
                                 atr=D(9), supertrend=D(890))
    assert (blocked.outcome, blocked.reason) == ("blocked", "trading paused")
    exited = await trading.send("EXIT", price="79000")
    assert exited.outcome == "executed"

    await trading.control.set(TradingState.ACTIVE, "back", Actor.OPERATOR)
    again = await trading.send("BASE_ENTRY", instrument="COPPER", price="900", stop=D(890),
                               atr=D(9), supertrend=D(890))
    assert again.outcome == "executed"
    events = await trading.db.latest_event("trading_state_changed")
    assert events["state"] == "ACTIVE" and events["previous"] == "REDUCING"


async def test_asking_for_the_state_in_force_records_nothing(trading, dsn):
    _, changed = await trading.control.set(TradingState.ACTIVE, "again", Actor.OPERATOR)
    assert not changed
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM execution_log WHERE event = 'trading_state_changed'")
        assert (await cur.fetchone())[0] == 0


async def test_halt_blocks_alert_exits_but_stops_still_trail(trading):
    await enter(trading)
    await trading.control.set(TradingState.HALTED, "investigating", Actor.OPERATOR)

    exit_alert = await trading.send("EXIT", price="79000")
    assert (exit_alert.outcome, exit_alert.reason) == ("blocked", "trading halted")
    trail = await trading.send("MARKET_DATA", position=None, price="80500", atr=D(700))
    assert trail.outcome == "executed"
    [layer] = await trading.db.live_layers("GOLD_MINI")
    assert layer.status == "open" and layer.current_stop > layer.initial_stop
    manual = await trading.engine.operator_exit("GOLD_MINI", "ALL", MANUAL)
    assert (manual.outcome, manual.reason) == ("blocked", "trading halted")
    assert len(await trading.db.live_layers("GOLD_MINI")) == 1


async def test_a_state_change_and_an_entry_intent_never_race(trading, dsn):
    """A halt committed while an entry is being decided wins: the entry's transaction waits
    for the row and then sees HALTED — it never commits an intent on the old state."""
    async with await psycopg.AsyncConnection.connect(dsn) as halting:
        await halting.execute("UPDATE trading_state SET state = 'HALTED', reason = 'race', "
                              "actor = 'operator', since = now() WHERE id = 1")
        entry = asyncio.create_task(trading.send("BASE_ENTRY", price="78500"))
        await asyncio.sleep(0.5)
        assert not entry.done()  # held by the uncommitted change
        await halting.commit()
    outcome = await entry
    assert (outcome.outcome, outcome.reason) == ("blocked", "trading halted")
    assert await trading.db.all_live_layers() == []
    assert [i for i in await trading.db.list_intents(10)] == []


async def test_manual_exit_closes_one_layer_with_reason_manual(trading):
    await enter(trading, layers=2)
    outcome = await trading.engine.operator_exit("GOLD_MINI", "Long_2", MANUAL)
    assert outcome.outcome == "executed" and outcome.signal_id == 0
    [left] = await trading.db.live_layers("GOLD_MINI")
    assert left.layer == "Long_1"
    [closed] = [x for x in await trading.db.list_positions("closed", 10)]
    assert (closed.layer, closed.exit_reason) == ("Long_2", MANUAL)
    assert await trading.engine.operator_exit("GOLD_MINI", "Long_2", MANUAL) is None


async def test_flatten_halts_exits_everything_and_confirms_with_the_broker(trading):
    for instrument, layers in FULL.items():
        await enter(trading, instrument, layers)
    assert len(await trading.db.all_live_layers()) == 20

    task = await trading.flattener.request("kill switch drill", Actor.OPERATOR)
    joined = await trading.flattener.request("pressed twice", Actor.OPERATOR)
    assert joined is task  # one flatten, never two sets of exit orders
    report = await asyncio.wait_for(task, 30)

    assert (report.status, report.layers_closed, report.orders_cancelled) == ("flat", 20, 0)
    assert await trading.db.all_live_layers() == []
    assert await trading.broker.positions() == {} or set(
        (await trading.broker.positions()).values()) == {0}
    closed = await trading.db.list_positions("closed", 100)
    assert {x.exit_reason for x in closed} == {FLATTEN}
    exits = [i for i in await trading.db.list_intents(100) if i.side == "SELL"]
    assert len(exits) == 4  # one order per instrument: its layers share a contract
    state = await trading.db.trading_state()
    assert state.state is TradingState.HALTED and state.reason == "flatten: kill switch drill"
    assert (await trading.db.running_flatten()) is None


async def test_a_flatten_interrupted_by_a_restart_is_resumed(db, dsn):
    first = await Trading(db, dsn, config=ROOMY).start()
    await enter(first, "GOLD_MINI", layers=2)
    await enter(first, "COPPER", layers=1)
    async with db.transaction() as tx:  # as a crash right after the flatten was recorded
        row = await tx.start_flatten("crash drill", Actor.OPERATOR, first.clock())
        await first.control.set_in(tx, TradingState.HALTED, "flatten: crash drill",
                                   Actor.OPERATOR)
    await first.close()

    second = await Trading(db, dsn, config=ROOMY).start()
    try:
        await second.recover()
        task = await second.flattener.resume()
        report = await asyncio.wait_for(task, 30)
        assert (report.flatten_id, report.status, report.layers_closed) == (row.id, "flat", 3)
        assert await second.db.all_live_layers() == []
    finally:
        await second.close()


async def test_deposits_and_withdrawals_move_sizing_equity_at_once(trading):
    async with trading.db.transaction() as tx:
        entry = await tx.append_ledger(LedgerType.WITHDRAW, D("99000000.00"), note="payout")
    assert entry.equity_after == D("1000000.00")
    book = await trading.engine.book_snapshot()
    assert book.sizing_equity == D("1000000.00")  # the next entry is sized on what is left
    with pytest.raises(InsufficientEquity):
        async with trading.db.transaction() as tx:
            await tx.append_ledger(LedgerType.WITHDRAW, D("1000000.01"))
    state = await trading.db.portfolio_state()
    assert state.closed_equity == D("1000000.00")
