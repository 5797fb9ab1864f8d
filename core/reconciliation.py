"""Compare the book with the broker: pure, over quantities in the broker's units."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.models import Layer


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
