"""Crash at the fail points of an exit retry and of a roll (real daemon processes, SIGKILL,
restart); afterwards nothing is lost, doubled or left dangling.

The daemons run on a drill clock (`PM_CLOCK_START`) so that a closed session and a roll day
are met whatever day the suite runs: paper broker, sessions enforced, monthly contracts.
GOLD_MINI's December 2026 paper future rolls on Fri 27 Nov 2026 at 10:00 IST.
"""

from __future__ import annotations

import signal as signals
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.support.alerts import INDIA, alert
from tests.support.daemon import TradingDaemon, write_config
from tests.support.invariants import book_violations, paper_broker

REPO = Path(__file__).resolve().parents[2]
BEFORE_OPEN = datetime(2026, 11, 23, 8, 59, 40, tzinfo=INDIA)  # Monday, MCX opens at 09:00
THURSDAY = datetime(2026, 11, 26, 11, 0, tzinfo=INDIA)
ROLL_DAY = datetime(2026, 11, 27, 10, 0, 5, tzinfo=INDIA)


@pytest.fixture
def drill_config(tmp_path) -> Path:
    return write_config(tmp_path / "config", paper_enforce_sessions=True,
                        paper_contracts="monthly", max_signal_age_s=600_000)


def daemon(state_dir, config: Path, clock: datetime, failpoint: str | None = None,
           wait: bool = True, **env: str) -> TradingDaemon:
    settings = {"PM_CONFIG_DIR": str(config), "PM_CLOCK_START": clock.isoformat(),
                "PM_EXIT_RETRY_FIRST_S": "1", "PM_ROLL_CHECK_INTERVAL_S": "0.5", **env}
    if failpoint:
        settings["PM_FAILPOINT"] = failpoint
    started = TradingDaemon(state_dir, env=settings)
    return started.start() if wait else started.spawn()


def at(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(timespec="seconds")


def wait_for_death(process, timeout_s: float = 30) -> int:
    return process.wait(timeout=timeout_s)


def violations(daemon: TradingDaemon) -> list[str]:
    positions, tags = paper_broker(daemon.book_conninfo())
    return book_violations(daemon.book_conninfo(), positions, tags)


def until(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize("point", ["after_exit_refused", "before_exit_retry"])
def test_crash_in_an_exit_retry_then_restart(state_dir, drill_config, point):
    first = daemon(state_dir, drill_config, BEFORE_OPEN - timedelta(days=3, hours=-2),
                   failpoint=point)  # Friday 10:59: in session
    try:
        friday = BEFORE_OPEN - timedelta(days=3, hours=-2)
        code, entry = first.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500,
                                         at(friday), stop=77800))
        assert code == 200 and entry["status"] == "executed", entry
        # The layer's stop rests before the kill: a placement cut off unanswered would be
        # looked for by the next start for its whole grace, past Monday's open.
        until(lambda: first.get("/status")[1]["broker_stops"]["in_step"])
    finally:
        first.kill()
    # Monday before the open: the EXIT is refused (market closed) and kept; the retry goes
    # at 09:00.
    crashing = daemon(state_dir, drill_config, BEFORE_OPEN, failpoint=point)
    try:
        crashing.send(**alert("EXIT", "GOLD_MINI", "Long_1", 79000, at(BEFORE_OPEN)))
    except OSError:
        pass  # died answering it: the refusal was committed first
    assert wait_for_death(crashing.process) == -signals.SIGKILL, f"{point} was never reached"

    restarted = daemon(state_dir, drill_config, BEFORE_OPEN + timedelta(seconds=40))
    try:
        until(lambda: restarted.get("/status")[1]["open_positions"] == 0)
        assert violations(restarted) == []
        status = restarted.get("/status")[1]
        assert status["exits_pending"] == []
        assert status["equity"]["closed"] != "5000000.00"  # the exit was booked, once
    finally:
        restarted.stop()


@pytest.mark.parametrize("point", ["after_roll_close_intent", "after_roll_close_fill",
                                   "after_roll_open_fill"])
def test_crash_in_a_roll_then_restart(state_dir, drill_config, point):
    first = daemon(state_dir, drill_config, THURSDAY)
    try:
        code, entry = first.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500,
                                         at(THURSDAY), stop=77800))
        assert code == 200 and entry["status"] == "executed", entry
        [layer] = first.get("/positions")[1]["positions"]
        assert layer["tradingsymbol"] == "GOLD_MINI26DECFUT"
    finally:
        first.stop()
    crashing = daemon(state_dir, drill_config, ROLL_DAY, failpoint=point, wait=False)
    assert wait_for_death(crashing.process) == -signals.SIGKILL, f"{point} was never reached"

    restarted = daemon(state_dir, drill_config, ROLL_DAY + timedelta(seconds=30))
    try:
        def rolled() -> bool:
            shown = restarted.get("/status")[1]["rollover"]["GOLD_MINI"]
            return "roll" not in shown and [c["tradingsymbol"] for c in shown["held"]] == [
                "GOLD_MINI27JANFUT"]

        until(rolled)
        assert violations(restarted) == []
        positions, _ = paper_broker(restarted.book_conninfo())
        assert positions == {"GOLD_MINI27JANFUT": layer["lots"]}  # rolled once, whole
        [carried] = restarted.get("/positions")[1]["positions"]
        assert (carried["position_id"], carried["lots"]) == (layer["position_id"], layer["lots"])
    finally:
        restarted.stop()
