"""The `/status` report: equity, risk, volatility and margin use of the live book."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.accounting import equity, open_risk, open_volatility, percent, unrealised_pnl
from core.db_state_manager import DatabaseStateManager
from core.specs import InstrumentSpec
from live.engine import LiveTradingEngine
from live.metrics import Metrics

CENT = Decimal("0.01")


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT))


def _pct(value: Decimal) -> str:
    return str(value.quantize(CENT))


async def status_report(db: DatabaseStateManager, engine: LiveTradingEngine,
                        instruments: dict[str, InstrumentSpec],
                        metrics: Metrics) -> dict[str, Any]:
    """Return equity and exposure figures from the cached book; also refresh the gauges."""
    portfolio = await db.portfolio_state()
    layers = await db.all_live_layers()
    closed = portfolio.closed_equity if portfolio else Decimal(0)
    high = portfolio.equity_high if portfolio else Decimal(0)
    pv = {name: spec.point_value for name, spec in instruments.items()}
    unrealised = unrealised_pnl((x.entry_price, engine.last_price(x), x.lots, pv[x.instrument])
                                for x in layers)
    eq = equity(closed, unrealised, high)
    risk = open_risk((x.entry_price, x.current_stop, x.lots, pv[x.instrument]) for x in layers)
    vol = open_volatility((x.atr, x.lots, pv[x.instrument]) for x in layers)
    margin = sum((x.lots * instruments[x.instrument].margin_per_lot for x in layers), Decimal(0))
    metrics.open_layers.set(len(layers))
    metrics.closed_equity.set(float(closed))  # gauges are floats; money stays Decimal elsewhere
    metrics.risk_percent.set(float(percent(risk, eq.blended)))
    return {
        "equity": {"closed": _money(eq.closed), "open": _money(eq.open),
                   "blended": _money(eq.blended), "high": _money(eq.high)},
        "risk_percent": _pct(percent(risk, eq.blended)),
        "vol_percent": _pct(percent(vol, eq.blended)),
        "margin_percent": _pct(percent(margin, eq.blended)),
        "open_positions": len(layers),
    }
