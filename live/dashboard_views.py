"""What the dashboard shows (DESIGN.md §12), gathered from the daemon's parts: the banner,
equity, open layers, recent signals with their orders and fills, and health. Values stay
Decimal and timezone-aware here; the templates format them (live/web_format.py)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from core.accounting import layer_pnl, open_risk
from core.models import Layer, OrderIntent, SignalRecord
from live.brokers.kite_session import next_expiry
from live.dashboard_queries import FillRow, equity_history, fills_of
from live.status import status_report

if TYPE_CHECKING:
    from live.server import Context

RECENT_SIGNALS = 30
HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class LayerRow:
    layer: Layer
    last_price: Decimal
    distance: Decimal  # points from the last price down to the stop (negative: through it)
    distance_percent: Decimal
    risk: Decimal  # ₹ lost from entry if the stop is hit (nothing once it is above entry)
    unrealised: Decimal
    broker_stop: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class SignalDetail:
    signal: SignalRecord
    intents: list[OrderIntent]
    fills: dict[int, list[FillRow]]  # by intent id


def layer_row(layer: Layer, last: Decimal, point_value: Decimal,
              broker_stop: dict[str, Any] | None) -> LayerRow:
    distance = last - layer.current_stop
    return LayerRow(
        layer=layer, last_price=last, distance=distance,
        distance_percent=distance * HUNDRED / last if last else Decimal(0),
        risk=open_risk([(layer.entry_price, layer.current_stop, layer.lots, point_value)]),
        unrealised=layer_pnl(layer.entry_price, last, layer.lots, point_value),
        broker_stop=broker_stop)


async def open_layers(ctx: Context) -> list[LayerRow]:
    layers = sorted(await ctx.db.all_live_layers(), key=lambda x: (x.instrument, x.layer))
    return [layer_row(layer, ctx.engine.last_price(layer),
                      ctx.instruments[layer.instrument].point_value,
                      ctx.stops.view(layer.id) if ctx.stops else None)
            for layer in layers]


def banner(ctx: Context) -> dict[str, Any]:
    """Mode (PAPER/LIVE), role, trading state, the broker's session and readiness."""
    from live.server import current_reasons  # the one rule for "can it trade now"

    live = ctx.broker.name != "paper"
    now = ctx.clock()
    reasons = current_reasons(ctx)
    return {
        "mode": "LIVE" if live else "PAPER", "broker": ctx.broker.name,
        "role": ctx.ha.role if ctx.ha else "single",
        "instance": ctx.ha.instance if ctx.ha else None,
        "trading_state": ctx.control.report() if ctx.control else {"state": None,
                                                                        "reason": None},
        "session": {"problem": ctx.broker.unavailable_reason,
                    "expires_at": next_expiry(now) if live else None},
        "ready": not reasons, "reasons": reasons,
        "flatten": ctx.flattener.report() if ctx.flattener else None,
    }


async def equity(ctx: Context) -> dict[str, Any]:
    """The book's equities and today's P&L (against the day's opening equity)."""
    report = await status_report(ctx.engine, ctx.metrics)
    daily = await ctx.limits.report() if ctx.limits else None
    return {"equity": {k: Decimal(v) for k, v in report["equity"].items()},
            "risk_percent": Decimal(report["risk_percent"]),
            "margin_percent": Decimal(report["margin_percent"]),
            "today_pnl": Decimal(daily["pnl"]) if daily and daily["pnl"] else None,
            "daily": daily}


async def equity_series(ctx: Context) -> dict[str, Any]:
    """The chart's data: epoch seconds and rupees, the ledger's closed equity and the
    snapshots' blended equity on one time axis (a series is null where the other has a
    point)."""
    history = await equity_history(ctx.db)
    points: dict[int, list[float | None]] = {}
    for column, series in enumerate((history.closed, history.blended)):
        for moment, value in series:
            # Floats only for drawing: the figures shown as text stay Decimal.
            points.setdefault(int(moment.timestamp()), [None, None])[column] = float(value)
    times = sorted(points)
    return {"t": times, "closed": [points[t][0] for t in times],
            "blended": [points[t][1] for t in times]}


async def recent_signals(ctx: Context) -> list[SignalRecord]:
    return await ctx.db.list_signals(RECENT_SIGNALS, None)


async def signal_detail(ctx: Context, signal_id: int) -> SignalDetail | None:
    record = await ctx.db.signal(signal_id)
    if record is None:
        return None
    intents = await ctx.db.intents_for_signal(signal_id)
    fills: dict[int, list[FillRow]] = {}
    for fill in await fills_of(ctx.db, [i.id for i in intents]):
        fills.setdefault(fill.intent_id, []).append(fill)
    return SignalDetail(record, intents, fills)


async def health(ctx: Context) -> dict[str, Any]:
    """Database, the pair's lease, the last reconciliation, pending exits, the next rolls."""
    database = await ctx.db.status(timeout_s=1.0)
    last_check = ctx.reconciler.last_check if ctx.reconciler else None
    rolls = await ctx.rollover.report() if ctx.rollover else {}
    return {
        "database": database,
        "ha": ctx.ha.report() if ctx.ha else None,
        "reconciliation": None if last_check is None else {
            "at": last_check[0], "differences": last_check[1]},
        "blocks": ctx.readiness.block_reasons(),
        "exits_pending": ctx.exits.report() if ctx.exits else [],
        "rolls": [{"instrument": name, "next_roll_day": view.get("next_roll_day"),
                   "held": [c["tradingsymbol"] for c in view["held"]],
                   "roll": view.get("roll")}
                  for name, view in sorted(rolls.items()) if view["held"]],
        "broker_stops": ctx.stops.report() if ctx.stops else None,
    }
