"""The daily loss limit and the daily entry cap on real PostgreSQL and the paper broker
(DOMAIN.md §10): the day's P&L from booked exits and price moves, a breach latched across
restarts and days until an operator resumes, and the flatten action."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.signals import INDIA
from core.trading_state import FLATTEN, Actor, TradingState
from tests.support.trading import PORTFOLIO, Trading

D = Decimal
LIMITED = PORTFOLIO.model_copy(update={"daily_loss_limit_percent": D("1")})
FLATTENING = PORTFOLIO.model_copy(update={"daily_loss_limit_percent": D("0.5"),
                                          "daily_loss_action": "flatten"})
CAPPED = PORTFOLIO.model_copy(update={"max_entries_per_day": 2})


def ist(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=INDIA)


async def market(trading: Trading, price: str) -> None:
    outcome = await trading.send("MARKET_DATA", position=None, price=price)
    assert outcome is not None and outcome.outcome == "executed", outcome
    assert outcome.result.get("pnl") is None  # above the stop: nothing exits


async def until(condition, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize("runs_config", [LIMITED])
async def test_day_pnl_counts_todays_exits_and_moves_and_a_breach_is_latched(
        runs, postgresql):
    first = await runs()
    first.clock.now = ist(20, 10, 30)  # Friday: a layer gains 35,000 before the day ends
    assert (await first.send("BASE_ENTRY", price="78500")).result["lots"] == 7
    await market(first, "79000")

    first.clock.now = ist(23, 10, 30)  # Monday: the day starts 35,000 up
    await first.snapshots.take()
    exited = await first.send("EXIT", price="78800")
    assert exited.result["pnl"] == "21000.00"  # booked today, 14,000 less than at the start
    assert (await first.limits.measure(first.clock.now)).pnl == D("-14000.00")
    again = await first.send("BASE_ENTRY", price="78800", stop=D("78100"))
    assert again.result["lots"] == 7
    await market(first, "78300")  # −500 × 7 × 10
    loss = await first.limits.check()
    assert (loss.pnl, loss.limit, loss.breached) == (D("-49000.00"), D("50000"), False)
    assert (await first.db.trading_state()).state is TradingState.ACTIVE

    await market(first, "78200")
    loss = await first.limits.check()
    assert (loss.pnl, loss.breached) == (D("-56000.00"), True)
    state = await first.db.trading_state()
    assert (state.state, state.actor, state.reason) == (
        TradingState.REDUCING, Actor.LIMIT, "daily loss -56000.00 reached the limit of 50000.00")
    assert (state.breach_day, state.breach_pnl) == (ist(23, 0).date(), D("-56000.00"))
    blocked = await first.send("BASE_ENTRY", instrument="COPPER", price="900", stop=D(890),
                               atr=D(9), supertrend=D(890))
    assert (blocked.outcome, blocked.reason) == ("blocked", "trading paused")
    assert (await first.send("EXIT", price="78100")).outcome == "executed"  # exits go on
    await first.limits.check()  # deeper still: latched, nothing more
    breaches = postgresql.execute(
        "SELECT count(*) FROM execution_log WHERE event = 'daily_loss_breached'").fetchone()
    assert breaches == (1,)
    daily = await first.limits.report()
    assert {k: daily[k] for k in ("pnl", "loss_limit", "breached", "day_start_equity")} == {
        "pnl": "-63000.00", "loss_limit": "50000.00", "breached": True,
        "day_start_equity": "5000000.00"}
    assert daily["breach"]["pnl"] == "-56000.00"
    await first.close()

    second = await runs()  # a restart, then the next day: the breach holds
    await second.control.load()
    second.clock.now = ist(24, 10, 0)
    await second.snapshots.take()
    loss = await second.limits.check()
    assert (loss.pnl, loss.breached) == (D("0.00"), False)
    state = await second.db.trading_state()
    assert (state.state, state.breach_day) == (TradingState.REDUCING, ist(23, 0).date())
    assert (await second.limits.report())["breached"] is True

    record, changed = await second.control.set(TradingState.ACTIVE, "reviewed",
                                               Actor.OPERATOR)
    assert changed and record.state is TradingState.ACTIVE and not record.breached
    await second.limits.check()
    assert (await second.db.trading_state()).state is TradingState.ACTIVE
    assert (await second.limits.report())["breach"] is None


async def test_a_signal_wakes_the_limit_check(db, dsn):
    trading = await Trading(db, dsn, config=LIMITED).start()
    trading.engine.decision_listeners.append(trading.limits.wake)
    trading.snapshots.listeners.append(trading.limits.wake)
    watcher = asyncio.create_task(trading.limits.run())
    try:
        await trading.snapshots.take()
        await trading.send("BASE_ENTRY", price="78500")
        await trading.send("MARKET_DATA", position=None, price="77850")  # −45,500

        async def reducing() -> bool:
            return (await trading.db.trading_state()).state is TradingState.REDUCING

        with pytest.raises(AssertionError):
            await until(reducing, timeout_s=0.3)
        await trading.send("MARKET_DATA", position=None, price="77820")  # −47,600
        await trading.send("EXIT", price="77700")  # books −56,000
        await until(reducing)
        assert (await trading.db.trading_state()).breach_pnl == D("-56000.00")
    finally:
        watcher.cancel()
        await trading.close()


async def test_the_flatten_action_halts_and_flattens(db, dsn, postgresql):
    trading = await Trading(db, dsn, config=FLATTENING).start()
    try:
        await trading.snapshots.take()
        await trading.send("BASE_ENTRY", price="78500")
        await trading.send("BASE_ENTRY", instrument="COPPER", price="900", stop=D(890),
                           atr=D(9), supertrend=D(890))
        await market(trading, "77900")  # −42,000, beyond 25,000
        assert (await trading.limits.check()).breached

        async def flat() -> bool:
            return (not await trading.db.all_live_layers()
                    and await trading.db.running_flatten() is None)

        await until(flat)
        state = await trading.db.trading_state()
        assert (state.state, state.actor, state.reason) == (
            TradingState.HALTED, Actor.LIMIT, "daily loss -42000.00 reached the limit of 25000.00")
        assert state.breached
        flattens = postgresql.execute("SELECT status, reason, actor FROM flattens").fetchall()
        assert flattens == [("flat", "daily loss limit", "limit")]
        closed = await trading.db.list_positions("closed", 10)
        assert {(x.instrument, x.exit_reason) for x in closed} == {
            ("GOLD_MINI", FLATTEN), ("COPPER", FLATTEN)}
    finally:
        await trading.close()


async def test_the_entry_cap_counts_entries_per_ist_day(db, dsn):
    trading = await Trading(db, dsn, config=CAPPED).start()
    try:
        await trading.send("BASE_ENTRY", price="78500")
        await trading.send("BASE_ENTRY", instrument="COPPER", price="900", stop=D(890),
                           atr=D(9), supertrend=D(890))
        silver = {"instrument": "SILVER_MINI", "price": "90000", "stop": D(88000),
                  "atr": D(1500), "supertrend": D(88000)}
        trading.clock.now = datetime(2026, 11, 20, 18, 28, tzinfo=UTC)  # 23:58 IST
        blocked = await trading.send("BASE_ENTRY", **silver)
        assert (blocked.outcome, blocked.reason) == ("blocked", "daily entry limit 2 reached")
        assert (await trading.limits.report())["entries"] == 2  # 23:59 IST: the same day

        trading.clock.now = datetime(2026, 11, 20, 18, 31, tzinfo=UTC)  # 00:01 IST, the 21st
        entered = await trading.send("BASE_ENTRY", **silver)
        assert entered.outcome == "executed", entered
        daily = await trading.limits.report()
        assert (daily["entries"], daily["entries_limit"]) == (1, 2)
    finally:
        await trading.close()


async def test_a_resume_accepts_the_days_loss_and_the_limit_rearms_the_next_day(db, dsn):
    config = LIMITED.model_copy(update={"daily_loss_limit_percent": D("0.5")})  # 25,000
    trading = await Trading(db, dsn, config=config).start()
    try:
        trading.clock.now = ist(23, 10, 30)
        await trading.snapshots.take()
        await trading.send("BASE_ENTRY", price="78500", stop=D(76000))  # 2 lots, 20 a point
        await market(trading, "77200")  # −26,000: past the limit
        assert (await trading.limits.check()).breached
        await trading.control.set(TradingState.ACTIVE, "seen it", Actor.OPERATOR)

        await market(trading, "77100")  # deeper the same day: the operator has accepted it
        assert (await trading.limits.check()).breached
        state = await trading.db.trading_state()
        assert (state.state, state.breached) == (TradingState.ACTIVE, False)
        assert (await trading.send("BASE_ENTRY", instrument="COPPER", price="900",
                                   stop=D(890), atr=D(9), supertrend=D(890))
                ).outcome == "executed"

        # The next day's loss is a new breach: the latch takes it.
        async with trading.db.transaction() as tx:
            assert await tx.latch_breach(ist(23, 0).date(), D(-1), trading.clock()) is None
            latched = await tx.latch_breach(ist(24, 0).date(), D(-30000), trading.clock())
        assert latched is not None and latched.breach_day == ist(24, 0).date()
    finally:
        await trading.close()


async def test_a_breach_never_loosens_an_operators_halt(db, dsn):
    trading = await Trading(db, dsn, config=LIMITED).start()
    try:
        await trading.control.set(TradingState.HALTED, "investigating", Actor.OPERATOR)
        record = await trading.control.breach(ist(23, 0).date(), D("-60000"), D("50000"),
                                              TradingState.REDUCING)
        assert record is not None and record.breached
        assert record.state is TradingState.HALTED  # latched, and still halted
    finally:
        await trading.close()
