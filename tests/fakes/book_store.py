"""A dict-backed `BookStore` (cosmicpython's FakeUnitOfWork) with the PostgreSQL adapter's rules.

A transaction works on a copy of the tables and merges the rows it changed only when its block
exits cleanly (a row another writer committed meanwhile conflicts); on any failure nothing is
applied. Layers, portfolio and pyramiding state are read through a cache as in
`DatabaseStateManager`: a commit publishes what it wrote, a failure drops what it touched,
`load_cache` drops everything, and `change_behind_cache` is another writer the cache misses.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Concatenate, ParamSpec, TypeVar

from core.db_transaction import INTENT_MUTABLE, LAYER_MUTABLE
from core.errors import (
    InsufficientEquity,
    PortfolioNotSeeded,
    SignalAlreadyDecided,
    VersionConflict,
)
from core.intents import purpose_from_json, purpose_to_json
from core.models import (
    TRADE_SIGNAL_TYPES,
    AdmissionRequest,
    IntentStatus,
    Layer,
    LayerStatus,
    LedgerEntry,
    LedgerType,
    NewIntent,
    NewLayer,
    NewSignal,
    OrderIntent,
    Outcome,
    PortfolioState,
    PyramidingState,
    SignalAdmission,
    SignalRecord,
    SignalStatus,
)
from core.reconciliation import SQUARE_OFF_EVENT, OwnActivity
from core.trading_state import Actor, StateChange, StateRecord, TradingState

S = TypeVar("S")
T = TypeVar("T")
P = ParamSpec("P")
TABLES = ("layers", "intents", "signals", "pyramiding", "portfolio", "fills", "ledger", "events",
          "trading")


class ConstraintViolation(Exception):
    """What a CHECK or UNIQUE constraint of the schema would refuse."""


def injectable(method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]]
               ) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Let `FakeBookStore.fail_next(<method name>, exc)` make the next call raise `exc`."""
    @functools.wraps(method)
    async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        store: Any = getattr(self, "_store", self)  # a transaction's store, or the store
        store.trip(method.__name__)
        return await method(self, *args, **kwargs)
    return wrapper


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)  # numeric(20, 2)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))  # what JSONB gives back


def _by_id(rows: Any) -> list[Any]:
    return sorted(rows, key=lambda row: row.id)


@dataclass
class Tables:
    layers: dict[int, Layer] = field(default_factory=dict)
    intents: dict[int, OrderIntent] = field(default_factory=dict)
    signals: dict[int, SignalRecord] = field(default_factory=dict)
    pyramiding: dict[str, PyramidingState] = field(default_factory=dict)
    portfolio: dict[int, PortfolioState] = field(default_factory=dict)  # one row, id 1
    fills: dict[str, tuple[int, int, Decimal, datetime]] = field(default_factory=dict)
    ledger: dict[int, LedgerEntry] = field(default_factory=dict)
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    trading: dict[int, StateRecord] = field(default_factory=lambda: {1: StateRecord(
        TradingState.ACTIVE, None, Actor.SYSTEM, datetime(2026, 1, 1, tzinfo=UTC))})

    def copy(self) -> Tables:
        return Tables(**{name: dict(getattr(self, name)) for name in TABLES})


class FakeTransaction:
    """The writes of one unit of work, on a private copy of the tables (checked at once)."""

    def __init__(self, store: FakeBookStore):
        self._store, self.base, self.work = store, store.tables.copy(), store.tables.copy()
        self.touched: set[tuple[str, ...]] = set()  # cache keys

    def _updated(self, table: str, row: Any, changes: dict[str, Any], allowed: frozenset[str],
                 status: type) -> Any:
        """`row` with `changes` if it is still at its version (the adapter's UPDATE … WHERE)."""
        unknown = set(changes) - allowed
        if unknown or not changes:
            raise ValueError(f"{table}: cannot update {sorted(unknown) or 'nothing'}")
        current = getattr(self.work, table).get(row.id)
        if current is None or current.version != row.version:
            raise VersionConflict(table, row.id, row.version)
        if "status" in changes:
            changes["status"] = status(changes["status"])
        return replace(current, **changes, version=current.version + 1)

    # -- layers ---------------------------------------------------------------------------
    @injectable
    async def insert_layer(self, new: NewLayer) -> Layer:
        if any(x.is_live and (x.instrument, x.layer) == (new.instrument, new.layer)
               for x in self.work.layers.values()):
            raise ConstraintViolation(f"{new.instrument} {new.layer} is live already")
        return self._put(Layer(
            id=self._store.next_id("layers"), status=LayerStatus.OPEN,
            current_stop=new.initial_stop, highest_close=new.entry_price, exit_price=None,
            exit_timestamp=None, exit_reason=None, realized_pnl=None, version=1,
            **{f.name: getattr(new, f.name) for f in fields(NewLayer)}))

    @injectable
    async def update_layer(self, layer: Layer, **changes: Any) -> Layer:
        self.touched.add(("layers", layer.instrument))
        return self._put(self._updated("layers", layer, changes, LAYER_MUTABLE, LayerStatus))

    @injectable
    async def update_layer_later(self, layer: Layer, **changes: Any) -> None:
        self.touched.add(("layers", layer.instrument))  # checked at once, not at commit
        self._put(self._updated("layers", layer, changes, LAYER_MUTABLE, LayerStatus))

    def _put(self, layer: Layer) -> Layer:
        exit_known = None not in (layer.exit_price, layer.exit_timestamp, layer.realized_pnl)
        if (min(layer.lots, layer.quantity) <= 0 or layer.current_stop < layer.initial_stop
                or (layer.status is LayerStatus.CLOSED) != exit_known):
            raise ConstraintViolation(f"portfolio_positions refuses {layer}")
        self.touched.add(("layers", layer.instrument))
        self.work.layers[layer.id] = layer
        return layer

    @injectable
    async def insert_closed_part(self, layer: Layer, lots: int, quantity: int,
                                 **exit_fields: Any) -> int:
        """A closed copy of the layer's stored row (its own id) for `lots` of it."""
        return self._put(replace(self.work.layers[layer.id], id=self._store.next_id("layers"),
                                 status=LayerStatus.CLOSED, lots=lots, quantity=quantity,
                                 version=1, **exit_fields)).id

    @injectable
    async def next_trade_id(self) -> int:
        return self._store.next_id("trade_id")

    # -- pyramiding state -----------------------------------------------------------------
    @injectable
    async def save_pyramiding(self, state: PyramidingState) -> PyramidingState:
        """Insert (version 0: none may exist) or update (version N) an instrument's state."""
        self.touched.add(("pyramiding", state.instrument))
        current = self.work.pyramiding.get(state.instrument)
        if (current.version if current else 0) != state.version:
            raise VersionConflict("pyramiding", state.instrument, state.version)
        saved = self.work.pyramiding[state.instrument] = replace(state, version=state.version + 1)
        return saved

    @injectable
    async def delete_pyramiding(self, instrument: str) -> None:
        self.touched.add(("pyramiding", instrument))
        self.work.pyramiding.pop(instrument, None)

    # -- capital ledger -------------------------------------------------------------------
    @injectable
    async def append_ledger(self, txn_type: LedgerType, amount: Decimal, *,
                            position_id: int | None = None,
                            note: str | None = None) -> LedgerEntry:
        """Flows shift closed equity and its high by the amount; P&L raises the high only to
        a closed equity above it. One P&L row per position."""
        pnl = LedgerType(txn_type) is LedgerType.TRADING_PNL
        if not pnl and amount <= 0:
            raise ValueError(f"{txn_type} amount must be positive, got {amount}")
        if pnl != (position_id is not None) or pnl and any(
                e.position_id == position_id for e in self.work.ledger.values()):
            raise ConstraintViolation(f"ledger refuses {txn_type} of position {position_id}")
        self.touched.add(("portfolio",))
        state = self.work.portfolio.get(1)
        if state is None:
            raise PortfolioNotSeeded("the ledger has no opening balance")
        delta = -amount if txn_type == LedgerType.WITHDRAW else amount
        if not pnl and state.closed_equity + delta < 0:
            raise InsufficientEquity(f"withdrawal of {amount} exceeds closed equity")
        closed = _cents(state.closed_equity + delta)  # the SQL rounds what it stores
        self.work.portfolio[1] = replace(
            state, closed_equity=closed, version=state.version + 1,
            equity_high=_cents(max(state.closed_equity + delta,
                                   state.equity_high + (0 if pnl else delta))))
        entry = LedgerEntry(self._store.next_id("ledger"), LedgerType(txn_type).value,
                            _cents(amount), _cents(closed - delta), closed, position_id, note,
                            datetime.now(UTC))
        self.work.ledger[entry.id] = entry
        return entry

    # -- signal inbox ---------------------------------------------------------------------
    @injectable
    async def mark_signal_processing(self, signal_id: int) -> None:
        record = self.work.signals.get(signal_id)
        if record is None or record.status is not SignalStatus.RECEIVED:
            raise SignalAlreadyDecided(f"signal {signal_id} is no longer waiting")
        self.work.signals[signal_id] = replace(record, status=SignalStatus.PROCESSING)

    @injectable
    async def decide_signal(self, signal_id: int, outcome: Outcome, reason: str | None,
                            processed_by: str, now: datetime) -> None:
        self.decide(signal_id, outcome, reason, processed_by, now)

    def decide(self, signal_id: int, outcome: Outcome, reason: str | None, processed_by: str,
               now: datetime) -> SignalRecord:
        """DECIDE_SQL: only an undecided signal, or one decided `error`, takes an outcome."""
        record = self.work.signals.get(signal_id)
        if record is None or (record.status is SignalStatus.PROCESSED
                              and record.outcome is not Outcome.ERROR):
            raise SignalAlreadyDecided(f"signal {signal_id} already has an outcome")
        decided = self.work.signals[signal_id] = replace(
            record, status=SignalStatus.PROCESSED, outcome=Outcome(outcome), reason=reason,
            processed_at=now, processed_by=processed_by)
        return decided

    # -- order intents and fills ----------------------------------------------------------
    @injectable
    async def insert_intent(self, new: NewIntent, tag_prefix: str = "PM") -> OrderIntent:
        intent_id = self._store.next_id("intents")
        tag = f"{tag_prefix}{intent_id}"
        if not re.fullmatch(r"[A-Za-z0-9]{1,20}", tag) or min(new.lots, new.quantity) <= 0:
            raise ConstraintViolation(f"order_intents refuses {new} tagged {tag}")
        values = {f.name: getattr(new, f.name) for f in fields(NewIntent)}
        intent = self.work.intents[intent_id] = OrderIntent(**{
            **values, "id": intent_id, "tag": tag, "position_ids": list(new.position_ids),
            "status": IntentStatus.PENDING, "broker_order_id": None, "filled_quantity": 0,
            "average_price": None, "reason": None, "version": 1,
            "purpose": purpose_from_json(_json(purpose_to_json(new.purpose)))})
        return intent

    @injectable
    async def update_intent(self, intent: OrderIntent, **changes: Any) -> OrderIntent:
        return self._update_intent(intent, changes)

    @injectable
    async def update_intent_later(self, intent: OrderIntent, **changes: Any) -> None:
        self._update_intent(intent, changes)  # checked at once, not at commit

    def _update_intent(self, intent: OrderIntent, changes: dict[str, Any]) -> OrderIntent:
        updated = self._updated("intents", intent, changes, INTENT_MUTABLE, IntentStatus)
        filled = updated.filled_quantity > 0 and updated.average_price is not None
        if updated.filled_quantity > updated.quantity or (
                updated.status is IntentStatus.FILLED and not filled):
            raise ConstraintViolation(f"order_intents refuses {updated}")
        self.work.intents[intent.id] = updated
        return updated

    @injectable
    async def insert_fill(self, intent_id: int, broker_trade_id: str, quantity: int,
                          price: Decimal, filled_at: datetime) -> None:
        self.work.fills.setdefault(broker_trade_id, (intent_id, quantity, price, filled_at))

    # -- trading state --------------------------------------------------------------------
    async def trading_state(self, *, for_entry: bool = False) -> StateRecord:
        return self.work.trading[1]

    async def count_entry(self, day: date) -> StateRecord:
        record = self.work.trading[1]
        self.work.trading[1] = replace(record, entries_day=day,
                                       entries_count=record.entries_on(day) + 1)
        return record

    async def change_trading_state(self, change: StateChange, at: datetime) -> StateRecord:
        record = self.work.trading[1]
        breach = {"breach_day": None, "breach_pnl": None, "breach_at": None,
                  "resumed_breach_day": record.breach_day} if change.clears_breach else {}
        self.work.trading[1] = replace(record, state=change.state, reason=change.reason,
                                       actor=change.actor, since=at,
                                       version=record.version + 1, **breach)
        return self.work.trading[1]

    async def latch_breach(self, day: date, pnl: Decimal, at: datetime) -> StateRecord | None:
        record = self.work.trading[1]
        if record.breached or record.resumed_breach_day == day:
            return None
        self.work.trading[1] = replace(record, breach_day=day, breach_pnl=pnl, breach_at=at,
                                       version=record.version + 1)
        return self.work.trading[1]

    # -- audit ----------------------------------------------------------------------------
    @injectable
    async def log_event(self, event: str, *, signal_id: int | None = None,
                        intent_id: int | None = None, position_id: int | None = None,
                        instrument: str | None = None, **details: Any) -> None:
        self.work.events[self._store.next_id("events")] = {
            "event": event, "signal_id": signal_id, "intent_id": intent_id,
            "position_id": position_id, "instrument": instrument, "details": _json(details)}


class FakeBookStore:
    """The book in dicts; `tables` holds what is committed (tests read it directly)."""

    def __init__(self) -> None:
        self.tables = Tables()
        self._sequences: dict[str, itertools.count[int]] = {}  # not rolled back, as in PG
        self._cache: dict[tuple[str, ...], Any] = {}
        self._failures: dict[str, list[BaseException]] = {}

    # -- test helpers ---------------------------------------------------------------------
    def seed(self, capital: Decimal | int | str) -> bool:
        """Open the ledger with `capital` unless it is open (as `seed_portfolio`)."""
        capital = Decimal(capital)
        if 1 in self.tables.portfolio:
            return False
        self.tables.portfolio[1] = PortfolioState(capital, capital, capital, 1)
        if capital > 0:
            entry_id = self.next_id("ledger")
            self.tables.ledger[entry_id] = LedgerEntry(
                entry_id, LedgerType.DEPOSIT.value, capital, Decimal(0), capital, None,
                "opening balance", datetime.now(UTC))
        return True

    def fail_next(self, method: str, exc: BaseException) -> None:
        """Make the next call of `method` (a store or transaction method, or "commit") raise."""
        self._failures.setdefault(method, []).append(exc)

    def trip(self, method: str) -> None:
        if self._failures.get(method):
            raise self._failures[method].pop(0)

    def change_behind_cache(self, layer_id: int, **changes: Any) -> Layer:
        """Commit a change to a layer as another writer would: a cached row stays as read."""
        current = self.tables.layers[layer_id]
        changed = self.tables.layers[layer_id] = replace(current, **changes,
                                                         version=current.version + 1)
        return changed

    def events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.tables.events.values() if e["event"] == event]

    def next_id(self, sequence: str) -> int:
        return next(self._sequences.setdefault(sequence, itertools.count(1)))

    # -- units of work --------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeTransaction]:
        tx = FakeTransaction(self)
        try:
            yield tx
            self.trip("commit")
            self._merge(tx.base, tx.work)
        except BaseException:  # rolled back: what it touched is read afresh
            for key in tx.touched:
                self._cache.pop(key, None)
            raise
        self._publish(tx)

    def _merge(self, base: Tables, work: Tables) -> None:
        """Apply the rows `work` changed, all or none; a row committed since `base` conflicts."""
        changes = []
        for name in TABLES:
            before, after, now = (getattr(t, name) for t in (base, work, self.tables))
            for key in before.keys() | after.keys():
                if before.get(key) is not after.get(key):
                    if now.get(key) is not before.get(key):
                        raise VersionConflict(name, key, getattr(before.get(key), "version", 0))
                    changes.append((now, key, after.get(key)))
        for table, key, row in changes:
            if row is None:
                del table[key]
            else:
                table[key] = row

    def _publish(self, tx: FakeTransaction) -> None:
        """Cache what a commit wrote, as `StateCache.publish_*`: a cached instrument's layers
        are replaced row by row (newer versions only); rows it did not write stay as read."""
        for key in tx.touched:
            if key[0] == "portfolio":
                self._cache[key] = tx.work.portfolio.get(1)
            elif key[0] == "pyramiding":
                self._cache[key] = tx.work.pyramiding.get(key[1])
            elif key in self._cache:  # not cached: the next read loads it whole
                self._publish_layers(self._cache[key], key[1], tx)

    @staticmethod
    def _publish_layers(cached: dict[int, Layer], instrument: str, tx: FakeTransaction) -> None:
        for layer in tx.work.layers.values():
            old = cached.get(layer.id)
            if layer.instrument != instrument or tx.base.layers.get(layer.id) is layer or (
                    old is not None and old.version >= layer.version):
                continue
            cached.pop(layer.id, None)
            if layer.is_live:
                cached[layer.id] = layer

    # -- the inbox ------------------------------------------------------------------------
    @injectable
    async def admit_signal(self, signal: NewSignal, window_s: int,
                           rejection: str | None = None,
                           processed_by: str | None = None) -> SignalAdmission:
        """Store a signal unless it repeats one (both rules of DOMAIN.md §3, as admit_signal()).
        With `rejection` it is stored decided `rejected`."""
        earlier = _by_id(self.tables.signals.values())
        same = [s for s in earlier if (s.instrument, s.signal_type, s.position) == (
            signal.instrument, signal.signal_type, signal.position) and abs(
            (s.signal_timestamp - signal.signal_timestamp).total_seconds()) <= window_s]
        if signal.signal_type in TRADE_SIGNAL_TYPES and same:
            return SignalAdmission(same[0].id, accepted=False)
        repeated = [s for s in earlier if s.fingerprint == signal.fingerprint]
        signal_id = self.next_id("signals")  # taken before ON CONFLICT, as in PG
        if repeated:
            return SignalAdmission(repeated[0].id, accepted=False)
        decided = rejection is not None
        values = {f.name: getattr(signal, f.name) for f in fields(NewSignal)}
        values["payload"] = _json(signal.payload)
        record = SignalRecord(
            id=signal_id, **values,
            status=SignalStatus.PROCESSED if decided else SignalStatus.RECEIVED,
            outcome=Outcome.REJECTED if decided else None, reason=rejection,
            processed_at=signal.received_at if decided else None,
            processed_by=processed_by if decided else None)
        self.tables.signals[record.id] = record
        return SignalAdmission(record.id, accepted=True)

    async def admit_signals(self, requests: Sequence[AdmissionRequest], window_s: int,
                            processed_by: str | None = None,
                            decided_at: datetime | None = None) -> list[SignalAdmission]:
        """`admit_signal` of each, in order; a leader's decision recorded with it."""
        admissions = []
        for request in requests:
            admission = await self.admit_signal(request.signal, window_s, request.rejection,
                                                processed_by)
            if admission.accepted and request.rejection is None and request.outcome:
                await self.record_decision(admission.signal_id, request.outcome,
                                           request.reason, processed_by or "",
                                           decided_at or request.signal.received_at)
                admission = replace(admission, outcome=request.outcome)
            elif admission.accepted and request.rejection is not None:
                admission = replace(admission, outcome=Outcome.REJECTED)
            admissions.append(admission)
        return admissions

    def moved_layers(self) -> set[str] | None:
        return None  # no change log: the whole book is read each time

    def cached_live_layers(self, instrument: str) -> list[Layer] | None:
        return None  # nothing is decided at admission against this store

    @injectable
    async def record_decision(self, signal_id: int, outcome: Outcome, reason: str | None,
                              processed_by: str, now: datetime) -> None:
        """Decide a signal and write its `signal_decided` audit row, in one statement."""
        async with self.transaction() as tx:
            record = tx.decide(signal_id, outcome, reason, processed_by, now)
            tx.work.events[self.next_id("events")] = {
                "event": "signal_decided", "signal_id": signal_id, "intent_id": None,
                "position_id": None, "instrument": record.instrument,
                "details": {"outcome": str(outcome), "reason": reason}}

    # -- reads ----------------------------------------------------------------------------
    async def load_cache(self) -> None:
        self._cache.clear()

    def _cached(self, key: tuple[str, ...], load: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    async def live_layers(self, instrument: str) -> list[Layer]:
        return _by_id(self._cached(("layers", instrument), lambda: {
            x.id: x for x in self.tables.layers.values()
            if x.instrument == instrument and x.is_live}).values())

    async def all_live_layers(self) -> list[Layer]:
        instruments = {x.instrument for x in self.tables.layers.values() if x.is_live} | {
            key[1] for key in self._cache if key[0] == "layers"}
        return _by_id([x for i in instruments for x in await self.live_layers(i)])

    async def portfolio_state(self) -> PortfolioState | None:
        return self._cached(("portfolio",), lambda: self.tables.portfolio.get(1))

    async def pyramiding_state(self, instrument: str) -> PyramidingState | None:
        return self._cached(("pyramiding", instrument),
                            lambda: self.tables.pyramiding.get(instrument))

    async def signal(self, signal_id: int) -> SignalRecord | None:
        return self.tables.signals.get(signal_id)

    async def intents_for_signal(self, signal_id: int) -> list[OrderIntent]:
        return _by_id(i for i in self.tables.intents.values() if i.signal_id == signal_id)

    async def load_unresolved_intents(self) -> list[OrderIntent]:
        return _by_id(i for i in self.tables.intents.values() if i.is_unresolved)

    async def intent(self, intent_id: int) -> OrderIntent | None:
        return self.tables.intents.get(intent_id)

    async def load_pending_signals(self) -> list[SignalRecord]:
        return _by_id(s for s in self.tables.signals.values()
                      if s.status is not SignalStatus.PROCESSED)

    async def latest_event(self, event: str) -> dict[str, Any] | None:
        found = self.events(event)
        return found[-1]["details"] if found else None

    async def own_activity(self, tradingsymbol: str) -> OwnActivity:
        intents = [i for i in self.tables.intents.values() if i.tradingsymbol == tradingsymbol]
        ids = {i.id for i in intents}
        squared = [t for e in self.events(SQUARE_OFF_EVENT)
                   if e["details"].get("tradingsymbol") == tradingsymbol
                   for t in e["details"].get("trade_ids", [])]
        return OwnActivity(
            tags=frozenset(i.tag for i in intents),
            order_ids=frozenset(o for i in intents if i.broker_order_id
                                for o in i.broker_order_id.split(",")),
            booked_trade_ids=frozenset(
                [t for t, (intent_id, *_) in self.tables.fills.items() if intent_id in ids]
                + squared))
