"""The chaos campaign's roll: the drill clock's phases, and the reads that tell whether the
roll is done and where two runs part."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime

import psycopg

from core.signals import INDIA
from tests.fakes.kite.instruments import MONTHS
from tests.support.daemon import TradingDaemon


class Diverged(AssertionError):
    """The calm run parted from the crashed one before the end."""


@dataclass(frozen=True)
class Schedule:
    """The drill clock's two phases (before, and from, the roll) and the fake's listing day."""

    before: datetime
    roll_day: datetime
    kite_today: date | None = None


# Paper monthly futures: GOLD_MINI December expires Fri 4 Dec, rolls Fri 27 Nov at 10:00.
# The fake Kite's GOLDM December expires Sat 5 Dec: cut-off Wed 2 Dec, roll day Mon 30 Nov.
SCHEDULES = {"paper": Schedule(datetime(2026, 11, 26, 10, 0, tzinfo=INDIA),
                               datetime(2026, 11, 27, 10, 0, 5, tzinfo=INDIA)),
             "zerodha": Schedule(datetime(2026, 11, 27, 10, 0, tzinfo=INDIA),
                                 datetime(2026, 11, 30, 10, 0, 5, tzinfo=INDIA),
                                 date(2026, 11, 27))}
ROLL_WAIT_S = 60


def month_order(key: str) -> tuple[int, int]:
    """`MCX:GOLDM26DECFUT` → (26, 12): the listed futures of a series, nearest first."""
    symbol = key.split(":")[1]
    return int(symbol[-8:-6]), MONTHS.index(symbol[-6:-3]) + 1


def holds(daemon: TradingDaemon, instrument: str) -> bool:
    positions = daemon.get("/positions")[1]["positions"]
    return any(p["instrument"] == instrument for p in positions)


def rolled(daemon: TradingDaemon) -> bool:
    """Whether GOLD_MINI's roll is done (waiting for it while the daemon lives)."""
    deadline = time.monotonic() + ROLL_WAIT_S
    while time.monotonic() < deadline and daemon.process.poll() is None:
        with psycopg.connect(daemon.book_conninfo()) as conn:
            statuses = [s for (s,) in conn.execute(
                "SELECT status FROM rolls WHERE instrument = 'GOLD_MINI'").fetchall()]
        if statuses and all(s == "done" for s in statuses):
            return True
        time.sleep(0.2)
    return False


def decisions(daemon: TradingDaemon) -> list[tuple]:
    """Every signal's outcome, in the stream's order: where two runs' books part, the first
    decision that differs says why."""
    with psycopg.connect(daemon.book_conninfo()) as conn:
        return conn.execute(
            """SELECT instrument, signal_type, position, signal_timestamp, outcome, reason
               FROM signal_log
               ORDER BY signal_timestamp, instrument, signal_type, position""").fetchall()


def first_difference(crashed: list[tuple], calm: list[tuple]) -> str:
    """The earliest signal (by its timestamp) decided differently by the two runs."""
    theirs = {row[:4]: row[4:] for row in calm}
    for row in crashed:
        if row[:4] in theirs and theirs[row[:4]] != row[4:]:
            return f"first differing decision: {row[:4]} crashed {row[4:]} calm {theirs[row[:4]]}"
    return f"decisions agree ({len(crashed)} / {len(calm)} signals)"
