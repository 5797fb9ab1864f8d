"""A replay's result, read from its book: `report.json` and an offline `report.html`.

The numbers come from the book the engine wrote (layers, ledger, portfolio state), never
from the replay's own tally, so the report says what the daemon's book would say.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2

from core.accounting import money_text
from core.db_state_manager import DatabaseStateManager
from core.equity_curve import Drawdown, EquityPoint, LedgerRow, equity_curve, max_drawdown
from core.signals import INDIA

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "web" / "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined)
CHART_W, CHART_H, CHART_PAD = 960, 220, 8
MAX_INVALID_SHOWN = 100
MAX_REASONS_SHOWN = 30

_TRADES_SQL = """SELECT id, trade_id, instrument, layer, lots, entry_timestamp, entry_price,
                        exit_timestamp, exit_price, exit_reason, realized_pnl, status
                 FROM portfolio_positions ORDER BY id"""
# A layer's P&L is dated by its exit (the virtual clock), not by the wall-clock insert.
_LEDGER_SQL = """SELECT c.txn_type, c.amount, c.equity_after, p.exit_timestamp
                 FROM capital_transactions c
                 LEFT JOIN portfolio_positions p ON p.id = c.position_id ORDER BY c.id"""


@dataclass(frozen=True, slots=True)
class Trade:
    position_id: int
    trade_id: int
    instrument: str
    layer: str
    lots: int
    entry_time: datetime
    entry_price: Decimal
    exit_time: datetime | None
    exit_price: Decimal | None
    exit_reason: str | None
    pnl: Decimal | None
    status: str

    def to_json(self) -> dict[str, Any]:
        return {"position_id": self.position_id, "trade_id": self.trade_id,
                "instrument": self.instrument, "layer": self.layer, "lots": self.lots,
                "entry_time": self.entry_time.isoformat(), "entry_price": str(self.entry_price),
                "exit_time": _iso(self.exit_time), "exit_price": _text(self.exit_price),
                "exit_reason": self.exit_reason,
                "pnl": None if self.pnl is None else money_text(self.pnl),
                "status": self.status}


@dataclass(frozen=True)
class ReplayRun:
    config_sha256: str
    outcomes: dict[str, int]
    reasons: dict[str, int]  # "outcome: reason" of the signals that did not execute
    invalid: list[dict[str, Any]]
    initial_capital: Decimal
    closed_equity: Decimal
    equity_high: Decimal
    drawdown: Drawdown
    curve: list[EquityPoint]
    trades: list[Trade]
    elapsed_s: float

    @property
    def signals(self) -> int:
        return sum(self.outcomes.values())

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values: money as text, times ISO 8601 with offset."""
        return {
            "signals": self.signals,
            "elapsed_s": round(self.elapsed_s, 3),
            "signals_per_s": round(self.signals / self.elapsed_s, 1) if self.elapsed_s else None,
            "config_sha256": self.config_sha256,
            "initial_capital": money_text(self.initial_capital),
            "closed_equity": money_text(self.closed_equity),
            "equity_high": money_text(self.equity_high),
            "max_drawdown": money_text(self.drawdown.amount),
            "max_drawdown_percent": str(self.drawdown.percent),
            "max_drawdown_from": _iso(self.drawdown.peak_at),
            "max_drawdown_to": _iso(self.drawdown.trough_at),
            "outcomes": dict(sorted(self.outcomes.items())),
            "reasons": dict(sorted(self.reasons.items(), key=lambda r: (-r[1], r[0]))[
                :MAX_REASONS_SHOWN]),
            "invalid_lines": self.invalid[:MAX_INVALID_SHOWN],
            "open_layers": sum(1 for t in self.trades if t.status != "closed"),
            "trades": [t.to_json() for t in self.trades],
            "equity_curve": [{"at": p.at.isoformat(), "equity": money_text(p.equity),
                              "drawdown": money_text(p.drawdown)} for p in self.curve],
        }


async def build_report(db: DatabaseStateManager, sha256: str, outcomes: dict[str, int],
                       reasons: dict[str, int], invalid: list[dict[str, Any]], *,
                       opened_at: datetime,
                       elapsed_s: float) -> ReplayRun:
    """Read the replayed book into its report; the opening balance is dated `opened_at`."""
    async with db.reading() as conn:
        trades = [Trade(*row) for row in await (await conn.execute(_TRADES_SQL)).fetchall()]
        ledger = [LedgerRow(at or opened_at, txn_type, amount, equity_after)
                  for txn_type, amount, equity_after, at
                  in await (await conn.execute(_LEDGER_SQL)).fetchall()]
    state = await db.portfolio_state()
    assert state is not None  # seeded before the first signal
    curve = equity_curve(ledger)
    return ReplayRun(sha256, dict(outcomes), dict(reasons), invalid, state.initial_capital,
                     state.closed_equity, state.equity_high, max_drawdown(curve), curve, trades,
                     elapsed_s)


def write_report(run: ReplayRun, out: Path) -> None:
    """Write `out/report.json` and `out/report.html` (each whole, or not at all)."""
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "report.json", json.dumps(run.to_json(), indent=1) + "\n")
    _write(out / "report.html", render_html(run))


def render_html(run: ReplayRun) -> str:
    """The report as one self-contained page: inline CSS and SVG, no scripts, no fetches."""
    equity = [(p.at, p.equity) for p in run.curve]
    drawdown = [(p.at, -p.drawdown) for p in run.curve]
    return TEMPLATES.get_template("replay_report.html").render(
        run=run, report=run.to_json(), equity_chart=chart(equity),
        drawdown_chart=chart(drawdown), width=CHART_W, height=CHART_H, india=INDIA)


def chart(series: list[tuple[datetime, Decimal]]) -> dict[str, Any]:
    """A step line of `series` in chart coordinates (the SVG's own), with its axis labels.
    Floats here only place pixels; every figure shown is the Decimal's text."""
    if not series:
        return {"path": "", "area": "", "top": "", "bottom": "", "start": "", "end": ""}
    times = [at.timestamp() for at, _ in series]
    values = [float(value) for _, value in series]
    t0, t1 = times[0], max(times[-1], times[0] + 1)
    low, high = min(values), max(values)
    span = high - low or 1.0

    def x(t: float) -> float:
        return CHART_PAD + (t - t0) / (t1 - t0) * (CHART_W - 2 * CHART_PAD)

    def y(v: float) -> float:
        return CHART_PAD + (high - v) / span * (CHART_H - 2 * CHART_PAD)

    steps = [f"M{x(times[0]):.1f},{y(values[0]):.1f}"]
    for t, v, previous in zip(times[1:], values[1:], values, strict=False):
        steps.append(f"L{x(t):.1f},{y(previous):.1f}L{x(t):.1f},{y(v):.1f}")
    steps.append(f"L{x(t1):.1f},{y(values[-1]):.1f}")
    path = "".join(steps)
    baseline = y(max(low, min(high, 0.0))) if low < 0 else y(low)
    area = f"{path}L{x(t1):.1f},{baseline:.1f}L{x(t0):.1f},{baseline:.1f}Z"
    return {"path": path, "area": area, "top": money_text(max(v for _, v in series)),
            "bottom": money_text(min(v for _, v in series)),
            "start": series[0][0].astimezone(INDIA).strftime("%Y-%m-%d %H:%M"),
            "end": series[-1][0].astimezone(INDIA).strftime("%Y-%m-%d %H:%M")}


def _write(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
