"""Waiting with a time limit that never loses a cancellation.

On Python 3.11, `asyncio.wait_for` hands back the awaited result when a cancellation lands in
the same loop turn as that result (bpo-42130; rewritten in 3.12). A loop that waits for its
wake-up that way can swallow the very cancel meant to stop it, and then runs on forever: the
broker-stop keeper did, poked by a burst of alerts as SIGTERM arrived, and the daemon never
exited. `asyncio.timeout` tells its own expiry from a cancel sent by anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(timeout_s: float, awaitable: Awaitable[T]) -> T:
    """Await `awaitable` for at most `timeout_s` (TimeoutError past it); a cancellation
    always propagates."""
    async with asyncio.timeout(timeout_s):
        return await awaitable


async def woken(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `event`; return whether it is set."""
    with contextlib.suppress(TimeoutError):
        await within(timeout_s, event.wait())
    return event.is_set()
