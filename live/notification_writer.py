"""From the events outbox to the notifications table (DESIGN.md §11), after commit.

A follower of the outbox (live/outbox_follower.py: committed events once, in id order)
renders the events an operator wants on their phone and keeps them as notifications, in one
transaction with its cursor: a crash repeats nothing and loses nothing. A new notifier starts
at the outbox's end (it does not page through history); a leader taking over goes on from the
cursor its predecessor left.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import psycopg

from live.notification_store import NotificationStore
from live.notification_text import Texts
from live.outbox_follower import OutboxFollower, Row


def start_query(consumer: str) -> str:
    # Where the cursor stands, the outbox's end written as the cursor the first time.
    return f"""WITH first AS (
                   INSERT INTO stream_cursors (consumer, last_id)
                   SELECT '{consumer}', coalesce(max(id), 0) FROM event_outbox
                   ON CONFLICT (consumer) DO NOTHING RETURNING last_id)
               SELECT coalesce((SELECT last_id FROM first),
                               (SELECT last_id FROM stream_cursors
                                WHERE consumer = '{consumer}'))"""


class NotificationWriter(OutboxFollower):
    downstream = "notifications"
    # Read a moment after the news: the layers one exit closes, booked fill by fill, are
    # then read together and told as one message with their total.
    settle_s = 0.3

    def __init__(self, conninfo: str, store: NotificationStore, texts: Texts,
                 kinds: Collection[str], *, wake: Callable[[], None] = lambda: None,
                 may_act: Callable[[], bool] = lambda: True, **kwargs: Any) -> None:
        super().__init__(conninfo, **kwargs)
        self.name = f"{store.channel}-notifier"
        self.consumer = f"{store.channel}:events"
        self.first_id_query = start_query(self.consumer)
        self._store = store
        self._texts = texts
        self._kinds = set(kinds)
        self._wake = wake
        self._may_act = may_act

    async def follow_committed(self) -> int:
        if not self._may_act():  # a node whose term ended leaves the cursor to its successor
            return 0
        if self.last >= 0:  # the start is taken at once: what follows is told
            await self._sleep(self.settle_s)
        return await super().follow_committed()

    async def deliver(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        wanted = [m for m in self._texts.messages(rows) if m[0] in self._kinds]
        async with conn.transaction():
            for kind, event_id, text in wanted:
                await self._store.add(kind, text, event_id, conn)
            await self._store.set_cursor(self.consumer, rows[-1][0], conn)
        if wanted:
            self._wake()
