"""Client-side rate limits that wait rather than fail: at most N calls in any window."""

from __future__ import annotations

import asyncio
import time
from collections import deque

# The venue counts at arrival; a little margin keeps network jitter from bunching two windows.
SAFETY = 1.05


class Throttle:
    """A sliding-window log per limit: `acquire` returns when a call is allowed by all."""

    def __init__(self, *limits: tuple[int, float]):
        self._limits = [(count, period * SAFETY, deque[float]()) for count, period in limits]
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                wait = 0.0
                for count, period, calls in self._limits:
                    while calls and now - calls[0] >= period:
                        calls.popleft()
                    if len(calls) >= count:
                        wait = max(wait, period - (now - calls[0]))
                if wait <= 0:
                    for _, _, calls in self._limits:
                        calls.append(now)
                    return
                await asyncio.sleep(wait)
