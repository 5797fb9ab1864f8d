"""The PostgreSQL half of a pair's term (DESIGN.md §10): the lease row and the fence.

A term starts in one transaction: the lease row is taken (only once the previous holder's
lease ran out, by the database's clock) and the fence moves to the new epoch. The fence's
UPDATE waits for every transaction of the old leader still holding its share lock, and
every one after it finds the old epoch gone and rolls back (`Transaction.fence`). The
leader renews the lease as often as the Redis key; either renewal confirmed keeps it
acting, since a successor needs both.

Its own autocommit connection, with a short timeout on every call: a renewal must never
wait behind the signal path's pool, and a database that hangs is a renewal not confirmed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import structlog

from core.db_pool import close_quietly

T = TypeVar("T")
log = structlog.get_logger(__name__)

TAKE_LEASE = """
UPDATE leader_lease SET epoch = %(epoch)s, instance_id = %(me)s,
       lease_until = now() + %(ttl)s * interval '1 millisecond'
 WHERE epoch < %(epoch)s AND (lease_until <= now() OR instance_id = %(me)s)
RETURNING 1"""
MOVE_FENCE = """
UPDATE leader_fence SET epoch = %(epoch)s, instance_id = %(me)s, updated_at = now()
 WHERE epoch < %(epoch)s RETURNING 1"""
RENEW = """
UPDATE leader_lease SET lease_until = now() + %(ttl)s * interval '1 millisecond'
 WHERE epoch = %(epoch)s AND instance_id = %(me)s RETURNING 1"""
RELEASE = """
UPDATE leader_lease SET lease_until = now() WHERE epoch = %(epoch)s AND instance_id = %(me)s"""
STATE = """
SELECT l.epoch, l.instance_id,
       greatest(0, (extract(epoch FROM l.lease_until - now()) * 1000))::bigint,
       (SELECT max(last_heartbeat) FROM instance_metadata
         WHERE instance_id <> %(me)s AND role IN ('leader', 'standby'))
  FROM leader_lease l"""
# Once per note: a write repeated after one whose answer was lost finds it there.
LOG = """
INSERT INTO execution_log (event, details) SELECT %(event)s, %(details)s::jsonb
 WHERE NOT EXISTS (SELECT 1 FROM execution_log
                    WHERE event = %(event)s AND details->>'note' = %(note)s)"""
ROLE = "UPDATE instance_metadata SET role = %s, last_heartbeat = now() WHERE instance_id = %s"


@dataclass(frozen=True, slots=True)
class LeaseState:
    epoch: int  # the last term started (the fence's floor)
    instance: str | None  # who started it
    ms_left: int  # 0: it has run out, a standby may start the next
    peer_last_seen: datetime | None  # the other node's last heartbeat


class FenceLease:
    def __init__(self, conninfo: str, instance: str, *, timeout_s: float = 1.0):
        self._conninfo = conninfo
        self._instance = instance
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def take(self, epoch: int, ttl_ms: int, previous: str | None) -> bool:
        """Start term `epoch` if the lease has run out; record who led before."""
        params = {"epoch": epoch, "me": self._instance, "ttl": ttl_ms}

        async def run(conn: psycopg.AsyncConnection[Any]) -> bool:
            async with conn.transaction() as tx:
                if await (await conn.execute(TAKE_LEASE, params)).fetchone() is None:
                    raise psycopg.Rollback(tx)
                if await (await conn.execute(MOVE_FENCE, params)).fetchone() is None:
                    raise psycopg.Rollback(tx)
                await conn.execute(ROLE, ("leader", self._instance))
                await conn.execute(LOG, {"event": "leadership_acquired", "note": None,
                                         "details": json.dumps({"instance": self._instance,
                                                                "epoch": epoch,
                                                                "previous": previous})})
                return True
            return False

        # The fence's UPDATE waits for the old leader's open transactions: give it longer.
        return await self._call(run, self._timeout_s * 5)

    async def renew(self, epoch: int, ttl_ms: int) -> bool:
        """Extend term `epoch`; False if it is no longer this node's (a successor began)."""
        params = {"epoch": epoch, "me": self._instance, "ttl": ttl_ms}

        async def run(conn: psycopg.AsyncConnection[Any]) -> bool:
            return await (await conn.execute(RENEW, params)).fetchone() is not None

        return await self._call(run)

    async def release(self, epoch: int) -> None:
        params = {"epoch": epoch, "me": self._instance}

        async def run(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(RELEASE, params)

        await self._call(run)

    async def state(self) -> LeaseState:
        async def run(conn: psycopg.AsyncConnection[Any]) -> LeaseState:
            row = await (await conn.execute(STATE, {"me": self._instance})).fetchone()
            assert row is not None  # the migration inserts the one row
            return LeaseState(int(row[0]), row[1], int(row[2]), row[3])

        return await self._call(run)

    async def record(self, event: str, details: dict[str, Any], role: str) -> None:
        """Write a leadership change to the audit log and this node's role."""
        async def run(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await conn.execute(ROLE, (role, self._instance))
                await conn.execute(LOG, {"event": event, "details": json.dumps(details),
                                         "note": details.get("note")})

        await self._call(run)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await close_quietly(conn)

    async def _call(self, run: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
                    timeout_s: float | None = None) -> T:
        """Run on the node's own connection, opened again after any failure."""
        try:
            async with asyncio.timeout(timeout_s or self._timeout_s):
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True,
                        application_name=f"pm-lease:{self._instance}")
                return await run(self._conn)
        except BaseException:
            await self.close()  # a timed-out call leaves the connection mid-statement
            raise
