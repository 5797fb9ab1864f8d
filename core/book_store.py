"""The store the engine and the order flow depend on: a narrow port over the book.

`DatabaseStateManager` is the adapter (PostgreSQL with a write-through cache); tests also
have a dict-backed fake, so decide-persist-act logic has fast unit tests while the SQL keeps
its own real-PostgreSQL tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from core.models import (
    AdmissionRequest,
    Layer,
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
)
from core.reconciliation import OwnActivity
from core.rollover import NewRoll, Roll
from core.trading_state import StateChange, StateRecord


class BookTransaction(Protocol):
    """The writes of one state transition; nothing is visible to others before COMMIT."""

    async def insert_layer(self, new: NewLayer) -> Layer: ...

    async def update_layer(self, layer: Layer, **changes: Any) -> Layer: ...

    async def update_layer_later(self, layer: Layer, **changes: Any) -> None: ...

    async def insert_closed_part(self, layer: Layer, lots: int, quantity: int,
                                 **exit_fields: Any) -> int: ...

    async def next_trade_id(self) -> int: ...

    async def save_pyramiding(self, state: PyramidingState) -> PyramidingState: ...

    async def delete_pyramiding(self, instrument: str) -> None: ...

    async def append_ledger(self, txn_type: LedgerType, amount: Decimal, *,
                            position_id: int | None = None,
                            note: str | None = None) -> LedgerEntry: ...

    async def mark_signal_processing(self, signal_id: int) -> None: ...

    async def decide_signal(self, signal_id: int, outcome: Outcome, reason: str | None,
                            processed_by: str, now: datetime) -> None: ...

    async def insert_intent(self, new: NewIntent, tag_prefix: str = "PM") -> OrderIntent: ...

    async def update_intent(self, intent: OrderIntent, **changes: Any) -> OrderIntent: ...

    async def update_intent_later(self, intent: OrderIntent, **changes: Any) -> None: ...

    async def insert_fill(self, intent_id: int, broker_trade_id: str, quantity: int,
                          price: Decimal, filled_at: datetime) -> None: ...

    async def log_event(self, event: str, *, signal_id: int | None = None,
                        intent_id: int | None = None, position_id: int | None = None,
                        instrument: str | None = None, **details: Any) -> None: ...

    async def trading_state(self, *, for_entry: bool = False) -> StateRecord: ...

    async def count_entry(self, day: date) -> StateRecord: ...

    async def change_trading_state(self, change: StateChange, at: datetime) -> StateRecord: ...

    async def latch_breach(self, day: date, pnl: Decimal, at: datetime) -> StateRecord | None: ...

    async def insert_roll(self, new: NewRoll) -> Roll: ...

    async def update_roll(self, roll: Roll, **changes: Any) -> Roll: ...


class BookStore(Protocol):
    """Reads of the live book (cached), the inbox, and units of work."""

    def transaction(self) -> AbstractAsyncContextManager[BookTransaction]: ...

    async def admit_signal(self, signal: NewSignal, window_s: int,
                           rejection: str | None = None,
                           processed_by: str | None = None) -> SignalAdmission: ...

    async def admit_signals(self, requests: Sequence[AdmissionRequest], window_s: int,
                            processed_by: str | None = None,
                            decided_at: datetime | None = None) -> list[SignalAdmission]: ...

    async def record_decision(self, signal_id: int, outcome: Outcome, reason: str | None,
                              processed_by: str, now: datetime) -> None: ...

    def moved_layers(self) -> set[str] | None:
        """The instruments whose live layers changed since this was last asked (None:
        possibly all): one reader keeps running totals with it."""
        ...

    def cached_live_layers(self, instrument: str) -> list[Layer] | None:
        """The instrument's live layers if the cache holds them (no I/O), else None."""
        ...

    async def load_cache(self) -> None: ...

    async def live_layers(self, instrument: str) -> list[Layer]: ...

    async def all_live_layers(self) -> list[Layer]: ...

    async def portfolio_state(self) -> PortfolioState | None: ...

    async def pyramiding_state(self, instrument: str) -> PyramidingState | None: ...

    async def signal(self, signal_id: int) -> SignalRecord | None: ...

    async def intents_for_signal(self, signal_id: int) -> list[OrderIntent]: ...

    async def load_unresolved_intents(self) -> list[OrderIntent]: ...

    async def intent(self, intent_id: int) -> OrderIntent | None: ...

    async def load_pending_signals(self) -> list[SignalRecord]: ...

    async def roll(self, roll_id: int) -> Roll | None: ...

    async def load_rolls(self, since: date) -> list[Roll]: ...

    async def latest_event(self, event: str) -> dict[str, Any] | None: ...

    async def own_activity(self, tradingsymbol: str) -> OwnActivity: ...
