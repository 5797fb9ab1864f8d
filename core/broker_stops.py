"""Broker-resident protective stops (DOMAIN.md §12): what a layer's stop at the broker should
be, and what to do about the one it has. Pure: standard library only.

The stop at the broker mirrors the layer's `current_stop`: a SELL of the layer's quantity,
triggered at the stop and limited `band` percent below it (Zerodha places only LIMIT orders
from a GTT, and SL-M is not offered on every segment). It moves only upwards, as the stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum

from core.models import Layer, LayerStatus

GTT, SL = "gtt", "sl"
BROKER_STOP = "BROKER_STOP"  # the exit reason of a layer its broker stop sold


class StopStatus(StrEnum):
    PLACING = "placing"
    ACTIVE = "active"
    MODIFYING = "modifying"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    TRIGGERED = "triggered"
    LAPSED = "lapsed"
    REJECTED = "rejected"


# A row in one of these is (or may be) working at the venue: at most one per layer.
WORKING = frozenset({StopStatus.PLACING, StopStatus.ACTIVE, StopStatus.MODIFYING,
                     StopStatus.CANCELLING})
# A row in one of these asked the venue for something whose answer was not recorded.
PENDING = frozenset({StopStatus.PLACING, StopStatus.MODIFYING, StopStatus.CANCELLING})


@dataclass(frozen=True, slots=True)
class StopLevels:
    trigger: Decimal
    limit: Decimal


@dataclass(frozen=True, slots=True)
class StopRecord:
    """A `broker_stops` row."""

    id: int
    tag: str
    position_id: int
    instrument: str
    kind: str
    tradingsymbol: str
    exchange: str | None
    quantity: int
    trigger_price: Decimal
    limit_price: Decimal
    status: StopStatus
    broker_ref: str | None
    pending_trigger: Decimal | None
    pending_limit: Decimal | None
    exit_intent_id: int | None
    reason: str | None
    version: int

    @property
    def working(self) -> bool:
        return self.status in WORKING

    @property
    def protects(self) -> bool:
        """Resting at the venue as far as the book knows (a modification keeps the old one)."""
        return self.status in (StopStatus.ACTIVE, StopStatus.MODIFYING)


def to_tick(price: Decimal, tick: Decimal, *, up: bool) -> Decimal:
    steps = (price / tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return (steps * tick).quantize(tick)


def stop_levels(layer: Layer, band_percent: Decimal, tick: Decimal) -> StopLevels:
    """The broker stop a layer should have: its stop rounded down to the tick (so while the
    daemon runs its own stop, crossed first, sells; the broker's is the backstop), and the
    limit `band_percent` below it, rounded down to the tick."""
    trigger = to_tick(layer.current_stop, tick, up=False)
    limit = to_tick(trigger * (1 - band_percent / 100), tick, up=False)
    return StopLevels(trigger, max(limit, tick))


def needs_stop(layer: Layer) -> bool:
    """Only an open layer is protected at the broker: a closing one is being sold by the
    daemon, which cancelled its stop first."""
    return layer.status is LayerStatus.OPEN and layer.tradingsymbol is not None


def may_move(record: StopRecord, layer: Layer) -> bool:
    """Whether the layer's stop is above the broker's: only then can `should_move` hold, the
    wanted trigger being the layer's stop rounded down. A round over the whole book works out
    the levels of these layers only (a few µs each, for most layers on most rounds)."""
    return layer.current_stop > record.trigger_price


def should_move(record: StopRecord, wanted: StopLevels) -> bool:
    """A broker stop follows the trail upwards only; a lower wanted trigger (a stop the
    book holds below the broker's, after rounding) leaves it where it is."""
    return wanted.trigger > record.trigger_price
