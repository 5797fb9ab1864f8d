"""`portfolio_manager.py export-signals`: a daemon's inbox as a file `replay` reads.

One webhook payload per line, as stored in `signal_log` (without the secret, which the
inbox never stores), in arrival (id) order: the stream the daemon decided on.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from config.errors import ConfigError
from config.settings import Settings
from core.signals import storable_payload
from live.daemon import state_dir_lock
from live.database_server import database_target

BATCH_ROWS = 2000


def payload_line(payload: dict[str, Any]) -> str:
    """Return one line of a signals file: the payload as compact JSON, Decimals as text
    (as the inbox stores them)."""
    return json.dumps(storable_payload(payload), separators=(",", ":"), default=str,
                      ensure_ascii=False)


async def export_signals(settings: Settings, out: Path) -> list[str]:
    """Write the daemon's signal_log to `out` as JSONL; return the report line."""
    with ExitStack() as locks:
        if settings.db_config is None:
            # The embedded server is started (and stopped) here: never while a daemon of
            # this state dir runs on it.
            locks.enter_context(state_dir_lock(settings.state_dir))
        async with AsyncExitStack() as stack:
            target = await stack.enter_async_context(database_target(settings))
            count = await asyncio.to_thread(_write, target.conninfo, out)
    return [f"exported {count} signals to {out}"]


def _write(conninfo: str, out: Path) -> int:
    # Written aside and renamed: a failed export never leaves a short file behind.
    partial = out.with_name(f".{out.name}.partial")
    count = 0
    try:
        with open(partial, "w", encoding="utf-8") as handle, psycopg.connect(conninfo) as conn:
            for payload in _payloads(conn):
                handle.write(payload_line(payload) + "\n")
                count += 1
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return count


def _payloads(conn: psycopg.Connection[Any]) -> Iterator[dict[str, Any]]:
    # Read as text and parsed here: fractions come back as the exact Decimals they were.
    # A server-side cursor: a long inbox is streamed, not held in memory.
    try:
        with conn.cursor(name="signal_export") as cur:
            cur.execute("SELECT payload::text FROM signal_log ORDER BY id")
            while rows := cur.fetchmany(BATCH_ROWS):
                for (text,) in rows:
                    yield json.loads(text, parse_float=Decimal)
    except psycopg.errors.UndefinedTable:
        raise ConfigError("this database has no signal_log: not a daemon's book") from None
