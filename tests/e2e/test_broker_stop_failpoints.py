"""SIGKILL a real daemon (paper venue) at each fail point of its broker stops — placed, about
to move, moved, cancelled before a sale, fired and adopted — restart it, and check that the
layer is sold at most once, every open layer is protected, and the book agrees with the venue."""

from __future__ import annotations

import psycopg
import pytest

from live.failpoints import STOP_POINTS
from tests.support.alerts import alert, ist, trading_morning
from tests.support.daemon import TradingDaemon
from tests.support.invariants import book_violations, paper_broker, protection_violations

START = trading_morning()


def daemon(state_dir, failpoint: str | None = None) -> TradingDaemon:
    env = {"PM_CLOCK_START": START.isoformat(), "PM_BROKER_STOP_CHECK_S": "1",
           "PM_EXIT_RETRY_FIRST_S": "1"}
    if failpoint:
        env["PM_FAILPOINT"] = failpoint
    return TradingDaemon(state_dir, env=env).start()


def send(process: TradingDaemon, kind: str, price: int, **fields) -> None:
    position = {"MARKET_DATA": None}.get(kind, "Long_1")
    try:
        process.send(**alert(kind, "GOLD_MINI", position, price, ist(5, START), **fields))
    except OSError:
        pass  # it died answering: the restart resolves what it left


def scenario(process: TradingDaemon, point: str) -> None:
    """Trade just far enough to reach `point`."""
    send(process, "BASE_ENTRY", 78500, stop=77800)
    if point in ("before_stop_modify", "after_stop_modified"):
        send(process, "MARKET_DATA", 80000, atr=500)  # the trail rises to 79000
    elif point == "after_stop_cancelled":
        send(process, "EXIT", 79000)
    elif point == "after_broker_stop_adopted":
        send(process, "MARKET_DATA", 77500, atr=500)  # through the stop: the venue fires


def rows(process: TradingDaemon, query: str) -> list[tuple]:
    with psycopg.connect(process.book_conninfo()) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.parametrize("point", STOP_POINTS)
def test_crash_at_a_broker_stop_fail_point_then_restart(state_dir, point):
    crashing = daemon(state_dir, point)
    try:
        crashing.wait_ready()
        scenario(crashing, point)
        assert crashing.process.wait(timeout=30) != 0, "the fail point was not reached"
    finally:
        crashing.kill()
    restarted = daemon(state_dir)
    try:
        restarted.wait_ready()
        positions, tags = paper_broker(restarted.book_conninfo())
        assert book_violations(restarted.book_conninfo(), positions, tags) == []
        assert protection_violations(restarted.book_conninfo(),
                                     restarted.get("/status")[1]) == []
        sells = rows(restarted, "SELECT count(*) FROM paper_trades WHERE side = 'SELL'")[0][0]
        layers = rows(restarted, "SELECT status, exit_reason, current_stop "
                                 "FROM portfolio_positions")
        stops = rows(restarted, "SELECT status, trigger_price FROM paper_stops ORDER BY id")
        if point in ("after_stop_cancelled", "after_broker_stop_adopted"):
            assert sells == 1  # sold once: by the daemon, or by the stop that fired
            (layer,) = layers
            assert layer[0] == "closed"
            assert layer[1] == ("BROKER_STOP" if point == "after_broker_stop_adopted"
                                else "trend reversal")
            assert [s[0] for s in stops] == ["cancelled" if point == "after_stop_cancelled"
                                             else "triggered"]
        else:
            assert sells == 0
            (layer,) = layers
            assert layer[0] == "open"
            active = [trigger for status, trigger in stops if status == "active"]
            assert active == [layer[2]]  # one stop resting, at the layer's current stop
    finally:
        restarted.stop()
