"""The `/status` report: equity, risk, volatility and margin use of the live book."""

from __future__ import annotations

from typing import Any

from core.accounting import money_text, percent
from live.engine import LiveTradingEngine
from live.metrics import Metrics


async def status_report(engine: LiveTradingEngine, metrics: Metrics) -> dict[str, Any]:
    """Return equity and exposure figures from the cached book; also refresh the gauges."""
    book = await engine.exposure()
    eq = book.equity
    metrics.open_layers.set(book.layers)
    metrics.closed_equity.set(float(eq.closed))  # gauges are floats; money stays Decimal
    metrics.risk_percent.set(float(percent(book.risk, eq.blended)))
    return {
        "equity": {"closed": money_text(eq.closed), "open": money_text(eq.open),
                   "blended": money_text(eq.blended), "high": money_text(eq.high)},
        "risk_percent": money_text(percent(book.risk, eq.blended)),
        "vol_percent": money_text(percent(book.volatility, eq.blended)),
        "margin_percent": money_text(percent(book.margin_used, eq.blended)),
        "open_positions": book.layers,
    }
