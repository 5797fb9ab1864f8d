"""The dashboard's reads that no other part of the daemon makes: the equity history and a
signal's fills. Each runs in one read-only transaction of the pool."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.db_state_manager import DatabaseStateManager

HISTORY_POINTS = 2000  # per series: the chart stays light whatever the book's age

LEDGER = """SELECT created_at, equity_after FROM (
                SELECT id, created_at, equity_after FROM capital_transactions
                ORDER BY id DESC LIMIT %s) AS recent ORDER BY id"""
SNAPSHOTS = """SELECT taken_at, blended_equity FROM (
                   SELECT taken_at, blended_equity FROM portfolio_snapshots
                   ORDER BY taken_at DESC LIMIT %s) AS recent ORDER BY taken_at"""
FILLS = """SELECT intent_id, broker_trade_id, quantity, price, filled_at FROM fills
           WHERE intent_id = ANY(%s) ORDER BY filled_at, id"""


@dataclass(frozen=True, slots=True)
class EquityHistory:
    closed: list[tuple[datetime, Decimal]]  # the ledger: equity after each movement
    blended: list[tuple[datetime, Decimal]]  # snapshots: closed plus unrealised


@dataclass(frozen=True, slots=True)
class FillRow:
    intent_id: int
    broker_trade_id: str
    quantity: int
    price: Decimal
    filled_at: datetime


async def equity_history(db: DatabaseStateManager) -> EquityHistory:
    async with db.reading() as conn:
        closed = await (await conn.execute(LEDGER, (HISTORY_POINTS,))).fetchall()
        blended = await (await conn.execute(SNAPSHOTS, (HISTORY_POINTS,))).fetchall()
    return EquityHistory([(r[0], r[1]) for r in closed], [(r[0], r[1]) for r in blended])


async def fills_of(db: DatabaseStateManager, intent_ids: list[int]) -> list[FillRow]:
    if not intent_ids:
        return []
    async with db.reading() as conn:
        rows = await (await conn.execute(FILLS, (intent_ids,))).fetchall()
    return [FillRow(*row) for row in rows]
