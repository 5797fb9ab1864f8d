"""Continuous reconciliation: the broker's positions against the book, per instrument.

At startup, every `reconcile_interval_s` during an instrument's session, and soon after each
fill, each instrument's contracts are compared, holding its lock so that no signal moves its
layers meanwhile. Nothing here ever places an order:

- the broker holds less than the book, and trades that are not ours (its square-off, a manual
  sale in Kite) explain exactly the difference → those layers are booked closed at those
  trades' price, `BROKER_SQUARE_OFF`, in one transaction (never sold again);
- any other difference blocks that instrument's entries (`mismatch:<tradingsymbol>`), is
  logged once per change and counted in `pm_reconciliation_mismatches`;
- agreement clears the instrument's blocks.

An instrument with an order in flight (an unresolved intent, a closing layer) is left for
the next round: book and broker legitimately differ until its fill is booked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from core.book_store import BookStore
from core.calendar import TradingCalendar
from core.db_pool import TRANSIENT_ERRORS
from core.exposure import by_instrument
from core.models import Layer, LayerStatus
from core.reconciliation import (
    ACCEPTED_EVENT,
    Discrepancy,
    accepted,
    book_positions,
    diff_positions,
    explained_square_off,
)
from core.specs import InstrumentSpec
from live.brokers.base import Broker, BrokerError
from live.fill_booking import book_square_off
from live.instrument_locks import InstrumentLocks
from live.metrics import Metrics
from live.readiness import MISMATCH, Readiness

# How long the contract each instrument trades is trusted: a check after every fill would
# otherwise ask each instrument again (16k of them on a 100k-layer book), and a roll moves
# it only at its hour.
TRADED_TTL_S = 5.0
UNASSIGNED = "unassigned"  # the metric's label for broker positions no instrument holds
log = structlog.get_logger(__name__)

Waived = set[tuple[str, int, int]]


class FiredStops(Protocol):
    async def check_locked(self, instrument: str) -> bool: ...


class Reconciler:
    def __init__(self, db: BookStore, broker: Broker, instruments: dict[str, InstrumentSpec],
                 readiness: Readiness, *, locks: InstrumentLocks, metrics: Metrics,
                 clock: Callable[[], datetime],
                 in_session: Callable[[InstrumentSpec, datetime], bool] | None = None,
                 interval_s: float = 60.0, after_fill_delay_s: float = 1.0):
        self._db = db
        self._broker = broker
        self._instruments = instruments
        self._readiness = readiness
        self._locks = locks
        self._metrics = metrics
        self._clock = clock
        self._in_session = in_session or TradingCalendar({}).in_session
        self._interval_s = interval_s
        self.last_check: tuple[datetime, int] | None = None  # when, and differences found
        # Fills come in bursts (an exit of several contracts): one check after the last.
        self._after_fill_delay_s = after_fill_delay_s
        self._due: set[str] = set()
        self._after_fills: asyncio.Task[None] | None = None
        self._audits: set[asyncio.Task[None]] = set()  # mismatches being written down
        # The layers' broker stops: a shortfall their firing explains is theirs to book.
        self.stops: FiredStops | None = None
        self._traded_at: tuple[float | None, dict[str, str]] = (None, {})

    # -- when to check --------------------------------------------------------------------
    async def run(self, interval_s: float | None = None) -> None:
        """Check the instruments in session every `interval_s` (default: the one it was
        built with), until cancelled."""
        while True:
            await asyncio.sleep(interval_s or self._interval_s)
            now = self._clock()
            due = [name for name, spec in self._instruments.items()
                   if self._in_session(spec, now)]
            if due:
                await self._check_guarded(due)

    def after_fill(self, instrument: str) -> None:
        """Check `instrument` soon (a fill listener of the order flow; debounced)."""
        self._due.add(instrument)
        if self._after_fills is None or self._after_fills.done():
            self._after_fills = asyncio.get_running_loop().create_task(
                self._check_after_fills(), name="reconcile-after-fill")

    async def _check_after_fills(self) -> None:
        while self._due:
            await asyncio.sleep(self._after_fill_delay_s)
            due, self._due = self._due, set()
            await self._check_guarded(due)

    async def _check_guarded(self, instruments: Iterable[str]) -> None:
        """A task's check: a failure is logged, and the next round tries again."""
        try:
            await self.check(instruments)
        except (BrokerError, *TRANSIENT_ERRORS) as exc:
            log.warning("reconciliation_unavailable", error=f"{type(exc).__name__}: {exc}")
        except Exception:  # the reconciling task must outlive any one failure
            log.exception("reconciliation_failed")

    async def close(self) -> None:
        """Cancel a pending after-fill check."""
        if self._after_fills is not None:
            self._after_fills.cancel()
            await asyncio.gather(self._after_fills, return_exceptions=True)
        await asyncio.gather(*self._audits, return_exceptions=True)

    # -- the check ------------------------------------------------------------------------
    async def check(self, instruments: Iterable[str] | None = None, *,
                    compare_in_flight: bool = False) -> list[Discrepancy]:
        """Compare broker and book for these instruments (None: all), and broker positions
        no instrument holds; return the differences found (none for a skipped instrument,
        whose blocks stay as they were).

        The venue is read once for the whole check, and again only when an instrument's
        layers turn out to have moved since (a fill booked while the check waited for its
        lock): under the lock nothing of that instrument is in flight, so an unchanged book
        means the read still holds for it.

        `compare_in_flight`: compare an instrument with an unresolved intent or a closing
        layer too, reporting its differences without booking any (startup: after intents
        were resolved, what is left unresolved is stuck, not in flight).
        """
        selected = sorted(self._instruments if instruments is None else set(instruments))
        waived = accepted(await self._db.latest_event(ACCEPTED_EVENT))
        view = await self._view(selected)
        found: list[Discrepancy] = []
        for instrument in selected:
            async with self._locks(instrument):
                layers = await self._db.live_layers(instrument)
                if _signature(layers) != view.layers.get(instrument, ()):
                    view = await self._view(selected)
                found += await self._check_instrument(instrument, layers, view, waived,
                                                      compare_in_flight)
        found += self._check_unassigned(view, waived)
        self.last_check = (self._clock(), len(found))  # what the dashboard's health shows
        return found

    async def _view(self, selected: Collection[str]) -> _View:
        """The book's layers and unresolved intents, then the venue's positions; what the
        layers of the `selected` instruments were (a check after a fill looks at one, not at
        the whole book's)."""
        layers = await self._db.all_live_layers()
        unresolved = {i.instrument for i in await self._db.load_unresolved_intents()}
        positions = await self._broker.positions()
        wanted = set(selected)
        held = by_instrument(x for x in layers if x.instrument in wanted)
        holders = self._holders(layers)
        # Each instrument's venue positions, found once: not one scan of them per instrument.
        venue_symbols: dict[str, set[str]] = {}
        for symbol in positions:
            holder = holders.get(symbol)
            if holder is not None:
                venue_symbols.setdefault(holder, set()).add(symbol)
        return _View({name: _signature(held.get(name, ())) for name in selected},
                     positions, holders, unresolved, venue_symbols)

    async def _check_instrument(self, instrument: str, layers: list[Layer], view: _View,
                                waived: Waived, compare_in_flight: bool) -> list[Discrepancy]:
        in_flight = (any(x.status is LayerStatus.CLOSING for x in layers)
                     or instrument in view.unresolved)
        if in_flight and not compare_in_flight:
            log.info("reconciliation_skipped_in_flight", instrument=instrument)
            return []
        positions = view.positions
        symbols = {_symbol(x) for x in layers} | view.venue_symbols.get(instrument, set())
        book = book_positions(layers)
        differences = diff_positions({s: book.get(s, 0) for s in symbols},
                                     {s: positions.get(s, 0) for s in symbols})
        if (differences and not in_flight and self.stops is not None
                and await self.stops.check_locked(instrument)):
            log.info("reconciliation_deferred_broker_stop_fired", instrument=instrument)
            return []  # the stop's exit is booked from its order; the next check compares
        left = []
        for difference in differences:
            if not in_flight and await self._book_square_off(instrument, difference):
                continue
            if (difference.tradingsymbol, difference.book, difference.broker) not in waived:
                left.append(difference)
        self._show(instrument, left)
        return left

    def _check_unassigned(self, view: _View, waived: Waived) -> list[Discrepancy]:
        """Broker positions in contracts no instrument holds or trades today block every
        entry: which instrument's risk they carry is unknown."""
        left = [Discrepancy(symbol, 0, quantity)
                for symbol, quantity in sorted(view.positions.items())
                if symbol not in view.holders and (symbol, 0, quantity) not in waived]
        self._show(None, left)
        return left

    def _holders(self, layers: list[Layer]) -> dict[str, str]:
        """Which instrument each contract belongs to: the one whose layers hold it, else
        the one that trades it today."""
        holders = dict(self._traded())
        holders.update({_symbol(layer): layer.instrument for layer in layers})
        return holders

    def _traded(self) -> dict[str, str]:
        """The contract each instrument trades now, by contract (worked out again after
        `TRADED_TTL_S`, or at once if one could not be)."""
        checked, traded = self._traded_at
        if checked is not None and time.monotonic() - checked < TRADED_TTL_S:
            return traded
        now, traded, complete = self._clock(), {}, True
        for name in self._instruments:
            try:
                traded[self._broker.contract(name, now).tradingsymbol] = name
            except BrokerError:  # no contract loaded (e.g. no session yet): asked next time
                complete = False
        if complete:
            self._traded_at = (time.monotonic(), traded)
        return traded

    # -- outcomes -------------------------------------------------------------------------
    async def _book_square_off(self, instrument: str, difference: Discrepancy) -> bool:
        """Book the layers the broker closed itself, if its trades explain the difference."""
        if not 0 <= difference.broker < difference.book:
            return False
        square_off = explained_square_off(difference, await self._broker.trades(),
                                          await self._db.own_activity(difference.tradingsymbol))
        if square_off is None:
            return False
        return await book_square_off(self._db, instrument, self._instruments[instrument],
                                     square_off, self._clock())

    def _show(self, instrument: str | None, differences: list[Discrepancy]) -> None:
        """Block entries for each difference (logged and audited when new or changed);
        clear the rest."""
        wanted = {MISMATCH + d.tradingsymbol: d for d in differences}
        for key, block in self._readiness.blocks(MISMATCH).items():
            if block.instrument == instrument and key not in wanted:
                self._readiness.unblock(key)
                log.info("reconciliation_agreed", instrument=instrument,
                         tradingsymbol=key.removeprefix(MISMATCH))
        current = self._readiness.blocks(MISMATCH)
        news = []
        for key, difference in wanted.items():
            reason = f"position mismatch {difference.describe()}"
            shown = current.get(key)
            if shown is None or (shown.reason, shown.instrument) != (reason, instrument):
                log.error("reconciliation_mismatch", instrument=instrument,
                          tradingsymbol=difference.tradingsymbol, book=difference.book,
                          broker=difference.broker, detail=reason)
                self._readiness.block_entries(key, reason, instrument)
                news.append(difference)
        self._metrics.reconciliation_mismatches.labels(instrument or UNASSIGNED).set(
            len(differences))
        if news:  # beside the check, which may be a decision's: the audit never delays it
            task = asyncio.create_task(self._audit(instrument, news), name="mismatch-audit")
            self._audits.add(task)
            task.add_done_callback(self._audits.discard)

    async def _audit(self, instrument: str | None, news: list[Discrepancy]) -> None:
        """Put a new mismatch in the audit log (and so on the events stream); a failure to
        write it never stops the check."""
        if not news:
            return
        try:
            async with self._db.transaction() as tx:
                for difference in news:
                    await tx.log_event("reconciliation_mismatch",
                                       instrument=instrument,
                                       tradingsymbol=difference.tradingsymbol,
                                       book=difference.book, broker=difference.broker)
        except Exception:  # noqa: BLE001 - the block and the log line above still stand
            log.warning("reconciliation_mismatch_not_audited", exc_info=True)


def _symbol(layer: Layer) -> str:
    return layer.tradingsymbol or layer.instrument


def _signature(layers: Iterable[Layer]) -> tuple[tuple[int, int, str, str], ...]:
    """What of an instrument's layers a booked fill changes."""
    return tuple(sorted((x.id, x.quantity, x.status, _symbol(x)) for x in layers))


@dataclass(frozen=True, slots=True)
class _View:
    """One read of book and venue for a check."""

    layers: dict[str, tuple[tuple[int, int, str, str], ...]]
    positions: dict[str, int]
    holders: dict[str, str]
    unresolved: set[str]
    venue_symbols: dict[str, set[str]]  # instrument → the venue's positions it holds
