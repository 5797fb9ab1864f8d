"""The order and trade records, shaped as the order book and trade book show them (§3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tests.fakes.kite.wire import json_number

FINAL_STATUSES = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})
RESTING_STATUSES = frozenset({"OPEN", "TRIGGER PENDING"})
PRICED_TYPES = frozenset({"LIMIT", "SL"})
STOP_TYPES = frozenset({"SL", "SL-M"})
PROTECTED_TYPES = frozenset({"MARKET", "SL-M"})


@dataclass(slots=True)
class Order:
    order_id: str
    placed_by: str
    variety: str
    exchange: str
    tradingsymbol: str
    instrument_token: int
    transaction_type: str
    product: str
    order_type: str
    validity: str
    validity_ttl: int
    quantity: int
    disclosed_quantity: int
    price: Decimal
    trigger_price: Decimal
    market_protection: Decimal
    tag: str | None
    tags: list[str]
    # Instrument facts the rules need, kept here so an order outlives a dump regeneration.
    tick_size: Decimal
    lot_size: int
    quantity_unit: int
    multiplier: int
    freeze_quantity: int | None
    order_timestamp: str = ""
    guid: str = ""
    status: str = "PUT ORDER REQ RECEIVED"
    status_message: str | None = None
    status_message_raw: str | None = None
    exchange_order_id: str | None = None
    exchange_timestamp: str | None = None
    exchange_update_timestamp: str | None = None
    filled_quantity: int = 0
    pending_quantity: int = 0
    cancelled_quantity: int = 0
    fill_value: Decimal = Decimal(0)
    protection_limit: Decimal | None = None  # MARKET/SL-M: the band edge it may fill up to
    triggered: bool = False
    modifications: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    gtt_id: int | None = None  # placed by this GTT when it fired

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def average_price(self) -> Decimal:
        return self.fill_value / self.filled_quantity if self.filled_quantity else Decimal(0)

    def record(self, status: str) -> None:
        """Enter `status` and append the snapshot `order_history` will show."""
        self.status = status
        self.history.append(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """Return the order object as the order book shows it (§3.2)."""
        body: dict[str, Any] = {
            "account_id": self.placed_by, "placed_by": self.placed_by,
            "order_id": self.order_id, "exchange_order_id": self.exchange_order_id,
            "parent_order_id": None, "status": self.status,
            "status_message": self.status_message, "status_message_raw": self.status_message_raw,
            "order_timestamp": self.order_timestamp,
            "exchange_update_timestamp": self.exchange_update_timestamp,
            "exchange_timestamp": self.exchange_timestamp, "variety": self.variety,
            "modified": False,  # the fixtures keep it false even after a modify (§3.2)
            "exchange": self.exchange, "tradingsymbol": self.tradingsymbol,
            "instrument_token": self.instrument_token, "order_type": self.order_type,
            "transaction_type": self.transaction_type, "validity": self.validity,
            "validity_ttl": self.validity_ttl, "product": self.product,
            "quantity": self.quantity, "disclosed_quantity": self.disclosed_quantity,
            "price": json_number(self.price), "trigger_price": json_number(self.trigger_price),
            "average_price": json_number(self.average_price),
            "filled_quantity": self.filled_quantity, "pending_quantity": self.pending_quantity,
            "cancelled_quantity": self.cancelled_quantity,
            "market_protection": json_number(self.market_protection),
            "meta": {"gtt": self.gtt_id} if self.gtt_id is not None else {},
            "tag": self.tag, "guid": self.guid,
        }
        if self.tags:  # the fixtures leave `tags` out when there are none
            body["tags"] = list(self.tags)
        return body


@dataclass(slots=True)
class Trade:
    trade_id: str
    order_id: str
    exchange_order_id: str
    exchange: str
    tradingsymbol: str
    instrument_token: int
    product: str
    transaction_type: str
    quantity: int
    price: Decimal
    multiplier: int
    fill_timestamp: str

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"

    def to_json(self) -> dict[str, Any]:
        """Return the trade row; its `order_timestamp` is time-only, as in the fixtures."""
        return {"trade_id": self.trade_id, "order_id": self.order_id, "exchange": self.exchange,
                "tradingsymbol": self.tradingsymbol, "instrument_token": self.instrument_token,
                "product": self.product, "average_price": json_number(self.price),
                "quantity": self.quantity, "exchange_order_id": self.exchange_order_id,
                "transaction_type": self.transaction_type, "fill_timestamp": self.fill_timestamp,
                "order_timestamp": self.fill_timestamp[11:],
                "exchange_timestamp": self.fill_timestamp}
