"""The SQL of `portfolio_snapshots` and `position_snapshots`, and of the realised P&L the
daily loss limit reads; each function runs on the caller's transaction's connection.

A day's `day_start` and `day_end` rows are written once (unique per trading day and kind),
so writing them again after a restart changes nothing: the day keeps its first baseline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, sql

from core.daily_limits import DayStart
from core.db_rows import columns

INTERVAL, DAY_START, DAY_END = "interval", "day_start", "day_end"


@dataclass(frozen=True, slots=True)
class PortfolioSnapshot:
    """A `portfolio_snapshots` row: the book's equity at the prices last seen."""

    taken_at: datetime
    trading_day: date
    kind: str
    closed_equity: Decimal
    open_equity: Decimal
    blended_equity: Decimal
    unrealized: Decimal
    sizing_equity: Decimal
    risk_percent: Decimal
    margin_percent: Decimal
    open_layers: int


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    """A live layer as a `position_snapshots` row shows it (less the day, kind and time)."""

    position_id: int
    instrument: str
    layer: str
    tradingsymbol: str | None
    lots: int
    quantity: int
    entry_price: Decimal
    last_price: Decimal
    current_stop: Decimal
    unrealized: Decimal


_PORTFOLIO = columns(PortfolioSnapshot)
_POSITION = columns(PositionSnapshot)
_PORTFOLIO_VALUES = sql.SQL(", ").join(sql.Placeholder() * len(fields(PortfolioSnapshot)))
_POSITION_FIELDS = [f.name for f in fields(PositionSnapshot)]
# One array per column: a day's start holds every open layer, thousands of rows in one
# statement rather than one each.
_POSITION_TYPES = {"position_id": "bigint", "lots": "int", "quantity": "int",
                   "entry_price": "numeric", "last_price": "numeric", "current_stop": "numeric",
                   "unrealized": "numeric"}
_POSITION_ARRAYS = sql.SQL(", ").join(
    sql.SQL("{}::{}[]").format(sql.Placeholder(), sql.SQL(_POSITION_TYPES.get(name, "text")))
    for name in _POSITION_FIELDS)


async def insert_portfolio(conn: AsyncConnection[Any], row: PortfolioSnapshot) -> bool:
    """Write a portfolio snapshot; False if the day already has its row of this kind."""
    # RETURNING, not rowcount: in pipeline mode the count is only known once read.
    cursor = await conn.execute(sql.SQL(
        """INSERT INTO portfolio_snapshots ({}) VALUES ({}) ON CONFLICT DO NOTHING
           RETURNING id""").format(_PORTFOLIO, _PORTFOLIO_VALUES), astuple(row))
    return await cursor.fetchone() is not None


async def insert_positions(conn: AsyncConnection[Any], day: date, kind: str,
                           taken_at: datetime, rows: Iterable[PositionSnapshot]) -> None:
    """Write the layers of a day's start or end (a layer already written stays as it was)."""
    rows = list(rows)
    if not rows:
        return
    await conn.execute(sql.SQL(
        """INSERT INTO position_snapshots (trading_day, kind, taken_at, {})
           SELECT %s, %s, %s, * FROM unnest({})
           ON CONFLICT (trading_day, kind, position_id) DO NOTHING""").format(
            _POSITION, _POSITION_ARRAYS),
        (day, kind, taken_at, *([getattr(row, name) for row in rows]
                                for name in _POSITION_FIELDS)))


async def end_days_before(conn: AsyncConnection[Any], day: date) -> list[date]:
    """Give every earlier trading day that has snapshots but no `day_end` row one: a copy of
    its last snapshot, the last state of that day. Return the days ended, oldest first."""
    copied = sql.SQL(", ").join(
        sql.SQL("'day_end'") if f.name == "kind" else sql.Identifier(f.name)
        for f in fields(PortfolioSnapshot))
    cursor = await conn.execute(sql.SQL(
        """INSERT INTO portfolio_snapshots ({columns})
           SELECT {copied} FROM (
               SELECT DISTINCT ON (trading_day) * FROM portfolio_snapshots s
               WHERE trading_day < %(day)s AND kind = 'interval' AND NOT EXISTS (
                   SELECT 1 FROM portfolio_snapshots e
                   WHERE e.trading_day = s.trading_day AND e.kind = 'day_end')
               ORDER BY trading_day, taken_at DESC, id DESC) last
           ON CONFLICT DO NOTHING RETURNING trading_day""").format(
            columns=_PORTFOLIO, copied=copied), {"day": day})
    return sorted(row[0] for row in await cursor.fetchall())


async def day_start(conn: AsyncConnection[Any], day: date) -> DayStart | None:
    """The baseline of trading day `day` (its first snapshot), or None before it is taken."""
    cursor = await conn.execute(
        """SELECT trading_day, sizing_equity, unrealized FROM portfolio_snapshots
           WHERE trading_day = %s AND kind = 'day_start'""", (day,))
    row = await cursor.fetchone()
    return None if row is None else DayStart(row[0], row[1], row[2])


async def realised_since(conn: AsyncConnection[Any], moment: datetime) -> Decimal:
    """The P&L booked by layers (and closed parts of layers) that closed at or after
    `moment` — by their exit time, which the daemon's clock set."""
    cursor = await conn.execute(
        """SELECT COALESCE(sum(realized_pnl), 0) FROM portfolio_positions
           WHERE status = 'closed' AND exit_timestamp >= %s""", (moment,))
    row = await cursor.fetchone()
    assert row is not None
    return Decimal(row[0])
