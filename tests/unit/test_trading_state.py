"""The trading state machine (DOMAIN.md §11): what each state lets through, and which
requests are changes worth recording."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from core.trading_state import (
    EOD_SQUARE_OFF,
    FLATTEN,
    MANUAL,
    Actor,
    StateRecord,
    TradingState,
    change,
    entry_refusal,
    exit_refusal,
)

SINCE = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
TODAY = date(2026, 12, 1)


def record(state: TradingState, **fields) -> StateRecord:
    return StateRecord(state, None, Actor.OPERATOR, SINCE, **fields)


@pytest.mark.parametrize(("state", "refusal"), [
    (TradingState.ACTIVE, None),
    (TradingState.REDUCING, "trading paused"),
    (TradingState.HALTED, "trading halted"),
])
def test_entries_pass_only_when_active(state, refusal):
    assert entry_refusal(record(state), TODAY, None) == refusal


@pytest.mark.parametrize(("state", "reason", "refusal"), [
    (TradingState.ACTIVE, None, None),
    (TradingState.REDUCING, None, None),
    (TradingState.REDUCING, MANUAL, None),
    (TradingState.HALTED, None, "trading halted"),
    (TradingState.HALTED, MANUAL, "trading halted"),
    (TradingState.HALTED, EOD_SQUARE_OFF, "trading halted"),
    (TradingState.HALTED, FLATTEN, None),  # the kill switch halts, then exits everything
])
def test_exits_pass_unless_halted_except_a_flattens(state, reason, refusal):
    assert exit_refusal(record(state), reason) == refusal


def test_the_entry_cap_counts_only_todays_entries():
    counted = record(TradingState.ACTIVE, entries_day=TODAY, entries_count=10)
    assert entry_refusal(counted, TODAY, 10) == "daily entry limit 10 reached"
    assert entry_refusal(counted, TODAY, 11) is None
    assert entry_refusal(counted, date(2026, 12, 2), 10) is None  # a new trading day
    assert entry_refusal(counted, TODAY, None) is None  # off
    # A paused book says it is paused, whatever the count.
    paused = record(TradingState.REDUCING, entries_day=TODAY, entries_count=10)
    assert entry_refusal(paused, TODAY, 10) == "trading paused"


def test_asking_for_the_state_in_force_is_no_change():
    assert change(record(TradingState.ACTIVE), TradingState.ACTIVE, "again",
                  Actor.OPERATOR) is None
    assert change(record(TradingState.HALTED), TradingState.HALTED, "again",
                  Actor.OPERATOR) is None


def test_every_other_move_is_a_change_with_its_actor():
    step = change(record(TradingState.ACTIVE), TradingState.REDUCING, "lunch", Actor.OPERATOR)
    assert step is not None
    assert (step.state, step.reason, step.actor, step.clears_breach) == (
        TradingState.REDUCING, "lunch", Actor.OPERATOR, False)
    assert change(record(TradingState.HALTED), TradingState.ACTIVE, None,
                  Actor.OPERATOR) is not None


def test_an_operators_resume_clears_a_latched_breach_even_when_active():
    breached = record(TradingState.ACTIVE, breach_day=TODAY, breach_pnl=Decimal("-150000"),
                      breach_at=SINCE)
    step = change(breached, TradingState.ACTIVE, "seen it", Actor.OPERATOR)
    assert step is not None and step.clears_breach
    # A limit never clears its own latch.
    step = change(breached, TradingState.REDUCING, "loss", Actor.LIMIT)
    assert step is not None and not step.clears_breach
