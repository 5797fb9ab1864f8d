"""Kite contracts from the daily instruments dump: which future to trade, its ticks and lots.

Pure: the adapter fetches the dump; these functions only read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Contract:
    tradingsymbol: str
    exchange: str
    name: str
    expiry: date
    lot_size: int
    tick_size: Decimal


def futures(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Contract]]:
    """Return the dump's futures by (exchange, name), nearest expiry first."""
    found: dict[tuple[str, str], list[Contract]] = {}
    for row in rows:
        if row.get("instrument_type") != "FUT" or not isinstance(row.get("expiry"), date):
            continue
        contract = Contract(
            tradingsymbol=row["tradingsymbol"], exchange=row["exchange"], name=row["name"],
            expiry=row["expiry"], lot_size=int(row["lot_size"]),
            # The client parses tick_size as a float; its shortest repr is the exchange's text.
            tick_size=Decimal(str(row["tick_size"])))
        found.setdefault((contract.exchange, contract.name), []).append(contract)
    for contracts in found.values():
        contracts.sort(key=lambda c: c.expiry)
    return found


def round_to_tick(price: Decimal, tick: Decimal, side: str) -> Decimal:
    """Round a limit price onto the tick grid, towards the side that fills (BUY up, SELL down)."""
    steps = (price / tick).to_integral_value(ROUND_CEILING if side == "BUY" else ROUND_FLOOR)
    return steps * tick


def slice_quantity(quantity: int, lot_size: int, freeze_quantity: int | None) -> list[int]:
    """Split an order into slices no larger than the freeze quantity, each a lot multiple."""
    if freeze_quantity is None or quantity <= freeze_quantity:
        return [quantity]
    largest = freeze_quantity // lot_size * lot_size
    if largest <= 0:
        raise ValueError(f"freeze quantity {freeze_quantity} is below one lot of {lot_size}")
    slices = [largest] * (quantity // largest)
    if quantity % largest:
        slices.append(quantity % largest)
    return slices
