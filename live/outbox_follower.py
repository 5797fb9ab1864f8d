"""Follow the events outbox (DESIGN.md §11): every committed event once, in id order.

Triggers write each event in the transaction of its change (migration 0011). A follower
reads them after commit on its own connection, woken by `NOTIFY pm_outbox` (and a poll), and
hands each batch to `deliver`. Nothing here can delay or fail a trade: the database away
only delays the events.

Why ids need care: an id is taken from a sequence when the row is inserted, and transactions
commit in another order, so a reader can see id 8 while 7's transaction is still running.
Delivering 8 then would put 7 after it. So when the rows read have a hole below their highest
id, the follower waits until every transaction that was running at that read has ended
(their xids are in the read's snapshot); read again, a hole still there belongs to a
transaction that rolled back, and is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import structlog

from core.db_pool import close_quietly

log = structlog.get_logger(__name__)

CHANNEL = "pm_outbox"
SLOW_TRANSACTION_ROUNDS = 2000  # of 5 ms: say so when the events wait 10 s for one

READ = """SELECT id, type, occurred_at, data, pg_current_snapshot()::text
          FROM event_outbox WHERE id > %s ORDER BY id LIMIT %s"""
RUNNING = """SELECT count(*) FROM pg_snapshot_xip(%s::pg_snapshot) AS x
             WHERE pg_xact_status(x) = 'in progress'"""
NEWEST = "SELECT coalesce(max(id), 0) FROM event_outbox"

Row = tuple[int, str, datetime, dict[str, Any]]


def in_order(rows: list[Row], after: int) -> bool:
    """Whether the rows are the ids right after `after`, without a hole."""
    return all(row[0] == after + n for n, row in enumerate(rows, 1))


class OutboxFollower:
    """Deliver committed events in id order; subclasses say where to start and what to do."""

    name = "events"
    first_id_query = NEWEST  # where a new follower starts: the events from now on
    downstream = "consumer"  # who `deliver` hands the events to, in the outage log line
    # After a delivery, wait this long before reading again: a burst of commits is then read
    # in one batch rather than one round trip each (0: every notification is read at once).
    gather_s = 0.0

    def __init__(self, conninfo: str, *, batch: int = 500, poll_s: float = 1.0,
                 sleep: Callable[[float], Any] = asyncio.sleep):
        self._conninfo = conninfo
        self._batch = batch
        self._poll_s = poll_s
        self._sleep = sleep
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.last = -1  # the highest id delivered (-1: not read yet)
        self.delivered = 0
        self._down: str | None = None  # what is unreachable, said once per outage

    async def deliver(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        """Until cancelled: deliver what is committed, on each notification or poll."""
        try:
            while True:
                try:
                    await self._listen()
                    while True:
                        if await self.follow_committed() and self.gather_s:
                            await self._sleep(self.gather_s)
                        async for _ in self._conn_or_fail().notifies(timeout=self._poll_s,
                                                                     stop_after=1):
                            pass
                        # Those that came meanwhile are all answered by the next read.
                        async for _ in self._conn_or_fail().notifies(timeout=0):
                            pass
                except (psycopg.Error, OSError) as exc:
                    self.unreachable("database", exc)
                    await self.close()  # connect again next round
                except self.downstream_errors() as exc:
                    self.unreachable(self.downstream, exc)
                await self._sleep(self._poll_s)
        finally:
            await self.close()

    def downstream_errors(self) -> tuple[type[BaseException], ...]:
        """What `deliver` raises when its consumer is away (retried, never fatal)."""
        return ()

    async def follow_committed(self) -> int:
        """Deliver every event committed so far, in id order; return how many."""
        conn = await self._connect()
        if self.last < 0:
            self.last = (await (await conn.execute(self.first_id_query)).fetchone() or (0,))[0]
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
            await self.deliver(conn, rows)
            self.last = rows[-1][0]
            self.delivered += len(rows)
            sent += len(rows)
            if len(rows) < self._batch:
                break
        if sent and self._down:
            log.info("events_flowing_again", follower=self.name, after=self._down)
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
                log.warning("events_wait_for_a_transaction", follower=self.name,
                            after=self.last)
            await self._sleep(0.005)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, application_name=f"pm-{self.name}")
        return self._conn

    async def _listen(self) -> None:
        await (await self._connect()).execute(f"LISTEN {CHANNEL}")

    def _conn_or_fail(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise psycopg.OperationalError("the events connection is gone")
        return self._conn

    def unreachable(self, what: str, exc: BaseException) -> None:
        if self._down != what:
            log.warning("events_undelivered", follower=self.name, unreachable=what,
                        error=str(exc))
        self._down = what
