"""Paper broker: a venue of our own that fills at the reference price plus slippage.

Its book lives in `paper_orders` / `paper_trades`, written through its own pool in its own
transactions — never in the engine's — so that, as with a real venue, an order can exist
without the engine having recorded it, and crash tests can compare broker and book.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from core.calendar import TradingCalendar, india_time
from core.db_pool import make_pool
from core.models import ContractRef, Side
from core.monthly_contracts import monthly_contracts, monthly_price, months_between
from core.roll_schedule import entry_contract
from core.signals import INDIA
from core.specs import InstrumentSpec, PortfolioConfig
from live.brokers.base import (
    BrokerOrder,
    BrokerTrade,
    BrokerUnavailable,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    VenueTrade,
)

VENUE_ERRORS = (psycopg.Error, PoolTimeout)
CLOSED_MESSAGE = "Markets are closed right now. Use GTT for placing long standing orders instead."


class PaperBroker:
    name = "paper"
    price_check = False  # no market feed: fills are at the signal's price by definition
    unavailable_reason = None

    def __init__(self, conninfo: str, instruments: dict[str, InstrumentSpec],
                 config: PortfolioConfig, clock: Callable[[], datetime] | None = None,
                 calendar: TradingCalendar | None = None):
        self._pool = make_pool(conninfo, name="paper_broker", min_size=1, max_size=10)
        self._instruments = instruments
        self._config = config
        self._clock = clock or (lambda: datetime.now(INDIA))
        self._calendar = calendar or TradingCalendar({})

    async def start(self) -> None:
        await self._pool.open(wait=True)

    async def close(self) -> None:
        await self._pool.close()

    def contracts(self, instrument: str, now: datetime) -> list[ContractRef]:
        """No expiries, unless `paper_contracts` is monthly: then synthetic monthly futures
        (DOMAIN.md §9), so that rolls can be tried on paper."""
        exchange = self._instruments[instrument].exchange
        if self._config.paper_contracts == "monthly":
            return monthly_contracts(instrument, exchange, self._calendar,
                                     india_time(now).date())
        return [ContractRef(instrument, exchange, None)]

    def contract(self, instrument: str, now: datetime) -> ContractRef:
        return entry_contract(self.contracts(instrument, now), self._instruments[instrument],
                              self._calendar, now)

    async def roll_quotes(self, old: ContractRef, new: ContractRef,
                          alert_price: Decimal) -> tuple[Decimal, Decimal]:
        """The old contract at the last alert's price (a continuous chart quotes it until it
        expires); the new one `paper_monthly_basis_percent` higher per month further out."""
        months = months_between(old, new)
        return alert_price, monthly_price(alert_price, months,
                                          self._config.paper_monthly_basis_percent)

    async def wait_available(self) -> None:
        return None

    async def manage(self, order: BrokerOrder, request: OrderRequest) -> BrokerOrder:
        return await self.order(order.order_id)  # paper orders are final when placed

    async def wait_for_update(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)

    def _fill_price(self, request: OrderRequest) -> Decimal:
        if request.price is None:
            raise ValueError(f"paper order {request.tag} has no reference price")
        spec = self._instruments[request.instrument]
        slip = spec.tick_size * self._config.paper_slippage_ticks
        return request.price + slip if request.side == Side.BUY else request.price - slip

    def _in_session(self, instrument: str, now: datetime) -> bool:
        return self._calendar.in_session(self._instruments[instrument], now)

    async def place(self, request: OrderRequest, now: datetime | None = None) -> list[str]:
        now = now or self._clock()
        rejected = self._config.paper_enforce_sessions and not self._in_session(
            request.instrument, now)
        price = self._fill_price(request)
        status = OrderStatus.REJECTED if rejected else OrderStatus.COMPLETE
        try:
            async with self._pool.connection() as conn:
                # One statement: the order and its trade commit together, in one round trip.
                cur = await conn.execute(
                    """WITH o AS (
                         INSERT INTO paper_orders (order_id, tag, tradingsymbol, side, quantity,
                           order_type, price, status, filled_quantity, average_price,
                           status_message)
                         SELECT 'PAPER' || n.id, %(tag)s, %(symbol)s, %(side)s, %(quantity)s,
                                %(type)s, %(price)s, %(status)s, %(filled)s, %(fill)s, %(msg)s
                         FROM (SELECT nextval('paper_orders_id_seq') AS id) n
                         RETURNING order_id),
                       t AS (
                         INSERT INTO paper_trades (trade_id, order_id, tradingsymbol, side,
                           quantity, price, traded_at)
                         SELECT o.order_id || 'T1', o.order_id, %(symbol)s, %(side)s,
                                %(quantity)s, %(fill)s, %(now)s
                         FROM o WHERE %(filled)s > 0)
                       SELECT order_id FROM o""",
                    {"tag": request.tag, "symbol": request.tradingsymbol, "side": request.side,
                     "quantity": request.quantity, "type": request.order_type,
                     "price": request.price, "status": status.value,
                     "filled": 0 if rejected else request.quantity,
                     "fill": None if rejected else price,
                     "msg": CLOSED_MESSAGE if rejected else None, "now": now})
                row = await cur.fetchone()
        except VENUE_ERRORS as exc:
            # The commit may or may not have happened: the engine resolves by tag.
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        assert row is not None
        return [str(row[0])]

    async def find_by_tag(self, tag: str) -> list[BrokerOrder]:
        return await self._orders("tag = %s", tag)

    async def resting_orders(self) -> list[BrokerOrder]:
        return []  # the paper venue fills or refuses every order as it is placed

    async def cancel(self, order: BrokerOrder) -> None:
        raise OrderRejected(f"paper order {order.order_id} is final: nothing to cancel")

    async def order(self, order_id: str) -> BrokerOrder:
        orders = await self._orders("order_id = %s", order_id)
        if not orders:
            raise BrokerUnavailable(f"paper broker: no order {order_id}")
        return orders[0]

    async def _orders(self, where: str, value: str) -> list[BrokerOrder]:
        try:
            async with self._pool.connection() as conn:
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(
                        f"""SELECT o.*, coalesce((SELECT json_agg(json_build_object(
                                'trade_id', t.trade_id, 'quantity', t.quantity,
                                'price', t.price::text, 'traded_at', t.traded_at) ORDER BY t.id)
                              FROM paper_trades t WHERE t.order_id = o.order_id), '[]') AS trades
                            FROM paper_orders o WHERE {where} ORDER BY o.id""", (value,))
                    rows = await cur.fetchall()
        except VENUE_ERRORS as exc:
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        return [_order(row) for row in rows]

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

    async def trades(self) -> list[VenueTrade]:
        """Return every trade of the venue, oldest first: its positions are their sum."""
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    """SELECT t.trade_id, t.order_id, o.tag, t.tradingsymbol, t.side,
                              t.quantity, t.price, t.traded_at
                       FROM paper_trades t JOIN paper_orders o USING (order_id)
                       ORDER BY t.id""")
                rows = await cur.fetchall()
        except VENUE_ERRORS as exc:
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        return [VenueTrade(str(trade_id), str(order_id), str(tag or ""), str(symbol), Side(side),
                           int(quantity), price, traded_at)
                for trade_id, order_id, tag, symbol, side, quantity, price, traded_at in rows]

    async def position(self, tradingsymbol: str) -> int:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    """SELECT coalesce(sum(CASE side WHEN 'BUY' THEN quantity
                                                ELSE -quantity END), 0)
                       FROM paper_trades WHERE tradingsymbol = %s""", (tradingsymbol,))
                row = await cur.fetchone()
        except VENUE_ERRORS as exc:
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        return int(row[0]) if row else 0

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


def _order(row: dict[str, Any]) -> BrokerOrder:
    return BrokerOrder(
        order_id=row["order_id"], tag=row["tag"], tradingsymbol=row["tradingsymbol"],
        side=row["side"], quantity=row["quantity"], status=OrderStatus(row["status"]),
        filled_quantity=row["filled_quantity"], average_price=row["average_price"],
        message=row["status_message"],
        trades=tuple(BrokerTrade(t["trade_id"], t["quantity"], Decimal(t["price"]),
                                 datetime.fromisoformat(t["traded_at"]))
                     for t in row["trades"]),
    )
