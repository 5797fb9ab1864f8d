"""The `/status` report: equity, risk, volatility and margin use of the live book."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.accounting import percent
from live.engine import LiveTradingEngine
from live.metrics import Metrics

CENT = Decimal("0.01")


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT))


async def status_report(engine: LiveTradingEngine, metrics: Metrics) -> dict[str, Any]:
    """Return equity and exposure figures from the cached book; also refresh the gauges."""
    book = await engine.exposure()
    eq = book.equity
    metrics.open_layers.set(book.layers)
    metrics.closed_equity.set(float(eq.closed))  # gauges are floats; money stays Decimal
    metrics.risk_percent.set(float(percent(book.risk, eq.blended)))
    return {
        "equity": {"closed": _money(eq.closed), "open": _money(eq.open),
                   "blended": _money(eq.blended), "high": _money(eq.high)},
        "risk_percent": _money(percent(book.risk, eq.blended)),
        "vol_percent": _money(percent(book.volatility, eq.blended)),
        "margin_percent": _money(percent(book.margin_used, eq.blended)),
        "open_positions": book.layers,
    }
