"""One single daemon per book: a session-level advisory lock held for the daemon's life.

Two daemons started without Redis on the same database would both trade the same book. The
first takes an exclusive claim — PostgreSQL's session advisory lock on a connection of its
own, released by the server the moment that connection ends, so a SIGKILLed daemon leaves no
claim behind — and a second refuses to start, naming the first from `instance_metadata`.
The same connection beats the instance's heartbeat. If it drops (the server restarted), the
claim is taken again; if another daemon took it meanwhile, this one stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import psycopg
import structlog

from core.db_pool import close_quietly

log = structlog.get_logger(__name__)

# The advisory lock's key: the same for every daemon of this project on a database.
CLAIM_KEY = 0x504D5F424F4F4B  # "PM_BOOK"
APPLICATION = "pm:"  # + instance id: how the holder of the claim is found


class AlreadyRunning(RuntimeError):
    """Another daemon holds this state dir, or this book."""


class BookClaim:
    def __init__(self, conninfo: str, instance: str, *, interval_s: float = 5.0,
                 shared: bool = False):
        self._conninfo = conninfo
        # A pair's two nodes share the book (the lease decides who trades): each takes the
        # claim shared, so a single daemon cannot join them, nor they it.
        self._lock = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        self._instance = instance
        self._interval_s = interval_s
        self._conn: psycopg.AsyncConnection | None = None
        self.lost = False  # another daemon took the book while this one's claim was down

    async def take(self) -> None:
        """Claim the book, or raise AlreadyRunning naming the daemon that holds it."""
        if not await self._try():
            raise AlreadyRunning(await self._holder())
        log.info("book_claimed", instance=self._instance)

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Beat the heartbeat until cancelled; take the claim again whenever its connection
        was lost. Call `on_lost` (and return) if another daemon holds the book by then."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                if self._conn is None or self._conn.closed:
                    if not await self._try():
                        self.lost = True
                        log.critical("book_claim_lost", holder=await self._holder())
                        on_lost()
                        return
                    log.warning("book_claimed_again", instance=self._instance)
                assert self._conn is not None
                await self._conn.execute(
                    "UPDATE instance_metadata SET last_heartbeat = now() "
                    "WHERE instance_id = %s", (self._instance,))
            except psycopg.Error as exc:  # the server is away: the claim is taken again later
                log.warning("book_claim_unreachable", error=str(exc))
                await self._drop()

    async def release(self) -> None:
        await self._drop()

    async def _try(self) -> bool:
        await self._drop()
        conn = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, application_name=APPLICATION + self._instance)
        cur = await conn.execute(f"SELECT {self._lock}(%s)", (CLAIM_KEY,))
        row = await cur.fetchone()
        if row is None or not row[0]:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        await close_quietly(conn)

    async def _holder(self) -> str:
        """Who holds the claim, as its instance registered itself."""
        async with await psycopg.AsyncConnection.connect(self._conninfo,
                                                         autocommit=True) as conn:
            cur = await conn.execute(
                """SELECT a.application_name, m.hostname, m.port, m.last_heartbeat
                   FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                   LEFT JOIN instance_metadata m
                     ON m.instance_id = substr(a.application_name, %s)
                   WHERE l.locktype = 'advisory' AND l.granted
                     AND ((l.classid::bigint << 32) | l.objid::bigint) = %s""",
                (len(APPLICATION) + 1, CLAIM_KEY))
            row = await cur.fetchone()
        if row is None:
            return "another daemon holds this book (it has just let go: try again)"
        application, host, port, beat = row
        instance = str(application).removeprefix(APPLICATION)
        seen = beat.isoformat(timespec="seconds") if isinstance(beat, datetime) else "never"
        return (f"another daemon holds this book: instance {instance} on {host}:{port}, "
                f"last heartbeat {seen}")
