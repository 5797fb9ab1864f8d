"""Exits that are never dropped: every exit the broker refused, filled partly, or could not
take (closed session, expired session) is carried out again, with backoff and at the next
session open, until its layers are flat or an operator steps in.

Each attempt is an order intent of its own, committed with the booking of the attempt before
it (`FillBooking.retry_listeners` tells this module of it after commit), so a crash anywhere
leaves a durable intent that recovery resolves by tag. While an instrument has one pending,
its entries are blocked and `/ready`, `/status`, the metrics and the log name it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import structlog

from core.db_pool import TRANSIENT_ERRORS
from core.intents import Sacred
from core.models import OrderIntent
from core.specs import InstrumentSpec
from live import failpoints
from live.brokers.base import Broker, BrokerError
from live.instrument_locks import InstrumentLocks
from live.metrics import Metrics
from live.order_flow import OrderFlow
from live.readiness import Readiness
from live.waiting import woken

EXIT_PENDING = "exit_pending:"
log = structlog.get_logger(__name__)


class SessionCalendar(Protocol):
    def next_session_open(self, spec: InstrumentSpec, moment: datetime) -> datetime: ...


@dataclass
class PendingExit:
    intent: OrderIntent
    due: datetime
    reason: str  # why the attempt before it did not finish the exit

    @property
    def attempt(self) -> int:
        assert isinstance(self.intent.purpose, Sacred)
        return self.intent.purpose.attempt


def retry_delay_s(attempt: int, first_s: float, max_s: float) -> float:
    """Backoff before the `attempt`-th retry: first_s, doubling, at most max_s; a first
    attempt (a roll's open leg) goes at once."""
    if attempt == 0:
        return 0.0
    return min(first_s * 2.0 ** (attempt - 1), max_s)


class ExitRetries:
    def __init__(self, flow: OrderFlow, broker: Broker, instruments: dict[str, InstrumentSpec],
                 calendar: SessionCalendar, readiness: Readiness, metrics: Metrics,
                 locks: InstrumentLocks, *, clock: Callable[[], datetime],
                 first_delay_s: float = 5.0, max_delay_s: float = 300.0,
                 poll_s: float = 1.0):
        self.flow = flow
        self._broker = broker
        self._instruments = instruments
        self._calendar = calendar
        self._readiness = readiness
        self._metrics = metrics
        self._locks = locks
        self._clock = clock
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._poll_s = poll_s
        self._pending: dict[int, PendingExit] = {}
        self._wake = asyncio.Event()
        flow.booking.retry_listeners.append(self.schedule)

    # -- what is pending ------------------------------------------------------------------
    def schedule(self, intent: OrderIntent, reason: str | None = None) -> None:
        """Take a committed intent that must be carried out (an exit's retry, a roll leg);
        it is attempted once its backoff has passed."""
        purpose = intent.purpose
        assert isinstance(purpose, Sacred)
        delay = retry_delay_s(purpose.attempt, self._first_delay_s, self._max_delay_s)
        due = self._clock() + timedelta(seconds=delay)
        self._pending[intent.id] = PendingExit(intent, due, reason or "refused or partly filled")
        log.warning("exit_pending", instrument=intent.instrument, tag=intent.tag,
                    attempt=purpose.attempt, quantity=intent.quantity,
                    tradingsymbol=intent.tradingsymbol, due=due.isoformat())
        self._refresh(intent.instrument)
        self._wake.set()

    def has_pending(self, instrument: str) -> bool:
        return any(p.intent.instrument == instrument for p in self._pending.values())

    def pending(self) -> list[PendingExit]:
        return sorted(self._pending.values(), key=lambda p: (p.due, p.intent.id))

    def report(self) -> list[dict[str, Any]]:
        """What `/status` shows of each pending exit."""
        return [{"instrument": p.intent.instrument, "tag": p.intent.tag,
                 "tradingsymbol": p.intent.tradingsymbol, "quantity": p.intent.quantity,
                 "position_ids": list(p.intent.position_ids), "attempt": p.attempt,
                 "next_attempt_at": p.due.isoformat(), "last_reason": p.reason}
                for p in self.pending()]

    def _refresh(self, instrument: str) -> None:
        count = sum(1 for p in self._pending.values() if p.intent.instrument == instrument)
        self._metrics.exits_pending.labels(instrument).set(count)
        key = EXIT_PENDING + instrument
        if count:
            self._readiness.block_entries(key, key, instrument)
        else:
            self._readiness.unblock(key)

    # -- carrying them out ----------------------------------------------------------------
    async def run(self) -> None:
        """Attempt what is due, then wait a poll interval (less, when a new one arrives)."""
        while True:
            await self.attempt_due()
            self._wake.clear()
            await woken(self._wake, self._poll_s)

    async def attempt_due(self) -> int:
        """Attempt every pending exit whose time has come; return how many were attempted."""
        attempted = 0
        for pending in self.pending():
            now = self._clock()
            if pending.due > now:
                continue
            opens = self._calendar.next_session_open(self._instruments[pending.intent.instrument],
                                                     now)
            if opens > now:  # outside the session: the venue would only refuse it
                pending.due, pending.reason = opens, "market closed"
                continue
            if self._broker.unavailable_reason == "token_expired":
                continue  # no session with the broker: try again once there is one
            attempted += 1
            await self._attempt(pending)
        return attempted

    def quiet_at(self, instrument: str, price: Decimal) -> bool:
        """Whether `settle_locked` would read nothing: no pending exit of the instrument
        has an order at the venue."""
        return not any(p.intent.instrument == instrument and p.intent.broker_order_id
                       for p in self._pending.values())

    async def settle_locked(self, instrument: str, price: Decimal) -> None:
        """Before a decision on `instrument` (its lock held): carry out each pending exit
        whose order the venue has already finished — a fired broker stop's, typically — so
        the decision sees its layer closed however soon after the fill it comes. One read
        per such order; one still working is left to its turn."""
        for pending in [p for p in self.pending() if p.intent.instrument == instrument
                        and p.intent.broker_order_id]:
            ids = str(pending.intent.broker_order_id).split(",")
            orders = [await self._broker.order(i) for i in ids]
            if all(o.is_final for o in orders):
                await self._attempt(pending, locked=True)

    async def _attempt(self, pending: PendingExit, *, locked: bool = False) -> None:
        intent = pending.intent
        try:
            async with AsyncExitStack() as stack:
                if not locked:
                    await stack.enter_async_context(self._locks(intent.instrument))
                # Taken off the list only under the lock: a decision that held it may have
                # carried this exit out meanwhile (`settle_locked`).
                if self._pending.get(intent.id) is not pending:
                    return
                del self._pending[intent.id]
                current = await self.flow.store.intent(intent.id)
                if current is None or not current.is_unresolved:
                    return  # resolved meanwhile (by recovery, or a signal's own order)
                failpoints.reached("before_exit_retry")
                outcome = await self.flow.complete(current, fresh=False)
            log.info("exit_retried", instrument=intent.instrument, tag=intent.tag,
                     attempt=pending.attempt, outcome=outcome.outcome, reason=outcome.reason)
        except (*TRANSIENT_ERRORS, BrokerError) as exc:
            self._again(pending, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # never lose the exit: keep it pending and say so loudly
            log.exception("exit_retry_failed", instrument=intent.instrument, tag=intent.tag)
            self._again(pending, f"{type(exc).__name__}")
        finally:
            self._refresh(intent.instrument)

    def _again(self, pending: PendingExit, reason: str) -> None:
        """The same intent once more, later (nothing about it was resolved)."""
        delay = retry_delay_s(pending.attempt + 1, self._first_delay_s, self._max_delay_s)
        pending.due, pending.reason = self._clock() + timedelta(seconds=delay), reason
        self._pending[pending.intent.id] = pending
        log.warning("exit_retry_deferred", instrument=pending.intent.instrument,
                    tag=pending.intent.tag, reason=reason, due=pending.due.isoformat())
