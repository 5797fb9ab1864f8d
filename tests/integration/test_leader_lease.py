"""The leader's lease against a real Redis-protocol server process: one holder at a time,
epochs that only rise, and a holder that stops trusting its term on its own clock."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from live.leader_lease import LeaderLease


@pytest.fixture
async def client(redis_server):
    redis = Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    yield redis
    await redis.aclose()


def node(client: Redis, name: str, ttl_ms: int = 5000) -> LeaderLease:
    return LeaderLease(client, name, ttl_ms=ttl_ms)


async def test_one_node_holds_the_lease_and_a_second_cannot_take_it(client):
    a, b = node(client, "a"), node(client, "b")
    assert await a.acquire() == 1
    assert await b.acquire() is None
    holder = await b.holder()
    assert (holder.instance, holder.epoch) == ("a", 1) and 4000 < holder.ms_left <= 5000
    assert a.holds() and not b.holds()


async def test_renewal_keeps_the_term_past_its_time_to_live(client):
    a, b = node(client, "a", ttl_ms=300), node(client, "b", ttl_ms=300)
    await a.acquire()
    for _ in range(6):  # 0.6 s: twice the time to live
        await asyncio.sleep(0.1)
        assert await a.renew()
        assert await b.acquire() is None
    assert a.holds()


async def test_a_lapsed_term_goes_to_the_next_node_and_the_old_one_cannot_touch_it(client):
    a, b = node(client, "a", ttl_ms=300), node(client, "b", ttl_ms=300)
    await a.acquire()
    await asyncio.sleep(0.35)
    assert not a.holds()  # by its own clock, before anyone else acted
    assert await b.acquire() == 2
    assert not await a.renew()
    await a.release()  # compare-and-delete: b's term is not a's to end
    assert (await b.holder()).instance == "b"
    # The same node winning again is a new term, with a new epoch.
    await b.release()
    assert await a.acquire() == 3


async def test_release_lets_a_standby_take_over_at_once(client):
    a, b = node(client, "a"), node(client, "b")
    await a.acquire()
    await a.release()
    assert not a.holds()
    assert await b.acquire() == 2


async def test_without_redis_the_holder_stops_trusting_its_term_and_epochs_still_rise(
        redis_server, client):
    a = node(client, "a", ttl_ms=500)
    assert await a.acquire() == 1
    redis_server.kill()
    with pytest.raises(RedisConnectionError):
        await a.renew()
    assert a.holds()  # the term it was granted has not run out yet...
    await asyncio.sleep(0.45)
    assert not a.holds()  # ...and now has, less the safety margin, with no renewal seen
    redis_server.start()  # on the same port, empty: its epoch counter is gone
    b = node(client, "b", ttl_ms=500)
    # PostgreSQL's fence saw epoch 1: the next term is above it, not a second epoch 1.
    assert await b.acquire(floor=1) == 2
