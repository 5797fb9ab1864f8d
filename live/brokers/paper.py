"""Paper broker: a venue of our own that fills at the reference price plus slippage.

Its book lives in `paper_orders` / `paper_trades`, written through its own pool in its own
transactions — never in the engine's — so that, as with a real venue, an order can exist
without the engine having recorded it, and crash tests can compare broker and book.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from core.broker_stops import GTT
from core.calendar import TradingCalendar, india_time
from core.db_pool import make_pool
from core.db_rows import json_param
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
    StopOrder,
    StopState,
    VenueStop,
    VenueTrade,
)

VENUE_ERRORS = (psycopg.Error, PoolTimeout)
PLACED_KEPT = 1000
CLOSED_MESSAGE = "Markets are closed right now. Use GTT for placing long standing orders instead."


class PaperBroker:
    name = "paper"
    price_check = False  # no market feed: fills are at the signal's price by definition
    unavailable_reason = None

    def __init__(self, conninfo: str, instruments: dict[str, InstrumentSpec],
                 config: PortfolioConfig, clock: Callable[[], datetime] | None = None,
                 calendar: TradingCalendar | None = None,
                 gate: Callable[[], None] = lambda: None):
        self._pool = make_pool(conninfo, name="paper_broker", min_size=1, max_size=10)
        self._gate = gate  # raises when this node may no longer send (a pair's old leader)
        self._instruments = instruments
        self._config = config
        self._clock = clock or (lambda: datetime.now(INDIA))
        self._calendar = calendar or TradingCalendar({})
        # The triggers of the venue's active stops, by contract: a price above all of them
        # (nearly every price) is seen without a query.
        self._triggers: dict[str, dict[str, Decimal]] = {}
        self._instrument_of: dict[str, str] = {}  # contract → instrument, for its tick
        self._placed: OrderedDict[str, BrokerOrder] = OrderedDict()  # the newest orders

    async def start(self) -> None:
        await self._pool.open(wait=True)
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT stop_id, instrument, tradingsymbol, trigger_price "
                                     "FROM paper_stops WHERE status = 'active'")
            for stop_id, instrument, symbol, trigger in await cur.fetchall():
                self._watch(stop_id, instrument, symbol, trigger)

    def _watch(self, stop_id: str, instrument: str, symbol: str, trigger: Decimal) -> None:
        self._triggers.setdefault(symbol, {})[stop_id] = trigger
        self._instrument_of[symbol] = instrument

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
                self._gate()
                # One statement: the order and its trade commit together, in one round trip.
                cur = await conn.execute(
                    """WITH o AS (
                         INSERT INTO paper_orders (order_id, tag, tradingsymbol, side, quantity,
                           order_type, price, status, filled_quantity, average_price,
                           status_message)
                         SELECT 'PAPER' || n.id, %(tag)s, %(symbol)s, %(side)s, %(quantity)s,
                                %(type)s, %(price)s, %(status)s, %(filled)s, %(fill)s, %(msg)s
                         FROM (SELECT nextval('paper_orders_id_seq') AS id) n
                         RETURNING *),
                       t AS (
                         INSERT INTO paper_trades (trade_id, order_id, tradingsymbol, side,
                           quantity, price, traded_at)
                         SELECT o.order_id || 'T1', o.order_id, %(symbol)s, %(side)s,
                                %(quantity)s, %(fill)s, %(now)s
                         FROM o WHERE %(filled)s > 0
                         RETURNING trade_id, quantity, price, traded_at)
                       SELECT o.*, coalesce((SELECT json_agg(json_build_object(
                                'trade_id', t.trade_id, 'quantity', t.quantity,
                                'price', t.price::text, 'traded_at', t.traded_at)) FROM t),
                              '[]') AS trades
                       FROM o""",
                    {"tag": request.tag, "symbol": request.tradingsymbol, "side": request.side,
                     "quantity": request.quantity, "type": request.order_type,
                     "price": request.price, "status": status.value,
                     "filled": 0 if rejected else request.quantity,
                     "fill": None if rejected else price,
                     "msg": CLOSED_MESSAGE if rejected else None, "now": now})
                cur.row_factory = dict_row
                row = await cur.fetchone()
        except VENUE_ERRORS as exc:
            # The commit may or may not have happened: the engine resolves by tag.
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        assert row is not None
        order = _order(row)
        # A paper order is final as placed and never changes: the engine's read of it right
        # after needs no round trip.
        self._placed[order.order_id] = order
        if len(self._placed) > PLACED_KEPT:
            self._placed.popitem(last=False)
        return [order.order_id]

    async def find_by_tag(self, tag: str) -> list[BrokerOrder]:
        return await self._orders("tag = %s", tag)

    async def resting_orders(self) -> list[BrokerOrder]:
        return []  # the paper venue fills or refuses every order as it is placed

    async def cancel(self, order: BrokerOrder) -> None:
        raise OrderRejected(f"paper order {order.order_id} is final: nothing to cancel")

    async def order(self, order_id: str) -> BrokerOrder:
        placed = self._placed.get(order_id)
        if placed is not None:
            return placed
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

    # -- resting stops: fired by the prices the venue is shown, like a GTT ------------------
    def stop_kind(self, instrument: str) -> str | None:
        # Its stops rest until cancelled, whatever the exchange, as a GTT does: the paper
        # venue has no session end to expire a DAY order at.
        return GTT if self._config.paper_broker_stops else None

    async def place_stop(self, stop: StopOrder) -> str:
        row = await self._stop_write(
            """INSERT INTO paper_stops (stop_id, tag, instrument, tradingsymbol, quantity,
                 trigger_price, limit_price, status)
               SELECT 'PS' || n.id, %s, %s, %s, %s, %s, %s, 'active'
               FROM (SELECT nextval('paper_stops_id_seq') AS id) n RETURNING stop_id""",
            (stop.tag, stop.instrument, stop.tradingsymbol, stop.quantity, stop.trigger,
             stop.limit))
        assert row is not None
        self._watch(str(row[0]), stop.instrument, stop.tradingsymbol, stop.trigger)
        return str(row[0])

    async def modify_stop(self, ref: str, stop: StopOrder) -> None:
        if await self._stop_write("UPDATE paper_stops SET trigger_price = %s, limit_price = %s "
                                  "WHERE stop_id = %s AND status = 'active' RETURNING 1",
                                  (stop.trigger, stop.limit, ref)) is None:
            raise OrderRejected(f"paper stop {ref} is not active")
        self._watch(ref, stop.instrument, stop.tradingsymbol, stop.trigger)

    async def cancel_stop(self, kind: str, ref: str) -> None:
        row = await self._stop_write("UPDATE paper_stops SET status = 'cancelled' "
                                     "WHERE stop_id = %s AND status = 'active' "
                                     "RETURNING tradingsymbol", (ref,))
        if row is None:
            raise OrderRejected(f"paper stop {ref} is not active")
        self._triggers.get(row[0], {}).pop(ref, None)

    async def stop_state(self, kind: str, ref: str) -> VenueStop:
        stops = await self._stops("stop_id = %s", ref)
        if not stops:
            raise BrokerUnavailable(f"paper broker: no stop {ref}")
        return stops[0]

    async def find_stop(self, stop: StopOrder, known: frozenset[str]) -> VenueStop | None:
        found = [s for s in await self._stops("tag = %s", stop.tag) if s.ref not in known]
        return found[-1] if found else None

    # -- the same, for many stops in one request (a startup round over the whole book) ----
    async def place_stops(self, stops: Sequence[StopOrder]) -> list[str]:
        """Rest all `stops` in one transaction (all or none); return their references, in
        order."""
        rows = await self._stop_write_all(
            """INSERT INTO paper_stops (stop_id, tag, instrument, tradingsymbol, quantity,
                 trigger_price, limit_price, status)
               SELECT 'PS' || nextval('paper_stops_id_seq'), s.tag, s.instrument, s.symbol,
                      s.quantity, s.trigger, s.limit_price, 'active'
               FROM ROWS FROM (json_to_recordset(%s::json)
                               AS (tag text, instrument text, symbol text, quantity int,
                                   trigger numeric, limit_price numeric)) WITH ORDINALITY
                    AS s(tag, instrument, symbol, quantity, trigger, limit_price, n)
               ORDER BY s.n RETURNING tag, stop_id""",
            (json_param([{"tag": s.tag, "instrument": s.instrument, "symbol": s.tradingsymbol,
                          "quantity": s.quantity, "trigger": s.trigger, "limit_price": s.limit}
                         for s in stops]),))
        refs = {str(tag): str(ref) for tag, ref in rows}
        for stop in stops:
            self._watch(refs[stop.tag], stop.instrument, stop.tradingsymbol, stop.trigger)
        return [refs[stop.tag] for stop in stops]

    async def stop_states(self, refs: Sequence[str]) -> dict[str, VenueStop]:
        """What the venue says of each of these stops, by reference (one it does not know
        is left out)."""
        # The references as one JSON parameter (a startup round asks for the whole book's),
        # each still found by its index.
        return {s.ref: s for s in await self._stops(
            "stop_id = ANY(ARRAY(SELECT json_array_elements_text(%s::json)))",
            json_param(list(refs)))}

    async def find_stops(self, stops: Sequence[StopOrder],
                         known: frozenset[str]) -> dict[str, VenueStop]:
        """`find_stop` for each of `stops`, by tag (one not found is left out)."""
        found: dict[str, VenueStop] = {}
        tags = [stop.tag for stop in stops]
        for tag, stop in await self._tagged_stops("tag = ANY(%s)", tags):
            if stop.ref not in known:
                found[tag] = stop  # ordered by id: the newest wins, as `find_stop`'s
        return found

    def quiet_at(self, tradingsymbol: str, price: Decimal) -> bool:
        triggers = self._triggers.get(tradingsymbol)
        return not triggers or price >= max(triggers.values())

    async def observe(self, tradingsymbol: str, price: Decimal) -> None:
        """Fire every active stop on the contract the price fell below: its SELL fills at
        the price, less slippage. The paper venue has no order book to rest a limit in, so
        a gap through the limit fills where the price is, as the daemon's own stop exit
        would; and it fires only below the trigger, as the daemon's stop does, so paper
        books the same sale whichever of the two sells."""
        if self.quiet_at(tradingsymbol, price):
            return
        triggers = self._triggers[tradingsymbol]
        spec = self._instruments[self._instrument_of[tradingsymbol]]
        fill = price - spec.tick_size * self._config.paper_slippage_ticks
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    """WITH fired AS (
                         UPDATE paper_stops SET status = 'triggered',
                                order_id = 'PAPER' || nextval('paper_orders_id_seq')
                         WHERE tradingsymbol = %(symbol)s AND status = 'active'
                           AND trigger_price > %(price)s
                         RETURNING stop_id, order_id, tradingsymbol, quantity, limit_price),
                       o AS (
                         INSERT INTO paper_orders (order_id, tag, tradingsymbol, side, quantity,
                           order_type, price, status, filled_quantity, average_price)
                         SELECT order_id, '', tradingsymbol, 'SELL', quantity, 'LIMIT',
                                limit_price, 'COMPLETE', quantity, %(fill)s
                         FROM fired RETURNING order_id, tradingsymbol, quantity),
                       t AS (
                         INSERT INTO paper_trades (trade_id, order_id, tradingsymbol, side,
                           quantity, price, traded_at)
                         SELECT order_id || 'T1', order_id, tradingsymbol, 'SELL', quantity,
                                %(fill)s, %(now)s FROM o)
                       SELECT stop_id FROM fired""",
                    {"symbol": tradingsymbol, "price": price, "fill": fill,
                     "now": self._clock()})
                fired = await cur.fetchall()
        except VENUE_ERRORS as exc:
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        for (stop_id,) in fired:
            triggers.pop(stop_id, None)

    async def _stop_write(self, query: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        try:
            async with self._pool.connection() as conn:
                self._gate()
                cur = await conn.execute(query, params)
                row: tuple[Any, ...] | None = await cur.fetchone()
                return row
        except VENUE_ERRORS as exc:
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc

    async def _stop_write_all(self, query: str, params: tuple[Any, ...]
                              ) -> list[tuple[Any, ...]]:
        try:
            async with self._pool.connection() as conn:
                self._gate()
                cur = await conn.execute(query, params)
                rows: list[tuple[Any, ...]] = await cur.fetchall()
                return rows
        except VENUE_ERRORS as exc:
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc

    async def _stops(self, where: str, value: object) -> list[VenueStop]:
        return [stop for _, stop in await self._tagged_stops(where, value)]

    async def _tagged_stops(self, where: str, value: object) -> list[tuple[str, VenueStop]]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    f"""SELECT stop_id, status, trigger_price, quantity, order_id, tag
                        FROM paper_stops WHERE {where} ORDER BY id""", (value,))
                rows = await cur.fetchall()
        except VENUE_ERRORS as exc:
            raise BrokerUnavailable(f"paper broker: {type(exc).__name__}") from exc
        return [(str(tag), VenueStop(ref=str(ref), state=_STOP_STATES[status],
                                     trigger=trigger, quantity=int(quantity),
                                     order_id=order_id))
                for ref, status, trigger, quantity, order_id, tag in rows]


_STOP_STATES = {"active": StopState.ACTIVE, "triggered": StopState.TRIGGERED,
                "cancelled": StopState.GONE}


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
