"""Protective stops resting at the broker (DOMAIN.md §12), kept in step with the book.

Each open layer has one: placed after its entry fills, moved up as its stop trails, cancelled
(and the cancel confirmed) before the daemon sends any other order that sells the layer, and
placed again on the new contract after a roll. A stop that fired — seen when cancelling it,
by the periodic check, or at startup after downtime — is adopted: an exit intent with reason
BROKER_STOP that owns the venue's order is committed with the stop's new state, and the
order flow books its fill like any exit's. The daemon's own sale of that layer is then
replanned without it, so the book shows exactly one sale.

Every broker call is preceded by a committed row (`broker_stops`) saying what is being asked,
so a crash at any point leaves a row that is resolved by reading the venue.
Everything that calls the venue runs under the instrument's lock, as the signal path does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import structlog

from core.broker_stops import (
    BROKER_STOP,
    GTT,
    PENDING,
    StopLevels,
    StopRecord,
    StopStatus,
    may_move,
    needs_stop,
    should_move,
    stop_levels,
)
from core.db_state_manager import DatabaseStateManager
from core.errors import VersionConflict
from core.intents import ExitPurpose, Sacred
from core.models import IntentStatus, Layer, LayerStatus, NewIntent, OrderIntent, Side
from core.specs import InstrumentSpec, PortfolioConfig
from live import failpoints
from live.broker_stop_store import (
    age_s,
    insert_stop,
    known_refs,
    latest_stops,
    update_stop,
)
from live.brokers.base import (
    Broker,
    BrokerAuthExpired,
    BrokerUnavailable,
    OrderRejected,
    StopOrder,
    StopState,
    VenueStop,
    read_through_outages,
)
from live.instrument_locks import InstrumentLocks
from live.readiness import Readiness
from live.stop_batches import (
    BatchStopVenue,
    Settled,
    StopBookVenue,
    ages_s,
    insert_stops,
    known_refs_of,
    settle_stops,
)
from live.stop_index import LatestStops
from live.stop_protection import Protection
from live.waiting import woken

CANCEL_CONFIRM_TRIES = 10
Placement = tuple[Layer, str, StopLevels]  # a stop to place: the layer, its kind, its levels
T = TypeVar("T")
log = structlog.get_logger(__name__)


class BrokerStops:
    def __init__(self, db: DatabaseStateManager, broker: Broker,
                 instruments: dict[str, InstrumentSpec], config: PortfolioConfig,
                 readiness: Readiness, locks: InstrumentLocks, *,
                 clock: Callable[[], datetime],
                 in_session: Callable[[InstrumentSpec, datetime], bool],
                 check_interval_s: float = 15.0, settle_s: float = 1.0,
                 placing_grace_s: float = 20.0,
                 retry_first_s: float = 0.25, retry_max_s: float = 5.0):
        self._db = db
        self._broker = broker
        self._instruments = instruments
        self._band = config.stop_limit_band_percent
        self._locks = locks
        self._clock = clock
        self._in_session = in_session
        self._check_interval_s = check_interval_s
        self._settle_s = settle_s
        self._retry = (retry_first_s, retry_max_s)
        # The newest stop of each live layer (and any stop still working), by layer id:
        # the keeper is their only writer, so this is what the table says.
        self._latest = LatestStops()
        self._dirty: set[str] = set()
        self._checks: set[str] = set()
        self._working = False  # a round is under way
        self._wake = asyncio.Event()
        self._placing_grace_s = placing_grace_s
        self._protection = Protection(readiness)
        # Told (after commit) of each exit intent adopted from a fired stop: it is to be
        # driven to its fill like any exit.
        self.adopt_listeners: list[Callable[[OrderIntent], None]] = []

    def kind(self, instrument: str) -> str | None:
        return self._broker.stop_kind(instrument)

    @property
    def enabled(self) -> bool:
        return any(self.kind(name) is not None for name in self._instruments)

    # -- what the rest of the daemon sees ---------------------------------------------------
    def of_layer(self, layer_id: int) -> StopRecord | None:
        return self._latest.get(layer_id)

    def view(self, layer_id: int) -> dict[str, Any] | None:
        """A layer's broker stop as /positions shows it."""
        record = self._latest.get(layer_id)
        if record is None:
            return None
        return {"kind": record.kind, "id": record.broker_ref, "tag": record.tag,
                "trigger": str(record.trigger_price), "limit": str(record.limit_price),
                "status": record.status.value, "reason": record.reason}

    # -- when to work ---------------------------------------------------------------------
    def poke(self, instrument: str) -> None:
        """Bring `instrument`'s stops in step with its book soon (a decision or a fill
        listener: returns at once)."""
        if self.kind(instrument) is not None:
            self._dirty.add(instrument)
            self._wake.set()

    def check_soon(self, instrument: str | None = None) -> None:
        """Read the venue's state of these stops soon (a postback of an order the daemon
        did not place: a stop may have fired)."""
        self._checks.update(self._instruments if instrument is None else {instrument})
        self._wake.set()

    async def run(self) -> None:
        """Keep every instrument's stops in step until cancelled: at once when poked, and
        every `check_interval_s` with a read of the venue (a stop may have fired or lapsed)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self._check_interval_s
        while True:
            await woken(self._wake, max(0.0, due - loop.time()))
            self._wake.clear()
            if loop.time() >= due:
                self._checks.update(self._instruments)
                due = loop.time() + self._check_interval_s
            checks, self._checks = self._checks, set()
            dirty, self._dirty = self._dirty | checks, set()
            self._working = True
            try:
                for instrument in sorted(dirty):
                    if self.kind(instrument) is None:
                        continue
                    try:
                        async with self._locks(instrument):
                            if instrument in checks:
                                await self.check_locked(instrument)
                            await self.sync_locked(instrument, periodic=instrument in checks)
                    except Exception:  # the keeper outlives any one failure; the next round retries
                        log.exception("broker_stops_failed", instrument=instrument)
            finally:
                self._working = False

    async def load(self) -> None:
        async with self._db.transaction() as tx:
            records = await latest_stops(tx.conn)
        self._latest = LatestStops(records)

    async def recover(self) -> list[OrderIntent]:
        """At startup, after intents were resolved: settle every stop a crash left pending,
        adopt those that fired while the daemon was down, and protect every open layer.
        Return the exit intents adopted (to be driven before the daemon is ready)."""
        adopted: list[OrderIntent] = []
        # Recovery drives these itself, before the daemon is ready.
        listeners, self.adopt_listeners = self.adopt_listeners, [adopted.append]
        try:
            todo = [name for name in sorted(self._instruments) if self.kind(name) is not None]
            # A placement the crash left unanswered is settled before the daemon is ready:
            # looked for again until found, or old enough to be known lost (then placed).
            for _ in range(int(self._placing_grace_s) + 2):
                if isinstance(self._broker, BatchStopVenue):
                    await self._batch_round(self._broker, todo)
                else:
                    for instrument in todo:
                        async with self._locks(instrument):
                            await self.check_locked(instrument)
                            await self.sync_locked(instrument)
                todo = sorted({r.instrument for r in self._latest.values()
                               if r.status is StopStatus.PLACING})
                if not todo:
                    break
                await asyncio.sleep(1.0)
        finally:
            self.adopt_listeners = listeners
        return adopted

    # -- keeping in step (the caller holds the instrument's lock) -------------------------
    async def check_locked(self, instrument: str, read: Mapping[int, VenueStop] | None = None
                           ) -> bool:
        """Read the venue's state of each of the instrument's stops; adopt any that fired,
        note any that lapsed or were refused. Return whether one was adopted.

        `read`: what a batch round read of the venue for these stops, by row id (and its
        placements, settled already in that round)."""
        layers = {x.id: x for x in await self._db.live_layers(instrument)}
        adopted = False
        for record in self._latest.of(instrument):
            before = record.status
            if record.status in PENDING and (read is None
                                             or record.status is not StopStatus.PLACING):
                record = await self._resolve(record, layers.get(record.position_id))
            if record.status is StopStatus.ACTIVE:
                venue = read.get(record.id) if read is not None else None
                if venue is None:
                    venue = await self._reading(self._state_call(record))
                if venue.state is not StopState.ACTIVE:  # resting, as recorded: nothing to do
                    record = await self._apply_venue(record, venue,
                                                     layers.get(record.position_id))
            adopted |= record.status is StopStatus.TRIGGERED and before is not record.status
        return adopted

    def quiet_at(self, instrument: str, price: Decimal) -> bool:
        """Whether `reached_locked` would read nothing at `price`."""
        return not any(r.status is StopStatus.ACTIVE and price <= r.trigger_price
                       for r in self._latest.of(instrument))

    async def reached_locked(self, instrument: str, price: Decimal) -> None:
        """Before a decision at `price`: read each of the instrument's stops the price
        reached. It may have fired at the venue a moment ago, its postback still on the
        way; adopted now, the decision sees the venue's sale whichever came first. One
        read each, no waiting out an outage: a sale of the layer still goes through
        `release`."""
        if self.quiet_at(instrument, price):
            return
        reached = [r for r in self._latest.of(instrument)
                   if r.status is StopStatus.ACTIVE and price <= r.trigger_price]
        layers = {x.id: x for x in await self._db.live_layers(instrument)}
        for record in reached:
            venue = await self._state_call(record)()
            await self._apply_venue(record, venue, layers.get(record.position_id))

    async def sync_locked(self, instrument: str, *, periodic: bool = True,
                          placements: list[Placement] | None = None) -> None:
        """Place, move or cancel the instrument's stops so each open layer has one at its
        current stop (and no stop outlives its layer). A stop the venue refused or let
        lapse is placed again: the price, the session or the account may have changed.
        A placement whose answer was lost is looked for only by a `periodic` round (it
        waits for the venue's book to settle, under the lock the signals need).
        `placements`: a batch round's, where the stops to place are put instead (the round
        places them together, then shows what is protected)."""
        kind = self.kind(instrument)
        if kind is None:
            return
        spec = self._instruments[instrument]
        layers = await self._db.live_layers(instrument)
        live = {x.id for x in layers}
        for orphan in [r for r in self._latest.of(instrument) if r.position_id not in live]:
            if orphan.working:  # its layer was closed without it (a broker square-off)
                fired = await self._cancel(orphan)
                if fired is not None:
                    await self._apply_venue(self._latest[orphan.position_id], fired, None)
            self._latest.pop(orphan.position_id)
        in_session = self._in_session(spec, self._clock())
        for layer in layers:
            record: StopRecord | None = self._latest.get(layer.id)
            if record is not None and record.status in PENDING and (
                    periodic or record.status is not StopStatus.PLACING):
                record = await self._resolve(record, layer)
            if not needs_stop(layer):
                continue
            if record is not None and record.working and (
                    record.quantity != layer.quantity
                    or record.tradingsymbol != layer.tradingsymbol):
                # A partial exit or a roll changed what the layer holds: a new stop.
                venue = await self._cancel(record)
                if venue is not None:
                    await self._adopt(self._latest[layer.id], venue, layer)
                    continue
                record = self._latest.get(layer.id)
            if record is None or not record.working:
                if record is not None and record.status is StopStatus.TRIGGERED:
                    continue  # fired: its order sells the layer
                if kind != GTT and not in_session:  # a DAY order only while the session runs
                    continue
                wanted = stop_levels(layer, self._band, spec.tick_size)
                if placements is None:
                    await self._place(layer, kind, wanted)
                else:
                    placements.append((layer, kind, wanted))
            elif record.status is StopStatus.ACTIVE and may_move(record, layer):
                wanted = stop_levels(layer, self._band, spec.tick_size)
                if should_move(record, wanted):
                    await self._modify(record, wanted, layer)
        if placements is None:
            self._show(instrument, layers, in_session or kind == GTT)

    async def release(self, intent: OrderIntent) -> frozenset[int]:
        """Before the daemon sells `intent`'s layers: cancel their stops and confirm each
        cancel. Return the layers whose stop had fired instead (adopted: the venue's order
        sells them, so the daemon must not). The caller holds the instrument's lock."""
        purpose = intent.purpose
        if not isinstance(purpose, Sacred) or self.kind(intent.instrument) is None:
            return frozenset()
        layers = {x.id: x for x in await self._db.live_layers(intent.instrument)}
        taken: set[int] = set()
        working: list[StopRecord] = []
        for layer_id in purpose.position_ids:
            record = self._latest.get(layer_id)
            if record is None:
                continue
            if not record.working:
                # Fired and adopted already (by a check while this sale waited its turn):
                # that exit sells it. Not for the adopted exit's own attempts, of course.
                if (record.status is StopStatus.TRIGGERED and layer_id in layers
                        and not (isinstance(purpose, ExitPurpose)
                                 and purpose.reason == BROKER_STOP)):
                    taken.add(layer_id)
                continue
            if record.status in PENDING:
                record = await self._resolve(record, layers.get(layer_id), adopting=False)
                if record.status is StopStatus.PLACING:  # it may rest there: never sell over
                    raise BrokerUnavailable(f"broker stop {record.tag} placement unresolved")
                if not record.working:
                    continue
            working.append(record)
        for record, venue in await self._cancel_all(working):
            layer_id = record.position_id
            if layer_id not in layers:
                continue
            if not venue.order_id and not venue.message:  # fired, its order not shown yet
                raise BrokerUnavailable(f"broker stop {record.tag} fired, order unknown")
            await self._adopt(self._latest[layer_id], venue, layers[layer_id])
            taken.add(layer_id)
        return frozenset(taken)

    # -- a round over many instruments at once (startup) ---------------------------------
    async def _batch_round(self, venue: BatchStopVenue, instruments: list[str]) -> None:
        """`check_locked` then `sync_locked` of every instrument, as one round: the venue is
        read, and the missing stops placed, in one request each for the whole book."""
        async with AsyncExitStack() as held:
            for instrument in instruments:  # sorted: the order whoever takes several keeps
                await held.enter_async_context(self._locks(instrument))
            await self._settle_placings(venue, instruments)
            read = await self._read_all(venue, [r for name in instruments
                                                for r in self._latest.of(name)
                                                if r.status is StopStatus.ACTIVE])
            placements: list[Placement] = []
            for instrument in instruments:
                await self.check_locked(instrument, read)
                await self.sync_locked(instrument, periodic=False, placements=placements)
            await self._place_all(venue, placements)
            now = self._clock()
            for instrument in instruments:
                expected = (self.kind(instrument) == GTT
                            or self._in_session(self._instruments[instrument], now))
                self._show(instrument, await self._db.live_layers(instrument), expected)

    async def _settle_placings(self, venue: BatchStopVenue, instruments: list[str]) -> None:
        """`_resolve` of every placement whose answer was lost, together: found at the
        venue, it is active; not found and old enough, it never got there (lapsed)."""
        placing = [r for name in instruments for r in self._latest.of(name)
                   if r.status is StopStatus.PLACING]
        if not placing:
            return
        await asyncio.sleep(self._settle_s)  # let the venue's book catch up
        async with self._db.transaction() as tx:
            known = await known_refs_of(tx.conn, sorted({r.tradingsymbol for r in placing}))
        found = await self._reading(lambda: venue.find_stops(
            [self._order(r) for r in placing], known))
        async with self._db.transaction() as tx:
            ages = await ages_s(tx.conn, [r.id for r in placing if r.tag not in found])
        changes: list[Settled] = []
        for record in placing:
            if record.tag in found:
                changes.append((record, StopStatus.ACTIVE, found[record.tag].ref, None))
            elif ages.get(record.id, 0.0) >= self._placing_grace_s:
                changes.append((record, StopStatus.LAPSED, None,
                                "placement never reached the venue"))
        await self._write_all(changes)

    async def _place_all(self, venue: BatchStopVenue, placements: list[Placement]) -> None:
        """`_place` of every stop of a round: their rows in one commit, then one request."""
        if not placements:
            return
        async with self._db.transaction() as tx:
            records = await insert_stops(tx.conn, placements)
        for record in records:
            self._latest[record.position_id] = record
        try:
            refs = await venue.place_stops([self._order(r) for r in records])
        except (OrderRejected, BrokerAuthExpired) as exc:  # nothing rests at the venue
            await self._write_all([(r, StopStatus.REJECTED, None, str(exc)) for r in records])
            log.error("broker_stops_refused", count=len(records), reason=str(exc))
            return
        except BrokerUnavailable as exc:  # they may rest there: looked up before anything else
            log.warning("broker_stops_ambiguous", count=len(records), error=str(exc))
            return
        failpoints.reached("after_stop_placed")
        placed = await self._write_all([(r, StopStatus.ACTIVE, ref, None)
                                        for r, ref in zip(records, refs, strict=True)])
        for record in placed:  # the info line is the round's: thousands would cost seconds
            log.debug("broker_stop_placed", instrument=record.instrument,
                      position_id=record.position_id, kind=record.kind, ref=record.broker_ref,
                      tag=record.tag, trigger=str(record.trigger_price),
                      limit=str(record.limit_price))
        log.info("broker_stops_placed", count=len(placed))
        layers = {layer.id: layer for layer, _, _ in placements}
        gtts = [r for r in placed if r.kind == GTT]  # one too close to the price is disabled
        read = await self._read_all(venue, gtts)
        for record in gtts:
            state = read.get(record.id)
            if state is None:
                state = await self._reading(self._state_call(record))
            await self._apply_venue(record, state, layers[record.position_id])

    async def _read_all(self, venue: BatchStopVenue, records: list[StopRecord]
                        ) -> dict[int, VenueStop]:
        """The venue's state of each of these stops, by row id (one it does not know is
        left out: read on its own, as the keeper reads one stop)."""
        refs = [r.broker_ref for r in records if r.broker_ref is not None]
        if not refs:
            return {}
        states = await self._reading(lambda: venue.stop_states(refs))
        return {r.id: states[r.broker_ref] for r in records
                if r.broker_ref is not None and r.broker_ref in states}

    async def _states(self, records: list[StopRecord]) -> dict[int, VenueStop]:
        """The venue's state of each of these stops (all placed), by row id: one read for
        all of a kind where the venue reads many at once, else (or for one it did not
        list) one read each."""
        read: dict[int, VenueStop] = {}
        venue = self._broker
        if len(records) > 1 and isinstance(venue, BatchStopVenue):
            read = await self._read_all(venue, records)
        elif len(records) > 1 and isinstance(venue, StopBookVenue):
            for kind in sorted({r.kind for r in records}):
                read |= await self._read_kind(venue, kind, [r for r in records
                                                            if r.kind == kind])
        for record in records:
            if record.id not in read:
                read[record.id] = await self._reading(self._state_call(record))
        return read

    async def _read_kind(self, venue: StopBookVenue, kind: str, records: list[StopRecord]
                         ) -> dict[int, VenueStop]:
        refs = [r.broker_ref for r in records if r.broker_ref is not None]
        states = await self._reading(lambda: venue.stop_states_of(kind, refs))
        return {r.id: states[r.broker_ref] for r in records
                if r.broker_ref is not None and r.broker_ref in states}

    async def _write_all(self, changes: list[Settled]) -> list[StopRecord]:
        if not changes:
            return []
        try:
            async with self._db.transaction() as tx:
                updated = await settle_stops(tx.conn, changes)
        except VersionConflict:
            await self.load()  # as `_write`: start again from the table
            raise
        for record in updated:
            self._latest[record.position_id] = record
        return updated

    # -- one step each: a committed row, then the venue -----------------------------------
    async def _place(self, layer: Layer, kind: str, wanted: StopLevels) -> None:
        async with self._db.transaction() as tx:
            record = await insert_stop(tx.conn, layer, kind, wanted)
        self._latest[layer.id] = record
        try:
            ref = await self._broker.place_stop(self._order(record))
        except (OrderRejected, BrokerAuthExpired) as exc:  # nothing rests at the venue
            await self._write(record, status=StopStatus.REJECTED, reason=str(exc))
            log.error("broker_stop_refused", instrument=layer.instrument, layer=layer.layer,
                      position_id=layer.id, tag=record.tag, reason=str(exc))
            return
        except BrokerUnavailable as exc:  # it may rest there: looked up before anything else
            log.warning("broker_stop_ambiguous", tag=record.tag, error=str(exc))
            return
        failpoints.reached("after_stop_placed")
        record = await self._write(record, status=StopStatus.ACTIVE, broker_ref=ref)
        log.info("broker_stop_placed", instrument=layer.instrument, layer=layer.layer,
                 position_id=layer.id, kind=kind, ref=ref, tag=record.tag,
                 trigger=str(record.trigger_price), limit=str(record.limit_price))
        if kind == GTT:  # a GTT too close to the price is accepted, but disabled
            venue = await self._reading(self._state_call(record))
            await self._apply_venue(record, venue, layer)

    async def _modify(self, record: StopRecord, wanted: StopLevels, layer: Layer) -> None:
        record = await self._write(record, status=StopStatus.MODIFYING,
                                   pending_trigger=wanted.trigger, pending_limit=wanted.limit)
        failpoints.reached("before_stop_modify")
        assert record.broker_ref is not None
        try:
            await self._broker.modify_stop(record.broker_ref, self._order(record, wanted))
        except BrokerAuthExpired:  # nothing was sent: tried again with a session
            await self._write(record, status=StopStatus.ACTIVE, pending_trigger=None,
                              pending_limit=None)
            return
        except OrderRejected as exc:  # no longer active: it fired, lapsed or was disabled
            log.warning("broker_stop_modify_refused", tag=record.tag, reason=str(exc))
            await self._resolve(record, layer)
            return
        except BrokerUnavailable as exc:
            log.warning("broker_stop_modify_ambiguous", tag=record.tag, error=str(exc))
            return
        moved_from = record.trigger_price
        record = await self._write(record, status=StopStatus.ACTIVE,
                                   trigger_price=wanted.trigger, limit_price=wanted.limit,
                                   pending_trigger=None, pending_limit=None)
        failpoints.reached("after_stop_modified")
        log.info("broker_stop_moved", instrument=record.instrument, position_id=layer.id,
                 layer=layer.layer, ref=record.broker_ref, trigger=str(wanted.trigger),
                 limit=str(wanted.limit), moved_from=str(moved_from))

    async def _cancel(self, record: StopRecord) -> VenueStop | None:
        """Cancel a working stop and confirm it; return the venue's stop if it had fired
        (the caller adopts it), None once it is gone."""
        fired = await self._cancel_all([record])
        return fired[0][1] if fired else None

    async def _cancel_all(self, records: list[StopRecord]
                          ) -> list[tuple[StopRecord, VenueStop]]:
        """Cancel working stops and confirm each cancel; return those that had fired
        instead, with the venue's stop (the caller adopts them). The cancels go out
        together and each round is confirmed by one read of the venue where it can read
        many: a read per stop spent a flatten's reads (ten a second at Zerodha) two
        seconds before its first sale."""
        # A placement that never reached the venue (resolved) has nothing to cancel.
        await self._write_all([(r, StopStatus.CANCELLED, None, None)
                               for r in records if r.broker_ref is None])
        resting = [r for r in records if r.broker_ref is not None]
        asking = [r for r in resting if r.status is StopStatus.CANCELLING]
        asking += await self._write_all([(r, StopStatus.CANCELLING, None, None)
                                         for r in resting
                                         if r.status is not StopStatus.CANCELLING])
        fired: list[tuple[StopRecord, VenueStop]] = []
        for attempt in range(CANCEL_CONFIRM_TRIES):
            if not asking:
                break
            if attempt:
                await asyncio.sleep(self._settle_s)
            await asyncio.gather(*(self._ask_cancel(r) for r in asking))
            read = await self._states(asking)
            fired += [(r, read[r.id]) for r in asking
                      if read[r.id].state is StopState.TRIGGERED]
            await self._confirmed([r for r in asking if read[r.id].state
                                   not in (StopState.TRIGGERED, StopState.ACTIVE)])
            asking = [r for r in asking if read[r.id].state is StopState.ACTIVE]
        if asking:
            raise BrokerUnavailable(f"broker stops {[r.broker_ref for r in asking]} "
                                    f"({[r.tag for r in asking]}) still active after "
                                    f"{CANCEL_CONFIRM_TRIES} cancels")
        return fired

    async def _ask_cancel(self, record: StopRecord) -> None:
        """One cancel request; whether it took is for the read after it to say."""
        assert record.broker_ref is not None
        try:
            await self._broker.cancel_stop(record.kind, record.broker_ref)
        except OrderRejected as exc:  # it may have fired: the state read says
            log.info("broker_stop_cancel_refused", tag=record.tag, reason=str(exc))
        except BrokerUnavailable as exc:
            log.warning("broker_stop_cancel_ambiguous", tag=record.tag, error=str(exc))

    async def _confirmed(self, records: list[StopRecord]) -> None:
        """Record stops the venue shows gone after their cancel."""
        if not records:
            return
        await self._write_all([(r, StopStatus.CANCELLED, None, None) for r in records])
        failpoints.reached("after_stop_cancelled")
        for record in records:
            log.info("broker_stop_cancelled", instrument=record.instrument,
                     position_id=record.position_id, ref=record.broker_ref)

    async def _resolve(self, record: StopRecord, layer: Layer | None, *,
                       adopting: bool = True) -> StopRecord:
        """Settle a row whose last request's answer was not recorded, from the venue."""
        if record.status is StopStatus.PLACING:
            await asyncio.sleep(self._settle_s)  # let the venue's book catch up
            known = await self._known_refs(record.tradingsymbol)
            venue = await self._reading(lambda: self._broker.find_stop(self._order(record),
                                                                        known))
            if venue is None:
                # A request whose answer was lost may still be taken a moment later: the row
                # stays placing (no second stop is placed for the layer meanwhile) until it
                # is found, or is old enough that it cannot have reached the venue.
                if await self._age_s(record) < self._placing_grace_s:
                    return record
                return await self._write(record, status=StopStatus.LAPSED,
                                         reason="placement never reached the venue")
            record = await self._write(record, status=StopStatus.ACTIVE, broker_ref=venue.ref)
        else:
            venue = await self._reading(self._state_call(record))
        if record.status is StopStatus.MODIFYING and venue.state is StopState.ACTIVE:
            # The venue's trigger is the truth: the next sync moves it again if need be.
            moved = venue.trigger == record.pending_trigger
            return await self._write(
                record, status=StopStatus.ACTIVE, pending_trigger=None, pending_limit=None,
                trigger_price=venue.trigger,
                limit_price=record.pending_limit if moved else record.limit_price)
        if record.status is StopStatus.CANCELLING and venue.state is StopState.ACTIVE:
            return record  # the cancel is repeated by whoever wanted it
        if not adopting and venue.state is StopState.TRIGGERED:
            return await self._write(record, status=StopStatus.ACTIVE)
        return await self._apply_venue(record, venue, layer)

    async def _apply_venue(self, record: StopRecord, venue: VenueStop,
                           layer: Layer | None) -> StopRecord:
        """Bring a row in line with what the venue says of it."""
        if venue.state is StopState.ACTIVE:
            if record.status is not StopStatus.ACTIVE:
                return await self._write(record, status=StopStatus.ACTIVE, pending_trigger=None,
                                         pending_limit=None)
            return record
        if venue.state is StopState.TRIGGERED:
            if not venue.order_id and not venue.message:
                return record  # fired a moment ago: its order is read at the next check
            if layer is None:
                log.error("broker_stop_fired_without_layer", tag=record.tag,
                          position_id=record.position_id, order_id=venue.order_id)
                return await self._write(record, status=StopStatus.TRIGGERED,
                                         reason="fired after its layer was closed")
            return await self._adopt(record, venue, layer)
        if record.status is StopStatus.CANCELLING:
            return await self._write(record, status=StopStatus.CANCELLED)
        status = StopStatus.REJECTED if venue.state is StopState.REFUSED else StopStatus.LAPSED
        reason = venue.message or ("disabled or rejected by the venue" if status
                                   is StopStatus.REJECTED else "gone from the venue")
        log.warning("broker_stop_" + status.value, instrument=record.instrument,
                    position_id=record.position_id, tag=record.tag, ref=record.broker_ref,
                    reason=reason)
        return await self._write(record, status=status, reason=reason, pending_trigger=None,
                                 pending_limit=None)

    async def _adopt(self, record: StopRecord, venue: VenueStop, layer: Layer) -> StopRecord:
        """Book that the venue's stop fired: one transaction commits the exit intent that
        owns its order (reason BROKER_STOP), the layer closing, and the stop's state."""
        purpose = ExitPurpose(reason=BROKER_STOP, position_ids=(layer.id,))
        async with self._db.transaction() as tx:
            if layer.status is LayerStatus.OPEN:
                await tx.update_layer_later(layer, status=LayerStatus.CLOSING)
            intent = await tx.insert_intent(NewIntent(
                signal_id=None, instrument=layer.instrument, side=Side.SELL, lots=layer.lots,
                quantity=layer.quantity, order_type="MARKET", price=record.limit_price,
                tradingsymbol=record.tradingsymbol, exchange=layer.exchange,
                expiry=layer.expiry, position_ids=(layer.id,), purpose=purpose))
            if venue.order_id:
                intent = await tx.update_intent(intent, status=IntentStatus.PLACED,
                                                broker_order_id=venue.order_id)
            adopted = await update_stop(tx.conn, record, status=StopStatus.TRIGGERED,
                                        exit_intent_id=intent.id, broker_ref=venue.ref,
                                        pending_trigger=None, pending_limit=None,
                                        reason=venue.message)
            await tx.log_event("broker_stop_fired", intent_id=intent.id,
                               instrument=layer.instrument, position_id=layer.id,
                               layer=layer.layer, kind=record.kind, ref=venue.ref,
                               order_id=venue.order_id, trigger=record.trigger_price,
                               tag=intent.tag)
        self._latest[layer.id] = adopted
        log.warning("broker_stop_fired", instrument=layer.instrument, layer=layer.layer,
                    position_id=layer.id, kind=record.kind, ref=venue.ref,
                    order_id=venue.order_id, trigger=str(record.trigger_price),
                    intent_id=intent.id, tag=intent.tag)
        failpoints.reached("after_broker_stop_adopted")
        for listener in self.adopt_listeners:
            listener(intent)
        return adopted

    # -- helpers --------------------------------------------------------------------------
    async def _write(self, record: StopRecord, **changes: Any) -> StopRecord:
        try:
            async with self._db.transaction() as tx:
                updated = await update_stop(tx.conn, record, **changes)
        except VersionConflict:
            # The table moved on (a commit whose answer was lost): start again from it.
            await self.load()
            raise
        self._latest[record.position_id] = updated
        return updated

    async def _age_s(self, record: StopRecord) -> float:
        async with self._db.transaction() as tx:
            return await age_s(tx.conn, record.id)

    async def _known_refs(self, tradingsymbol: str) -> frozenset[str]:
        async with self._db.transaction() as tx:
            return await known_refs(tx.conn, tradingsymbol)

    def _order(self, record: StopRecord, levels: StopLevels | None = None) -> StopOrder:
        return StopOrder(tag=record.tag, kind=record.kind, instrument=record.instrument,
                         tradingsymbol=record.tradingsymbol, quantity=record.quantity,
                         trigger=levels.trigger if levels else record.trigger_price,
                         limit=levels.limit if levels else record.limit_price)

    def _state_call(self, record: StopRecord) -> Callable[[], Awaitable[VenueStop]]:
        ref = record.broker_ref
        assert ref is not None
        return lambda: self._broker.stop_state(record.kind, ref)

    async def _reading(self, call: Callable[[], Awaitable[T]]) -> T:
        return await read_through_outages(call, *self._retry)

    def _show(self, instrument: str, layers: list[Layer], expected: bool) -> None:
        """Name each open layer with no stop resting for it; outside its session an MCX
        layer waits for the open, when its SL order goes in."""
        missing: dict[str, str] = {}
        waiting: set[str] = set()
        for layer in layers:
            record = self._latest.get(layer.id)
            if not needs_stop(layer) or (record is not None and record.protects):
                continue
            name = f"{instrument} {layer.layer}"
            if expected:
                missing[name] = (record.reason or record.status.value) if record else "none"
            else:
                waiting.add(name)
        self._protection.show(instrument, missing, waiting)

    def report(self) -> dict[str, Any]:
        """What /status shows: layers protected, unprotected (with why), waiting for the
        session to open."""
        return {"enabled": self.enabled,
                "in_step": self.in_step,
                "protected": sum(1 for r in self._latest.values() if r.protects),
                **self._protection.report()}

    @property
    def in_step(self) -> bool:
        """Nothing asked of the keeper is left undone: no round due or under way, no row
        waiting for the venue's answer."""
        return not (self._dirty or self._checks or self._working
                    or any(r.status in PENDING for r in self._latest.values()))

    def unprotected(self) -> list[str]:
        return self._protection.unprotected()

