"""The same stream gives the same book (DESIGN.md §13): a stream sent to a live daemon, its
inbox exported with `export-signals`, and that file replayed, give the same layers, the same
P&L per layer and the same closed equity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

from tests.support.alerts import alert, ist, trading_morning
from tests.support.daemon import REPO, TradingDaemon

START = trading_morning()
# An hour of alerts before the drill clock's start, each admitted as fresh by the daemon
# (its clock is at START) and by the replay (its clock is at each alert's time): the
# override is in the environment of both, so both decide under one configuration.
ENV = {"PM_CLOCK_START": START.isoformat(), "PM_PORTFOLIO__MAX_SIGNAL_AGE_S": "7200"}
STEP_S = 61  # past the dedup window: no alert repeats another

# Four instruments at once: entries, pyramids taken and refused (the 1R gate, the caps), an
# exit of one layer and of all, trails, two bars through a resting broker stop, an open
# layer at the end, and an alert sent twice.
STREAM = [
    ("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, {"stop": 77800, "atr": 700}),
    ("BASE_ENTRY", "BANK_NIFTY", "Long_1", 52000, {"stop": 51500, "atr": 350}),
    ("PYRAMID", "GOLD_MINI", "Long_2", 79000, {"stop": 78500, "atr": 700}),
    ("PYRAMID", "GOLD_MINI", "Long_2", 80000, {"stop": 79500, "atr": 700}),
    ("MARKET_DATA", "BANK_NIFTY", None, 52600, {"atr": 300}),
    ("BASE_ENTRY", "SILVER_MINI", "Long_1", 90000, {"stop": 88000, "atr": 1500}),
    ("EXIT", "GOLD_MINI", "Long_1", 80500, {}),
    ("MARKET_DATA", "GOLD_MINI", None, 81000, {"atr": 500}),
    ("MARKET_DATA", "GOLD_MINI", None, 79900, {"atr": 500}),
    ("PYRAMID", "BANK_NIFTY", "Long_2", 52800, {"stop": 52300, "atr": 350}),
    ("MARKET_DATA", "SILVER_MINI", None, 91000, {"atr": 1500}),
    ("EXIT", "BANK_NIFTY", "ALL", 53000, {}),
    ("MARKET_DATA", "SILVER_MINI", None, 85000, {"atr": 1500}),
    ("BASE_ENTRY", "COPPER", "Long_1", 800, {"stop": 790, "atr": 8}),
    ("MARKET_DATA", "COPPER", None, 805, {"atr": 8}),
]


def send_stream(daemon: TradingDaemon) -> list[str]:
    """Send the stream as TradingView would, each alert once the book has settled after
    the one before (its broker stop resting); return the answers' statuses."""
    first = START - timedelta(seconds=STEP_S * (len(STREAM) + 1))
    statuses = []
    for n, (kind, instrument, position, price, fields) in enumerate(STREAM):
        body = alert(kind, instrument, position, price,
                     ist(-STEP_S * n, first), **fields)
        statuses.append(daemon.send_settled(**body)["status"])
        if n == 1:  # TradingView sends an alert twice now and then
            statuses.append(daemon.send_settled(**body)["status"])
        settle(daemon)
    return statuses


def settle(daemon: TradingDaemon, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = daemon.get("/status")[1]
        closing = [p for p in daemon.get("/positions")[1]["positions"]
                   if p["status"] == "closing"]
        if status["broker_stops"]["in_step"] and not status["exits_pending"] and not closing:
            return
        time.sleep(0.02)
    raise AssertionError(f"the daemon did not settle: {status}")


def portfolio_manager(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, str(REPO / "portfolio_manager.py"), *args],
                          cwd=REPO, env={**os.environ, **ENV}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    return done


def test_a_replay_of_the_exported_inbox_keeps_the_daemons_book(state_dir, tmp_path):
    daemon = TradingDaemon(state_dir, env=ENV).start()
    try:
        assert daemon.wait_ready()
        statuses = send_stream(daemon)
        book = sorted(daemon.get("/positions?status=all&limit=1000")[1]["positions"],
                      key=lambda p: p["position_id"])
        status = daemon.get("/status")[1]
    finally:
        assert daemon.stop() == 0
    assert statuses.count("duplicate") == 1 and statuses.count("blocked") == 2
    assert {p["exit_reason"] for p in book} == {
        "trend reversal", "BROKER_STOP", None}  # the stream did what it was written for

    signals = tmp_path / "signals.jsonl"
    exported = portfolio_manager("export-signals", "--state-dir", str(state_dir),
                                 "--out", str(signals))
    assert exported.stdout.splitlines()[-1] == f"exported {len(STREAM)} signals to {signals}"
    portfolio_manager("replay", str(signals), "--out", str(tmp_path / "replay"))
    report = json.loads((tmp_path / "replay" / "report.json").read_text())

    assert [(t["instrument"], t["layer"], t["lots"], t["entry_price"], t["exit_price"],
             t["exit_reason"], t["pnl"], t["status"]) for t in report["trades"]] == [
        (p["instrument"], p["layer"], p["lots"], p["entry_price"], p["exit_price"],
         p["exit_reason"], p["realized_pnl"], p["status"]) for p in book]
    assert report["closed_equity"] == status["equity"]["closed"]
    assert report["equity_high"] == status["equity"]["high"]
    assert report["config_sha256"] == status["config_sha256"]
    outcomes = {kind: statuses.count(kind) for kind in set(statuses) - {"duplicate"}}
    assert report["outcomes"] == outcomes
