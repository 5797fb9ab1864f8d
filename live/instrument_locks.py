"""One lock per instrument: everything that changes an instrument's layers at the broker —
its signals, exit retries, rolls, reconciliation's bookings — runs one at a time."""

from __future__ import annotations

import asyncio
from typing import Literal


class InstrumentLock(asyncio.Lock):
    """An asyncio lock that can also be taken only if that costs no wait."""

    def __init__(self) -> None:
        super().__init__()
        self._wanted = 0  # tasks inside `acquire`: holding or queued for the lock

    async def acquire(self) -> Literal[True]:
        self._wanted += 1
        try:
            return await super().acquire()
        finally:
            self._wanted -= 1

    def try_acquire(self) -> bool:
        """Take the lock now if no one holds it or waits for it; never wait. (A released
        lock with a task queued for it is promised to that task: not free.)"""
        if self.locked() or self._wanted:
            return False
        attempt = super().acquire()
        try:
            attempt.send(None)  # free and unwanted: it completes without suspending
        except StopIteration:
            return True
        attempt.close()
        raise RuntimeError("an instrument lock that looked free had to be waited for")


class InstrumentLocks:
    def __init__(self) -> None:
        self._locks: dict[str, InstrumentLock] = {}

    def __call__(self, instrument: str) -> InstrumentLock:
        lock = self._locks.get(instrument)
        if lock is None:
            lock = self._locks[instrument] = InstrumentLock()
        return lock
