"""Crash at every fail point of the money path; after a restart nothing is lost or doubled."""

from __future__ import annotations

import json
import signal as signals

import pytest

from live.failpoints import SIGNAL_POINTS
from tests.support.alerts import alert, ist
from tests.support.daemon import TradingDaemon
from tests.support.invariants import book_violations, paper_broker


def trade() -> list[dict]:
    """Entry, pyramid, and one EXIT ALL for both layers (a multi-layer allocation)."""
    return [alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(200), stop=77800, atr=700),
            alert("PYRAMID", "GOLD_MINI", "Long_2", 80000, ist(190), stop=79500, atr=700),
            alert("EXIT", "GOLD_MINI", "ALL", 80500, ist(180))]


def run_until_crash(daemon: TradingDaemon, alerts: list[dict]) -> int:
    """Send alerts in order; return how many were answered before the process died."""
    for answered, body in enumerate(alerts):
        try:
            code, _ = daemon.send(**body)
        except OSError:
            return answered
        if code >= 500:
            return answered
    return len(alerts)


def settle(state_dir, *, failpoint: str | None = None) -> TradingDaemon:
    env = {"PM_FAILPOINT": failpoint} if failpoint else {}
    return TradingDaemon(state_dir, env=env).start()


@pytest.mark.parametrize("point", sorted(SIGNAL_POINTS - {"during_recovery"}))
def test_crash_at_each_point_then_restart(state_dir, point):
    alerts = trade()
    crashing = settle(state_dir, failpoint=point)
    crashing.wait_ready()
    answered = run_until_crash(crashing, alerts)
    assert crashing.process.wait(timeout=30) == -signals.SIGKILL, f"{point} was never reached"

    restarted = settle(state_dir)
    try:
        restarted.wait_ready()
        for body in alerts[answered:]:  # TradingView-like resend of what got no answer
            code, reply = restarted.send(**body)
            assert code == 200, reply
        positions, tags = paper_broker(restarted.book_conninfo())
        assert book_violations(restarted.book_conninfo(), positions, tags) == []
        status = restarted.get("/status")[1]
        # The same trade without a crash: 7 lots + 3 lots, closed at 80,500.
        assert status["equity"]["closed"] == "5155000.00", json.dumps(status)
        assert status["open_positions"] == 0
    finally:
        restarted.stop()


def test_crash_during_recovery_then_recover_again(state_dir):
    first = settle(state_dir, failpoint="after_intent_commit")
    first.wait_ready()
    run_until_crash(first, trade()[:1])
    first.process.wait(timeout=30)
    # The restart dies while resolving the intent left behind...
    second = TradingDaemon(state_dir, env={"PM_FAILPOINT": "during_recovery"}).spawn()
    assert second.process.wait(timeout=60) == -signals.SIGKILL
    # ...and the next one finishes the job exactly once.
    third = settle(state_dir)
    try:
        third.wait_ready()
        positions, tags = paper_broker(third.book_conninfo())
        assert book_violations(third.book_conninfo(), positions, tags) == []
        assert positions == {"GOLD_MINI": 7}
    finally:
        third.stop()
