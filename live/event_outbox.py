"""The events outbox's publisher (DESIGN.md §11): the book's events on Redis, after commit.

On a pair's leader this follower (live/outbox_follower.py: committed events once, in id
order) sends them to the stream `pm:events` (fields id, type, time, data: JSON) and marks
them published. At least once: a crash between the XADD and the mark sends that batch
again, so consumers skip ids they have seen. Redis away only delays the events.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import psycopg

from core.db_state_manager import DatabaseStateManager
from live.outbox_follower import OutboxFollower, Row

if TYPE_CHECKING:  # Redis is imported only by a pair: a single daemon's start skips it
    from redis.asyncio import Redis

STREAM = "pm:events"
STREAM_MAXLEN = 100_000  # approximate: a consumer further behind reads the outbox table
RETENTION = "7 days"

MARK = "UPDATE event_outbox SET published_at = now() WHERE id = ANY(%s)"
LAST_PUBLISHED = """SELECT coalesce(max(id), 0) FROM event_outbox
                    WHERE published_at IS NOT NULL"""
PRUNE = f"DELETE FROM event_outbox WHERE occurred_at < now() - interval '{RETENTION}'"


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


class EventPublisher(OutboxFollower):
    name = "events"
    first_id_query = LAST_PUBLISHED  # what a crash left unmarked goes out again
    downstream = "redis"

    def __init__(self, conninfo: str, redis: Redis, **kwargs: Any):
        super().__init__(conninfo, **kwargs)
        self._redis = redis

    @property
    def published(self) -> int:
        return self.delivered

    async def publish_committed(self) -> int:
        """Publish every event committed so far, in id order; return how many."""
        return await self.follow_committed()

    def downstream_errors(self) -> tuple[type[BaseException], ...]:
        from redis.exceptions import RedisError

        return (RedisError,)

    async def deliver(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.xadd(STREAM, entry(row), maxlen=STREAM_MAXLEN, approximate=True)
            await pipe.execute()
        await conn.execute(MARK, ([row[0] for row in rows],))
