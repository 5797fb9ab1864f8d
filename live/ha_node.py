"""One node of a pair (DESIGN.md §10): stand by, win a term, keep it, lose it.

The node runs one loop every `ttl / 5`. A standby reads the PostgreSQL lease; once it has
run out it asks Redis for a term and, given one, takes the lease and moves the fence in one
transaction — then `elected` is set and the daemon promotes itself. A leader renews both
halves of its term; either confirmed renewal extends its deadline on the monotonic clock,
measured from when that renewal was sent. Past the deadline, or once the database says a
successor began, `lost` is set and the daemon demotes itself; `may_act()` — asked before
every broker call — is False from that instant.

Why either renewal is enough: a successor needs Redis to start a term AND the database
lease to have run out. Redis away, the leader keeps trading on the database's word; the
database away, it may still finish broker calls for intents already committed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
import structlog
from redis.exceptions import RedisError

from live.fence_lease import FenceLease, LeaseState
from live.leader_lease import LeaderLease

log = structlog.get_logger(__name__)

# What may fail a round without ending it: the next round asks again.
UNREACHABLE = (RedisError, psycopg.Error, OSError, TimeoutError)


class Role(StrEnum):
    SINGLE = "single"
    STANDBY = "standby"
    LEADER = "leader"


class HaNode:
    def __init__(self, lease: LeaderLease, fence: FenceLease, instance: str, *,
                 clock: Callable[[], float] = time.monotonic):
        self._lease = lease
        self.redis = lease.redis  # the pair's Redis: the leader publishes the events there
        self._fence = fence
        self.instance = instance
        self._clock = clock
        self.ttl_ms = lease.ttl_ms
        self.interval_s = lease.ttl_ms / 5000
        self._margin_s = lease.margin_s
        self.role = Role.STANDBY
        self.epoch: int | None = None
        self._pg_deadline = 0.0
        self.redis_available = True
        self.database_available = True
        self.leader: str | None = None  # who leads, as the database's lease says
        self.leader_ms_left = 0
        self.peer_last_seen: datetime | None = None
        self.elected = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost_because: str | None = None
        # Changes for the audit log (and so the events outbox), written by the loop: a lost
        # term or a lost Redis is recorded even though neither is a transaction of the book.
        # Each carries its own id, so a write repeated after an unanswered one is not kept
        # twice; one writer at a time (the loop's last round meets a demotion's release).
        self._notes: list[tuple[str, dict[str, Any]]] = []
        self._writing = asyncio.Lock()

    # -- what the rest of the daemon asks ---------------------------------------------------
    def may_act(self) -> bool:
        """Whether this node may call the broker now: a leader within its deadline."""
        return (self.role is Role.LEADER and not self.lost.is_set()
                and self._clock() < self._deadline())

    def ms_left(self) -> int:
        if self.role is not Role.LEADER:
            return 0
        return max(0, int((self._deadline() - self._clock()) * 1000))

    def report(self) -> dict[str, Any]:
        return {"instance": self.instance, "epoch": self.epoch,
                "leader": self.instance if self.role is Role.LEADER else self.leader,
                "lease_ms_left": self.ms_left() if self.role is Role.LEADER
                else self.leader_ms_left,
                "peer_last_seen": self.peer_last_seen,
                "redis_available": self.redis_available,
                "failover_possible": self.redis_available and self.database_available,
                "lost": self.lost_because}

    def not_ready_reason(self) -> str | None:
        if self.role is Role.LEADER:
            return None
        leader = self.leader if self.leader_ms_left else None
        return f"standby (leader: {leader or 'none'})"

    # -- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        while not self.lost.is_set():
            started = self._clock()
            if self.role is Role.LEADER:
                await self._keep()
                wait = self.interval_s
            else:
                wait = await self._stand_by()
            await self._write_notes()
            try:  # a transaction fenced meanwhile ends the wait: the loss is written now
                async with asyncio.timeout(max(0.0, wait - (self._clock() - started))):
                    await self.lost.wait()
            except TimeoutError:
                pass
        await self._write_notes()

    def _note(self, event: str, details: dict[str, Any]) -> None:
        self._notes.append((event, {**details, "note": uuid.uuid4().hex}))

    async def _write_notes(self) -> None:
        async with self._writing:
            while self._notes:
                event, details = self._notes[0]
                try:
                    async with asyncio.timeout(self.interval_s):
                        await self._fence.record(event, details, str(self.role))
                except UNREACHABLE as exc:  # the next round writes it
                    log.warning("audit_write_failed", audit_event=event, error=str(exc))
                    return
                self._notes.pop(0)

    async def release(self) -> None:
        """End this term at once (clean shutdown, demotion), so the standby need not wait."""
        # The loop may have been cancelled by the stop before writing its last notes (a lost
        # term, typically): they are written here, before the restart forgets them.
        await self._write_notes()
        if self.epoch is None:
            return
        for release in (self._lease.release(), self._fence.release(self.epoch)):
            try:
                async with asyncio.timeout(self.interval_s):
                    await release
            except UNREACHABLE as exc:
                log.warning("lease_release_failed", error=str(exc))

    async def _stand_by(self) -> float:
        """One standby round; return how long to wait before the next."""
        try:
            state = await self._fence.state()
        except UNREACHABLE as exc:
            self._database(False, exc)
            return self.interval_s
        self._database(True)
        self._seen(state)
        if state.ms_left and state.instance != self.instance:
            await self._probe_redis()  # could this node take over, were the leader to go?
            # Ask again just after the leader's lease would run out: failover within TTL.
            return min(self.interval_s, state.ms_left / 1000 + 0.02)
        try:
            async with asyncio.timeout(self.interval_s):
                epoch = await self._lease.acquire(floor=state.epoch)
        except UNREACHABLE as exc:
            self._redis(False, exc)
            return self.interval_s
        self._redis(True)
        if epoch is None:
            return min(self.interval_s, 0.1)  # the old term's key has not expired yet
        sent = self._clock()
        try:
            taken = await self._fence.take(epoch, self.ttl_ms, state.instance)
        except UNREACHABLE as exc:
            self._database(False, exc)
            taken = False
        if not taken:  # the database lease is held after all: let its holder keep Redis
            await self._lease.release()
            return self.interval_s
        self.epoch, self.role = epoch, Role.LEADER
        self._pg_deadline = sent + self.ttl_ms / 1000 - self._margin_s
        log.warning("leadership_acquired", instance=self.instance, epoch=epoch,
                    previous=state.instance)
        if self.ms_left() < (self.interval_s + self._margin_s) * 1000:
            # Moving the fence waited for the old leader's open transactions (it was frozen
            # inside one): the term is used up before it began. Renew it before promoting,
            # or the promotion would meet a broker this node may not call.
            await self._keep()
            if self.lost.is_set():
                return self.interval_s
        self.elected.set()
        return self.interval_s

    async def _probe_redis(self) -> None:
        try:
            async with asyncio.timeout(self.interval_s):
                await self._lease.holder()
            self._redis(True)
        except UNREACHABLE as exc:
            self._redis(False, exc)

    async def _keep(self) -> None:
        """One leader round: renew both halves; demote when neither holds."""
        assert self.epoch is not None
        sent = self._clock()
        try:
            async with asyncio.timeout(self.interval_s):
                if not await self._lease.renew(reclaim=sent < self._pg_deadline):
                    log.warning("redis_lease_held_elsewhere", epoch=self.epoch)
            self._redis(True)
        except UNREACHABLE as exc:
            self._redis(False, exc)
        try:
            ours = await self._fence.renew(self.epoch, self.ttl_ms)
            self._database(True)
            if not ours:
                self._lose("a newer leader took the book")
                return
            self._pg_deadline = sent + self.ttl_ms / 1000 - self._margin_s
            self._seen(await self._fence.state())
        except UNREACHABLE as exc:
            self._database(False, exc)
        if self._clock() >= self._deadline():
            self._lose("the lease ran out without a confirmed renewal")

    def fenced(self) -> None:
        """A transaction found a newer epoch in the fence: step down now."""
        self._lose("fenced by a newer leader")

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            self.lost_because = why
            log.critical("leadership_lost", instance=self.instance, epoch=self.epoch, why=why)
            self.role = Role.STANDBY  # what this process restarts as
            self._note("leadership_lost",
                       {"instance": self.instance, "epoch": self.epoch, "why": why})
            self.lost.set()

    def _deadline(self) -> float:
        return max(self._lease.deadline, self._pg_deadline)

    def _seen(self, state: LeaseState) -> None:
        self.leader, self.leader_ms_left = state.instance, state.ms_left
        self.peer_last_seen = state.peer_last_seen

    def _redis(self, available: bool, exc: BaseException | None = None) -> None:
        if available != self.redis_available:
            if available:
                log.warning("redis_available", instance=self.instance)
                self._note("redis_available", {"instance": self.instance,
                                               "failover_possible": True})
            else:
                # A standby cannot take over meanwhile: say so loudly, once.
                log.error("redis_unavailable", instance=self.instance, role=self.role,
                          error=repr(exc), failover_possible=False)
                self._note("redis_unavailable", {
                    "instance": self.instance, "role": str(self.role),
                    "error": type(exc).__name__, "failover_possible": False})
        self.redis_available = available

    def _database(self, available: bool, exc: BaseException | None = None) -> None:
        if available != self.database_available and not available:
            log.error("lease_database_unavailable", instance=self.instance, error=repr(exc))
        self.database_available = available
