"""The psycopg pool both the book and the paper venue use, with a cheap liveness check."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

# Faults of the connection, not of the statement: the database may answer if asked again.
TRANSIENT_ERRORS = (psycopg.OperationalError, PoolTimeout)

# A connection used this recently is trusted without a round trip; one idle for longer is
# checked, so a server restart while the pool sat idle never reaches a caller.
TRUST_RECENT_S = 1.0


async def close_quietly(conn: AsyncConnection[Any] | None) -> None:
    """Close a connection being given up: it may be broken already, which is why."""
    if conn is not None:
        try:
            await conn.close()
        except psycopg.Error:
            pass


class PooledConnection(AsyncConnection[Any]):
    """A connection that remembers when it was last handed back to the pool."""

    returned_at: float = 0.0


async def _check_if_idle(conn: PooledConnection) -> None:
    if time.monotonic() - conn.returned_at > TRUST_RECENT_S:
        await AsyncConnectionPool.check_connection(conn)


async def _mark_returned(conn: PooledConnection) -> None:
    conn.returned_at = time.monotonic()


def make_pool(conninfo: str, *, name: str, min_size: int, max_size: int,
              timeout_s: float = 10.0,
              reconnect_timeout_s: float = 5.0) -> AsyncConnectionPool[Any]:
    """Return an unopened autocommit pool (transactions are explicit)."""
    return AsyncConnectionPool(
        conninfo,
        connection_class=PooledConnection,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        check=_check_if_idle,
        reset=_mark_returned,
        kwargs={"autocommit": True},
        # psycopg backs off reconnects exponentially (1, 2, 4 … s); bounding the attempt
        # makes the pool start afresh — connecting at once — when the server returns.
        reconnect_timeout=reconnect_timeout_s,
        name=name,
        open=False,
    )
