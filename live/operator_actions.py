"""What an operator's lever does, whichever way it is pulled (the admin API, Telegram): the
rules live here once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.trading_state import Actor, StateRecord, TradingState

if TYPE_CHECKING:
    from live.server import Context

OPERATOR_ACTION = "operator_action"  # the audit event of every operator call


class StateRefused(Exception):
    """The state cannot change now (the message says why, for the operator)."""


async def change_state(ctx: Context, wanted: TradingState, reason: str
                       ) -> tuple[StateRecord, bool]:
    """Move the book to `wanted`; return the state and whether it changed. A flatten under
    way keeps the book HALTED until it is flat."""
    assert ctx.control is not None
    running = ctx.flattener.current if ctx.flattener else None
    if wanted is not TradingState.HALTED and running and running.status == "flattening":
        raise StateRefused(f"flatten {running.id} is under way: the book stays HALTED until "
                           "it is flat")
    return await ctx.control.set(wanted, reason, Actor.OPERATOR)
