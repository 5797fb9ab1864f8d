"""The events outbox, on real PostgreSQL and a real Redis-protocol server process: what the
book does is on `pm:events` after commit, in id order, at least once — whatever Redis does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest
from redis.asyncio import Redis

from live.event_outbox import STREAM, EventPublisher, trim
from tests.support.factories import new_signal, open_layer


@pytest.fixture
async def redis(redis_server):
    client = Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    yield client
    await client.aclose()


@pytest.fixture
async def publisher(dsn, redis):
    publisher = EventPublisher(dsn, redis, poll_s=0.05)
    yield publisher
    await publisher.close()


async def stream(redis: Redis) -> list[dict[str, Any]]:
    """Every event on the stream, as a consumer reads it."""
    out = []
    for _, fields in await redis.xrange(STREAM):
        event = {k.decode(): v.decode() for k, v in fields.items()}
        event["id"], event["data"] = int(event["id"]), json.loads(event["data"])
        out.append(event)
    return out


def outbox(dsn: str) -> list[tuple[int, str, bool]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, type, published_at IS NOT NULL FROM event_outbox "
                            "ORDER BY id").fetchall()


async def test_a_trade_is_on_the_stream_after_commit_in_order(runs, dsn, redis, publisher):
    trading = await runs()
    entry = await trading.send("BASE_ENTRY", price="78500", stop="77800")
    assert entry is not None and entry.outcome.value == "executed"
    closing = await trading.send("EXIT", price="80000")
    assert closing is not None and closing.outcome.value == "executed"

    assert await publisher.publish_committed() == len(outbox(dsn))
    events = await stream(redis)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    types = [e["type"] for e in events]
    for kind in ("layer.opened", "intent.created", "fill.booked", "intent.filled",
                 "signal.decided", "layer.closed"):
        assert kind in types, types
    # Each signal's decision comes in its own transaction's events, after its orders'.
    decided = [e for e in events if e["type"] == "signal.decided"]
    assert [(d["data"]["type"], d["data"]["outcome"]) for d in decided] == [
        ("BASE_ENTRY", "executed"), ("EXIT", "executed")]
    [opened] = [e for e in events if e["type"] == "layer.opened"]
    [closed] = [e for e in events if e["type"] == "layer.closed"]
    assert opened["data"]["entry_price"] == "78500.0000"  # exact, a string: never a float
    assert closed["data"]["realized_pnl"] == closing.result["pnl"]
    assert closed["data"]["position_id"] == opened["data"]["position_id"]
    assert all(published for _, _, published in outbox(dsn))
    assert await publisher.publish_committed() == 0  # nothing twice in one life


async def test_a_signal_refused_at_the_door_is_decided_on_the_stream(db, redis, publisher):
    admission = await db.admit_signal(new_signal(), window_s=60, rejection="stale",
                                      processed_by="test")
    await publisher.publish_committed()
    [event] = await stream(redis)
    assert event["type"] == "signal.decided"
    assert event["data"] == {"signal_id": admission.signal_id, "type": "BASE_ENTRY",
                             "instrument": "GOLD_MINI", "position": "Long_1",
                             "outcome": "rejected", "reason": "stale"}


async def test_a_rolled_back_change_has_no_event(db, dsn, publisher, redis):
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.log_event("limit_breached", instrument="GOLD_MINI")
            raise RuntimeError("the change fails")
    await open_layer(db)
    await publisher.publish_committed()
    assert [e["type"] for e in await stream(redis)] == ["layer.opened"]


async def test_redis_away_delays_the_events_and_loses_none(db, dsn, redis_server, redis):
    publisher = EventPublisher(dsn, redis, poll_s=0.05)
    running = asyncio.create_task(publisher.run())
    try:
        await open_layer(db, layer="Long_1")
        await until(lambda: publisher.published == 1)
        redis_server.kill()
        for layer in ("Long_2", "Long_3"):  # the book goes on without Redis
            await open_layer(db, layer=layer)
        await asyncio.sleep(0.3)
        assert [published for _, _, published in outbox(dsn)] == [True, False, False]
        redis_server.start()  # the same port, empty
        await open_layer(db, layer="Long_4")
        await until(lambda: publisher.published == 4)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    events = await stream(redis)
    # A fresh Redis holds what was published since it came back: the missed ones, in order.
    assert [e["data"]["layer"] for e in events] == ["Long_2", "Long_3", "Long_4"]
    assert [e["id"] for e in events] == [2, 3, 4]


async def test_a_publisher_that_died_before_marking_sends_again_in_order(db, dsn, redis):
    await open_layer(db, layer="Long_1")
    first = EventPublisher(dsn, redis)
    await first.publish_committed()
    await first.close()
    with psycopg.connect(dsn) as conn:  # as if it died between the XADD and the mark
        conn.execute("UPDATE event_outbox SET published_at = NULL")
    await open_layer(db, layer="Long_2")
    second = EventPublisher(dsn, redis)
    try:
        await second.publish_committed()
    finally:
        await second.close()
    ids = [e["id"] for e in await stream(redis)]
    assert ids == [1, 1, 2]  # at least once: a consumer skips an id it has seen


async def test_an_event_committed_late_is_published_before_the_later_ids(db, dsn, redis):
    """Outbox ids are taken before commit: 1's transaction may commit after 2's. The
    publisher must not send 2 while 1 can still appear."""
    publisher = EventPublisher(dsn, redis, poll_s=0.05)
    slow = await psycopg.AsyncConnection.connect(dsn)
    try:
        await slow.execute("INSERT INTO execution_log (event, instrument) "
                           "VALUES ('limit_breached', 'GOLD_MINI')")  # id 1, uncommitted
        await open_layer(db)  # id 2, committed
        publishing = asyncio.create_task(publisher.publish_committed())
        await asyncio.sleep(0.3)
        assert not publishing.done()  # waits for 1's transaction rather than send 2
        assert await stream(redis) == []
        await slow.commit()
        assert await publishing == 2
    finally:
        await slow.close()
        await publisher.close()
    assert [(e["id"], e["type"]) for e in await stream(redis)] == [
        (1, "audit.limit_breached"), (2, "layer.opened")]


async def test_a_hole_left_by_a_rollback_is_skipped(db, dsn, redis, publisher):
    slow = await psycopg.AsyncConnection.connect(dsn)
    try:
        await slow.execute("INSERT INTO execution_log (event) VALUES ('limit_breached')")
        await open_layer(db)
        publishing = asyncio.create_task(publisher.publish_committed())
        await asyncio.sleep(0.1)
        await slow.rollback()
        assert await publishing == 1
    finally:
        await slow.close()
    assert [e["id"] for e in await stream(redis)] == [2]


async def test_trim_drops_a_week_old_events(db, dsn):
    await open_layer(db, layer="Long_1")
    await open_layer(db, layer="Long_2")
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE event_outbox SET occurred_at = now() - interval '8 days' "
                     "WHERE id = 1")
    await trim(db)
    assert [event_id for event_id, _, _ in outbox(dsn)] == [2]


async def until(check, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.02)
