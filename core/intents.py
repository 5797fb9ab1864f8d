"""What an order intent is for: one frozen record per kind, serialised once at the durable seam.

An intent's purpose is stored with it (`order_intents.purpose`, JSONB) so that a fill found
after a crash is booked exactly as the decision meant it. Pure: standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class EntryPurpose:
    """Open a layer: a base entry (a new trade) or a pyramid joining `trade_id`."""

    kind: ClassVar[str] = "entry"

    layer: str
    trade_id: int | None  # None for a base entry: its trade id is taken when it fills
    initial_stop: Decimal
    atr: Decimal
    limiter: str
    quoted: bool = False  # the intent's price is the venue's quote, checked at the decision


@dataclass(frozen=True, slots=True)
class ExitPurpose:
    """Close these layers, in this order, with one order for all of them."""

    kind: ClassVar[str] = "exit"

    reason: str
    position_ids: tuple[int, ...]
    orders: int = 1  # intents the signal's exit took (one per contract its layers hold)


Purpose = EntryPurpose | ExitPurpose


def purpose_to_json(purpose: Purpose) -> dict[str, Any]:
    """Return the purpose as stored: a JSON object with a `kind`; money as exact text."""
    if isinstance(purpose, EntryPurpose):
        return {"kind": purpose.kind, "layer": purpose.layer, "trade_id": purpose.trade_id,
                "initial_stop": str(purpose.initial_stop), "atr": str(purpose.atr),
                "limiter": purpose.limiter, "quoted": purpose.quoted}
    stored: dict[str, Any] = {"kind": purpose.kind, "reason": purpose.reason,
                              "position_ids": list(purpose.position_ids)}
    if purpose.orders != 1:
        stored["orders"] = purpose.orders
    return stored


def purpose_from_json(stored: Mapping[str, Any]) -> Purpose:
    """Return the purpose stored as `stored`; raise ValueError for an unknown kind.

    Rows written before `quoted` existed load with quoted=False.
    """
    kind = stored.get("kind")
    if kind == EntryPurpose.kind:
        trade_id = stored.get("trade_id")
        return EntryPurpose(layer=str(stored["layer"]),
                            trade_id=None if trade_id is None else int(trade_id),
                            initial_stop=Decimal(str(stored["initial_stop"])),
                            atr=Decimal(str(stored["atr"])), limiter=str(stored["limiter"]),
                            quoted=bool(stored.get("quoted", False)))
    if kind == ExitPurpose.kind:
        return ExitPurpose(reason=str(stored["reason"]),
                           position_ids=tuple(int(i) for i in stored["position_ids"]),
                           orders=int(stored.get("orders", 1)))
    raise ValueError(f"unknown intent purpose kind {kind!r}")
