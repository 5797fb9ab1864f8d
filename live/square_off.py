"""The day's square-off (DOMAIN.md §10), for intraday users: from an instrument's
`square_off_at` (IST) to its session's close on each trading day, every open layer of it is
exited, reason EOD_SQUARE_OFF.

Checked every few seconds rather than once at the time, so a layer still open later in that
session — opened after the square-off, or whose exit was refused (HALTED) — goes at the next
check. Outside the session nothing is sent: the exchange would refuse it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog

from core.calendar import TradingCalendar, india_time
from core.db_state_manager import DatabaseStateManager
from core.models import LayerStatus, Outcome
from core.specs import InstrumentSpec
from core.trading_state import EOD_SQUARE_OFF
from live.engine import LiveTradingEngine
from live.every import every

log = structlog.get_logger(__name__)


class SquareOff:
    def __init__(self, db: DatabaseStateManager, engine: LiveTradingEngine,
                 instruments: dict[str, InstrumentSpec], calendar: TradingCalendar, *,
                 clock: Callable[[], datetime], interval_s: float = 5.0):
        self._db = db
        self._engine = engine
        self._instruments = {name: spec for name, spec in instruments.items()
                             if spec.square_off_at is not None}
        self._calendar = calendar
        self._clock = clock
        self._interval_s = interval_s
        self._refused: dict[str, str | None] = {}  # the last refusal logged, per instrument

    async def run(self) -> None:
        if not self._instruments:
            return  # no instrument squares off: nothing to watch
        await every(self._interval_s, self.check, "square_off_check_failed")

    def due(self, spec: InstrumentSpec, now: datetime) -> bool:
        """Whether `spec`'s layers are to be squared off at `now`: in its session, at or
        after its square-off time."""
        return (spec.square_off_at is not None and self._calendar.in_session(spec, now)
                and india_time(now).time() >= spec.square_off_at)

    async def check(self, now: datetime | None = None) -> list[str]:
        """Exit the open layers of every instrument due; return the instruments exited."""
        now = now or self._clock()
        exited: list[str] = []
        for name, spec in self._instruments.items():
            if not self.due(spec, now):
                continue
            layers = await self._db.live_layers(name)
            if not any(x.status is LayerStatus.OPEN for x in layers):
                continue  # closing ones are left to their own exit
            outcome = await self._engine.operator_exit(name, "ALL", EOD_SQUARE_OFF)
            if outcome is None:
                continue
            if outcome.outcome is Outcome.EXECUTED:
                self._refused.pop(name, None)
                exited.append(name)
                log.info("squared_off", instrument=name, reason=outcome.reason)
            elif self._refused.get(name) != outcome.reason:
                self._refused[name] = outcome.reason  # logged once, retried every check
                log.warning("square_off_refused", instrument=name, outcome=outcome.outcome,
                            reason=outcome.reason)
        return exited
