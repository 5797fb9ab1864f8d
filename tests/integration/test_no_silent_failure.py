"""A signal that cannot be processed ends decided and visible — never silently skipped — and a
database outage or a stuck startup stage is named in /ready (real PostgreSQL)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from core.db_state_manager import DatabaseStateManager
from live.daemon import watch_database
from live.metrics import Metrics
from live.readiness import Readiness
from live.recovery import run_stage
from live.schema_migrations import apply_migrations
from tests.support.trading import PORTFOLIO


def count(postgresql, table: str, where: str = "true") -> int:
    return postgresql.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]


@pytest.fixture
def runs_config():
    """Equity compounded far past any real account."""
    return PORTFOLIO.model_copy(update={"initial_capital": Decimal("1e17")})


async def test_a_fill_the_book_cannot_hold_is_decided_error_once_and_stays_visible(
        runs, postgresql):
    first = await runs()
    entry = await first.send("BASE_ENTRY", instrument="COPPER", price="900", stop="880",
                             atr="10")
    assert (entry.outcome, entry.result["lots"], entry.result["limiter"]) == (
        "executed", 50, "max_lots")  # sized on 1e17, held to the per-order cap
    # A price the field rules accept, but whose P&L (≈1.2e19) overflows the ledger's numeric.
    failed = await first.send("EXIT", instrument="COPPER", price="99000000000000")
    assert failed.outcome == "error"
    assert failed.reason == "processing error: NumericValueOutOfRange"
    # The exit's order filled at the broker but cannot be booked: that is named too.
    [exit_intent] = postgresql.execute(
        "SELECT tag FROM order_intents WHERE side = 'SELL'").fetchall()
    unbooked = f"unresolved_intent:{exit_intent[0]} (COPPER)"
    assert {"processing_error:COPPER", unbooked} <= set(first.readiness.reasons())
    blocked = await first.send("BASE_ENTRY", instrument="COPPER", price="900", stop="880",
                               atr="10")
    assert (blocked.outcome, blocked.reason) == (
        "rejected", f"entries blocked: processing_error:COPPER; {unbooked}")
    gold = await first.send("BASE_ENTRY")  # one instrument's failure blocks only its entries
    assert gold.outcome == "executed"

    second = await runs()  # a restart retries no signal, and names what is still wrong
    reasons = await second.recover()
    assert {"processing_error:COPPER", unbooked,
            "position mismatch COPPER: book 50, broker 0"} <= set(reasons)
    assert count(postgresql, "signal_log", "outcome = 'error'") == 1
    assert count(postgresql, "execution_log",
                 "event = 'signal_decided' AND details->>'outcome' = 'error'") == 1
    assert count(postgresql, "paper_orders", "side = 'SELL'") == 1  # sold once, never again


async def test_ready_names_the_database_while_it_is_unreachable(own_server):
    conninfo = own_server.address().conninfo()
    apply_migrations(conninfo)
    db = DatabaseStateManager(conninfo, pool_timeout_s=1, retry_window_s=1)
    await db.open()
    readiness = Readiness()
    readiness.started()
    watch = asyncio.create_task(watch_database(db, readiness, Metrics(), 0.2))
    try:
        await asyncio.sleep(0.5)
        assert readiness.reasons() == []
        await asyncio.to_thread(own_server.stop)
        for _ in range(50):
            if "database_unavailable" in readiness.reasons():
                break
            await asyncio.sleep(0.1)
        assert readiness.reasons() == ["database_unavailable"]
        await asyncio.to_thread(own_server.start)
        for _ in range(150):
            if not readiness.reasons():
                break
            await asyncio.sleep(0.1)
        assert readiness.reasons() == []
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await db.close()


async def test_a_startup_stage_past_its_timeout_is_named_and_still_finishes():
    readiness = Readiness()
    release = asyncio.Event()

    async def resolve_intents() -> str:
        await release.wait()  # e.g. the broker does not answer
        return "resolved"

    stage = asyncio.create_task(run_stage(readiness, "resolve_intents", 0.05, resolve_intents))
    await asyncio.sleep(0.01)
    assert readiness.reasons() == ["starting:resolve_intents"]
    await asyncio.sleep(0.1)
    assert readiness.reasons() == ["stalled:resolve_intents"]
    release.set()
    assert await stage == "resolved"
    readiness.started()
    assert readiness.reasons() == []
