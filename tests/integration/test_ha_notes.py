"""A node's notes in the audit log (a lost term, a lost Redis) are written once each, even
when the loop's last round and a demotion's release write at the same moment, or a write
whose answer was lost is made again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from redis.asyncio import Redis

from live.fence_lease import FenceLease
from live.ha_node import HaNode
from live.leader_lease import LeaderLease


@pytest.fixture
async def node(redis_server, dsn) -> AsyncIterator[HaNode]:
    redis = Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    fence = FenceLease(dsn, "node-a", timeout_s=1)
    yield HaNode(LeaderLease(redis, "node-a", ttl_ms=5000), fence, "node-a")
    await fence.close()
    await redis.aclose()


def audit(dsn: str, event: str) -> list[dict[str, object]]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(
            "SELECT details FROM execution_log WHERE event = %s ORDER BY id", (event,))]


async def test_a_lost_term_is_written_once_by_the_loop_and_the_release_together(node, dsn):
    node.fenced()
    await asyncio.gather(node._write_notes(), node.release(), node._write_notes())
    [lost] = audit(dsn, "leadership_lost")
    assert lost["instance"] == "node-a" and lost["why"] == "fenced by a newer leader"


async def test_a_note_written_again_after_a_lost_answer_is_kept_once(node, dsn):
    node.fenced()
    [(event, details)] = node._notes
    # The first write committed, but its answer never came: the note is still queued.
    await node._fence.record(event, details, "standby")
    await node._write_notes()
    assert len(audit(dsn, "leadership_lost")) == 1
