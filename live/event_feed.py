"""The outbox as it happens (DESIGN.md §11–12): the dashboard's live stream and the daemon's
log line for each decision, intent, order, fill and layer change.

Both read committed events only (live/outbox_follower.py), so a line or an update never
describes a change that rolled back, and neither sits in the money path: a slow browser
loses its stream (it reconnects and catches up from the table), never a trade's time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from live.outbox_follower import OutboxFollower, Row

log = structlog.get_logger(__name__)

# Trading-state changes and the audit log's events are logged where they happen already.
LOGGED_KINDS = ("signal.", "intent.", "fill.", "layer.")
SUBSCRIBER_BATCHES = 256  # a browser this far behind is cut off; it catches up on reconnect
REPLAY = """SELECT id, type, occurred_at, data FROM event_outbox
            WHERE id > %s AND id <= %s ORDER BY id LIMIT %s"""


class Subscription:
    """One reader's queue of event batches; None once the feed has cut it off."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Row] | None] = asyncio.Queue(SUBSCRIBER_BATCHES + 1)

    def offer(self, rows: list[Row]) -> bool:
        """Queue a batch; False (and the end marker queued) when the reader is too far
        behind."""
        if self.queue.qsize() >= SUBSCRIBER_BATCHES:
            self.queue.put_nowait(None)
            return False
        self.queue.put_nowait(rows)
        return True

    def end(self) -> None:
        if not self.queue.full():
            self.queue.put_nowait(None)


class EventFeed(OutboxFollower):
    """Follow the outbox from the daemon's start: log each event while this node acts on
    the book (`logs()`), and hand it to every subscriber."""

    name = "event-feed"
    # A page refreshes within a second of a commit; reading ten times a second at most keeps
    # a stream of alerts from costing the event loop a round trip per commit.
    gather_s = 0.1

    def __init__(self, conninfo: str, logs: Callable[[], bool], **kwargs: Any):
        super().__init__(conninfo, **kwargs)
        self._logs = logs
        self._subscribers: set[Subscription] = set()
        self._closed = False
        self.started = asyncio.Event()  # `last` says where the outbox stood at the start

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        if self._closed:  # the daemon is stopping: a stream that starts now ends at once
            subscription.end()
        else:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def close_subscriptions(self) -> None:
        """End every stream (the daemon is stopping): readers return, browsers reconnect."""
        self._closed = True
        for subscription in self._subscribers:
            subscription.end()
        self._subscribers.clear()

    async def follow_committed(self) -> int:
        delivered = await super().follow_committed()
        self.started.set()
        return delivered

    async def deliver(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        if self._logs():
            for row in rows:
                log_event(row)
        for subscription in list(self._subscribers):
            if not subscription.offer(rows):
                self._subscribers.discard(subscription)
                log.info("event_stream_cut_off", reason="reader too far behind")


def log_event(row: Row) -> None:
    """One info line for an event of the book, with the data it carries (no secret is ever
    part of an event: they describe the book)."""
    event_id, kind, _, data = row
    if kind.startswith(LOGGED_KINDS):
        fields = {key: value for key, value in data.items()
                  if key not in ("event", "level", "ts") and not isinstance(value, dict)}
        log.info(kind.replace(".", "_"), event_id=event_id, **fields)


async def replay(conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                 limit: int = 5000) -> list[Row]:
    """The events a reader missed: ids after `after`, up to what the feed has delivered."""
    found = await (await conn.execute(REPLAY, (after, upto, limit))).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in found]
