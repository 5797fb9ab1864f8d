"""Where the daemon's PostgreSQL comes from: a configured server, or the embedded one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg
import structlog
from psycopg import sql

from config.database import load_database_config
from config.settings import Settings
from live.embedded_db import EmbeddedPostgres

EMBEDDED_DATABASE = "portfolio_manager"
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DatabaseTarget:
    conninfo: str
    description: str  # safe to log: no password
    pool_min_size: int = 2
    pool_max_size: int = 24


@asynccontextmanager
async def database_target(settings: Settings) -> AsyncIterator[DatabaseTarget]:
    """Yield the database to use; an embedded server is started here and stopped on exit."""
    if settings.db_config is not None:
        config = load_database_config(settings.db_config, settings.db_env)
        yield DatabaseTarget(config.conninfo(), config.redacted(), config.pool_min_size,
                             config.pool_max_size)
        return
    server = EmbeddedPostgres(settings.state_dir / "pg")
    address = await asyncio.to_thread(server.start)
    log.info("embedded_database_started", pgdata=str(server.pgdata), adopted=server.adopted)
    try:
        await asyncio.to_thread(_ensure_database, address.conninfo(), EMBEDDED_DATABASE)
        yield DatabaseTarget(address.conninfo(EMBEDDED_DATABASE),
                             f"embedded PostgreSQL in {server.pgdata}")
    finally:
        await asyncio.to_thread(server.stop)
        log.info("embedded_database_stopped", pgdata=str(server.pgdata))


def _ensure_database(conninfo: str, name: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
