"""Distinct, valid alerts that make the engine take real decisions, for any number of requests.

Each bench instrument runs a cycle — base entry, trailing MARKET_DATA, a pyramid, exits of one
layer and of all — on its own virtual clock that advances 61 s per alert, so no two alerts are
duplicates under either dedup rule. The bench daemon accepts alerts up to a week old.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from config.domain_files import DEFAULT_CONFIG_DIR

INDIA = ZoneInfo("Asia/Kolkata")
STEP_S = 61  # past the 60 s dedup window
HISTORY_S = 590_000  # ~9,600 alerts per instrument: enough for every throughput step
MAX_SIGNAL_AGE_S = 600_000
# (template instrument, base price, ATR)
TEMPLATES = [("GOLD_MINI", Decimal("78500"), Decimal("700")),
             ("SILVER_MINI", Decimal("90000"), Decimal("1500")),
             ("COPPER", Decimal("800"), Decimal("8")),
             ("BANK_NIFTY", Decimal("52000"), Decimal("350"))]
CYCLE = ["BASE_ENTRY", "MARKET_DATA", "MARKET_DATA", "PYRAMID", "MARKET_DATA", "EXIT_2",
         "MARKET_DATA", "EXIT_ALL"]


@dataclass(frozen=True)
class BenchInstrument:
    name: str
    template: str
    price: Decimal
    atr: Decimal


def bench_instruments(count: int) -> list[BenchInstrument]:
    return [BenchInstrument(f"{t[0]}_B{i:04d}", t[0], t[1], t[2])
            for i in range(count) for t in [TEMPLATES[i % len(TEMPLATES)]]]


def write_bench_config(directory: Path, count: int) -> list[BenchInstrument]:
    """Write a config dir with `count` instruments cloned from the shipped table."""
    directory.mkdir(parents=True, exist_ok=True)
    shipped = json.loads((DEFAULT_CONFIG_DIR / "instruments.json").read_text())
    instruments = bench_instruments(count)
    # Orders as large as the stream's equity sizes them (the shipped per-order cap would
    # turn its margin-limited entries into fills, and change what is measured).
    table = {i.name: {**shipped[i.template], "max_lots_per_order": 10_000_000}
             for i in instruments}
    (directory / "instruments.json").write_text(json.dumps(table))
    portfolio = json.loads((DEFAULT_CONFIG_DIR / "portfolio.json").read_text())
    portfolio["max_signal_age_s"] = MAX_SIGNAL_AGE_S
    # Caps wide enough that most entries fill: the bench measures executions, not blocks.
    for cap in ("max_portfolio_risk_percent", "max_portfolio_vol_percent",
                "pyramid_risk_block", "pyramid_vol_block"):
        portfolio[cap] = "100"
    (directory / "portfolio.json").write_text(json.dumps(portfolio))
    holidays = DEFAULT_CONFIG_DIR / "holidays.json"
    (directory / "holidays.json").write_text(holidays.read_text())
    return instruments


def alert_body(index: int, instruments: list[BenchInstrument], secret: str,
               now: datetime) -> dict[str, object]:
    """Return alert number `index` of the stream (deterministic)."""
    instrument = instruments[index % len(instruments)]
    step = index // len(instruments)
    if step * STEP_S >= HISTORY_S:
        raise ValueError("stream exhausted: use more instruments")
    moment = now - timedelta(seconds=HISTORY_S - step * STEP_S)
    kind = CYCLE[step % len(CYCLE)]
    p, atr = instrument.price, instrument.atr
    price = {0: p, 1: p + atr / 2, 2: p + atr * Decimal("1.2"), 3: p + atr * 3,
             4: p + atr * Decimal("3.5"), 5: p + atr * 4, 6: p + atr * Decimal("4.2"),
             7: p + atr * Decimal("4.5")}[step % len(CYCLE)]
    body: dict[str, object] = {
        "secret": secret, "instrument": instrument.name, "price": str(price),
        "atr": str(atr), "supertrend": str(p - atr),
        "timestamp": moment.astimezone(INDIA).replace(tzinfo=None).isoformat(
            timespec="seconds")}
    if kind == "MARKET_DATA":
        body["type"] = kind
        return body
    body.update(lots=1, er="0.9")
    if kind == "BASE_ENTRY":
        body.update(type=kind, position="Long_1", stop=str(p - atr))
    elif kind == "PYRAMID":
        body.update(type=kind, position="Long_2", stop=str(price - atr))
    else:
        body.update(type="EXIT", position="Long_2" if kind == "EXIT_2" else "ALL", stop="0",
                    reason="bench")
    return body
