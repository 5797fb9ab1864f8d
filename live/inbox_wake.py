"""The leader's ear for its standby: signals the standby stored are queued at once.

The standby sends `NOTIFY pm_inbox` after each signal it stores; the leader, listening on a
connection of its own, queues what is waiting. A notification lost (the connection dropped,
the standby's NOTIFY failed) delays a signal by at most `poll_s`: the leader looks anyway.
"""

from __future__ import annotations

import asyncio

import psycopg
import structlog

from live.inbox import Inbox

log = structlog.get_logger(__name__)
CHANNEL = "pm_inbox"


async def follow_standby(conninfo: str, inbox: Inbox, *, poll_s: float = 2.0) -> None:
    """Until cancelled: queue the stored signals still waiting, on each notification."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, application_name="pm-inbox-wake") as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                while True:
                    taken = await inbox.enqueue_waiting()
                    if taken:
                        log.info("handed_over_signals_queued", signals=taken)
                    # Notifications that came together are one wake-up.
                    async for _ in conn.notifies(timeout=poll_s, stop_after=1):
                        pass
        except (psycopg.Error, OSError) as exc:
            log.warning("inbox_wake_unavailable", error=str(exc))
            await asyncio.sleep(poll_s)
