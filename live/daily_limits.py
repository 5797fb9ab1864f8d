"""The daily loss limit (DOMAIN.md §10), watched beside the signal path.

After every snapshot and every signal the engine processes, the day's P&L is measured from
the day's first snapshot; at or past the limit the breach is latched and the book moves to
REDUCING, or to HALTED and flattened. The check runs in a task of its own, woken by an
event: a signal only sets the event, so the limit never delays or fails a trade.

A latched breach holds (across restarts and days) until an operator resumes; until then
nothing more is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from core.accounting import CENT, money_text
from core.daily_limits import DayLoss, day_began, day_loss, trading_day
from core.db_state_manager import DatabaseStateManager
from core.specs import PortfolioConfig
from core.trading_state import Actor, TradingState
from live.snapshot_store import day_start, realised_since
from live.snapshots import Snapshots
from live.trading_control import TradingControl

if TYPE_CHECKING:
    from live.flatten import Flattener

FLATTEN_REASON = "daily loss limit"
log = structlog.get_logger(__name__)


class DailyLimits:
    def __init__(self, db: DatabaseStateManager, snapshots: Snapshots,
                 control: TradingControl, config: PortfolioConfig, *,
                 clock: Callable[[], datetime], flattener: Flattener | None = None):
        self._db = db
        self._snapshots = snapshots
        self._control = control
        self._config = config
        self._clock = clock
        self._flattener = flattener
        self._due = asyncio.Event()

    def wake(self, *_: object) -> None:
        """Check soon (a listener of the snapshots and of the engine's decisions)."""
        self._due.set()

    async def run(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            try:
                await self.check()
            except Exception:  # the loop outlives any one failure, loudly
                log.exception("daily_limit_check_failed")

    async def check(self, now: datetime | None = None) -> DayLoss | None:
        """Measure the day's P&L; on a breach not latched yet, latch it and act. Return the
        day's figures (None when the limit is off or the day has no baseline yet)."""
        if self._config.daily_loss_limit_percent is None:
            return None
        now = now or self._clock()
        loss = await self.measure(now)
        if loss is None:  # no snapshot yet today: take the day's first, then measure
            await self._snapshots.take(now)
            loss = await self.measure(now)
        record = self._control.record
        if loss is None or not loss.breached or (record is not None and (
                record.breached or record.resumed_breach_day == loss.day)):
            return loss  # latched already, or an operator resumed past this day's loss
        assert loss.limit is not None
        flatten = self._config.daily_loss_action == "flatten" and self._flattener is not None
        # The latch, the state and (for the flatten action) the flatten's own row commit
        # together: a crash after it leaves a flatten that the next start resumes.
        async with self._db.transaction() as tx:
            latched = await self._control.breach_in(
                tx, loss.day, loss.pnl.quantize(CENT), loss.limit.quantize(CENT),
                TradingState.HALTED if flatten else TradingState.REDUCING)
            if latched is not None and flatten:
                await tx.start_flatten(FLATTEN_REASON, Actor.LIMIT, now)
        if latched is not None:
            self._control.published(latched)
        if latched is not None and flatten and self._flattener is not None:
            await self._flattener.resume()
        return loss

    async def measure(self, now: datetime) -> DayLoss | None:
        """The day's P&L against its limit, or None before the day's first snapshot."""
        day = trading_day(now)
        book = await self._snapshots.book(now)
        async with self._db.reading() as conn:
            start = await day_start(conn, day)
            realised = await realised_since(conn, day_began(day))
        if start is None:
            return None
        return day_loss(start, realised, book.portfolio.unrealized,
                        self._config.daily_loss_limit_percent)

    async def report(self) -> dict[str, Any]:
        """What `/status` shows as `daily`."""
        now = self._clock()
        loss = await self.measure(now)
        record = await self._db.trading_state()
        breach = None if record.breach_day is None else {
            "day": record.breach_day, "pnl": _money(record.breach_pnl),
            "at": record.breach_at}
        return {"day": trading_day(now),
                "pnl": None if loss is None else money_text(loss.pnl),
                "loss_limit": None if loss is None else _money(loss.limit),
                "loss_limit_percent": self._config.daily_loss_limit_percent,
                "entries": record.entries_on(trading_day(now)),
                "entries_limit": self._config.max_entries_per_day,
                "breached": record.breached, "breach": breach,
                "day_start_equity": None if loss is None else money_text(loss.start_equity)}


def _money(value: Decimal | None) -> str | None:
    return None if value is None else money_text(value)
