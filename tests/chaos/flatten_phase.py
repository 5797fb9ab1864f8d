"""The chaos campaign's last phase: the kill switch pressed on the book the crashes left,
the daemon killed at one of the flatten's fail points, and the restart that finishes it.
Afterwards the book is flat, the broker confirms it, and every invariant holds."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from live.failpoints import FLATTEN_POINTS
from tests.support.daemon import TradingDaemon

FLAT_WAIT_S = 60


def flatten_point(seed: int) -> str:
    return FLATTEN_POINTS[seed % len(FLATTEN_POINTS)]


def press(daemon: TradingDaemon) -> bool:
    """Ask for a flatten; return whether the daemon died under it (its fail point)."""
    try:
        daemon.admin("/admin/flatten", timeout_s=FLAT_WAIT_S, reason="chaos drill")
    except OSError:
        pass  # the connection died with the daemon
    try:
        daemon.process.wait(timeout=5)
    except Exception:  # still serving: the point was not on this flatten's way
        daemon.stop()
        return False
    return True


def flat(daemon: TradingDaemon) -> list[str]:
    """Wait for the resumed flatten to finish; return what is not flat (empty: all is)."""
    deadline = time.monotonic() + FLAT_WAIT_S
    with psycopg.connect(daemon.book_conninfo(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            running = conn.execute(
                "SELECT count(*) FROM flattens WHERE status = 'flattening'").fetchone()
            if running == (0,):
                break
            time.sleep(0.2)
        problems = [f"flatten {row[0]} still {row[1]}" for row in conn.execute(
            "SELECT id, status FROM flattens WHERE status <> 'flat'").fetchall()]
        problems += [f"layer {row[0]} ({row[1]} {row[2]}) is {row[3]} after the flatten"
                     for row in conn.execute(
                         """SELECT id, instrument, layer, status FROM portfolio_positions
                            WHERE status <> 'closed' ORDER BY id""").fetchall()]
        state = conn.execute("SELECT state FROM trading_state").fetchone()
        if state != ("HALTED",):
            problems.append(f"trading state {state} after the flatten")
    return problems


def drill(start: Callable[[str | None], TradingDaemon],
          venue: Callable[[TradingDaemon], dict[str, int]], point: str) -> tuple[bool, list[str]]:
    """Flatten with `point` armed, restart, wait for flat; return whether it crashed and
    what is wrong."""
    crashed = press(start(point))
    daemon = start(None)
    try:
        problems = flat(daemon)
        problems += [f"the broker holds {quantity} {symbol} after the flatten"
                     for symbol, quantity in sorted(venue(daemon).items()) if quantity]
    finally:
        daemon.stop()
    return crashed, problems
