"""Stops (DOMAIN.md §6): the initial stop of a new layer and the ratcheting trail.

Pure: standard library, `decimal` and `core.specs` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.specs import InstrumentSpec, PortfolioConfig


@dataclass(frozen=True, slots=True)
class Trail:
    """A layer's stop after one price: the new highest close, stop, and whether it was hit."""

    highest_close: Decimal
    current_stop: Decimal
    hit: bool


def initial_stop(price: Decimal, signal_stop: Decimal | None, atr: Decimal,
                 spec: InstrumentSpec, cfg: PortfolioConfig) -> Decimal:
    """Return the new layer's initial stop: the signal's, or price − initial_atr_mult × ATR.

    The one definition used for sizing, gating, risk accounting and trailing alike.
    """
    if cfg.stop_source == "atr":
        return price - spec.initial_atr_mult * atr
    if signal_stop is None:
        raise ValueError("stop_source is 'signal' but the signal carries no stop")
    return signal_stop


def trail_stop(highest_close: Decimal, current_stop: Decimal, price: Decimal, atr: Decimal,
               spec: InstrumentSpec) -> Trail:
    """Return the layer's stop after a market-data price; it only ever moves up.

    The stop is hit when the price is strictly below the new stop.
    """
    highest = max(highest_close, price)
    # With no ATR there is no trail distance: the stop stays where it is.
    stop = max(current_stop, highest - spec.trailing_atr_mult * atr) if atr > 0 else current_stop
    return Trail(highest_close=highest, current_stop=stop, hit=price < stop)
