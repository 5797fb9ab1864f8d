"""The book's exposure as the engine sizes against it: kept by instrument, brought up to date
with only what moved since it was last asked — the instruments whose layers changed (the
cache's change log) and those with a new price."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

from core.book_store import BookStore
from core.exposure import Exposure, RunningExposure
from core.specs import InstrumentSpec


class BookExposure:
    def __init__(self, db: BookStore, instruments: dict[str, InstrumentSpec],
                 price_of: Callable[[str], Decimal | None]):
        self._db = db
        self._price_of = price_of
        self._running = RunningExposure(instruments)
        self._repriced: set[str] = set()
        self._whole = True  # the next read takes the whole book (first, or after a failure)
        # One reader at a time: an update read earlier must not land after a newer one.
        self._reading = asyncio.Lock()

    def repriced(self, instrument: str) -> None:
        """Note that the instrument's price moved."""
        self._repriced.add(instrument)

    async def exposure(self) -> Exposure:
        """The book's exposure at the last prices (the cache is the book: a read-through
        reloads an instrument the cache dropped)."""
        async with self._reading:
            return await self._read()

    async def _read(self) -> Exposure:
        moved = self._db.moved_layers()
        if moved is None or self._whole:
            self._whole, self._repriced = True, set()
            self._running.reset(await self._db.all_live_layers(), self._price_of)
            self._whole = False
        else:
            pending = list(moved | self._repriced)
            self._repriced = set()
            try:
                while pending:
                    instrument = pending[-1]
                    self._running.update(instrument, await self._db.live_layers(instrument),
                                         self._price_of(instrument))
                    pending.pop()
            finally:  # a read that failed leaves what it did not take for the next one
                self._repriced.update(pending)
        return self._running.exposure(await self._db.portfolio_state())
