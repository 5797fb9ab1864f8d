"""What the live book exposes: equities, open risk, volatility and margin in use. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from core.accounting import Equity, equity, open_risk, open_volatility, unrealised_pnl
from core.models import Layer, PortfolioState
from core.specs import InstrumentSpec


@dataclass(frozen=True, slots=True)
class Exposure:
    equity: Equity
    risk: Decimal
    volatility: Decimal
    margin_used: Decimal
    layers: int


def exposure(portfolio: PortfolioState | None, layers: Iterable[Layer],
             instruments: dict[str, InstrumentSpec],
             last_price: Callable[[Layer], Decimal]) -> Exposure:
    """Return the book's exposure, marking open layers at their last known prices."""
    live = list(layers)
    pv = {name: spec.point_value for name, spec in instruments.items()}
    unrealised = unrealised_pnl((x.entry_price, last_price(x), x.lots, pv[x.instrument])
                                for x in live)
    closed = portfolio.closed_equity if portfolio else Decimal(0)
    high = portfolio.equity_high if portfolio else Decimal(0)
    return Exposure(
        equity=equity(closed, unrealised, high),
        risk=open_risk((x.entry_price, x.current_stop, x.lots, pv[x.instrument]) for x in live),
        volatility=open_volatility((x.atr, x.lots, pv[x.instrument]) for x in live),
        margin_used=sum((x.lots * instruments[x.instrument].margin_per_lot for x in live),
                        Decimal(0)),
        layers=len(live))
