"""The events outbox's publisher (DESIGN.md §11): the book's events on Redis, after commit.

Triggers write each event in the transaction of its change (migration 0011). This worker,
on a pair's leader, sends them to the stream `pm:events` (fields id, type, time, data: JSON)
in id order and marks them published. At least once: a crash between the XADD and the mark
sends that batch again, so consumers skip ids they have seen. Nothing here can delay or
fail a trade: it reads committed rows on its own connection, and Redis or the database away
only delays the events.

Why ids need care: an id is taken from a sequence when the row is inserted, and transactions
commit in another order, so a reader can see id 8 while 7's transaction is still running.
Publishing 8 then would put 7 after it. So when the rows read have a hole below their
highest id, the publisher waits until every transaction that was running at that read has
ended (their xids are in the read's snapshot); read again, a hole still there belongs to a
transaction that rolled back, and is skipped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.db_pool import close_quietly
from core.db_state_manager import DatabaseStateManager

log = structlog.get_logger(__name__)

STREAM = "pm:events"
CHANNEL = "pm_outbox"
STREAM_MAXLEN = 100_000  # approximate: a consumer further behind reads the outbox table
RETENTION = "7 days"
SLOW_TRANSACTION_ROUNDS = 2000  # of 5 ms: say so when the events wait 10 s for one

READ = """SELECT id, type, occurred_at, data, pg_current_snapshot()::text
          FROM event_outbox WHERE id > %s ORDER BY id LIMIT %s"""
RUNNING = """SELECT count(*) FROM pg_snapshot_xip(%s::pg_snapshot) AS x
             WHERE pg_xact_status(x) = 'in progress'"""
MARK = "UPDATE event_outbox SET published_at = now() WHERE id = ANY(%s)"
LAST_PUBLISHED = """SELECT coalesce(max(id), 0) FROM event_outbox
                    WHERE published_at IS NOT NULL"""
PRUNE = f"DELETE FROM event_outbox WHERE occurred_at < now() - interval '{RETENTION}'"

Row = tuple[int, str, datetime, dict[str, Any]]


async def trim(db: DatabaseStateManager) -> None:
    """Drop events older than the retention, published or not (a single daemon publishes
    none: the table keeps a week of the book's history for whoever reads it)."""
    async with db.transaction() as tx:
        await tx.conn.execute(PRUNE)


def entry(row: Row) -> dict[Any, Any]:
    """The stream entry of one event."""
    event_id, kind, occurred_at, data = row
    return {"id": str(event_id), "type": kind, "time": occurred_at.isoformat(),
            "data": json.dumps(data, sort_keys=True)}


def in_order(rows: list[Row], after: int) -> bool:
    """Whether the rows are the ids right after `after`, without a hole."""
    return all(row[0] == after + n for n, row in enumerate(rows, 1))


class EventPublisher:
    def __init__(self, conninfo: str, redis: Redis, *, batch: int = 500, poll_s: float = 1.0,
                 sleep: Callable[[float], Any] = asyncio.sleep):
        self._conninfo = conninfo
        self._redis = redis
        self._batch = batch
        self._poll_s = poll_s
        self._sleep = sleep
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.last = -1  # the highest id published (-1: not read yet)
        self.published = 0
        self._down: str | None = None  # what is unreachable, said once per outage

    async def run(self) -> None:
        """Until cancelled: publish what is committed, on each notification or poll."""
        try:
            while True:
                try:
                    await self._listen()
                    while True:
                        await self.publish_committed()
                        async for _ in self._conn_or_fail().notifies(timeout=self._poll_s,
                                                                     stop_after=1):
                            pass
                except (psycopg.Error, OSError) as exc:
                    self._unreachable("database", exc)
                    await self.close()  # connect again next round
                except RedisError as exc:
                    self._unreachable("redis", exc)
                await self._sleep(self._poll_s)
        finally:
            await self.close()

    async def publish_committed(self) -> int:
        """Publish every event committed so far, in id order; return how many."""
        conn = await self._connect()
        if self.last < 0:
            self.last = (await (await conn.execute(LAST_PUBLISHED)).fetchone() or (0,))[0]
        sent = 0
        while True:
            rows, snapshot = await self._read(conn)
            if not rows:
                break
            if not in_order(rows, self.last):
                # A hole: let the transactions that could still fill it end, then read again.
                await self._settle(conn, snapshot)
                highest = rows[-1][0]
                rows = [r for r in (await self._read(conn))[0] if r[0] <= highest]
            await self._send(conn, rows)
            sent += len(rows)
            if len(rows) < self._batch:
                break
        if sent and self._down:
            log.info("events_publishing_again", after=self._down)
            self._down = None
        return sent

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await close_quietly(conn)

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> tuple[list[Row], str]:
        found = await (await conn.execute(READ, (self.last, self._batch))).fetchall()
        snapshot = found[0][4] if found else ""
        return [(r[0], r[1], r[2], r[3]) for r in found], snapshot

    async def _settle(self, conn: psycopg.AsyncConnection[Any], snapshot: str) -> None:
        waited = 0
        while (await (await conn.execute(RUNNING, (snapshot,))).fetchone() or (0,))[0]:
            waited += 1
            if waited == SLOW_TRANSACTION_ROUNDS:  # a session left open in a transaction?
                log.warning("events_wait_for_a_transaction", after=self.last)
            await self._sleep(0.005)

    async def _send(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.xadd(STREAM, entry(row), maxlen=STREAM_MAXLEN, approximate=True)
            await pipe.execute()
        await conn.execute(MARK, ([row[0] for row in rows],))
        self.last = rows[-1][0]
        self.published += len(rows)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, application_name="pm-events")
        return self._conn

    async def _listen(self) -> None:
        await (await self._connect()).execute(f"LISTEN {CHANNEL}")

    def _conn_or_fail(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise psycopg.OperationalError("the events connection is gone")
        return self._conn

    def _unreachable(self, what: str, exc: BaseException) -> None:
        if self._down != what:
            log.warning("events_unpublished", unreachable=what, error=str(exc))
        self._down = what
