"""Paper broker: a venue of our own that fills at the reference price plus slippage.

Its book lives in `paper_orders` / `paper_trades`, written through its own pool in its own
transactions — never in the engine's — so that, as with a real venue, an order can exist
without the engine having recorded it, and crash tests can compare broker and book.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from core.signals import INDIA
from core.specs import InstrumentSpec, PortfolioConfig
from live.brokers.base import (
    BrokerOrder,
    BrokerTrade,
    BrokerUnavailable,
    OrderRequest,
    OrderStatus,
)

VENUE_ERRORS = (psycopg.Error, PoolTimeout)
CLOSED_MESSAGE = "Markets are closed right now. Use GTT for placing long standing orders instead."


class PaperBroker:
    name = "paper"

    def __init__(self, conninfo: str, instruments: dict[str, InstrumentSpec],
                 config: PortfolioConfig):
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            conninfo, min_size=1, max_size=4, open=False, name="paper_broker",
            reconnect_timeout=5.0,
            check=AsyncConnectionPool.check_connection, kwargs={"autocommit": True})
        self._instruments = instruments
        self._config = config

    async def start(self) -> None:
        await self._pool.open(wait=True)

    async def close(self) -> None:
        await self._pool.close()

    def tradingsymbol(self, instrument: str, now: datetime) -> str:
        return instrument

    def _fill_price(self, request: OrderRequest) -> Decimal:
        if request.price is None:
            raise ValueError(f"paper order {request.tag} has no reference price")
        spec = self._instruments[request.instrument]
        slip = spec.tick_size * self._config.paper_slippage_ticks
        return request.price + slip if request.side == "BUY" else request.price - slip

    def _in_session(self, instrument: str, now: datetime) -> bool:
        spec = self._instruments[instrument]
        local = now.astimezone(INDIA).time()
        return spec.session_open <= local <= spec.session_close

    async def place(self, request: OrderRequest, now: datetime | None = None) -> str:
        now = now or datetime.now(INDIA)
        rejected = self._config.paper_enforce_sessions and not self._in_session(
            request.instrument, now)
        price = self._fill_price(request)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    """INSERT INTO paper_orders (order_id, tag, tradingsymbol, side, quantity,
                       order_type, price, status, filled_quantity, average_price, status_message)
                       SELECT 'PAPER' || n.id, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s
                       FROM (SELECT nextval('paper_orders_id_seq') AS id) n
                       RETURNING order_id""",
                    (request.tag, request.tradingsymbol, request.side, request.quantity,
                     request.order_type, request.price,
                     OrderStatus.REJECTED if rejected else OrderStatus.COMPLETE,
                     0 if rejected else request.quantity, None if rejected else price,
                     CLOSED_MESSAGE if rejected else None))
                row = await cur.fetchone()
                assert row is not None
                order_id = str(row[0])
                if not rejected:
                    await conn.execute(
                        """INSERT INTO paper_trades (trade_id, order_id, tradingsymbol, side,
                           quantity, price, traded_at) VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                        (f"{order_id}T1", order_id, request.tradingsymbol, request.side,
                         request.quantity, price, now))
        except VENUE_ERRORS as exc:
            # The commit may or may not have happened: the engine resolves by tag.
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        return order_id

    async def find_by_tag(self, tag: str) -> list[BrokerOrder]:
        return await self._orders("tag = %s", tag)

    async def order(self, order_id: str) -> BrokerOrder:
        orders = await self._orders("order_id = %s", order_id)
        if not orders:
            raise BrokerUnavailable(f"paper broker: no order {order_id}")
        return orders[0]

    async def _orders(self, where: str, value: str) -> list[BrokerOrder]:
        try:
            async with self._pool.connection() as conn:
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(f"SELECT * FROM paper_orders WHERE {where} ORDER BY id",
                                      (value,))
                    orders = await cur.fetchall()
                    await cur.execute(
                        "SELECT * FROM paper_trades WHERE order_id = ANY(%s) ORDER BY id",
                        ([o["order_id"] for o in orders],))
                    trades = await cur.fetchall()
        except VENUE_ERRORS as exc:
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        return [_order(o, [t for t in trades if t["order_id"] == o["order_id"]])
                for o in orders]

    async def positions(self) -> dict[str, int]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    """SELECT tradingsymbol,
                              sum(CASE side WHEN 'BUY' THEN quantity ELSE -quantity END)
                       FROM paper_trades GROUP BY tradingsymbol""")
                rows = await cur.fetchall()
        except VENUE_ERRORS as exc:
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        return {str(symbol): int(net) for symbol, net in rows if net}

    async def quote(self, tradingsymbol: str) -> Decimal | None:
        """Return the price of the venue's last trade in the contract (it has no feed)."""
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT price FROM paper_trades WHERE tradingsymbol = %s "
                    "ORDER BY id DESC LIMIT 1", (tradingsymbol,))
                row = await cur.fetchone()
        except VENUE_ERRORS as exc:
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        return None if row is None else row[0]

    async def available_margin(self, equity: Decimal, used_margin: Decimal) -> Decimal:
        return max(Decimal(0), self._config.paper_margin_fraction * equity - used_margin)


def _order(row: dict[str, Any], trades: list[dict[str, Any]]) -> BrokerOrder:
    return BrokerOrder(
        order_id=row["order_id"], tag=row["tag"], tradingsymbol=row["tradingsymbol"],
        side=row["side"], quantity=row["quantity"], status=OrderStatus(row["status"]),
        filled_quantity=row["filled_quantity"], average_price=row["average_price"],
        message=row["status_message"],
        trades=tuple(BrokerTrade(t["trade_id"], t["quantity"], t["price"], t["traded_at"])
                     for t in trades),
    )
