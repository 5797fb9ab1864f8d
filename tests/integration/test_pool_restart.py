"""The pool outlives a database restart: the same manager works again once the server is back."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import psycopg

from core.db_state_manager import DatabaseStateManager
from core.models import LedgerType
from live.schema_migrations import apply_migrations


async def test_operations_succeed_after_server_restart(own_server):
    conninfo = own_server.address().conninfo()
    apply_migrations(conninfo)
    db = DatabaseStateManager(conninfo, min_size=3, max_size=5, retry_window_s=30)
    await db.open()
    try:
        async with db.transaction() as tx:
            await tx.seed_portfolio(Decimal("5000000"))

        await asyncio.to_thread(own_server.stop)
        down = await db.status(timeout_s=1)
        assert down["status"] == "error" and down["connection"] == "unhealthy"

        # A read issued while the server is down waits (retrying) and succeeds once it is back.
        pending_read = asyncio.create_task(db.load_portfolio_state())
        await asyncio.sleep(0.5)
        await asyncio.to_thread(own_server.start)
        assert (await pending_read).closed_equity == Decimal("5000000")

        async with db.transaction() as tx:
            await tx.append_ledger(LedgerType.DEPOSIT, Decimal("100"))
        assert (await db.status())["status"] == "connected"
        assert (await db.load_portfolio_state()).closed_equity == Decimal("5000100")
    finally:
        await db.close()
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM capital_transactions").fetchone()[0] == 2
