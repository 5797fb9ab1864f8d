"""Startup recovery in named stages: load the book, resolve intents by tag, reconcile with the
broker, resume the inbox. A stage past its timeout is named in `/ready` (`stalled:<stage>`)
and keeps going: stopping half-way would leave the broker unresolved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import structlog

from core.book_store import BookStore
from core.db_pool import TRANSIENT_ERRORS
from core.intents import EntryPurpose, Sacred
from core.models import OrderIntent, SignalOutcome
from core.signals import entry_deadline
from core.specs import PortfolioConfig
from live import failpoints
from live.broker_stops import BrokerStops
from live.brokers.base import Broker
from live.inbox import Inbox
from live.instrument_locks import InstrumentLocks
from live.metrics import Metrics
from live.order_flow import OrderFlow
from live.readiness import MISMATCH, Readiness
from live.reconciler import Reconciler
from live.waiting import within

T = TypeVar("T")
log = structlog.get_logger(__name__)


async def run_stage(readiness: Readiness, name: str, timeout_s: float,
                    work: Callable[[], Awaitable[T]]) -> T:
    """Run one startup stage; past `timeout_s` it is reported stalled, and still awaited."""
    readiness.starting(name)
    log.info("startup_stage", stage=name)
    task = asyncio.ensure_future(work())
    try:
        return await within(timeout_s, asyncio.shield(task))
    except TimeoutError:
        readiness.stage_stalled(name)
        log.error("startup_stage_stalled", stage=name, timeout_s=timeout_s)
        return await task
    finally:
        if not task.done():
            task.cancel()


async def recover(db: BookStore, broker: Broker, inbox: Inbox, flow: OrderFlow,
                  config: PortfolioConfig, readiness: Readiness, stage_timeout_s: float,
                  reconciler: Reconciler | None = None,
                  stops: BrokerStops | None = None) -> None:
    """Bring the book back to where it was; `readiness` then says whether it can trade.

    Order matters: the cache first (decisions read it), then every unresolved intent (the
    broker may hold orders the book has not recorded), then the broker comparison (with all
    intents final, book and broker must agree), then the signals still waiting.
    `reconciler`: the daemon's, which keeps comparing afterwards (one of its own if None).
    """
    if reconciler is None:
        reconciler = Reconciler(db, broker, flow.instruments, readiness,
                                locks=InstrumentLocks(), metrics=Metrics(), clock=flow.clock)
    # The broker stops are loaded before intents are resolved (an exit cancels its layers'
    # stops), beside the cache: each read's wait for the database is the other's time to
    # build its rows.
    await run_stage(readiness, "load", stage_timeout_s,
                    lambda: together(db.load_cache(), *([stops.load()] if stops else [])))
    await run_stage(readiness, "resolve_intents", stage_timeout_s,
                    lambda: resolve_intents(db, flow, config, readiness))
    if stops is not None:
        await run_stage(readiness, "broker_stops", stage_timeout_s,
                        lambda: protect(stops, db, flow, config, readiness))
    mismatches = await run_stage(readiness, "reconcile", stage_timeout_s,
                                 lambda: reconcile(reconciler, readiness))
    resumed = await run_stage(readiness, "resume_signals", stage_timeout_s,
                              lambda: resume_signals(inbox))
    readiness.started()
    log.info("recovered", resumed_signals=resumed, mismatches=mismatches)


async def together(*works: Awaitable[object]) -> None:
    """Run `works` side by side until all are done; the first failure cancels the rest (as
    one after another, nothing runs past a failure) and is raised."""
    tasks = [asyncio.ensure_future(work) for work in works]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def resolve_intents(db: BookStore, flow: OrderFlow, config: PortfolioConfig,
                          readiness: Readiness) -> None:
    """Drive every intent an earlier run left open to its final state, and book it.

    What booking one commits to go at once (a roll's open leg after its close leg) is driven
    too, so that a roll interrupted by a crash is finished before the daemon says it is
    ready; later attempts of refused orders keep their backoff (the exit driver has them).
    """
    seen: set[int] = set()
    while True:
        todo = [i for i in await db.load_unresolved_intents()
                if i.id not in seen and (not seen or _goes_at_once(i))]
        if not todo:
            return
        seen.update(i.id for i in todo)
        await _resolve_all(db, flow, config, readiness, todo)


def _goes_at_once(intent: OrderIntent) -> bool:
    return isinstance(intent.purpose, Sacred) and intent.purpose.attempt == 0


async def _resolve_all(db: BookStore, flow: OrderFlow, config: PortfolioConfig,
                       readiness: Readiness, intents: list[OrderIntent]) -> None:
    for intent in intents:
        deadline = None
        if isinstance(intent.purpose, EntryPurpose) and intent.signal_id is not None:
            record = await db.signal(intent.signal_id)
            if record is not None:
                deadline = entry_deadline(record.received_at, config.max_entry_delay_s)
        outcome = await _resolve(flow, intent, deadline, readiness)
        if outcome is None:
            continue
        log.info("intent_resolved", intent_id=intent.id, tag=intent.tag,
                 outcome=outcome.outcome, reason=outcome.reason)
        failpoints.reached("during_recovery")


async def _resolve(flow: OrderFlow, intent: OrderIntent, deadline: datetime | None,
                   readiness: Readiness) -> SignalOutcome | None:
    """Resolve one intent, waiting out database faults; None if the book cannot hold it."""
    delay = 0.05
    while True:
        try:
            return await flow.complete(intent, fresh=False, deadline=deadline)
        except TRANSIENT_ERRORS as exc:  # the database will answer again: wait for it
            log.warning("database_unavailable", intent_id=intent.id, error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        except Exception:  # one intent the book cannot hold must not stop the others
            log.exception("intent_unresolvable", intent_id=intent.id, tag=intent.tag,
                          instrument=intent.instrument)
            readiness.processing_failed(intent.instrument)
            readiness.unresolved_intent(intent.instrument, intent.tag)
            return None


async def protect(stops: BrokerStops, db: BookStore, flow: OrderFlow, config: PortfolioConfig,
                  readiness: Readiness) -> None:
    """Settle the broker stops a crash left pending, book those that fired while the daemon
    was down (their exits are driven now, at the broker's price), and give every open layer
    its stop."""
    if await stops.recover():
        await resolve_intents(db, flow, config, readiness)


async def reconcile(reconciler: Reconciler, readiness: Readiness) -> int:
    """Compare the broker's positions with the book as the running daemon does: book what
    the broker squared off, block the entries of an instrument whose difference nothing
    explains (unless the operator accepted it). Return the differences left."""
    # Intents are resolved by now: one still unresolved is stuck, its difference shown.
    await reconciler.check(compare_in_flight=True)
    return len(readiness.block_reasons(MISMATCH))


async def resume_signals(inbox: Inbox) -> int:
    """Queue the signals still waiting, then let the workers run and drain them."""
    pending = await inbox.enqueue_waiting()
    # Stored signals are queued before any worker runs, so they go first (lower ids).
    inbox.start_processing()
    await inbox.drain()
    return pending
