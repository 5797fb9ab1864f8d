"""Pyramid gates (DOMAIN.md §5): every reason a pyramid may not be added, in a fixed order.

Pure: standard library, `decimal` and `core.specs` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from core.accounting import layer_pnl
from core.specs import PortfolioConfig

REASON_SEPARATOR = " | "

_HUNDREDTH = Decimal("0.01")


def pyramid_gate_failures(price: Decimal, atr: Decimal, base_entry: Decimal,
                          base_initial_stop: Decimal, last_pyramid_price: Decimal,
                          trade_layers: Sequence[tuple[Decimal, int]], point_value: Decimal,
                          cfg: PortfolioConfig) -> list[str]:
    """Return the reasons this pyramid fails its gates: 1R, ATR spacing, profit; [] if none.

    `trade_layers` holds (entry price, lots) of the trade's open layers.
    """
    failures = [
        _one_r_failure(price, base_entry, base_initial_stop) if cfg.use_1r_gate else None,
        _spacing_failure(price, atr, last_pyramid_price, cfg.atr_pyramid_spacing),
        _profit_failure(price, trade_layers, point_value),
    ]
    return [reason for reason in failures if reason is not None]


def join_reasons(reasons: Sequence[str]) -> str:
    """Return the reasons as one line, separated by " | "."""
    return REASON_SEPARATOR.join(reasons)


def _one_r_failure(price: Decimal, base_entry: Decimal, base_initial_stop: Decimal) -> str | None:
    moved = price - base_entry
    need = base_entry - base_initial_stop
    # Strictly greater: a pyramid exactly 1R up has not yet paid for the base's risk.
    if moved > need:
        return None
    return f"Price not > 1R (moved {_plain(moved)}, need {_plain(need)})"


def _spacing_failure(price: Decimal, atr: Decimal, last_pyramid_price: Decimal,
                     spacing: Decimal) -> str | None:
    if atr <= 0:
        return f"ATR spacing undefined with ATR {_plain(atr)} (need {spacing})"
    # Multiplied out rather than divided, so the boundary is exact.
    if price - last_pyramid_price >= spacing * atr:
        return None
    # Floored so the printed ratio never rounds up to the threshold it failed.
    ratio = ((price - last_pyramid_price) / atr).quantize(_HUNDREDTH, rounding=ROUND_FLOOR)
    return f"ATR spacing {ratio} < {spacing}"


def _profit_failure(price: Decimal, trade_layers: Sequence[tuple[Decimal, int]],
                    point_value: Decimal) -> str | None:
    pnl = sum((layer_pnl(entry, price, lots, point_value) for entry, lots in trade_layers),
              Decimal(0))
    if pnl > 0:
        return None
    return f"Instrument P&L negative: {_rupees(pnl)}"


# 400 and 450.5, never 4E+2 or 450.50.
def _plain(value: Decimal) -> str:
    if value.is_zero():
        return "0"
    return format(value.normalize(), "f")


def _rupees(value: Decimal) -> str:
    whole = int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return f"₹{whole:,}"
