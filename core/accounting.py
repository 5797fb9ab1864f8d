"""Profit and equity (DOMAIN.md §7) and the open risk the portfolio caps read (§4).

Pure: standard library, `decimal` and `core.specs` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from core.specs import PortfolioConfig

_ZERO = Decimal(0)
_HALF = Decimal("0.5")
_HUNDRED = Decimal(100)
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Equity:
    """The portfolio's equity figures at one moment."""

    closed: Decimal
    unrealised: Decimal
    open: Decimal
    blended: Decimal
    high: Decimal


def layer_pnl(entry_price: Decimal, exit_price: Decimal, lots: int,
              point_value: Decimal) -> Decimal:
    """Return the rupee P&L of a layer: (exit − entry) × lots × pv, to the paisa (as booked)."""
    return ((exit_price - entry_price) * lots * point_value).quantize(CENT)


def unrealised_pnl(positions: Iterable[tuple[Decimal, Decimal, int, Decimal]]) -> Decimal:
    """Return the P&L of open layers given as (entry, last price, lots, pv)."""
    return sum((layer_pnl(entry, last, lots, pv) for entry, last, lots, pv in positions), _ZERO)


def equity(closed: Decimal, unrealised: Decimal, high: Decimal) -> Equity:
    """Return open (closed + unrealised) and blended (closed + half unrealised) equity.

    `high` is the ledger's stored high-water mark; the ledger alone moves it
    (`Transaction.append_ledger`), so it is never recomputed here.
    """
    return Equity(closed=closed, unrealised=unrealised, open=closed + unrealised,
                  blended=closed + _HALF * unrealised, high=high)


def open_risk(layers: Iterable[tuple[Decimal, Decimal, int, Decimal]]) -> Decimal:
    """Return Σ max(0, entry − current stop) × lots × pv over (entry, stop, lots, pv)."""
    # A stop trailed above the entry locks in profit: it adds no risk, and offsets none.
    return sum((max(_ZERO, entry - stop) * lots * pv for entry, stop, lots, pv in layers), _ZERO)


def open_volatility(layers: Iterable[tuple[Decimal, int, Decimal]]) -> Decimal:
    """Return Σ atr × lots × pv over (ATR at entry, lots, pv)."""
    return sum((atr * lots * pv for atr, lots, pv in layers), _ZERO)


def sizing_equity(cfg: PortfolioConfig, closed: Decimal, blended: Decimal,
                  high: Decimal) -> Decimal:
    """Return E, the equity sizing uses, as chosen by `cfg.sizing_equity`."""
    choices = {"equity_high": high, "closed": closed, "blended": blended}
    return choices[cfg.sizing_equity]


def percent(part: Decimal, whole: Decimal) -> Decimal:
    """Return part as a percentage of whole; 0 when whole is not positive."""
    if whole <= 0:
        return _ZERO
    return part * _HUNDRED / whole


def money_text(value: Decimal) -> str:
    """Return money as JSON carries it: a string with exactly two decimals."""
    return str(value.quantize(CENT))
