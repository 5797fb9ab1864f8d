"""The day's square-off (DOMAIN.md §10) on real PostgreSQL and the paper broker: at the
instrument's time every open layer exits (EOD_SQUARE_OFF), a layer opened later in the session
exits at the next check, and nothing is sent outside the session."""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal as D

import pytest

from core.signals import INDIA
from core.trading_state import EOD_SQUARE_OFF, Actor, TradingState
from live.square_off import SquareOff
from tests.support.trading import INSTRUMENTS, Trading

GOLD = "GOLD_MINI"
INTRADAY = {**INSTRUMENTS, GOLD: INSTRUMENTS[GOLD].model_copy(
    update={"square_off_at": time(15, 0)})}


def ist(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=INDIA)


@pytest.fixture
async def trading(db, dsn):
    trading = await Trading(db, dsn).start()
    trading.square_off = SquareOff(db, trading.engine, INTRADAY, trading.calendar,
                                   clock=trading.clock)
    yield trading
    await trading.close()


async def enter(trading: Trading, at: datetime) -> None:
    trading.clock.now = at
    outcome = await trading.send("BASE_ENTRY", price="78500")
    assert outcome.outcome == "executed", outcome


async def check(trading: Trading, at: datetime) -> list[str]:
    trading.clock.now = at  # the exits' own time too
    return await trading.square_off.check()


async def test_open_layers_exit_at_the_square_off_time_and_not_before(trading):
    await enter(trading, ist(20, 10, 30))
    await trading.send("BASE_ENTRY", instrument="COPPER", price="900", stop=D(890), atr=D(9),
                       supertrend=D(890))
    assert await check(trading, ist(20, 14, 59, 59)) == []
    assert len(await trading.db.live_layers(GOLD)) == 1

    assert await check(trading, ist(20, 15, 0)) == [GOLD]
    assert await trading.db.live_layers(GOLD) == []
    [closed] = await trading.db.list_positions("closed", 10)
    assert (closed.instrument, closed.exit_reason) == (GOLD, EOD_SQUARE_OFF)
    assert len(await trading.db.live_layers("COPPER")) == 1  # it has no square-off time

    await enter(trading, ist(20, 15, 10))  # opened after: gone at the next check
    assert await check(trading, ist(20, 15, 10, 5)) == [GOLD]
    assert await trading.db.live_layers(GOLD) == []


async def test_nothing_is_squared_off_outside_the_session(trading):
    await enter(trading, ist(20, 23, 35))  # after the close (the paper venue allows it)
    assert await check(trading, ist(20, 23, 40)) == []
    assert await check(trading, ist(21, 15, 0)) == []  # Saturday
    assert await check(trading, ist(23, 9, 0)) == []  # Monday, before the time
    assert len(await trading.db.live_layers(GOLD)) == 1
    assert await check(trading, ist(23, 15, 0)) == [GOLD]


async def test_a_refused_square_off_is_tried_again_at_the_next_check(trading):
    await enter(trading, ist(20, 10, 30))
    await trading.control.set(TradingState.HALTED, "investigating", Actor.OPERATOR)
    assert await check(trading, ist(20, 15, 0)) == []
    assert len(await trading.db.live_layers(GOLD)) == 1
    await trading.control.set(TradingState.ACTIVE, "back", Actor.OPERATOR)
    assert await check(trading, ist(20, 15, 0, 5)) == [GOLD]
