"""`python -m bench.replay [--signals N]`: replay a long, realistic stream (DESIGN.md §13).

The stream is what a TradingView strategy on the shipped instruments would send: one alert
per instrument at each 15-minute bar close of the Indian session, a random walk with drift
and regime changes per instrument; base entries when a trend starts, pyramids each time the
price has gone 1R further (up to the instrument's limit), exits when the price closes below
the strategy's trailing line, MARKET_DATA otherwise, and a few alerts TradingView sends
twice. Deterministic (seeded). It is replayed as users run it — `portfolio_manager.py
replay` as its own process — and the bench prints signals/s and elapsed as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from config.domain_files import DEFAULT_CONFIG_DIR, load_instruments

REPO = Path(__file__).resolve().parent.parent
INDIA = ZoneInfo("Asia/Kolkata")
FIRST_DAY = date(2026, 1, 5)  # a Monday
BAR_MINUTES = 15
BARS_PER_DAY = 25  # 09:15 to 15:15
# Instrument → (opening price, ATR as a fraction of price).
MARKET = {"GOLD_MINI": (Decimal(78500), Decimal("0.009")),
          "SILVER_MINI": (Decimal(90000), Decimal("0.015")),
          "COPPER": (Decimal(800), Decimal("0.011")),
          "BANK_NIFTY": (Decimal(52000), Decimal("0.007"))}
TARGET_SIGNALS_PER_S = 10_000 / 60
# Past the 1R gate: a base's stop is 2 ATR below its entry.
PYRAMID_SPACING = 2.2


@dataclass
class Strategy:
    """One instrument's chart and the strategy alerting on it."""

    name: str
    price: float
    atr_share: float
    tick: Decimal
    max_layers: int
    drift: float = 0.0
    layers: int = 0
    last_entry: float = 0.0
    highest: float = 0.0

    def bar(self, rng: random.Random) -> None:
        if rng.random() < 0.02:  # a regime change: trends come and go
            self.drift = rng.choice([-0.1, 0.0, 0.06, 0.12])
        self.price *= 1 + self.atr_share * (self.drift + rng.gauss(0, 0.5))

    @property
    def atr(self) -> float:
        return self.price * self.atr_share

    def alert(self, rng: random.Random, moment: datetime) -> dict[str, Any]:
        price, atr = self.price, self.atr
        self.highest = max(self.highest, price)
        trail = self.highest - 1.6 * atr
        body: dict[str, Any] = {"instrument": self.name, "price": self._tick(price),
                                "atr": self._tick(atr), "supertrend": self._tick(trail),
                                "timestamp": moment.replace(tzinfo=None).isoformat()}
        if self.layers and price < trail:
            self.layers = 0
            return {**body, "type": "EXIT", "position": "ALL", "stop": "0", "lots": 1,
                    "er": "0.5", "reason": "supertrend flip"}
        if not self.layers and self.drift > 0 and rng.random() < 0.25:
            return self._entry(body, "BASE_ENTRY", rng)
        if 0 < self.layers < self.max_layers and price >= self.last_entry + PYRAMID_SPACING * atr:
            return self._entry(body, "PYRAMID", rng)
        return {**body, "type": "MARKET_DATA"}

    def _entry(self, body: dict[str, Any], kind: str, rng: random.Random) -> dict[str, Any]:
        self.layers += 1
        self.last_entry = self.highest = self.price
        return {**body, "type": kind, "position": f"Long_{self.layers}",
                "stop": self._tick(self.price - 2 * self.atr), "lots": 1,
                "er": f"{rng.uniform(0.4, 1.0):.2f}"}

    def _tick(self, value: float) -> str:
        return str((Decimal(repr(value)) / self.tick).quantize(Decimal(1)) * self.tick)


def bar_times(start: date) -> list[datetime]:
    """Every bar close of the session from `start` on, weekdays only."""
    day, moments = start, list[datetime]()
    while len(moments) < 100_000:
        if day.weekday() < 5:
            opening = datetime.combine(day, clock_time(9, 15), INDIA)
            moments += [opening + timedelta(minutes=BAR_MINUTES * n)
                        for n in range(BARS_PER_DAY)]
        day += timedelta(days=1)
    return moments


def replay_stream(count: int, seed: int = 20260105) -> list[dict[str, Any]]:
    """Return `count` alerts, in the order TradingView would send them."""
    rng = random.Random(seed)
    specs = load_instruments(DEFAULT_CONFIG_DIR / "instruments.json")
    charts = [Strategy(name, float(price), float(share), specs[name].tick_size,
                       specs[name].max_pyramids + 1) for name, (price, share) in MARKET.items()]
    stream: list[dict[str, Any]] = []
    for moment in bar_times(FIRST_DAY):
        for offset, chart in enumerate(charts):
            chart.bar(rng)
            body = chart.alert(rng, moment + timedelta(seconds=offset))
            stream.append(body)
            if rng.random() < 0.005:  # sent twice: the inbox refuses the second
                stream.append(body)
            if len(stream) >= count:
                return stream[:count]
    return stream


def measure_replay(work: Path, signals: int = 10_000) -> dict[str, Any]:
    """Write the stream, replay it as its own process; return its figures."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "replay-signals.jsonl"
    path.write_text("".join(json.dumps(body) + "\n" for body in replay_stream(signals)))
    out = work / "replay-report"
    started = time.monotonic()
    subprocess.run([sys.executable, str(REPO / "portfolio_manager.py"), "replay", str(path),
                    "--out", str(out)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall_s = time.monotonic() - started
    report = json.loads((out / "report.json").read_text())
    return {"signals": report["signals"], "elapsed_s": report["elapsed_s"],
            "signals_per_s": report["signals_per_s"], "process_wall_s": round(wall_s, 2),
            "layers": len(report["trades"]), "outcomes": report["outcomes"],
            "closed_equity": report["closed_equity"],
            "target": f"{signals} signals in < {signals / TARGET_SIGNALS_PER_S:.0f} s",
            "report": str(out / "report.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signals", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="keep the stream and report in this dir")
    args = parser.parse_args()
    if args.keep is not None:
        result = measure_replay(args.keep, args.signals)
    else:
        with tempfile.TemporaryDirectory(prefix="pm-bench-replay-") as work:
            result = measure_replay(Path(work), args.signals)
            result.pop("report")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
