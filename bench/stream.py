"""Distinct, valid alerts that make the engine take real decisions, for any number of requests.

Each bench instrument runs the same trade again and again, on its own virtual clock that
advances 61 s per alert, so no two alerts are duplicates under either dedup rule:

    BASE_ENTRY, 23 bars, PYRAMID, 23 bars, EXIT of Long_2, 23 bars, EXIT of ALL, 23 bars

96 alerts, 4 of them orders (4 %). While layers are open every fourth bar is a new high that
trails the stops (the worker moves them, and the broker stop with them) and the others dip
below it (nothing moves: decided in the admission's commit); the last 23 bars find a flat
book. The instruments run a quarter-cycle apart in turn, as a book's trades do, so every
second of the stream carries the same mix, and entries come spread out, not 40 at once.
Entries are sized small against a large capital, so margin never runs out and every order
fills: the mix is the same in every phase of a run, whatever its rate.
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
HISTORY_S = 590_000  # ~9,600 alerts per instrument: enough for every phase of a run
MAX_SIGNAL_AGE_S = 600_000
RISK_PERCENT = "0.001"  # of the bench's 10^11 capital: ~140 lots of GOLD_MINI an entry
# (template instrument, base price, ATR)
TEMPLATES = [("GOLD_MINI", Decimal("78500"), Decimal("700")),
             ("SILVER_MINI", Decimal("90000"), Decimal("1500")),
             ("COPPER", Decimal("800"), Decimal("8")),
             ("BANK_NIFTY", Decimal("52000"), Decimal("350"))]
BARS = 23  # after each order
ORDERS = ["BASE_ENTRY", "PYRAMID", "EXIT_2", "EXIT_ALL"]
CYCLE = [kind for order in ORDERS for kind in [order] + ["MARKET_DATA"] * BARS]
# Where each order stands, in ATRs above the base price; the bars after it climb from there.
ORDER_LEVEL = {"BASE_ENTRY": Decimal(0), "PYRAMID": Decimal(3), "EXIT_2": Decimal("4.5"),
               "EXIT_ALL": Decimal(6)}


@dataclass(frozen=True)
class BenchInstrument:
    name: str
    template: str
    price: Decimal
    atr: Decimal


def bench_instruments(count: int) -> list[BenchInstrument]:
    return [BenchInstrument(f"{t[0]}_B{i:04d}", t[0], t[1], t[2])
            for i in range(count) for t in [TEMPLATES[i % len(TEMPLATES)]]]


def write_bench_config(directory: Path, count: int,
                       extra: list[str] | None = None) -> list[BenchInstrument]:
    """Write a config dir with `count` stream instruments cloned from the shipped table (and
    `extra` names, GOLD_MINI clones, for a seeded book)."""
    directory.mkdir(parents=True, exist_ok=True)
    shipped = json.loads((DEFAULT_CONFIG_DIR / "instruments.json").read_text())
    instruments = bench_instruments(count)
    # Small entries, and orders as large as they need be (the shipped per-order cap would
    # split them): every entry fills and margin never runs out.
    sized = {"max_lots_per_order": 10_000_000, "initial_risk_percent": RISK_PERCENT,
             "ongoing_risk_percent": RISK_PERCENT}
    table = {i.name: {**shipped[i.template], **sized} for i in instruments}
    table.update({name: {**shipped["GOLD_MINI"], **sized} for name in extra or []})
    (directory / "instruments.json").write_text(json.dumps(table))
    portfolio = json.loads((DEFAULT_CONFIG_DIR / "portfolio.json").read_text())
    portfolio["max_signal_age_s"] = MAX_SIGNAL_AGE_S
    for cap in ("max_portfolio_risk_percent", "max_portfolio_vol_percent",
                "pyramid_risk_block", "pyramid_vol_block"):
        portfolio[cap] = "100"
    (directory / "portfolio.json").write_text(json.dumps(portfolio))
    holidays = DEFAULT_CONFIG_DIR / "holidays.json"
    (directory / "holidays.json").write_text(holidays.read_text())
    return instruments


def _level(position: int) -> Decimal:
    """The price of alert `position` of the cycle, in ATRs above the base price."""
    order = ORDERS[position // (BARS + 1)]
    bar = position % (BARS + 1)  # 0: the order itself
    if bar == 0 or order == "EXIT_ALL":
        return ORDER_LEVEL[order]
    # Every fourth bar makes a new high (the stops trail), the others dip a little below.
    high = ORDER_LEVEL[order] + Decimal("0.1") * ((bar + 3) // 4)
    return high if bar % 4 == 1 else high - Decimal("0.3")


def alert_body(index: int, instruments: list[BenchInstrument], secret: str,
               now: datetime) -> dict[str, object]:
    """Return alert number `index` of the stream (deterministic)."""
    number = index % len(instruments)
    instrument = instruments[number]
    step = index // len(instruments)
    if step * STEP_S >= HISTORY_S:
        raise ValueError("stream exhausted: use more instruments")
    moment = now - timedelta(seconds=HISTORY_S - step * STEP_S)
    # Instrument n is n quarter-cycles (plus n alerts) into its trade: spread phases.
    position = (step + number * (len(CYCLE) // 4 + 1)) % len(CYCLE)
    kind = CYCLE[position]
    p, atr = instrument.price, instrument.atr
    price = p + atr * _level(position)
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
