"""The book's trading state as the daemon keeps it (DOMAIN.md §11): one persisted row,
changed by an operator or a limit in a transaction of its own and recorded in
`execution_log`, with a copy here that turns entries away before any sizing work.

The copy is only a fast path: every order intent's transaction reads the row itself
(`Transaction.trading_state`), so a change and an intent can never race.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import structlog

from core.book_store import BookStore, BookTransaction
from core.trading_state import Actor, StateRecord, TradingState, change, entry_refusal

log = structlog.get_logger(__name__)
STATE_CHANGED = "trading_state_changed"
BREACHED = "daily_loss_breached"


class TradingControl:
    def __init__(self, db: BookStore, clock: Callable[[], datetime]):
        self._db = db
        self._clock = clock
        self.record: StateRecord | None = None  # None until loaded: nothing is refused early

    async def load(self) -> StateRecord:
        async with self._db.transaction() as tx:
            self.record = await tx.trading_state()
        return self.record

    def entry_block(self) -> str | None:
        """Why entries are refused now, as far as the last committed state says."""
        if self.record is None:
            return None
        return entry_refusal(self.record, date.min, None)

    async def set(self, wanted: TradingState, reason: str | None,
                  actor: Actor) -> tuple[StateRecord, bool]:
        """Move to `wanted`; return the state and whether anything changed (asking for
        the state already in force records nothing)."""
        async with self._db.transaction() as tx:
            record, changed = await self.set_in(tx, wanted, reason, actor)
        self.record = record
        return record, changed

    async def set_in(self, tx: BookTransaction, wanted: TradingState, reason: str | None,
                     actor: Actor, **details: Any) -> tuple[StateRecord, bool]:
        """`set` inside the caller's transaction (the caller publishes `record` after it
        commits, by `published`)."""
        current = await tx.trading_state(for_entry=True)
        step = change(current, wanted, reason, actor)
        if step is None:
            return current, False
        record = await tx.change_trading_state(step, self._clock())
        await tx.log_event(STATE_CHANGED, state=record.state, previous=current.state,
                           reason=reason, actor=actor, cleared_breach=step.clears_breach,
                           **details)
        log.info(STATE_CHANGED, state=record.state, previous=current.state, reason=reason,
                 actor=actor)
        return record, True

    def published(self, record: StateRecord) -> None:
        self.record = record

    async def breach(self, day: date, pnl: Decimal, limit: Decimal, wanted: TradingState
                     ) -> StateRecord | None:
        """Latch a daily-loss breach and move to `wanted` in one transaction; None if a
        breach is latched already (or the operator resumed past this day's)."""
        async with self._db.transaction() as tx:
            record = await self.breach_in(tx, day, pnl, limit, wanted)
        if record is not None:
            self.record = record
        return record

    async def breach_in(self, tx: BookTransaction, day: date, pnl: Decimal, limit: Decimal,
                        wanted: TradingState) -> StateRecord | None:
        """`breach` inside the caller's transaction (publish with `published`)."""
        latched = await tx.latch_breach(day, pnl, self._clock())
        if latched is None:
            return None
        if latched.state is TradingState.HALTED:
            wanted = TradingState.HALTED  # a limit never loosens what an operator halted
        await tx.log_event(BREACHED, day=day, pnl=pnl, limit=limit)
        record, _ = await self.set_in(tx, wanted, f"daily loss {pnl} reached the limit of "
                                                  f"{limit}", Actor.LIMIT)
        log.warning(BREACHED, day=day.isoformat(), pnl=str(pnl), limit=str(limit),
                    state=record.state)
        return record

    def report(self) -> dict[str, Any]:
        """What `/status` shows of the state."""
        record = self.record
        if record is None:
            return {"state": None, "reason": None, "actor": None, "since": None}
        return {"state": record.state, "reason": record.reason, "actor": record.actor,
                "since": record.since}
