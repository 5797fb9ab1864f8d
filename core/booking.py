"""What a fill does to the book (DOMAIN.md §5–§7): the layer an entry opens and the next
pyramiding state; for an exit, how the filled lots are shared across its layers, each layer's
P&L (one ledger row each), which layers reopen, and whether the instrument is then flat.

Pure: the shell reads the layers and pyramiding state once, calls these, and writes the result
in the fill's one transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from core.accounting import layer_pnl
from core.intents import EntryPurpose
from core.models import BASE_LAYER, ContractRef, Layer, NewLayer, PyramidingState
from core.specs import InstrumentSpec

PRICE_SCALE = Decimal("0.0001")  # prices are stored with four decimals


@dataclass(frozen=True, slots=True)
class Filled:
    """What an intent's orders filled: lots, the broker's quantity, and the average price."""

    lots: int
    quantity: int
    price: Decimal


def average_price(fills: Iterable[tuple[int, Decimal]]) -> Decimal:
    """Return the volume-weighted average of (quantity, price) fills, as it is stored.

    Rounded here so that P&L is computed from the very price the book keeps.
    """
    pairs = [(quantity, price) for quantity, price in fills if quantity > 0]
    total = sum(quantity for quantity, _ in pairs)
    if total == 0:
        raise ValueError("no filled quantity to average")
    notional = sum((price * quantity for quantity, price in pairs), Decimal(0))
    return (notional / total).quantize(PRICE_SCALE)


def filled(quantity: int, price: Decimal, spec: InstrumentSpec) -> Filled:
    """Return a fill of `quantity` (broker units) at `price` in this instrument's lots."""
    return Filled(lots=spec.lots_of(quantity), quantity=quantity, price=price)


# -- entries ------------------------------------------------------------------------------
def entry_layer(purpose: EntryPurpose, fill: Filled, *, trade_id: int, instrument: str,
                contract: ContractRef | None, signal_id: int | None,
                at: datetime) -> NewLayer:
    """Return the layer an entry's fill opens: entry at the fill, stops from the decision,
    held in the contract its order bought."""
    return NewLayer(trade_id=trade_id, instrument=instrument, layer=purpose.layer,
                    lots=fill.lots, quantity=fill.quantity, entry_price=fill.price,
                    entry_timestamp=at, initial_stop=purpose.initial_stop, atr=purpose.atr,
                    limiter=purpose.limiter, signal_id=signal_id,
                    tradingsymbol=contract.tradingsymbol if contract else None,
                    exchange=contract.exchange if contract else None,
                    expiry=contract.expiry if contract else None)


def opens_trade(purpose: EntryPurpose) -> bool:
    """Return whether this entry starts a new trade (a base entry) rather than joining one."""
    return purpose.layer == BASE_LAYER


def next_pyramiding(current: PyramidingState | None, purpose: EntryPurpose, *, instrument: str,
                    trade_id: int, layer_id: int, price: Decimal) -> PyramidingState:
    """Return the instrument's pyramiding state after an entry filled at `price`.

    A base entry starts the trade's state (pyramids measured from its price); a pyramid
    moves the last pyramid price and counts itself. A pyramid whose trade's state is gone
    (its base closed meanwhile) still counts, in a state of its own trade.
    """
    if opens_trade(purpose):
        return PyramidingState(instrument, trade_id, layer_id, price, 0,
                               current.version if current else 0)
    if current is None or current.trade_id != trade_id:
        return PyramidingState(instrument, trade_id, None, price, 1,
                               current.version if current else 0)
    return replace(current, last_pyramid_price=price, pyramid_count=current.pyramid_count + 1)


# -- exits --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LayerClose:
    """`lots` of `layer` closed at the exit's price; the rest of it (if any) stays open."""

    layer: Layer
    lots: int
    quantity: int
    pnl: Decimal  # also the amount of the layer's TRADING_PNL ledger row

    @property
    def whole(self) -> bool:
        return self.lots == self.layer.lots

    @property
    def kept_lots(self) -> int:
        return self.layer.lots - self.lots

    @property
    def kept_quantity(self) -> int:
        return self.layer.quantity - self.quantity


@dataclass(frozen=True, slots=True)
class ExitBooking:
    closes: tuple[LayerClose, ...]
    reopened: tuple[Layer, ...]  # layers of the exit that got no lots: open again
    flat: bool  # every live layer of the instrument is closed: the trade is over

    @property
    def total_pnl(self) -> Decimal:
        return sum((close.pnl for close in self.closes), Decimal(0))

    @property
    def left(self) -> tuple[Layer, ...]:
        """What the exit did not sell, in its order: the unsold part of a split layer (same
        id, the lots it keeps) and the layers that got nothing. An exit is retried on it."""
        kept = tuple(replace(close.layer, lots=close.kept_lots, quantity=close.kept_quantity)
                     for close in self.closes if not close.whole)
        return kept + self.reopened


def book_exit(layers: Sequence[Layer], live_ids: Collection[int], filled_quantity: int,
              price: Decimal, spec: InstrumentSpec) -> ExitBooking:
    """Share `filled_quantity` (broker units) at `price` across the exit's `layers`, in order.

    Each layer takes what it holds until the fill runs out; a layer reached with less left
    is split (the filled lots closed, the rest open); layers after that reopen, as do all of
    them when nothing filled. Lots are counted in each layer's own quantity per lot — what it
    was bought with — never today's configured lot size. `live_ids` are the instrument's live
    layers, to tell whether the exit left it flat.
    """
    if filled_quantity < 0:
        raise ValueError(f"filled quantity must be >= 0, got {filled_quantity}")
    closes: list[LayerClose] = []
    reopened: list[Layer] = []
    remaining = filled_quantity
    for layer in layers:
        per_lot = layer.quantity // layer.lots
        take = min(remaining // per_lot, layer.lots)
        remaining -= take * per_lot
        if take == 0:
            reopened.append(layer)
            continue
        closes.append(LayerClose(layer, take, take * per_lot,
                                 layer_pnl(layer.entry_price, price, take, spec.point_value)))
    closed_whole = {close.layer.id for close in closes if close.whole}
    flat = bool(closed_whole) and set(live_ids) <= closed_whole
    return ExitBooking(tuple(closes), tuple(reopened), flat=flat)
