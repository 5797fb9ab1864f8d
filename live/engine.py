"""LiveTradingEngine: the durable inbox's consumer — serial per instrument, concurrent across.

Signals are taken in arrival (id) order per instrument. Each is decided by the pure core from
cached state, and its outcome committed in one transaction; orders go through `OrderFlow`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
import structlog
from psycopg_pool import PoolTimeout

from core.accounting import sizing_equity
from core.db_state_manager import DatabaseStateManager
from core.decisions import (
    BookSnapshot,
    EntryPlan,
    ExitPlan,
    MarketDataPlan,
    Verdict,
    check_execution_price,
    decide_base_entry,
    decide_exit,
    decide_market_data,
    decide_pyramid,
)
from core.errors import SignalAlreadyDecided, VersionConflict
from core.exposure import Exposure, exposure
from core.models import (
    BASE_LAYER,
    Layer,
    NewSignal,
    OrderIntent,
    SignalAdmission,
    SignalOutcome,
    SignalRecord,
    SignalType,
)
from core.signals import InvalidSignal, Signal, entry_waited_too_long, freshness, parse_signal
from core.specs import InstrumentSpec, PortfolioConfig
from live import failpoints
from live.brokers.base import Broker, BrokerError
from live.metrics import Metrics
from live.order_flow import OrderFlow

TRANSIENT = (psycopg.OperationalError, PoolTimeout)
ENTRY_TYPES = frozenset({SignalType.BASE_ENTRY, SignalType.PYRAMID})
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InboxItem:
    signal_id: int
    signal: Signal
    received_at: datetime
    recovered: bool = False  # loaded from the database: its state must be re-read


class LiveTradingEngine:
    def __init__(self, db: DatabaseStateManager, broker: Broker,
                 instruments: dict[str, InstrumentSpec], config: PortfolioConfig,
                 flow: OrderFlow, *, processed_by: str, clock: Callable[[], datetime],
                 metrics: Metrics,
                 price_limits_percent: tuple[Decimal, Decimal] | None = None):
        self._db = db
        self._broker = broker
        self._instruments = instruments
        self._config = config
        self._flow = flow
        self._processed_by = processed_by
        self._clock = clock
        self._metrics = metrics
        # (base, pyramid) divergence limits of the quote check; None: no quote check.
        self._price_limits = price_limits_percent if broker.price_check else None
        self._queues: dict[str, asyncio.Queue[InboxItem]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._busy: set[str] = set()
        self._waiters: dict[int, asyncio.Future[SignalOutcome]] = {}
        self._last_price: dict[str, Decimal] = {}
        # Entry decisions share one portfolio cap: decide them one at a time, counting the
        # risk of entries whose orders are still in flight.
        self._entry_lock = asyncio.Lock()
        # Risk, volatility and margin of entries decided but not yet filled, by reservation.
        self._inflight: dict[int, tuple[Decimal, Decimal, Decimal]] = {}
        self.entry_blocks: list[str] = []
        self.paused = False
        self._stopping = False
        self._queued: set[int] = set()
        # Nothing is processed until recovery has resolved what an earlier run left open.
        self._processing = asyncio.Event()

    def start_processing(self) -> None:
        self._processing.set()

    # -- intake ---------------------------------------------------------------------------
    async def submit(self, signal: Signal, payload: dict[str, object],
                     received_at: datetime) -> tuple[SignalAdmission, SignalOutcome | None]:
        """Store a signal durably; return its admission and, when already known, its outcome."""
        late = freshness(signal, received_at, self._config.max_signal_age_s,
                         self._config.max_future_skew_s)
        new = NewSignal(signal.fingerprint, signal.signal_type.value, signal.instrument,
                        signal.position, signal.timestamp, payload, received_at)
        admission = await self._db.admit_signal(new, self._config.dedup_window_s, late,
                                                self._processed_by)
        failpoints.reached("after_signal_durable")
        if not admission.accepted:
            return admission, None
        if late:
            self._count(signal, "rejected", 0.0)
            return admission, SignalOutcome(admission.signal_id, "rejected", late)
        self.enqueue(InboxItem(admission.signal_id, signal, received_at))
        return admission, None

    def enqueue(self, item: InboxItem) -> None:
        if item.signal_id in self._queued:
            return  # taken from the webhook and from the database during recovery
        self._queued.add(item.signal_id)
        self._waiters.setdefault(item.signal_id, asyncio.get_running_loop().create_future())
        queue = self._queues.get(item.signal.instrument)
        if queue is None:
            queue = self._queues[item.signal.instrument] = asyncio.Queue()
            self._workers[item.signal.instrument] = asyncio.create_task(
                self._worker(item.signal.instrument, queue),
                name=f"engine-{item.signal.instrument}")
            self._workers[item.signal.instrument].add_done_callback(_report_crash)
        queue.put_nowait(item)

    async def enqueue_stored(self, record: SignalRecord) -> None:
        """Queue a stored signal (recovery); one that no longer parses is rejected now."""
        try:
            signal = parse_signal(record.payload, self._instruments)
        except InvalidSignal as exc:
            await self._db.record_decision(record.id, "rejected", exc.phrase,
                                           self._processed_by, self._clock())
            return
        self.enqueue(InboxItem(record.id, signal, record.received_at, recovered=True))

    async def wait_for_decision(self, signal_id: int, timeout_s: float) -> SignalOutcome | None:
        waiter = self._waiters.get(signal_id)
        if waiter is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            return None

    async def drain(self) -> None:
        """Wait until every queued signal has been processed."""
        for queue in list(self._queues.values()):
            await queue.join()

    async def stop(self, timeout_s: float) -> None:
        """Finish the transitions in progress; leave queued signals for the next start."""
        self._stopping = True
        idle = [task for name, task in self._workers.items() if name not in self._busy]
        for task in idle:
            task.cancel()
        busy = [task for name, task in self._workers.items() if name in self._busy]
        if busy:
            done, pending = await asyncio.wait(busy, timeout=timeout_s)
            for task in pending:
                log.warning("stop_timeout_cancelling", task=task.get_name())
                task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)

    # -- processing -----------------------------------------------------------------------
    async def _worker(self, instrument: str, queue: asyncio.Queue[InboxItem]) -> None:
        await self._processing.wait()
        while not self._stopping:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            batch.sort(key=lambda item: item.signal_id)
            self._busy.add(instrument)
            try:
                for item in batch:
                    if not self._stopping:
                        await self._process_guarded(item)
                    self._queued.discard(item.signal_id)
                    queue.task_done()
            finally:
                self._busy.discard(instrument)

    async def _process_guarded(self, item: InboxItem) -> None:
        try:
            with structlog.contextvars.bound_contextvars(signal_id=item.signal_id,
                                                         instrument=item.signal.instrument):
                await self._process_until_decided(item)
        except asyncio.CancelledError:
            log.warning("processing_cancelled", signal_id=item.signal_id)
            raise
        except Exception:
            # The signal keeps no outcome: the next start resumes it from the database.
            log.exception("processing_failed", signal_id=item.signal_id,
                          instrument=item.signal.instrument)

    async def _process_until_decided(self, item: InboxItem) -> None:
        attempt, delay = 0, 0.05
        while True:
            try:
                outcome = await self._process(item, reread=item.recovered or attempt > 0)
                break
            except (VersionConflict, SignalAlreadyDecided) as exc:
                # Someone else moved the book or this signal: reload and decide again.
                log.warning("conflict_reloading", signal_id=item.signal_id, error=str(exc))
                await self._db.load_cache()
                await asyncio.sleep(min(0.01 * attempt, 1.0))
            except TRANSIENT as exc:
                self._set_paused(True)
                log.warning("database_unavailable", signal_id=item.signal_id, error=str(exc),
                            retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            attempt += 1
        self._set_paused(False)
        self._publish(item, outcome)

    def _publish(self, item: InboxItem, outcome: SignalOutcome) -> None:
        elapsed = (self._clock() - item.received_at).total_seconds()
        self._count(item.signal, outcome.outcome, elapsed)
        waiter = self._waiters.pop(item.signal_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    def _count(self, signal: Signal, outcome: str, elapsed_s: float) -> None:
        self._metrics.signal_outcomes.labels(signal.signal_type.value, outcome).inc()
        self._metrics.decision_latency.labels(outcome).observe(max(elapsed_s, 0.0))

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._metrics.paused.set(int(paused))

    async def _process(self, item: InboxItem, reread: bool) -> SignalOutcome:
        if reread:
            resumed = await self._resume(item)
            if resumed is not None:
                return resumed
        signal = item.signal
        self._last_price[signal.instrument] = signal.price
        kind = signal.signal_type
        if kind is SignalType.EOD_MONITOR:
            return await self._record(item, Verdict("ignored", "EOD monitor recorded"))
        if kind in ENTRY_TYPES:
            if entry_waited_too_long(item.received_at, self._clock(),
                                     self._config.max_entry_delay_s):
                return await self._record(item, Verdict("rejected", "stale"))
            if self.entry_blocks:
                return await self._record(item, Verdict(
                    "rejected", "entries blocked: " + "; ".join(self.entry_blocks)))
            if self._broker.unavailable_reason is not None:
                return await self._record(item, Verdict("rejected", "broker_unavailable"))
            return await self._enter(item)
        layers = await self._db.live_layers(signal.instrument)
        if kind is SignalType.EXIT:
            plan = decide_exit(signal, layers)
        else:
            plan = decide_market_data(signal, self._instruments[signal.instrument], layers)
        if isinstance(plan, Verdict):
            return await self._record(item, plan)
        return await self._exit(item, plan)

    async def _resume(self, item: InboxItem) -> SignalOutcome | None:
        """Return the outcome of a signal already decided or in flight, else None."""
        record = await self._db.signal(item.signal_id)
        if record is None or record.status == "received":
            return None
        if record.status == "processed":
            return SignalOutcome(record.id, record.outcome or "", record.reason)
        for intent in await self._db.intents_for_signal(item.signal_id):
            if intent.status in ("pending", "placed", "partial"):
                return await self._flow.complete(intent, fresh=False,
                                                 deadline=self._deadline(item, intent))
        return None

    async def _record(self, item: InboxItem, verdict: Verdict) -> SignalOutcome:
        await self._db.record_decision(item.signal_id, verdict.outcome, verdict.reason,
                                       self._processed_by, self._clock())
        return SignalOutcome(item.signal_id, verdict.outcome, verdict.reason)

    async def _enter(self, item: InboxItem) -> SignalOutcome:
        signal = item.signal
        spec = self._instruments[signal.instrument]
        # The lock covers only snapshot → decision → reservation of the entry's risk, so
        # that entries on different instruments never pass one portfolio cap twice. With a
        # warm cache nothing inside awaits I/O; the writes happen after it is released.
        async with self._entry_lock:
            layers = await self._db.live_layers(signal.instrument)
            try:
                book = await self.book_snapshot()  # asks the venue for its free margin
            except BrokerError as exc:
                log.warning("entry_without_broker", error=str(exc))
                return await self._record(item, Verdict("rejected", "broker_unavailable"))
            pyramiding = await self._db.pyramiding_state(signal.instrument)
            if signal.signal_type is SignalType.BASE_ENTRY:
                plan = decide_base_entry(signal, spec, self._config, layers, book)
            else:
                plan = decide_pyramid(signal, spec, self._config, layers, pyramiding, book)
            reservation: object | None = None
            if isinstance(plan, EntryPlan):
                assert signal.atr is not None
                reservation = object()
                self._inflight[id(reservation)] = (
                    (signal.price - plan.initial_stop) * plan.lots * spec.point_value,
                    signal.atr * plan.lots * spec.point_value, plan.lots * spec.margin_per_lot)
        quote: Decimal | None = None
        try:
            if isinstance(plan, EntryPlan) and self._price_limits is not None:
                plan, quote = await self._check_price(signal, plan)
            if isinstance(plan, Verdict):
                return await self._record(item, plan)
            intent = await self._open_entry(item, plan, pyramiding, quote)
            failpoints.reached("after_intent_commit")
            return await self._flow.complete(intent, fresh=True,
                                             deadline=self._deadline(item, intent))
        finally:
            if reservation is not None:
                self._inflight.pop(id(reservation), None)

    async def _check_price(self, signal: Signal, plan: EntryPlan
                           ) -> tuple[Verdict | EntryPlan, Decimal | None]:
        """Check the entry against the venue's quote (2 % base, 1 % pyramid); return the
        decision and the quote it was checked against."""
        assert self._price_limits is not None
        symbol = self._broker.tradingsymbol(signal.instrument, self._clock())
        try:
            quote = await self._broker.quote(symbol)
        except BrokerError as exc:
            log.warning("quote_unavailable", tradingsymbol=symbol, error=str(exc))
            return Verdict("rejected", "broker_unavailable"), None
        if quote is None:
            return Verdict("rejected", f"no quote for {symbol}"), None
        pyramid = signal.signal_type is SignalType.PYRAMID
        limit = self._price_limits[1] if pyramid else self._price_limits[0]
        return check_execution_price(plan, signal, quote, pyramid, limit), quote

    async def _open_entry(self, item: InboxItem, plan: EntryPlan, pyramiding: object,
                          quote: Decimal | None) -> OrderIntent:
        signal = item.signal
        # A base entry's trade id is allocated when it fills; a pyramid joins its base's trade.
        trade_id = None if plan.layer == BASE_LAYER else pyramiding.trade_id  # type: ignore
        async with self._db.transaction() as tx:
            return await self._flow.open_intent(
                tx, item.signal_id, signal.instrument, "BUY", plan.lots,
                quote if quote is not None else signal.price,
                {"kind": "entry", "layer": plan.layer, "trade_id": trade_id,
                 "initial_stop": str(plan.initial_stop), "atr": str(signal.atr),
                 "limiter": plan.limiter, "quoted": quote is not None})

    async def _exit(self, item: InboxItem, plan: ExitPlan | MarketDataPlan) -> SignalOutcome:
        signal = item.signal
        trails = plan.trails if isinstance(plan, MarketDataPlan) else ()
        exit_plan = plan.exit if isinstance(plan, MarketDataPlan) else plan
        async with self._db.transaction() as tx:
            for layer, trail in trails:
                await tx.update_layer_later(layer, highest_close=trail.highest_close,
                                            current_stop=trail.current_stop)
            if exit_plan is None:
                await tx.decide_signal(item.signal_id, "executed", None, self._processed_by,
                                       self._clock())
                intent = None
            else:
                for layer in exit_plan.layers:
                    await tx.update_layer_later(layer, status="closing")
                ids = tuple(layer.id for layer in exit_plan.layers)
                intent = await self._flow.open_intent(
                    tx, item.signal_id, signal.instrument, "SELL", exit_plan.lots, signal.price,
                    {"kind": "exit", "reason": exit_plan.reason, "position_ids": list(ids)},
                    position_ids=ids)
        stops = {str(layer.id): str(trail.current_stop) for layer, trail in trails}
        if intent is not None:
            failpoints.reached("after_intent_commit")
        if intent is None:
            return SignalOutcome(item.signal_id, "executed", None, {"stops": stops})
        outcome = await self._flow.complete(intent, fresh=True)
        if stops:
            outcome.result["stops"] = stops
        return outcome

    def _deadline(self, item: InboxItem, intent: OrderIntent) -> datetime | None:
        if intent.purpose.get("kind") != "entry":
            return None  # exits are always carried out
        return item.received_at + timedelta(seconds=self._config.max_entry_delay_s)

    # -- the book -------------------------------------------------------------------------
    def last_price(self, layer: Layer) -> Decimal:
        return self._last_price.get(layer.instrument, layer.entry_price)

    async def exposure(self) -> Exposure:
        """Return the book's exposure at the last prices the engine has seen."""
        return exposure(await self._db.portfolio_state(), await self._db.all_live_layers(),
                        self._instruments, self.last_price)

    async def book_snapshot(self) -> BookSnapshot:
        """Return what sizing needs: equities, free margin, open risk and volatility —
        counting the entries decided but not filled yet."""
        book = await self.exposure()
        sizing = sizing_equity(self._config, book.equity.closed, book.equity.blended,
                               book.equity.high)
        pending = list(self._inflight.values())
        risk = book.risk + sum((r for r, _, _ in pending), Decimal(0))
        vol = book.volatility + sum((v for _, v, _ in pending), Decimal(0))
        used = book.margin_used + sum((m for _, _, m in pending), Decimal(0))
        margin = await self._broker.available_margin(sizing, used)
        return BookSnapshot(sizing, book.equity.blended, margin, risk, vol)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task_crashed", task=task.get_name(), error=repr(task.exception()))

