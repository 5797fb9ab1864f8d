"""`make bench`: the kill switch — 20 open layers over 4 instruments flattened, timed from
`POST /admin/flatten` to the 200 that reports the broker confirmed flat (issue 11 item 4).

On paper, and with `--broker zerodha` against the fake Kite server as its own process (the real
kiteconnect client in between). One run: resume, enter five layers of each instrument (a base
entry, then pyramids 2.5 ATR apart, each answered `executed`), wait until each layer's broker
stop rests (at Kite: an SL order or a GTT each, to be cancelled), flatten, check that 20 layers
closed and `/positions` is empty, withdraw the profit (so that the next run sizes the same
book). Timed on the client (request to answer) and as the daemon reports it (`elapsed_ms`: its
flatten task, from the first cancel to the broker's confirmation).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.harness import BenchDaemon, percentile
from bench.stream import INDIA, MAX_SIGNAL_AGE_S, STEP_S
from config.domain_files import DEFAULT_CONFIG_DIR
from tests.fakes.kite_server import FakeKiteProcess

LAYERS = 5  # per instrument: a base entry and four pyramids
# Instrument → (base price, ATR ≈ 1 % of it): steps of 2.5 ATR stay on every tick.
MARKET = {"GOLD_MINI": (Decimal(78500), Decimal(800)),
          "SILVER_MINI": (Decimal(90000), Decimal(900)),
          "COPPER": (Decimal(900), Decimal(9)),
          "BANK_NIFTY": (Decimal(52000), Decimal(520))}
OPEN_LAYERS = LAYERS * len(MARKET)
KITE_SERIES = {"GOLD_MINI": "MCX:GOLDM", "SILVER_MINI": "MCX:SILVERM", "COPPER": "MCX:COPPER",
               "BANK_NIFTY": "NFO:BANKNIFTY"}
CAPITAL = "100000000"
SECRET = "bench-webhook-secret"
ADMIN_TOKEN = "bench-admin-token"
ENV = {"PM_WEBHOOK_SECRET": SECRET, "PM_ADMIN_TOKEN": ADMIN_TOKEN,
       # A venue answers slower than paper: wait for each entry's outcome, not a 202.
       "PM_DECISION_WAIT_MS": "10000"}
KITE_ENV = {"PM_KITE_API_KEY": "fake_api_key", "PM_KITE_API_SECRET": "fake_api_secret",
            "PM_KITE_ACCESS_TOKEN": "fake_access_token"}
# At the fake the daemon's clock starts on an ordinary trading day, inside every session and
# far from any expiry: no roll or closed market changes what is measured, whatever the date.
KITE_CLOCK_START = datetime(2026, 11, 18, 11, 0, tzinfo=INDIA)
KITE_CASH = "100000000000"


class FlattenFailed(AssertionError):
    """A run did not reach what it measures: an entry not executed, a flatten not flat."""


def write_flatten_config(directory: Path) -> Path:
    """Write the shipped config with room for five layers on each of four instruments."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("holidays.json", "kite.json"):
        (directory / name).write_text((DEFAULT_CONFIG_DIR / name).read_text())
    shipped = json.loads((DEFAULT_CONFIG_DIR / "instruments.json").read_text())
    table = {name: {**shipped[name], "max_pyramids": max(shipped[name]["max_pyramids"],
                                                         LAYERS - 1)} for name in MARKET}
    (directory / "instruments.json").write_text(json.dumps(table))
    portfolio = json.loads((DEFAULT_CONFIG_DIR / "portfolio.json").read_text())
    # The limits are not under test: every entry of the recipe must execute.
    portfolio.update({cap: "100" for cap in (
        "max_margin_utilization_percent", "max_portfolio_risk_percent",
        "max_portfolio_vol_percent", "pyramid_risk_block", "pyramid_vol_block")})
    portfolio.update(paper_margin_fraction="1", use_1r_gate=False,
                     max_signal_age_s=MAX_SIGNAL_AGE_S)
    (directory / "portfolio.json").write_text(json.dumps(portfolio))
    return directory


def call(url: str, body: dict[str, Any] | None = None, token: str | None = None,
         timeout_s: float = 30) -> tuple[int, Any]:
    """GET `url`, or POST `body` as JSON; return the status and the decoded answer."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@dataclass
class Drill:
    """Fill a daemon with layers and flatten it, again and again."""

    url: str
    clock: Callable[[], datetime]  # the daemon's time
    quote: Callable[[str, Decimal], None]  # make the venue trade an instrument at a price
    origin: datetime = field(init=False)
    sent: int = 0

    def __post_init__(self) -> None:
        # Alerts 61 s apart (past the dedup window), all in the past and all still fresh.
        self.origin = self.clock() - timedelta(seconds=MAX_SIGNAL_AGE_S // 2)

    def admin(self, action: str, reason: str) -> tuple[int, Any]:
        return call(f"{self.url}/admin/{action}", {"reason": reason}, ADMIN_TOKEN)

    def enter(self, instrument: str, n: int) -> None:
        """Open layer `n` (0: the base entry) of `instrument`; fail unless executed."""
        base, atr = MARKET[instrument]
        price = base + atr * Decimal("2.5") * n
        moment = self.origin + timedelta(seconds=STEP_S * self.sent)
        if moment >= self.clock():
            raise FlattenFailed("out of alert timestamps: fewer runs")
        self.sent += 1
        self.quote(instrument, price)
        body = {"secret": SECRET, "type": "PYRAMID" if n else "BASE_ENTRY",
                "instrument": instrument, "position": f"Long_{n + 1}", "price": str(price),
                "stop": str(price - 2 * atr), "atr": str(atr), "supertrend": str(price - atr),
                "lots": 1, "er": "0.9",
                "timestamp": moment.astimezone(INDIA).replace(tzinfo=None).isoformat(
                    timespec="seconds")}
        code, answer = call(f"{self.url}/webhook", body)
        if (code, answer.get("status")) != (200, "executed"):
            raise FlattenFailed(f"{instrument} Long_{n + 1} answered {code} {answer}")

    def run(self, number: int) -> dict[str, float]:
        """One run: resume, enter 20 layers, flatten; return its two timings in ms."""
        code, answer = self.admin("resume", f"bench run {number}")
        if code != 200:
            raise FlattenFailed(f"resume answered {code} {answer}")
        for n in range(LAYERS):
            for instrument in MARKET:
                self.enter(instrument, n)
        self.until_protected()
        started = time.perf_counter()
        code, answer = self.admin("flatten", f"bench run {number}")
        request_ms = (time.perf_counter() - started) * 1000
        if (code, answer.get("status"), answer.get("layers_closed")) != (200, "flat",
                                                                         OPEN_LAYERS):
            raise FlattenFailed(f"flatten answered {code} {answer}")
        _, left = call(f"{self.url}/positions")
        if left["positions"]:
            raise FlattenFailed(f"open after the flatten: {left['positions']}")
        self.withdraw_profit()
        return {"request_to_flat_ms": request_ms, "daemon_elapsed_ms": answer["elapsed_ms"]}

    def until_protected(self, timeout_s: float = 10.0) -> None:
        """Wait until every layer's broker stop rests (where the venue keeps them): the
        drill flattens a protected book, not one whose last stop is still being placed
        (that placement, a quote and a GTT, would be timed as the flatten's)."""
        deadline = time.monotonic() + timeout_s
        while True:
            stops = call(f"{self.url}/status")[1]["broker_stops"]
            if stops is None or not stops["enabled"] or (
                    stops["in_step"] and stops["protected"] == OPEN_LAYERS):
                return
            if time.monotonic() > deadline:
                raise FlattenFailed(f"broker stops not in step: {stops}")
            time.sleep(0.05)

    def withdraw_profit(self) -> None:
        """Take the run's profit out, so that every run sizes the same book: a growing
        equity sizes ever larger orders (and Kite slices them at the freeze quantity)."""
        _, status = call(f"{self.url}/status")
        profit = Decimal(status["equity"]["closed"]) - Decimal(CAPITAL)
        if profit <= 0:
            return
        code, answer = call(f"{self.url}/admin/capital", {
            "type": "WITHDRAW", "amount": str(profit), "note": "bench: the run's profit"},
            ADMIN_TOKEN)
        if code != 200:
            raise FlattenFailed(f"withdrawal answered {code} {answer}")


def repeat(drill: Drill, runs: int, venue: str) -> dict[str, Any]:
    return {"venue": venue, "open_layers": OPEN_LAYERS, "instruments": len(MARKET),
            "runs": [drill.run(number) for number in range(1, runs + 1)]}


def on_paper(work: Path, config_dir: Path, runs: int) -> dict[str, Any]:
    daemon = BenchDaemon(work, config_dir, "flatten-paper", env=ENV)
    try:
        daemon.start(CAPITAL)
        return repeat(Drill(daemon.url, lambda: datetime.now(UTC), lambda *_: None), runs,
                      "paper")
    finally:
        daemon.stop()


def kite_quote(fake: FakeKiteProcess) -> Callable[[str, Decimal], None]:
    """The fake trades every listed contract of the instrument at the alert's price."""
    listed = {name: [key.split(":")[1] for key in fake.state()["prices"]
                     if key.startswith(series)] for name, series in KITE_SERIES.items()}

    def quote(instrument: str, price: Decimal) -> None:
        for symbol in listed[instrument]:
            fake.control("price", tradingsymbol=symbol, price=str(price))
    return quote


def through_kite(work: Path, config_dir: Path, runs: int) -> dict[str, Any]:
    with FakeKiteProcess(today=KITE_CLOCK_START.date(),
                         log_path=work / "flatten-kite-fake.log") as fake:
        for segment in ("equity", "commodity"):
            fake.control("cash", segment=segment, cash=KITE_CASH)
        env = {**ENV, **KITE_ENV, "PM_CLOCK_START": KITE_CLOCK_START.isoformat()}
        daemon = BenchDaemon(work, config_dir, "flatten-kite", env=env,
                             args=("--broker", "zerodha", "--kite-root", fake.url))
        origin = time.monotonic()
        try:
            daemon.start(CAPITAL)
            drill = Drill(daemon.url, lambda: KITE_CLOCK_START + timedelta(
                seconds=time.monotonic() - origin), kite_quote(fake))
            return repeat(drill, runs, "fake Kite")
        finally:
            daemon.stop()


def measure_flatten(work: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """Run the kill-switch drill on paper and through the fake Kite server; p50 / p99 /
    max over the runs of each venue."""
    config_dir = write_flatten_config(work / "flatten-config")
    return {"paper": summary(on_paper(work, config_dir, 3 if quick else 10)),
            "kite": summary(through_kite(work, config_dir, 1 if quick else 3))}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """p50 / p99 / max over the runs of one venue's drill."""
    out = {k: v for k, v in result.items() if k != "runs"}
    for timing in ("request_to_flat_ms", "daemon_elapsed_ms"):
        values = [float(run[timing]) for run in result["runs"]]
        out[timing] = {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
                       "max": max(values), "all": values}
    return {**out, "runs": len(result["runs"])}


def main() -> None:
    """Run only this drill; keep the work dir (the daemons' logs) and print the summary."""
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    work = Path(tempfile.mkdtemp(prefix="pm-bench-flatten-"))
    results = measure_flatten(work, parser.parse_args().quick)
    print(json.dumps(results, indent=2))
    print(f"daemon logs: {work}")


if __name__ == "__main__":
    main()
