"""Compare the book with the broker: pure, over quantities in the broker's units."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.models import Layer

ACCEPTED_EVENT = "reconciliation_accepted"


@dataclass(frozen=True, slots=True)
class Discrepancy:
    tradingsymbol: str
    book: int
    broker: int

    def describe(self) -> str:
        return f"{self.tradingsymbol}: book {self.book}, broker {self.broker}"


def book_positions(layers: Iterable[Layer]) -> dict[str, int]:
    """Return the net quantity the book holds per tradingsymbol (live layers are long)."""
    held: dict[str, int] = {}
    for layer in layers:
        symbol = layer.tradingsymbol or layer.instrument
        held[symbol] = held.get(symbol, 0) + layer.quantity
    return held


def diff_positions(book: Mapping[str, int], broker: Mapping[str, int]) -> list[Discrepancy]:
    """Return every tradingsymbol whose quantity differs between book and broker."""
    return [Discrepancy(symbol, book.get(symbol, 0), broker.get(symbol, 0))
            for symbol in sorted(set(book) | set(broker))
            if book.get(symbol, 0) != broker.get(symbol, 0)]


def accepted(event: Mapping[str, Any] | None) -> set[tuple[str, int, int]]:
    """Return the differences an operator accepted on the book's side (exact quantities)."""
    if not event or event.get("side") != "book":
        return set()
    return {(d["tradingsymbol"], int(d["book"]), int(d["broker"]))
            for d in event.get("differences", [])}
