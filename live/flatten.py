"""The kill switch (DOMAIN.md §11): HALTED first, every resting order the daemon owns
cancelled and each cancel confirmed, every open layer exited (reason FLATTEN), and flat
reported only once the broker's positions confirm it.

A flatten is a `flattens` row from the request until the broker confirms; its exits are
ordinary exit intents (no signal), so a crash anywhere leaves intents that recovery resolves
by tag and a row the next start resumes. A second request joins the one under way: one
flatten, never two sets of exit orders.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import structlog

from core.db_state_manager import DatabaseStateManager
from core.models import LayerStatus
from core.trading_state import FLATTEN, Actor, Flatten, TradingState
from live import failpoints
from live.brokers.base import Broker, BrokerOrder, OrderRejected, read_through_outages
from live.engine import LiveTradingEngine
from live.trading_control import TradingControl

FLATTENED = "flattened"
T = TypeVar("T")
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FlattenReport:
    flatten_id: int
    status: str  # "flat" once the broker confirms
    layers_closed: int
    orders_cancelled: int
    elapsed_ms: int


class Flattener:
    def __init__(self, db: DatabaseStateManager, broker: Broker, engine: LiveTradingEngine,
                 control: TradingControl, *, clock: Callable[[], datetime],
                 poll_s: float = 0.05):
        self._db = db
        self._broker = broker
        self._engine = engine
        self._control = control
        self._clock = clock
        self._poll_s = poll_s
        self._task: asyncio.Task[FlattenReport] | None = None
        self._starting = asyncio.Lock()
        self.current: Flatten | None = None
        self._progress: dict[str, Any] = {}

    async def request(self, reason: str, actor: Actor) -> asyncio.Task[FlattenReport]:
        """Start a flatten, or join the one under way; return its task."""
        async with self._starting:  # two requests at once: the second joins the first
            while True:
                if self._task is not None and not self._task.done():
                    return self._task
                async with self._db.transaction() as tx:
                    row = await tx.start_flatten(reason, actor, self._clock())
                    if row is not None:
                        record, _ = await self._control.set_in(
                            tx, TradingState.HALTED, f"flatten: {reason}", actor,
                            flatten_id=row.id)
                if row is not None:
                    self._control.published(record)
                    log.warning("flatten_started", flatten_id=row.id, reason=reason,
                                actor=actor)
                    failpoints.reached("after_flatten_halted")
                    return self._start(row)
                # One is recorded already (a crash left it): carry it on, unless it
                # finished in between, in which case this request starts a new one.
                resumed = await self._resume()
                if resumed is not None:
                    return resumed

    async def resume(self) -> asyncio.Task[FlattenReport] | None:
        """Carry on with a flatten a crash (or a stop) interrupted; None if there is none."""
        async with self._starting:
            return await self._resume()

    async def _resume(self) -> asyncio.Task[FlattenReport] | None:
        if self._task is not None and not self._task.done():
            return self._task
        row = await self._db.running_flatten()
        if row is None:
            return None
        record, _ = await self._control.set(TradingState.HALTED, f"flatten: {row.reason}",
                                            Actor(row.actor))
        log.warning("flatten_resumed", flatten_id=row.id, state=record.state)
        return self._start(row)

    def _start(self, row: Flatten) -> asyncio.Task[FlattenReport]:
        self.current = row
        self._progress = {"cancelled": 0, "layers_seen": 0, "layers_open": None}
        self._task = asyncio.create_task(self._until_flat(row), name=f"flatten-{row.id}")
        return self._task

    async def close(self) -> None:
        """Stop a flatten under way (its row stays `flattening`: the next start resumes it)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def report(self) -> dict[str, Any] | None:
        """What `/status` shows of the newest flatten of this run."""
        row = self.current
        if row is None:
            return None
        return {"flatten_id": row.id, "status": row.status, "reason": row.reason,
                "actor": row.actor, "requested_at": row.requested_at,
                "finished_at": row.finished_at, **self._progress}

    async def _until_flat(self, row: Flatten) -> FlattenReport:
        """Run the flatten until it is flat: a failure (an expired session, a database
        blip) is logged and the flatten carried on, never left half done."""
        delay = 1.0
        while True:
            try:
                return await self._run(row)
            except Exception:
                log.exception("flatten_interrupted", flatten_id=row.id, retry_in_s=delay)
                self._progress["last_error_retry_in_s"] = delay
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _run(self, row: Flatten) -> FlattenReport:
        started = time.monotonic()
        cancelled = await self._cancel_resting()
        self._progress["cancelled"] = cancelled
        seen: set[int] = set()
        symbols: set[str] = set()
        while True:
            layers = await self._db.all_live_layers()
            seen |= {x.id for x in layers}
            symbols |= {x.tradingsymbol or x.instrument for x in layers}
            self._progress.update(layers_seen=len(seen), layers_open=len(layers))
            if not layers and not await self._db.load_unresolved_intents():
                break
            # Layers already closing are left to their own exit (a retry, a roll): a
            # second sale of them could open a short.
            await asyncio.gather(*(self._exit(instrument) for instrument in sorted(
                {x.instrument for x in layers if x.status is LayerStatus.OPEN})))
            await asyncio.sleep(self._poll_s)
        await self._confirm_flat(symbols)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        async with self._db.transaction() as tx:
            finished = await tx.finish_flatten(row.id, len(seen), cancelled, self._clock())
            await tx.log_event(FLATTENED, flatten_id=row.id, layers_closed=len(seen),
                               orders_cancelled=cancelled, elapsed_ms=elapsed_ms)
        self.current = finished or row
        log.warning(FLATTENED, flatten_id=row.id, layers_closed=len(seen),
                    orders_cancelled=cancelled, elapsed_ms=elapsed_ms)
        return FlattenReport(row.id, "flat", len(seen), cancelled, elapsed_ms)

    async def _exit(self, instrument: str) -> None:
        outcome = await self._engine.operator_exit(instrument, "ALL", FLATTEN)
        if outcome is not None:
            log.info("flatten_exit", instrument=instrument, outcome=outcome.outcome,
                     reason=outcome.reason)
        failpoints.reached("after_flatten_exit")

    async def _cancel_resting(self) -> int:
        """Cancel every resting buy the daemon owns (entries, a roll's new leg) and wait
        until each is final. Its own sells are exits: they are left to fill."""
        cancelled = 0
        for order in await self._reading(self._broker.resting_orders):
            if order.side != "BUY":
                continue
            try:
                await self._reading(partial(self._broker.cancel, order))
            except OrderRejected as exc:  # final meanwhile: nothing to cancel
                log.info("flatten_cancel_refused", order_id=order.order_id, error=str(exc))
            await self._until_final(order)
            cancelled += 1
            self._progress["cancelled"] = cancelled
        return cancelled

    async def _until_final(self, order: BrokerOrder) -> None:
        while not (await self._reading(partial(self._broker.order, order.order_id))).is_final:
            await self._broker.wait_for_update(self._poll_s)

    async def _confirm_flat(self, symbols: set[str]) -> None:
        """Wait until the broker holds none of the contracts the book held (one read of
        all positions each time: a live venue allows ten reads a second, shared)."""
        while True:
            held = await self._reading(self._broker.positions)
            waiting = sorted(s for s in symbols if held.get(s, 0) != 0)
            if not waiting:
                self._progress.pop("broker_not_flat", None)
                return
            self._progress["broker_not_flat"] = waiting
            await asyncio.sleep(self._poll_s)

    async def _reading(self, call: Callable[[], Awaitable[T]]) -> T:
        return await read_through_outages(call, self._poll_s, 5.0)
