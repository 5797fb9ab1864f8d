"""What a roll does to the book (DOMAIN.md §9): the old leg closed like an exit, layer by
layer, and the layers carried into the next contract with every price shifted by the spread;
and the basis that converts alerts quoting the old contract until it expires.

Pure: the shell reads the roll, its layers and the pyramiding state once, calls these, and
writes the result in the leg's fill transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal

from core.accounting import layer_pnl
from core.booking import PRICE_SCALE
from core.models import ContractRef, Layer, PyramidingState
from core.signals import Signal
from core.specs import InstrumentSpec

CLOSING, OPENING, DONE = "closing", "opening", "done"
ROLL_EXIT_REASON = "ROLL"


@dataclass(frozen=True, slots=True)
class Roll:
    """A roll of an instrument's layers from `old` into `new`, as stored (table `rolls`)."""

    id: int
    instrument: str
    status: str
    old_tradingsymbol: str
    old_exchange: str | None
    old_expiry: date | None
    new_tradingsymbol: str
    new_exchange: str | None
    new_expiry: date | None
    position_ids: list[int]
    lots: int
    quantity: int
    new_quantity: int
    closed_quantity: int
    close_notional: Decimal
    opened_quantity: int
    open_notional: Decimal
    close_price: Decimal | None
    open_price: Decimal | None
    spread: Decimal | None
    pnl: Decimal | None
    quoted_spread: Decimal
    exit_reason: str | None
    exit_position_ids: list[int]
    started_at: datetime
    closed_at: datetime | None
    completed_at: datetime | None
    version: int

    @property
    def old(self) -> ContractRef:
        return ContractRef(self.old_tradingsymbol, self.old_exchange, self.old_expiry)

    @property
    def new(self) -> ContractRef:
        return ContractRef(self.new_tradingsymbol, self.new_exchange, self.new_expiry)

    @property
    def live(self) -> bool:
        return self.status != DONE


@dataclass(frozen=True, slots=True)
class NewRoll:
    instrument: str
    old_tradingsymbol: str
    old_exchange: str | None
    old_expiry: date | None
    new_tradingsymbol: str
    new_exchange: str | None
    new_expiry: date | None
    position_ids: list[int]
    lots: int
    quantity: int
    new_quantity: int
    quoted_spread: Decimal
    started_at: datetime


def new_roll(instrument: str, old: ContractRef, new: ContractRef, layers: Sequence[Layer],
             spec: InstrumentSpec, quoted_spread: Decimal, at: datetime) -> NewRoll:
    """The roll of `layers` (all held in `old`) into `new`: the same lots, in new units."""
    lots = sum(layer.lots for layer in layers)
    return NewRoll(instrument, old.tradingsymbol, old.exchange, old.expiry, new.tradingsymbol,
                   new.exchange, new.expiry, [layer.id for layer in layers], lots,
                   sum(layer.quantity for layer in layers), spec.broker_quantity(lots),
                   quoted_spread, at)


@dataclass(frozen=True, slots=True)
class LegProgress:
    """A leg's fills so far: what the roll row records after one more fill."""

    quantity: int
    notional: Decimal
    target: int

    @property
    def complete(self) -> bool:
        return self.quantity >= self.target

    @property
    def left(self) -> int:
        return self.target - self.quantity

    @property
    def average(self) -> Decimal:
        return (self.notional / self.quantity).quantize(PRICE_SCALE)


def close_progress(roll: Roll, quantity: int, price: Decimal) -> LegProgress:
    return LegProgress(roll.closed_quantity + quantity,
                       roll.close_notional + price * quantity, roll.quantity)


def open_progress(roll: Roll, quantity: int, price: Decimal) -> LegProgress:
    return LegProgress(roll.opened_quantity + quantity,
                       roll.open_notional + price * quantity, roll.new_quantity)


@dataclass(frozen=True, slots=True)
class OldLeg:
    """A layer's part in the old contract, closed at the close leg's average price."""

    layer: Layer
    pnl: Decimal


def old_legs(layers: Sequence[Layer], close_price: Decimal,
             spec: InstrumentSpec) -> tuple[OldLeg, ...]:
    """Each layer's P&L on the old contract: (close − entry) × lots × point value."""
    return tuple(OldLeg(layer, layer_pnl(layer.entry_price, close_price, layer.lots,
                                         spec.point_value))
                 for layer in layers)


def carried(layer: Layer, new: ContractRef, open_price: Decimal, spread: Decimal,
            spec: InstrumentSpec) -> dict[str, object]:
    """The changes that carry a layer into the new contract: entry at the new leg's fill,
    every stop and reference shifted by the spread, so its risk in rupees is unchanged."""
    return {"entry_price": open_price, "initial_stop": max(layer.initial_stop + spread,
                                                           Decimal(0)),
            "current_stop": max(layer.current_stop + spread, Decimal(0)),
            "highest_close": layer.highest_close + spread,
            "quantity": spec.broker_quantity(layer.lots),
            "tradingsymbol": new.tradingsymbol, "exchange": new.exchange,
            "expiry": new.expiry}


def carried_pyramiding(state: PyramidingState | None,
                       spread: Decimal) -> PyramidingState | None:
    """The trade's pyramid reference, shifted with its layers."""
    if state is None:
        return None
    return replace(state, last_pyramid_price=state.last_pyramid_price + spread)


def alert_basis(spec: InstrumentSpec, rolls: Iterable[Roll], today: date) -> Decimal:
    """What to add to an alert's prices to state them in the held contract's terms.

    A continuous chart keeps quoting the old contract until it expires: from a roll until
    that expiry, the roll's spread; after it (or when alerts quote the traded contract), 0.
    """
    if spec.alerts_follow == "traded_contract":
        return Decimal(0)
    done = [r for r in rolls if r.instrument == spec.name and r.status == DONE
            and r.spread is not None and r.old_expiry is not None and today <= r.old_expiry]
    if not done:
        return Decimal(0)
    latest = max(done, key=lambda r: r.id)
    assert latest.spread is not None
    return latest.spread


def in_held_terms(signal: Signal, basis: Decimal) -> Signal:
    """The signal with every price converted by `basis` (ATR, ER and ROC are differences or
    ratios and stay as they are; a stop of 0 means none and stays 0)."""
    if basis == 0:
        return signal

    def shift(value: Decimal | None) -> Decimal | None:
        return value + basis if value is not None and value > 0 else value

    return replace(signal, price=signal.price + basis, stop=shift(signal.stop),
                   supertrend=shift(signal.supertrend), entry_price=shift(signal.entry_price))
