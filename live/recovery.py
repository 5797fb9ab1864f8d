"""Startup recovery: resolve intents by tag, reconcile with the broker, resume the inbox."""

from __future__ import annotations

from datetime import timedelta

import structlog

from core.db_state_manager import DatabaseStateManager
from core.reconciliation import ACCEPTED_EVENT, accepted, book_positions, diff_positions
from core.specs import PortfolioConfig
from live import failpoints
from live.brokers.base import Broker
from live.engine import LiveTradingEngine
from live.order_flow import OrderFlow

log = structlog.get_logger(__name__)


async def recover(db: DatabaseStateManager, broker: Broker, engine: LiveTradingEngine,
                  flow: OrderFlow, config: PortfolioConfig) -> list[str]:
    """Bring the book back to where it was and return the reasons not to trade (none: ready).

    Order matters: the cache first (decisions read it), then every unresolved intent (the
    broker may hold orders the book has not recorded), then the broker comparison (with all
    intents final, book and broker must agree), then the signals still waiting.
    """
    await db.load_cache()
    for intent in await db.load_unresolved_intents():
        deadline = None
        if intent.purpose.get("kind") == "entry" and intent.signal_id is not None:
            record = await db.signal(intent.signal_id)
            if record is not None:
                deadline = record.received_at + timedelta(seconds=config.max_entry_delay_s)
        outcome = await flow.complete(intent, fresh=False, deadline=deadline)
        log.info("intent_resolved", intent_id=intent.id, tag=intent.tag,
                 outcome=outcome.outcome, reason=outcome.reason)
        failpoints.reached("during_recovery")
    differences = diff_positions(book_positions(await db.all_live_layers()),
                                 await broker.positions())
    # An operator may have accepted the book's side of exactly these quantities.
    waived = accepted(await db.latest_event(ACCEPTED_EVENT))
    reasons = [f"position mismatch {d.describe()}" for d in differences
               if (d.tradingsymbol, d.book, d.broker) not in waived]
    for reason in reasons:
        log.error("reconciliation_mismatch", detail=reason)
    engine.entry_blocks = reasons
    pending = await db.load_pending_signals()
    for record in pending:
        if record.status == "received":
            await engine.enqueue_stored(record)
    # Stored signals are queued before any worker runs, so they go first (lower ids).
    engine.start_processing()
    await engine.drain()
    log.info("recovered", resumed_signals=len(pending), mismatches=len(reasons))
    return reasons
