"""A pair's node over its life (DESIGN.md §10): join, stand by, and step down by starting
again as a standby in the same process."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import structlog

from config.errors import ConfigError
from config.settings import Settings
from core.db_pool import TRANSIENT_ERRORS
from core.db_state_manager import DatabaseStateManager
from live.fence_lease import FenceLease
from live.waiting import woken

if TYPE_CHECKING:
    from live.ha_node import HaNode

log = structlog.get_logger(__name__)

LISTEN_FD = "PM_LISTEN_FD"  # the listening socket a node restarting as standby hands over


async def join_pair(settings: Settings, stack: AsyncExitStack, conninfo: str,
                    instance: str) -> HaNode | None:
    """With a Redis URL, this daemon is one node of a pair (None: a single daemon)."""
    if settings.redis_url is None:
        return None
    if settings.db_config is None:
        raise ConfigError("a pair shares one database: give --db-config with --redis-url")
    # Imported by a pair only: Redis costs a single daemon's start tens of ms.
    from redis.asyncio import Redis

    from live.ha_node import HaNode
    from live.leader_lease import LeaderLease

    interval_s = settings.lease_ttl_ms / 5000
    redis = Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=interval_s,
                           socket_connect_timeout=interval_s)
    stack.push_async_callback(redis.aclose)
    fence = FenceLease(conninfo, instance, timeout_s=interval_s)
    stack.push_async_callback(fence.close)
    node = HaNode(LeaderLease(redis, instance, ttl_ms=settings.lease_ttl_ms), fence, instance)
    stack.push_async_callback(node.release)  # last of the term: after in-flight calls ended
    return node


async def stand_by(node: HaNode, db: DatabaseStateManager) -> None:
    """Serve views of the book as the leader keeps it until this node is elected."""
    log.info("standing_by", instance=node.instance)
    while not node.elected.is_set():
        try:
            await db.load_cache()  # the views read the cache: keep it the leader's
        except TRANSIENT_ERRORS as exc:
            log.warning("database_unavailable", error=str(exc))
        await woken(node.elected, node.interval_s)
    log.info("promoting", instance=node.instance, epoch=node.epoch)


async def step_down_when_lost(node: HaNode, stop: asyncio.Event,
                              listener: socket.socket | None, grace_s: float) -> None:
    await node.lost.wait()
    stop.set()  # demotion is a clean stop, then a fresh start as standby
    # The clean stop lets in-flight calls end and be recorded. One that hangs must not keep
    # the node out of the pair: past the grace it starts again regardless (from a thread,
    # should the loop itself be stuck). Nothing it abandons can reach the broker: the term
    # is over, and every request asks first.
    loop = asyncio.get_running_loop()

    def force() -> None:
        loop.call_soon_threadsafe(log_pending_tasks)
        time.sleep(0.5)
        log.error("demotion_forced", after_s=grace_s)
        restart_as_standby(listener)

    timer = threading.Timer(grace_s, force)
    timer.daemon = True
    timer.start()


def log_pending_tasks() -> None:
    """What a stop that did not finish was waiting for: each task's chain of awaits."""
    for task in asyncio.all_tasks():
        chain: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None and len(chain) < 12:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                break
            chain.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} "
                         f"{frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom",
                                                                     None)
        log.error("stop_waiting_for", task=task.get_name(), awaits=chain)


def restart_as_standby(listener: socket.socket | None) -> None:
    """Start again in this process, as a standby: nothing of the lost term survives in memory.
    The listening socket is handed over, so webhooks wait in its queue rather than fail."""
    env = dict(os.environ)
    env.pop("PM_FAILPOINT", None)  # a crash test's fail point fires in one process only
    if listener is not None:
        kept = os.dup(listener.fileno())
        os.set_inheritable(kept, True)
        env[LISTEN_FD] = str(kept)
    log.warning("restarting_as_standby")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
