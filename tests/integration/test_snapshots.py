"""The book's snapshots on real PostgreSQL: an interval row each time, the day's start at its
first, the previous day's end — once each, whatever restarts happen."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from core.signals import INDIA

D = Decimal


def ist(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=INDIA)


def portfolio_rows(postgresql) -> list[tuple]:
    return postgresql.execute(
        """SELECT trading_day::text, kind, unrealized, sizing_equity, open_layers
           FROM portfolio_snapshots ORDER BY taken_at, id""").fetchall()


def position_rows(postgresql) -> list[tuple]:
    return postgresql.execute(
        """SELECT trading_day::text, kind, layer, lots, last_price, unrealized
           FROM position_snapshots ORDER BY trading_day, kind, position_id""").fetchall()


async def test_interval_rows_a_day_start_once_and_the_previous_days_end(runs, postgresql):
    first = await runs()
    first.clock.now = ist(20, 10, 30)
    await first.snapshots.take()  # the day's first: its start, before anything is open
    entry = await first.send("BASE_ENTRY", price="78500")
    assert entry.result["lots"] == 7
    await first.send("MARKET_DATA", position=None, price="78300")
    book = await first.snapshots.take()
    assert (book.portfolio.kind, book.portfolio.unrealized) == ("interval", D("-14000.00"))

    assert portfolio_rows(postgresql) == [
        ("2026-11-20", "day_start", D("0.00"), D("5000000.00"), 0),
        ("2026-11-20", "interval", D("0.00"), D("5000000.00"), 0),
        ("2026-11-20", "interval", D("-14000.00"), D("5000000.00"), 1)]
    assert position_rows(postgresql) == []  # nothing was open at the day's start

    # Next day (00:05 IST, still the 20th in UTC): yesterday ends as it was last seen.
    first.clock.now = ist(21, 0, 5)
    await first.snapshots.take()
    rows = portfolio_rows(postgresql)
    assert rows[3:] == [("2026-11-20", "day_end", D("-14000.00"), D("5000000.00"), 1),
                        ("2026-11-21", "day_start", D("-14000.00"), D("5000000.00"), 1),
                        ("2026-11-21", "interval", D("-14000.00"), D("5000000.00"), 1)]
    assert position_rows(postgresql) == [
        ("2026-11-20", "day_end", "Long_1", 7, D("78300.0000"), D("-14000.00")),
        ("2026-11-21", "day_start", "Long_1", 7, D("78300.0000"), D("-14000.00"))]


async def test_a_restart_writes_no_second_start_and_marks_at_the_last_alert(
        runs, postgresql):
    first = await runs()
    first.clock.now = ist(20, 10, 30)
    await first.send("BASE_ENTRY", price="78500")
    await first.send("MARKET_DATA", position=None, price="78300")
    await first.snapshots.take()  # the day starts with the layer 200 points down
    await first.close()

    second = await runs()  # a new manager and engine: no price seen yet
    await second.recover()
    book = await second.snapshots.take()
    # Marked at the last alert's price, not at entry: a restart moves no P&L.
    assert book.portfolio.unrealized == D("-14000.00")
    await second.send("MARKET_DATA", position=None, price="78600")
    assert (await second.snapshots.take()).portfolio.unrealized == D("7000.00")
    kinds = [row[1] for row in portfolio_rows(postgresql)]
    assert kinds == ["day_start", "interval", "interval", "interval"]

    second.clock.now = ist(23, 9, 0)  # Monday, after a weekend down
    await second.close()
    third = await runs()
    await third.snapshots.take()
    await third.snapshots.take()
    fourth = await runs()  # and a restart the same day
    await fourth.snapshots.take()
    counts = postgresql.execute(
        """SELECT trading_day::text, kind, count(*) FROM portfolio_snapshots
           WHERE kind <> 'interval' GROUP BY 1, 2 ORDER BY 1, 2""").fetchall()
    assert counts == [("2026-11-20", "day_end", 1), ("2026-11-20", "day_start", 1),
                      ("2026-11-23", "day_start", 1)]
    day_end = postgresql.execute(
        "SELECT unrealized FROM portfolio_snapshots WHERE kind = 'day_end'").fetchone()
    assert day_end == (D("7000.00"),)  # the 20th's last snapshot
    assert [row[:2] for row in position_rows(postgresql)] == [
        ("2026-11-20", "day_end"), ("2026-11-20", "day_start"), ("2026-11-23", "day_start")]
