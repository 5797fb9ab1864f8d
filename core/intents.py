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
    # 0: the exit's first order; n: its n-th retry, after `retry_of` (an intent id) was
    # refused or filled partly. Exits are retried until their layers are flat.
    attempt: int = 0
    retry_of: int | None = None

    def retried(self, refused_intent_id: int, position_ids: tuple[int, ...]) -> ExitPurpose:
        """Return the purpose of the next attempt at what is left of this exit."""
        return ExitPurpose(reason=self.reason, position_ids=position_ids,
                           attempt=self.attempt + 1, retry_of=refused_intent_id)


@dataclass(frozen=True, slots=True)
class RollPurpose:
    """One leg of roll `roll_id` (DOMAIN.md §9): `close` sells the layers in their expiring
    contract, `open` buys the same lots in the next. Retried like an exit until done."""

    kind: ClassVar[str] = "roll"

    roll_id: int
    leg: str  # "close" | "open"
    position_ids: tuple[int, ...]
    attempt: int = 0
    retry_of: int | None = None

    def retried(self, refused_intent_id: int, position_ids: tuple[int, ...]) -> RollPurpose:
        return RollPurpose(roll_id=self.roll_id, leg=self.leg, position_ids=position_ids,
                           attempt=self.attempt + 1, retry_of=refused_intent_id)


Purpose = EntryPurpose | ExitPurpose | RollPurpose
# Purposes whose order must be carried out in the end: retried until done, never dropped.
Sacred = ExitPurpose | RollPurpose


def purpose_to_json(purpose: Purpose) -> dict[str, Any]:
    """Return the purpose as stored: a JSON object with a `kind`; money as exact text."""
    if isinstance(purpose, EntryPurpose):
        return {"kind": purpose.kind, "layer": purpose.layer, "trade_id": purpose.trade_id,
                "initial_stop": str(purpose.initial_stop), "atr": str(purpose.atr),
                "limiter": purpose.limiter, "quoted": purpose.quoted}
    stored: dict[str, Any]
    if isinstance(purpose, RollPurpose):
        stored = {"kind": purpose.kind, "roll_id": purpose.roll_id, "leg": purpose.leg,
                  "position_ids": list(purpose.position_ids)}
    else:
        stored = {"kind": purpose.kind, "reason": purpose.reason,
                  "position_ids": list(purpose.position_ids)}
        if purpose.orders != 1:
            stored["orders"] = purpose.orders
    if purpose.attempt:
        stored.update(attempt=purpose.attempt, retry_of=purpose.retry_of)
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
                           orders=int(stored.get("orders", 1)),
                           attempt=int(stored.get("attempt", 0)),
                           retry_of=None if stored.get("retry_of") is None
                           else int(stored["retry_of"]))
    if kind == RollPurpose.kind:
        leg = str(stored["leg"])
        if leg not in ("close", "open"):
            raise ValueError(f"unknown roll leg {leg!r}")
        return RollPurpose(roll_id=int(stored["roll_id"]), leg=leg,
                           position_ids=tuple(int(i) for i in stored["position_ids"]),
                           attempt=int(stored.get("attempt", 0)),
                           retry_of=None if stored.get("retry_of") is None
                           else int(stored["retry_of"]))
    raise ValueError(f"unknown intent purpose kind {kind!r}")
