"""The closed-equity curve of a book and its drawdown, from its capital ledger.

Pure: standard library and Decimal only. A point per ledger row, in ledger order: the
opening balance, then each closed layer's P&L (and any deposit or withdrawal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

_HUNDRED = Decimal(100)
_PERCENT_PLACES = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class LedgerRow:
    at: datetime  # when the row's money moved (a layer's exit time for its P&L)
    txn_type: str  # DEPOSIT, WITHDRAW, TRADING_PNL
    amount: Decimal
    equity_after: Decimal


@dataclass(frozen=True, slots=True)
class EquityPoint:
    at: datetime
    equity: Decimal
    peak: Decimal  # the highest equity up to this point
    drawdown: Decimal  # peak - equity, >= 0


@dataclass(frozen=True, slots=True)
class Drawdown:
    amount: Decimal
    percent: Decimal  # of the peak it fell from
    peak_at: datetime | None
    trough_at: datetime | None


def equity_curve(rows: Iterable[LedgerRow]) -> list[EquityPoint]:
    """Return the closed equity after each ledger row, with its running peak and drawdown."""
    points: list[EquityPoint] = []
    peak: Decimal | None = None
    for row in rows:
        peak = row.equity_after if peak is None else max(peak, row.equity_after)
        points.append(EquityPoint(row.at, row.equity_after, peak, peak - row.equity_after))
    return points


def max_drawdown(points: Iterable[EquityPoint]) -> Drawdown:
    """Return the deepest fall of closed equity from a prior peak (zero for a curve that
    never falls).

    Peak-to-trough on the ledger's balance: a withdrawal reads as a fall. A replayed book
    has no flows after its opening balance, so there it is the trading drawdown.
    """
    worst: EquityPoint | None = None
    peak_at: datetime | None = None
    worst_peak_at: datetime | None = None
    for point in points:
        if point.drawdown == 0:
            peak_at = point.at
        elif worst is None or point.drawdown > worst.drawdown:
            worst, worst_peak_at = point, peak_at
    if worst is None:
        return Drawdown(Decimal(0), Decimal(0), None, None)
    percent = (worst.drawdown * _HUNDRED / worst.peak).quantize(_PERCENT_PLACES) if (
        worst.peak > 0) else Decimal(0)
    return Drawdown(worst.drawdown, percent, worst_peak_at, worst.at)
