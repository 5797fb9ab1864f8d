"""A seeded stream of valid TradingView alerts for the crash campaign.

Each instrument walks its own price path on its own virtual clock, 61 s per alert (past the
dedup window), so alerts are never duplicates by accident; resends are exact copies, which
must be answered `duplicate`. The campaign's config accepts alerts up to a week old.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import Any
from zoneinfo import ZoneInfo

from config.domain_files import DEFAULT_CONFIG_DIR

INDIA = ZoneInfo("Asia/Kolkata")
STEP_S = 61
HISTORY_S = 590_000  # room for ~10,000 alerts per instrument


@dataclass
class Walk:
    instrument: str
    price: Decimal
    atr: Decimal
    tick: Decimal
    sent: int = 0


def chaos_config(directory: Path) -> Path:
    """Write the shipped config, accepting alerts up to a week old (virtual clocks)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("instruments.json", "kite.json", "holidays.json"):
        (directory / name).write_text((DEFAULT_CONFIG_DIR / name).read_text())
    portfolio = json.loads((DEFAULT_CONFIG_DIR / "portfolio.json").read_text())
    # The drill clock runs days ahead of the stream's first alerts; paper lists monthly
    # futures, so that GOLD_MINI rolls on paper too.
    portfolio["max_signal_age_s"] = 2_000_000
    portfolio["paper_contracts"] = "monthly"
    (directory / "portfolio.json").write_text(json.dumps(portfolio))
    return directory


def alerts(seed: int, count: int, secret: str, now: datetime) -> list[dict[str, Any]]:
    """Return `count` alerts, the same for the same seed."""
    rng = Random(seed)
    walks = [Walk("GOLD_MINI", Decimal(78500), Decimal(700), Decimal(1)),
             Walk("SILVER_MINI", Decimal(90000), Decimal(1500), Decimal(1)),
             Walk("COPPER", Decimal("800.00"), Decimal(8), Decimal("0.05")),
             Walk("BANK_NIFTY", Decimal("52000.00"), Decimal(350), Decimal("0.05"))]
    out: list[dict[str, Any]] = []
    while len(out) < count:
        if out and rng.random() < 0.08:
            out.append(dict(rng.choice(out)))  # a resend: exactly the same alert
            continue
        walk = rng.choice(walks)
        out.append(_next(walk, rng, secret, now))
    return out


def _next(walk: Walk, rng: Random, secret: str, now: datetime) -> dict[str, Any]:
    # A slight upward drift, so trends form, pyramids fill and stops trail.
    move = walk.atr * Decimal(str(round(rng.uniform(-0.7, 1.0), 2)))
    walk.price = max(walk.atr * 4, _on_tick(walk.price + move, walk.tick))
    moment = now - timedelta(seconds=HISTORY_S - walk.sent * STEP_S)
    walk.sent += 1
    body: dict[str, Any] = {
        "secret": secret, "instrument": walk.instrument, "price": str(walk.price),
        "atr": str(walk.atr), "supertrend": str(walk.price - walk.atr),
        "timestamp": moment.astimezone(INDIA).replace(tzinfo=None).isoformat("T", "seconds")}
    roll = rng.random()
    if roll < 0.40:
        return {**body, "type": "MARKET_DATA"}
    stop = str(_on_tick(walk.price - walk.atr, walk.tick))
    trade = {**body, "lots": 1, "er": "1", "stop": stop}
    if roll < 0.55:
        return {**trade, "type": "BASE_ENTRY", "position": "Long_1"}
    if roll < 0.75:
        return {**trade, "type": "PYRAMID", "position": f"Long_{rng.randint(2, 4)}"}
    position = "ALL" if roll < 0.87 else f"Long_{rng.randint(1, 3)}"
    return {**trade, "type": "EXIT", "position": position, "stop": "0", "reason": "chaos"}


def _on_tick(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).to_integral_value() * tick
