"""The notifications table (migration 0013): messages kept until delivered or expired, and
the cursors of the readers of outside streams.

On a connection of its own, never the book's pool: a notifier that waits on its database
never takes a connection a trade needs. Times are the database's (`now()`), so expiry and
retry times mean the same thing on both nodes of a pair.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import psycopg

from core.db_pool import close_quietly

MAX_CHARS = 4096  # a Telegram message's limit (the tags are counted by it only loosely)
ADD = """INSERT INTO notifications (channel, event_id, kind, body, expires_at)
         VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))
         ON CONFLICT (channel, event_id) DO NOTHING"""
HEAD = """SELECT id, kind, body, attempts,
                 greatest(0, extract(epoch FROM next_attempt_at - now()))::float8
          FROM notifications
          WHERE channel = %s AND delivered_at IS NULL AND expired_at IS NULL
          ORDER BY id LIMIT 1"""
DELIVERED = "UPDATE notifications SET delivered_at = now(), attempts = attempts + 1 WHERE id = %s"
RETRY = """UPDATE notifications SET attempts = attempts + 1, last_error = %s,
                  next_attempt_at = now() + make_interval(secs => %s)
           WHERE id = %s RETURNING attempts"""
GIVE_UP = "UPDATE notifications SET expired_at = now(), last_error = %s WHERE id = %s"
EXPIRE = """UPDATE notifications SET expired_at = now(),
                  last_error = coalesce(last_error, 'expired before delivery')
            WHERE channel = %s AND delivered_at IS NULL AND expired_at IS NULL
              AND expires_at <= now()
            RETURNING id, kind, attempts"""
PENDING = """SELECT count(*) FROM notifications
             WHERE channel = %s AND delivered_at IS NULL AND expired_at IS NULL"""
PRUNE = """DELETE FROM notifications
           WHERE coalesce(delivered_at, expired_at) < now() - interval '7 days'"""
CURSOR = "SELECT last_id FROM stream_cursors WHERE consumer = %s"
SET_CURSOR = """INSERT INTO stream_cursors (consumer, last_id) VALUES (%s, %s)
                ON CONFLICT (consumer) DO UPDATE SET last_id = EXCLUDED.last_id,
                updated_at = now()"""


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    kind: str
    body: str
    attempts: int
    due_in_s: float  # 0: may be sent now


class NotificationStore:
    def __init__(self, conninfo: str, channel: str, ttl_s: float) -> None:
        self._conninfo = conninfo
        self.channel = channel
        self.ttl_s = ttl_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._connecting = asyncio.Lock()  # parts share a store: one connection for all

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        async with self._connecting:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=f"pm-{self.channel}")
            return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await close_quietly(conn)

    async def add(self, kind: str, body: str, event_id: int | None = None,
                  conn: psycopg.AsyncConnection[Any] | None = None) -> None:
        """Keep a message to send (once per event: a repeat of an event adds nothing)."""
        if len(body) > MAX_CHARS:  # Telegram refuses longer ones outright
            body = body[:MAX_CHARS - 1] + "…"
        target = conn or await self.connection()
        await target.execute(ADD, (self.channel, event_id, kind, body, self.ttl_s))

    async def head(self) -> Pending | None:
        """The oldest message not yet delivered nor given up (sent first: order is kept)."""
        row = await (await (await self.connection()).execute(HEAD, (self.channel,))).fetchone()
        return Pending(*row) if row else None

    async def delivered(self, message_id: int) -> None:
        await (await self.connection()).execute(DELIVERED, (message_id,))

    async def retry(self, message_id: int, error: str, after_s: float) -> int:
        """Note a failed attempt, to be tried again after `after_s`; return the attempts."""
        found = await (await (await self.connection()).execute(
            RETRY, (error, after_s, message_id))).fetchone()
        return int(found[0]) if found else 0

    async def give_up(self, message_id: int, error: str) -> None:
        await (await self.connection()).execute(GIVE_UP, (error, message_id))

    async def expire(self) -> list[tuple[int, str, int]]:
        """Give up the messages past their time; return them (id, kind, attempts)."""
        cursor = await (await self.connection()).execute(EXPIRE, (self.channel,))
        return [(int(r[0]), str(r[1]), int(r[2])) for r in await cursor.fetchall()]

    async def pending(self) -> int:
        row = await (await (await self.connection()).execute(PENDING, (self.channel,))
                     ).fetchone()
        return int(row[0]) if row else 0

    async def prune(self) -> None:
        await (await self.connection()).execute(PRUNE)

    async def cursor(self, consumer: str) -> int | None:
        row = await (await (await self.connection()).execute(CURSOR, (consumer,))).fetchone()
        return int(row[0]) if row else None

    async def set_cursor(self, consumer: str, last_id: int,
                         conn: psycopg.AsyncConnection[Any] | None = None) -> None:
        await (conn or await self.connection()).execute(SET_CURSOR, (consumer, last_id))
