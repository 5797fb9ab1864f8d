"""`portfolio_manager.py migrate`: apply or roll back migrations on the configured database."""

from __future__ import annotations

import asyncio

from config.settings import Settings
from live.daemon import state_dir_lock
from live.database_server import database_target
from live.schema_migrations import applied_migrations, apply_migrations, rollback_migrations


async def run_migrate(settings: Settings, rollback: int | None) -> list[str]:
    """Return report lines after applying, or rolling back `rollback`, migrations."""
    with state_dir_lock(settings.state_dir):
        async with database_target(settings) as target:
            if rollback:
                undone = await asyncio.to_thread(rollback_migrations, target.conninfo, rollback)
                lines = [f"rolled back {m}" for m in undone]
            else:
                done = await asyncio.to_thread(apply_migrations, target.conninfo)
                lines = [f"applied {m}" for m in done] or ["schema is up to date"]
            current = await asyncio.to_thread(applied_migrations, target.conninfo)
            return [*lines, f"applied migrations: {', '.join(current) or 'none'}"]
