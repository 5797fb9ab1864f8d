"""The book's records: layers, portfolio state, pyramiding state, signals, intents, ledger rows.

Field names match the database columns so rows map onto these classes one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from core.intents import Purpose


class SignalType(StrEnum):
    BASE_ENTRY = "BASE_ENTRY"
    PYRAMID = "PYRAMID"
    EXIT = "EXIT"
    MARKET_DATA = "MARKET_DATA"
    EOD_MONITOR = "EOD_MONITOR"


TRADE_SIGNAL_TYPES = frozenset({SignalType.BASE_ENTRY, SignalType.PYRAMID, SignalType.EXIT})


class LayerStatus(StrEnum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class IntentStatus(StrEnum):
    PENDING = "pending"  # committed; the broker may not have been called
    PLACED = "placed"  # the broker holds working orders for it
    PARTIAL = "partial"
    FILLED = "filled"
    CANCELLED = "cancelled"  # final with part (or none) of it filled
    REJECTED = "rejected"


# An intent in one of these states may still have (or get) orders at the broker: recovery
# resolves each by its tag before anything else trades.
UNRESOLVED_INTENT_STATUSES = frozenset(
    {IntentStatus.PENDING, IntentStatus.PLACED, IntentStatus.PARTIAL})


class SignalStatus(StrEnum):
    RECEIVED = "received"
    PROCESSING = "processing"  # an order intent for it is committed
    PROCESSED = "processed"


class Outcome(StrEnum):
    EXECUTED = "executed"
    BLOCKED = "blocked"
    REJECTED = "rejected"
    IGNORED = "ignored"
    ERROR = "error"  # processing failed unexpectedly; the instrument's entries are blocked


class LedgerType(StrEnum):
    DEPOSIT = "DEPOSIT"
    WITHDRAW = "WITHDRAW"
    TRADING_PNL = "TRADING_PNL"


BASE_LAYER = "Long_1"


@dataclass(frozen=True, slots=True)
class ContractRef:
    """One broker contract: what an entry buys, and what every later order of its layer trades."""

    tradingsymbol: str
    exchange: str | None
    expiry: date | None  # None: a contract that does not expire (the paper venue's default)


@dataclass(frozen=True, slots=True)
class NewLayer:
    trade_id: int
    instrument: str
    layer: str
    lots: int
    quantity: int
    entry_price: Decimal
    entry_timestamp: datetime
    initial_stop: Decimal
    atr: Decimal
    limiter: str
    tradingsymbol: str | None = None
    signal_id: int | None = None
    exchange: str | None = None
    expiry: date | None = None


@dataclass(frozen=True, slots=True)
class Layer:
    id: int
    trade_id: int
    instrument: str
    layer: str
    status: LayerStatus
    lots: int
    quantity: int
    entry_price: Decimal
    entry_timestamp: datetime
    initial_stop: Decimal
    current_stop: Decimal
    highest_close: Decimal
    atr: Decimal
    limiter: str
    tradingsymbol: str | None
    signal_id: int | None
    exit_price: Decimal | None
    exit_timestamp: datetime | None
    exit_reason: str | None
    realized_pnl: Decimal | None
    version: int
    exchange: str | None = None  # the layer's own contract: exits and rolls trade it
    expiry: date | None = None

    @property
    def contract(self) -> ContractRef | None:
        if self.tradingsymbol is None:
            return None
        return ContractRef(self.tradingsymbol, self.exchange, self.expiry)

    @property
    def is_base_position(self) -> bool:
        return self.layer == BASE_LAYER

    @property
    def is_live(self) -> bool:
        return self.status != LayerStatus.CLOSED


@dataclass(frozen=True, slots=True)
class PortfolioState:
    initial_capital: Decimal
    closed_equity: Decimal
    equity_high: Decimal
    version: int


@dataclass(frozen=True, slots=True)
class PyramidingState:
    instrument: str
    trade_id: int
    base_position_id: int | None
    last_pyramid_price: Decimal
    pyramid_count: int
    version: int = 0  # 0: not stored yet


@dataclass(frozen=True, slots=True)
class NewSignal:
    fingerprint: str
    signal_type: str
    instrument: str
    position: str | None
    signal_timestamp: datetime
    payload: dict[str, Any]
    received_at: datetime


@dataclass(frozen=True, slots=True)
class SignalRecord:
    id: int
    fingerprint: str
    signal_type: str
    instrument: str
    position: str | None
    signal_timestamp: datetime
    payload: dict[str, Any]
    received_at: datetime
    status: SignalStatus
    outcome: Outcome | None
    reason: str | None
    processed_at: datetime | None
    processed_by: str | None


@dataclass(frozen=True, slots=True)
class SignalAdmission:
    """What the durable inbox did with a signal: stored it, or found the one it repeats."""

    signal_id: int
    accepted: bool
    outcome: Outcome | None = None  # stored decided (at admission)


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """A signal to store, and what is already decided of it: `rejection` (too old or too
    new: true on any node) or the leader's no-order decision (kept only while its term
    still holds the fence)."""

    signal: NewSignal
    rejection: str | None = None
    outcome: Outcome | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class NewIntent:
    signal_id: int | None
    instrument: str
    side: Side
    lots: int
    quantity: int
    order_type: str
    purpose: Purpose
    price: Decimal | None = None
    tradingsymbol: str | None = None
    position_ids: tuple[int, ...] = ()
    fencing_epoch: int = 0
    exchange: str | None = None
    expiry: date | None = None


@dataclass(frozen=True, slots=True)
class OrderIntent:
    id: int
    tag: str
    signal_id: int | None
    instrument: str
    tradingsymbol: str | None
    position_ids: list[int]
    side: Side
    lots: int
    quantity: int
    order_type: str
    price: Decimal | None
    status: IntentStatus
    broker_order_id: str | None
    filled_quantity: int
    average_price: Decimal | None
    reason: str | None
    fencing_epoch: int
    version: int
    purpose: Purpose
    exchange: str | None = None
    expiry: date | None = None

    @property
    def is_unresolved(self) -> bool:
        return self.status in UNRESOLVED_INTENT_STATUSES

    @property
    def contract(self) -> ContractRef | None:
        if self.tradingsymbol is None:
            return None
        return ContractRef(self.tradingsymbol, self.exchange, self.expiry)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    txn_type: str
    amount: Decimal
    equity_before: Decimal
    equity_after: Decimal
    position_id: int | None
    note: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    """What became of a signal, as the webhook and `/signals/{id}` report it."""

    signal_id: int
    outcome: Outcome
    reason: str | None
    result: dict[str, Any] = field(default_factory=dict)
