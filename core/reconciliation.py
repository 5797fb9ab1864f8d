"""Compare the book with the broker: pure, over quantities in the broker's units."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from core.booking import average_price
from core.models import Layer, Side

ACCEPTED_EVENT = "reconciliation_accepted"
SQUARE_OFF_EVENT = "broker_square_off_booked"
SQUARE_OFF_REASON = "BROKER_SQUARE_OFF"


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


class TradeRecord(Protocol):
    """One trade in the venue's trade book (the broker port's `VenueTrade`)."""

    @property
    def trade_id(self) -> str: ...
    @property
    def order_id(self) -> str: ...
    @property
    def tag(self) -> str: ...
    @property
    def tradingsymbol(self) -> str: ...
    @property
    def side(self) -> Side: ...
    @property
    def quantity(self) -> int: ...
    @property
    def price(self) -> Decimal: ...


@dataclass(frozen=True, slots=True)
class OwnActivity:
    """What the book knows of one contract at the venue: its intents' tags and order ids,
    and the venue trades it has already booked (its fills and earlier square-offs)."""

    tags: frozenset[str] = frozenset()
    order_ids: frozenset[str] = frozenset()
    booked_trade_ids: frozenset[str] = frozenset()

    def accounts_for(self, trade: TradeRecord) -> bool:
        return (trade.trade_id in self.booked_trade_ids or trade.order_id in self.order_ids
                or (bool(trade.tag) and trade.tag in self.tags))


@dataclass(frozen=True, slots=True)
class SquareOff:
    """Venue trades not of ours that sold what the book holds and the broker no longer does."""

    tradingsymbol: str
    quantity: int
    price: Decimal  # volume-weighted, as the book stores prices
    trade_ids: tuple[str, ...]


def explained_square_off(difference: Discrepancy, trades: Iterable[TradeRecord],
                         own: OwnActivity) -> SquareOff | None:
    """Return the square-off that explains `difference` exactly, or None.

    Explained: the broker holds less than the book (and is not short), and the contract's
    trades that are not ours and not booked yet are all sells whose quantity is exactly the
    difference. Anything else (a foreign buy among them, a quantity that does not add up) is
    left for the operator: the book never guesses.
    """
    if not 0 <= difference.broker < difference.book:
        return None
    foreign = [t for t in trades
               if t.tradingsymbol == difference.tradingsymbol and not own.accounts_for(t)]
    if not foreign or any(t.side != Side.SELL for t in foreign):
        return None
    quantity = sum(t.quantity for t in foreign)
    if quantity != difference.book - difference.broker:
        return None
    return SquareOff(difference.tradingsymbol, quantity,
                     average_price((t.quantity, t.price) for t in foreign),
                     tuple(t.trade_id for t in foreign))


def layers_to_close(held: Sequence[Layer], quantity: int) -> list[Layer]:
    """Return the layers a square-off of `quantity` closes, newest first, in that order.

    A broker square-off takes the whole position, so every layer closes; a partial one (a
    manual sale of part of it) is taken from the newest layers, the last one reached split.
    """
    closing: list[Layer] = []
    for layer in sorted(held, key=lambda x: x.id, reverse=True):
        if quantity <= 0:
            break
        closing.append(layer)
        quantity -= layer.quantity
    return closing
