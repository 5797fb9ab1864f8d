"""The leader's lease in Redis (DESIGN.md §10): election, renewal and release, with epochs.

A term is won by one atomic script: if no one holds `pm:leader`, take the next epoch from
`pm:epoch` and hold the key as "<instance> <epoch>" for the lease's time to live. Renewal
extends the key only while it still names this term, release deletes it only then, so a
node whose term lapsed can neither extend nor end its successor's.

Redis says who may lead; it does not keep an ex-leader from acting. The holder therefore
keeps its own deadline on the monotonic clock: the moment it sent the last request Redis
confirmed, plus the time to live, less a safety margin. Past it, `holds()` is False and the
node must not call the broker, whatever Redis says later. PostgreSQL's fencing epoch is the
arbiter of the book; this is what stops a paused node from sending orders.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

LEADER_KEY = "pm:leader"
EPOCH_KEY = "pm:epoch"

# ARGV[3], the highest epoch PostgreSQL has seen, keeps epochs rising even when Redis
# restarted empty.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local epoch = redis.call('INCR', KEYS[2])
if epoch <= tonumber(ARGV[3]) then
  epoch = tonumber(ARGV[3]) + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch, 'PX', ARGV[2])
return epoch
"""
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# A leader whose PostgreSQL lease still holds takes its key back when Redis lost it (Redis
# restarted empty): the same term, and the epoch counter no lower than it.
RECLAIM = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if held then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Holder:
    instance: str
    epoch: int
    ms_left: int  # the key's time to live at Redis


class LeaderLease:
    def __init__(self, redis: Redis, instance: str, *, ttl_ms: int = 5000,
                 margin_ms: int | None = None, clock: Callable[[], float] = time.monotonic):
        if " " in instance:
            raise ValueError("an instance id has no spaces")
        self.redis = redis
        self._instance = instance
        self.ttl_ms = ttl_ms
        self._margin_s = (ttl_ms // 5 if margin_ms is None else margin_ms) / 1000
        self._clock = clock
        self.epoch: int | None = None  # the term held (or last held)
        self._deadline = 0.0

    @property
    def _value(self) -> str:
        return f"{self._instance} {self.epoch}"

    async def acquire(self, floor: int = 0) -> int | None:
        """Start a term if no one holds the lease; return its epoch (above `floor`, the
        fencing epoch in PostgreSQL), or None."""
        sent = self._clock()
        epoch = int(await self.redis.eval(ACQUIRE, 2, LEADER_KEY, EPOCH_KEY, self._instance,
                                           self.ttl_ms, floor))
        if not epoch:
            return None
        self.epoch = epoch
        self._extend_from(sent)
        return epoch

    async def renew(self, reclaim: bool = False) -> bool:
        """Extend this term; False if it is no longer this node's (it lapsed, or another
        term began). With `reclaim` (the caller knows its term holds elsewhere) a lapsed
        key is set again. A Redis error propagates: the renewal is simply not confirmed."""
        if self.epoch is None:
            return False
        sent = self._clock()
        if reclaim:
            done = await self.redis.eval(RECLAIM, 2, LEADER_KEY, EPOCH_KEY, self._value,
                                          self.ttl_ms, self.epoch)
        else:
            done = await self.redis.eval(RENEW, 1, LEADER_KEY, self._value, self.ttl_ms)
        if not int(done):
            self._deadline = 0.0
            return False
        self._extend_from(sent)
        return True

    async def release(self) -> None:
        """End this term at once (a clean shutdown), so a standby need not wait it out."""
        self._deadline = 0.0
        if self.epoch is not None:
            await self.redis.eval(RELEASE, 1, LEADER_KEY, self._value)

    def holds(self) -> bool:
        """Whether this node may still act as leader by its own clock."""
        return self._clock() < self._deadline

    @property
    def margin_s(self) -> float:
        return self._margin_s

    @property
    def deadline(self) -> float:
        """Until when, on the monotonic clock, this node may act by Redis's word."""
        return self._deadline

    def ms_left(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))

    async def holder(self) -> Holder | None:
        """Who holds the lease now, as Redis says."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(LEADER_KEY)
            pipe.pttl(LEADER_KEY)
            value, ttl = await pipe.execute()
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        instance, _, epoch = text.rpartition(" ")
        return Holder(instance, int(epoch), max(0, int(ttl)))

    def _extend_from(self, sent: float) -> None:
        # From when the request left, not when the answer came: Redis may have set the
        # expiry at any instant in between.
        self._deadline = sent + self.ttl_ms / 1000 - self._margin_s
