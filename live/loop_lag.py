"""How late the event loop runs: what the intake sees of a saturated daemon.

Past capacity an alert waits in its socket before the loop even reads it, so the intake
cannot see its age — but the loop's own lateness shows it: a timer due every 20 ms that
fires 800 ms late means what is read now was sent about that long ago.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

INTERVAL_S = 0.02
WINDOW_S = 1.0  # the lateness reported is the worst of the last second


class LoopLag:
    def __init__(self, interval_s: float = INTERVAL_S, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic):
        self._interval_s = interval_s
        self._window_s = window_s
        self._clock = clock
        self._late: deque[tuple[float, float]] = deque()  # (when, how late), newest last

    async def run(self) -> None:
        while True:
            started = self._clock()
            await asyncio.sleep(self._interval_s)
            now = self._clock()
            self._late.append((now, max(0.0, now - started - self._interval_s)))
            while self._late and self._late[0][0] < now - self._window_s:
                self._late.popleft()

    @property
    def lag_s(self) -> float:
        """The loop's worst lateness over the last window (0 when nobody measures it)."""
        return max((late for _, late in self._late), default=0.0)
