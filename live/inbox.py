"""The durable inbox: admission, one queue and one worker per instrument, waiters, drain, stop.

Signals are stored (durable) before anything else, then taken in arrival (id) order per
instrument — instruments run concurrently. What a signal does is the handler's business
(`live.engine`); this module only guarantees that every signal taken ends with an outcome
its waiter hears, even when the handler fails unexpectedly.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import structlog

from core.book_store import BookStore
from core.decisions import Verdict
from core.errors import Fenced
from core.models import (
    AdmissionRequest,
    NewSignal,
    Outcome,
    SignalAdmission,
    SignalOutcome,
    SignalRecord,
    SignalStatus,
)
from core.signals import InvalidSignal, Signal, freshness, parse_signal
from core.specs import PortfolioConfig
from live import failpoints
from live.group_commit import GroupCommit
from live.instrument_locks import InstrumentLocks
from live.loop_lag import LoopLag
from live.metrics import Metrics
from live.waiting import within

log = structlog.get_logger(__name__)
# An alert not stored within this is refused unstored (503): TradingView waits 3 s in all,
# and the decision may take its own share of that.
ADMIT_BUDGET_S = 1.0
RECENT_OUTCOMES = 10_000
# A webhook waits for its decision only with at most this many of its instrument's signals
# queued (itself included): behind more, the decision is not coming soon.
PATIENT_BEHIND = 3


@dataclass(frozen=True, slots=True)
class InboxItem:
    signal_id: int
    signal: Signal
    received_at: datetime
    recovered: bool = False  # loaded from the database: its state must be re-read


class SignalHandler(Protocol):
    locks: InstrumentLocks  # held by whatever moves an instrument's layers

    async def process(self, item: InboxItem) -> SignalOutcome:
        """Decide, persist and act on one signal; return its recorded outcome."""
        ...

    async def fail(self, item: InboxItem, error: Exception) -> SignalOutcome:
        """Record that processing `item` failed unexpectedly; return that outcome."""
        ...

    def decide_at_admission(self, item: InboxItem) -> Verdict | None:
        """The decision to commit with the signal's admission (no order, no I/O), or None."""
        ...

    async def decided_at_admission(self, item: InboxItem) -> None:
        """Take up a decision made at admission, once committed (lock still held)."""
        ...


@dataclass(frozen=True, slots=True)
class Arrival:
    """An alert on its way into the inbox: what is stored, and what the webhook heard."""

    signal: Signal
    new: NewSignal
    received_at: datetime
    late: str | None  # too old or too new: stored decided `rejected`


Answer = tuple[SignalAdmission, SignalOutcome | None]


class Inbox:
    def __init__(self, store: BookStore, handler: SignalHandler,
                 instruments: Collection[str], config: PortfolioConfig, *,
                 processed_by: str, clock: Callable[[], datetime], metrics: Metrics,
                 admit_budget_s: float = ADMIT_BUDGET_S, lag: LoopLag | None = None):
        self._store = store
        self._handler = handler
        self._instruments = instruments
        self._config = config
        self._processed_by = processed_by
        self._clock = clock
        self._metrics = metrics
        self._queues: dict[str, asyncio.Queue[InboxItem]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._busy: set[str] = set()
        self._waiters: dict[int, asyncio.Future[SignalOutcome]] = {}
        # The last outcomes, for a webhook whose signal was decided before it came to wait
        # (its admission is answered after the worker may already have taken it).
        self._recent: OrderedDict[int, SignalOutcome] = OrderedDict()
        self._queued: set[int] = set()
        self._behind: Counter[str] = Counter()  # per instrument: queued or in hand
        self._stopping = False
        # Nothing is processed until recovery has resolved what an earlier run left open.
        self._processing = asyncio.Event()
        # Alerts arriving while one admission commits share the next commit.
        self._intake: GroupCommit[Arrival, Answer] = GroupCommit(
            self._admit, budget_s=admit_budget_s)
        self._admit_budget_s = admit_budget_s
        # The event loop's lateness: how long an alert waited unread (run by the daemon).
        self.lag = lag or LoopLag()
        # A pair's standby stores each signal and hands it over (wakes the leader) instead
        # of taking it: only the leader decides.
        self.hand_over: Callable[[], Awaitable[None]] | None = None
        # Finding what an admission of unknown outcome stored (None: nothing to find), and
        # the alerts admitted meanwhile, queued once it is done.
        self._sweep: asyncio.Task[None] | None = None
        self._held_back: list[InboxItem] = []

    def start_processing(self) -> None:
        self._processing.set()

    # -- intake ---------------------------------------------------------------------------
    async def submit(self, signal: Signal, payload: dict[str, object],
                     received_at: datetime) -> Answer:
        """Store a signal durably; return its admission and, when already known, its outcome
        (a repeat, too late, or decided with its admission). Raises `Overloaded` if it could
        not be stored within the intake's budget (it is not stored)."""
        late = freshness(signal, received_at, self._config.max_signal_age_s,
                         self._config.max_future_skew_s)
        new = NewSignal(signal.fingerprint, signal.signal_type.value, signal.instrument,
                        signal.position, signal.timestamp, payload, received_at)
        return await self._intake.submit(Arrival(signal, new, received_at, late))

    @property
    def overloaded(self) -> bool:
        """Whether an alert arriving now would not be stored within the budget: the
        admissions queued are that far behind, or the loop is (the alert itself, unread,
        was sent that long ago)."""
        return self._intake.overloaded or self.lag.lag_s > self._admit_budget_s

    @property
    def unseen_wait_s(self) -> float:
        """About how long an alert read now waited before it was read."""
        return self.lag.lag_s

    async def _admit(self, arrivals: list[Arrival]) -> list[Answer]:
        """Admit a batch in one commit, with what can be decided at once decided in it;
        queue the rest for their instruments' workers, in id order."""
        held: dict[str, asyncio.Lock] = {}
        try:
            requests = [AdmissionRequest(a.new, a.late) for a in arrivals]
            if self._decides_at_admission():
                requests = self._decide_at_admission(arrivals, requests, held)
            try:
                admissions = await self._store.admit_signals(
                    requests, self._config.dedup_window_s, self._processed_by, self._clock())
            except BaseException:
                # It may have committed all the same: what it stored is found and taken.
                self._sweep_soon()
                raise
            self._metrics.admission_batch.observe(len(requests))
            failpoints.reached("after_signal_durable")
            answers = [await self._admitted(arrival, request, admission)
                       for arrival, request, admission in zip(arrivals, requests, admissions,
                                                              strict=True)]
        finally:
            for lock in held.values():
                lock.release()
        if self.hand_over is not None and any(
                answer[0].accepted and answer[1] is None for answer in answers):
            try:
                await self.hand_over()
            except Exception as exc:  # stored: the leader's poll finds them all the same
                log.warning("hand_over_failed", error=str(exc))
        return answers

    def _decides_at_admission(self) -> bool:
        """A leader (or single daemon), recovered, with nothing stored that it has not
        taken: a decision at admission never overtakes an earlier signal."""
        return self._processing.is_set() and self.hand_over is None and self._sweep is None

    def _sweep_soon(self) -> None:
        """Take whatever an admission whose outcome is unknown stored (it may have
        committed); admission decides nothing until that is done."""
        if self._sweep is not None or not self._processing.is_set() or self._stopping:
            return
        self._sweep = asyncio.create_task(self._sweep_stored(), name="inbox-sweep")
        self._sweep.add_done_callback(report_crash)

    async def _sweep_stored(self) -> None:
        delay = 0.05
        while not self._stopping:
            try:
                if self.hand_over is None:
                    await self.enqueue_waiting()
                break
            except Exception as exc:  # the database is away: the next round finds them
                log.warning("inbox_sweep_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._sweep = None
        held, self._held_back = self._held_back, []
        for item in sorted(held, key=lambda item: item.signal_id):
            if self.hand_over is None:
                self.enqueue(item)

    def _decide_at_admission(self, arrivals: list[Arrival], requests: list[AdmissionRequest],
                             held: dict[str, asyncio.Lock]) -> list[AdmissionRequest]:
        """Decide what needs no order, on instruments with nothing queued or in hand: their
        locks are taken (and put in `held`) until the batch commits — only those free at
        once, for the intake waits on no one. Once one of an instrument's signals is left
        to its worker, so are its later ones: order holds."""
        to_worker: set[str] = set()
        decided = []
        for arrival, request in zip(arrivals, requests, strict=True):
            instrument = arrival.signal.instrument
            verdict = None
            if arrival.late is None and instrument not in to_worker:
                if instrument not in held and self._idle(instrument):
                    lock = self._handler.locks(instrument)
                    if lock.try_acquire():
                        held[instrument] = lock
                if instrument in held:
                    verdict = self._verdict_at_admission(arrival)
                if verdict is None:
                    to_worker.add(instrument)
            decided.append(request if verdict is None else replace(
                request, outcome=verdict.outcome, reason=verdict.reason))
        return decided

    def _verdict_at_admission(self, arrival: Arrival) -> Verdict | None:
        try:
            return self._handler.decide_at_admission(
                InboxItem(0, arrival.signal, arrival.received_at))
        except Exception:  # the worker decides it, and records whatever goes wrong there
            log.exception("admission_decision_failed", instrument=arrival.signal.instrument)
            return None

    def _idle(self, instrument: str) -> bool:
        queue = self._queues.get(instrument)
        return instrument not in self._busy and (queue is None or queue.empty())

    async def _admitted(self, arrival: Arrival, request: AdmissionRequest,
                        admission: SignalAdmission) -> Answer:
        if not admission.accepted:
            return admission, None
        item = InboxItem(admission.signal_id, arrival.signal, arrival.received_at)
        if arrival.late is not None:
            self._count(arrival.signal, Outcome.REJECTED, 0.0)
            return admission, SignalOutcome(admission.signal_id, Outcome.REJECTED, arrival.late)
        if admission.outcome is not None:
            try:
                await self._handler.decided_at_admission(item)
            except Exception:  # committed: its answer stands whatever follows
                log.exception("admission_decision_follow_up_failed",
                              signal_id=admission.signal_id)
            self._count(arrival.signal, admission.outcome,
                        (self._clock() - arrival.received_at).total_seconds())
            return admission, SignalOutcome(admission.signal_id, admission.outcome,
                                            request.reason)
        if self._sweep is not None:
            # Queued after what the sweep finds: it may hold an earlier alert of this one's
            # instrument, stored by the admission whose outcome is unknown.
            self._held_back.append(item)
            self._waiters.setdefault(item.signal_id, asyncio.get_running_loop().create_future())
        elif self.hand_over is None:
            self.enqueue(item)
        return admission, None

    def enqueue(self, item: InboxItem) -> None:
        if item.signal_id in self._queued:
            return  # taken from the webhook and from the database during recovery
        self._queued.add(item.signal_id)
        self._behind[item.signal.instrument] += 1
        self._waiters.setdefault(item.signal_id, asyncio.get_running_loop().create_future())
        instrument = item.signal.instrument
        queue = self._queues.get(instrument)
        if queue is None:
            queue = self._queues[instrument] = asyncio.Queue()
            worker = asyncio.create_task(self._worker(instrument, queue),
                                         name=f"inbox-{instrument}")
            worker.add_done_callback(report_crash)
            self._workers[instrument] = worker
        queue.put_nowait(item)

    async def enqueue_waiting(self) -> int:
        """Queue every stored signal still waiting (recovery, a standby's hand-over);
        return how many were new here. A signal in hand when the query began is skipped:
        it stays `received` in the database until its decision commits."""
        in_hand = set(self._queued)
        pending = [record for record in await self._store.load_pending_signals()
                   if record.status is SignalStatus.RECEIVED
                   and record.id not in in_hand and record.id not in self._queued]
        for record in pending:
            await self.enqueue_stored(record)
        return len(pending)

    async def enqueue_stored(self, record: SignalRecord) -> None:
        """Queue a stored signal (recovery); one that no longer parses is rejected now."""
        try:
            signal = parse_signal(record.payload, self._instruments)
        except InvalidSignal as exc:
            await self._store.record_decision(record.id, Outcome.REJECTED, exc.phrase,
                                              self._processed_by, self._clock())
            return
        self.enqueue(InboxItem(record.id, signal, record.received_at, recovered=True))

    def patience_s(self, instrument: str, remaining_s: float) -> float:
        """How long a webhook waits for its signal's decision: not at all while its
        instrument's worker is behind (the sender hears `accepted` now, not late)."""
        return 0.0 if self._behind[instrument] > PATIENT_BEHIND else remaining_s

    async def wait_for_decision(self, signal_id: int, timeout_s: float) -> SignalOutcome | None:
        waiter = self._waiters.get(signal_id)
        if waiter is None:
            return self._recent.get(signal_id)
        try:
            return await within(timeout_s, asyncio.shield(waiter))
        except TimeoutError:
            return None

    async def drain(self) -> None:
        """Wait until every queued signal has been processed."""
        for queue in list(self._queues.values()):
            await queue.join()

    async def stop(self, timeout_s: float) -> None:
        """Finish the transitions in progress; leave queued signals for the next start."""
        self._stopping = True
        if self._sweep is not None:
            self._sweep.cancel()
        for name, task in self._workers.items():
            if name not in self._busy:
                task.cancel()
        busy = [task for name, task in self._workers.items() if name in self._busy]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=timeout_s)
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
                        await self._take(item)
                    self._queued.discard(item.signal_id)
                    self._behind[instrument] -= 1
                    queue.task_done()
            finally:
                self._busy.discard(instrument)

    async def _take(self, item: InboxItem) -> None:
        """Process one signal; whatever happens, it ends with an outcome and a told waiter."""
        with structlog.contextvars.bound_contextvars(signal_id=item.signal_id,
                                                     instrument=item.signal.instrument):
            try:
                outcome = await self._handler.process(item)
            except asyncio.CancelledError:
                # Shutdown: the signal keeps no outcome; the next start resumes it.
                log.warning("processing_cancelled", signal_id=item.signal_id)
                raise
            except Fenced:
                # A newer leader has the book: the signal is left undecided, for it to take.
                log.warning("signal_left_to_new_leader", signal_id=item.signal_id)
                return
            except Exception as exc:  # the task boundary: never limp past a broken consumer
                log.exception("processing_failed", signal_id=item.signal_id,
                              instrument=item.signal.instrument, error=type(exc).__name__)
                outcome = await self._failed(item, exc)
        self._publish(item, outcome)

    async def _failed(self, item: InboxItem, error: Exception) -> SignalOutcome:
        try:
            return await self._handler.fail(item, error)
        except Exception:
            # Not even the failure could be recorded: the waiter still hears of it, and the
            # undecided signal is resumed at the next start.
            log.exception("processing_failure_not_recorded", signal_id=item.signal_id)
            return SignalOutcome(item.signal_id, Outcome.ERROR,
                                 f"processing error: {type(error).__name__}")

    def _publish(self, item: InboxItem, outcome: SignalOutcome) -> None:
        elapsed = (self._clock() - item.received_at).total_seconds()
        self._count(item.signal, outcome.outcome, elapsed)
        self._recent[item.signal_id] = outcome
        if len(self._recent) > RECENT_OUTCOMES:
            self._recent.popitem(last=False)
        waiter = self._waiters.pop(item.signal_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    def _count(self, signal: Signal, outcome: str, elapsed_s: float) -> None:
        self._metrics.signal_outcomes.labels(signal.signal_type.value, outcome).inc()
        self._metrics.decision_latency.labels(outcome).observe(max(elapsed_s, 0.0))


def report_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task_crashed", task=task.get_name(), error=repr(task.exception()))
