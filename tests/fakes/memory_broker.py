"""An in-memory venue for unit tests: `live.brokers.paper.PaperBroker` without its database.

MARKET orders fill at once at the request's price; orders are kept by tag, as a venue keeps
them, so the engine's tag lookups work; the next order can be refused, either as the paper
broker does (a REJECTED order with a message) or as Kite does (`OrderRejected` on placement).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from core.models import ContractRef, Side
from live.brokers.base import (
    BrokerOrder,
    BrokerTrade,
    BrokerUnavailable,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    StopOrder,
    VenueStop,
    VenueTrade,
)


class MemoryBroker:
    name = "memory"
    price_check = False
    unavailable_reason: str | None = None

    def __init__(self, margin_fraction: Decimal = Decimal("0.6")):
        self._margin_fraction = margin_fraction
        self._ids = itertools.count(1)
        self.orders: dict[str, BrokerOrder] = {}  # by order id, in placement order
        self.requests: list[OrderRequest] = []
        self._refusals: list[tuple[str, bool]] = []
        self._positions: defaultdict[str, int] = defaultdict(int)
        # Called with each request before it is placed: a test's hook into "meanwhile".
        self.on_place: Callable[[OrderRequest], None] | None = None

    # -- what a test tells the venue ------------------------------------------------------
    def reject_next(self, message: str = "RMS: margin exceeds", *, raise_: bool = False) -> None:
        """Refuse the next order: REJECTED with `message`, or `OrderRejected` if `raise_`."""
        self._refusals.append((message, raise_))

    def by_tag(self, tag: str) -> list[BrokerOrder]:
        return [o for o in self.orders.values() if o.tag == tag]

    # -- the Broker protocol --------------------------------------------------------------
    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def wait_available(self) -> None:
        return None

    def contract(self, instrument: str, now: datetime) -> ContractRef:
        return ContractRef(instrument, None, None)

    async def place(self, request: OrderRequest) -> list[str]:
        if request.price is None:
            raise ValueError(f"memory order {request.tag} has no reference price")
        if self.on_place is not None:
            self.on_place(request)
        order_id = f"MEM{next(self._ids)}"
        self.requests.append(request)
        message, raise_ = self._refusals.pop(0) if self._refusals else (None, False)
        if message is not None and raise_:
            raise OrderRejected(message)
        if message is not None:
            order = self._order(order_id, request, OrderStatus.REJECTED, message=message)
        else:
            trade = BrokerTrade(f"{order_id}T1", request.quantity, request.price,
                                datetime.now(UTC))
            order = self._order(order_id, request, OrderStatus.COMPLETE, trade=trade)
            sign = 1 if request.side == "BUY" else -1
            self._positions[request.tradingsymbol] += sign * request.quantity
        self.orders[order_id] = order
        return [order_id]

    @staticmethod
    def _order(order_id: str, request: OrderRequest, status: OrderStatus, *,
               message: str | None = None, trade: BrokerTrade | None = None) -> BrokerOrder:
        return BrokerOrder(
            order_id=order_id, tag=request.tag, tradingsymbol=request.tradingsymbol,
            side=request.side, quantity=request.quantity, status=status,
            filled_quantity=trade.quantity if trade else 0,
            average_price=trade.price if trade else None, message=message,
            trades=(trade,) if trade else (), order_type=request.order_type)

    async def find_by_tag(self, tag: str) -> list[BrokerOrder]:
        return self.by_tag(tag)

    async def order(self, order_id: str) -> BrokerOrder:
        if order_id not in self.orders:
            raise BrokerUnavailable(f"memory broker: no order {order_id}")
        return self.orders[order_id]

    async def manage(self, order: BrokerOrder, request: OrderRequest) -> BrokerOrder:
        return await self.order(order.order_id)  # final when placed

    async def resting_orders(self) -> list[BrokerOrder]:
        return [o for o in self.orders.values() if not o.is_final]

    async def cancel(self, order: BrokerOrder) -> None:
        raise OrderRejected(f"memory order {order.order_id} is final")

    async def wait_for_update(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)

    async def positions(self) -> dict[str, int]:
        return {symbol: net for symbol, net in self._positions.items() if net}

    async def position(self, tradingsymbol: str) -> int:
        return self._positions.get(tradingsymbol, 0)

    async def trades(self) -> list[VenueTrade]:
        return [VenueTrade(t.trade_id, o.order_id, o.tag, o.tradingsymbol, Side(o.side),
                           t.quantity, t.price, t.traded_at)
                for o in self.orders.values() for t in o.trades]

    async def quote(self, tradingsymbol: str) -> Decimal | None:
        """The price of the venue's last trade in the contract (it has no feed)."""
        trades = [t for o in self.orders.values() if o.tradingsymbol == tradingsymbol
                  for t in o.trades]
        return trades[-1].price if trades else None

    async def available_margin(self, equity: Decimal, used_margin: Decimal) -> Decimal:
        return max(Decimal(0), self._margin_fraction * equity - used_margin)

    # A venue with no resting stops: the daemon keeps none there.
    def stop_kind(self, instrument: str) -> str | None:
        return None

    async def place_stop(self, stop: StopOrder) -> str:
        raise OrderRejected("the memory venue keeps no stops")

    async def modify_stop(self, ref: str, stop: StopOrder) -> None:
        raise OrderRejected("the memory venue keeps no stops")

    async def cancel_stop(self, kind: str, ref: str) -> None:
        raise OrderRejected("the memory venue keeps no stops")

    async def stop_state(self, kind: str, ref: str) -> VenueStop:
        raise OrderRejected("the memory venue keeps no stops")

    async def find_stop(self, stop: StopOrder, known: frozenset[str]) -> VenueStop | None:
        return None

    async def observe(self, tradingsymbol: str, price: Decimal) -> None:
        return None

    def quiet_at(self, tradingsymbol: str, price: Decimal) -> bool:
        return True
