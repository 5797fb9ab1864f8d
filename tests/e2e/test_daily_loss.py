"""The daily loss limit in a paper daemon, as users run it: falling prices take the day past
the limit, the book turns REDUCING (actor limit), new entries are refused, and a restart
keeps the breach."""

from __future__ import annotations

import time
from typing import Any

from tests.support.alerts import alert, ist
from tests.support.daemon import TradingDaemon

GOLD = "GOLD_MINI"
LIMIT = {"PM_PORTFOLIO__DAILY_LOSS_LIMIT_PERCENT": "0.5"}  # 25,000 of 5,000,000


def daily_when(daemon: TradingDaemon, wanted: Any, timeout_s: float = 15) -> dict[str, Any]:
    """Poll /status until `wanted(status)` holds; return that status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = daemon.get("/status")[1]
        if wanted(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_a_day_past_its_loss_limit_pauses_entries_across_a_restart(state_dir):
    daemon = TradingDaemon(state_dir, env=LIMIT).start()
    try:
        assert daemon.wait_ready()
        status = daily_when(daemon, lambda s: s["daily"]["day_start_equity"] is not None)
        assert status["daily"]["day_start_equity"] == "5000000.00"
        assert (status["daily"]["loss_limit"], status["daily"]["breached"]) == (
            "25000.00", False)

        entry = daemon.send_settled(**alert("BASE_ENTRY", GOLD, "Long_1", 78500, ist(200),
                                            stop=77800, atr=700))
        assert (entry["status"], entry["result"]["lots"]) == ("executed", 7)
        first = daemon.send_settled(**alert("MARKET_DATA", GOLD, None, 78300, ist(190)))
        assert first["status"] == "executed"
        status = daily_when(daemon, lambda s: s["daily"]["pnl"] == "-14000.00")
        assert (status["daily"]["pnl"], status["daily"]["breached"]) == ("-14000.00", False)
        assert status["trading_state"]["state"] == "ACTIVE"

        # 400 points down, still above the stop at 77,800: −28,000, past the limit.
        second = daemon.send_settled(**alert("MARKET_DATA", GOLD, None, 78100, ist(180)))
        assert second["status"] == "executed" and second["result"].get("pnl") is None
        status = daily_when(daemon, lambda s: s["daily"]["breached"]
                            and s["trading_state"]["state"] == "REDUCING")
        assert status["daily"]["breached"] is True
        assert status["daily"]["breach"]["pnl"] == "-28000.00"
        assert (status["trading_state"]["state"], status["trading_state"]["actor"]) == (
            "REDUCING", "limit")
        assert status["open_positions"] == 1  # reduce: nothing is sold

        refused = daemon.send_settled(**alert("BASE_ENTRY", "COPPER", "Long_1", 900,
                                              ist(170), stop=890, atr=9))
        assert (refused["status"], refused["reason"]) == ("blocked", "trading paused")
    finally:
        assert daemon.stop() == 0

    daemon.start()
    try:
        assert daemon.wait_ready()
        status = daemon.get("/status")[1]
        assert status["daily"]["breached"] is True
        assert status["daily"]["breach"]["pnl"] == "-28000.00"
        assert (status["trading_state"]["state"], status["trading_state"]["actor"]) == (
            "REDUCING", "limit")
    finally:
        assert daemon.stop() == 0
