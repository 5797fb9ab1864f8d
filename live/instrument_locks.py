"""One lock per instrument: everything that changes an instrument's layers at the broker —
its signals, exit retries, rolls, reconciliation's bookings — runs one at a time."""

from __future__ import annotations

import asyncio


class InstrumentLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def __call__(self, instrument: str) -> asyncio.Lock:
        lock = self._locks.get(instrument)
        if lock is None:
            lock = self._locks[instrument] = asyncio.Lock()
        return lock
