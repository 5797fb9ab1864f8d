"""Broker-resident stops at Zerodha (KITE.md §8): a single-leg GTT for an NFO layer (valid
until the contract expires), a DAY SL order for an MCX layer (Zerodha has no GTT for
commodities), both SELL LIMIT at the stop's band below the trigger."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

from config.kite import KiteConfig
from core.broker_stops import GTT, SL
from live.brokers.base import OrderRejected, StopOrder, StopState, VenueStop

Call = Callable[..., Awaitable[Any]]
GTT_STATES = {"active": StopState.ACTIVE, "triggered": StopState.TRIGGERED,
              "disabled": StopState.REFUSED, "rejected": StopState.REFUSED}
# Before its trigger an SL order rests as TRIGGER PENDING (or one of the in-flight states
# on its way there); OPEN means it fired and its limit is in the book.
FIRED = frozenset({"OPEN", "COMPLETE"})
GTT_MIN_DISTANCE_PERCENT = Decimal("0.25")  # closer to the last price, a GTT is disabled


class KiteStops:
    def __init__(self, call: Call, config: KiteConfig,
                 quote: Callable[[str], Awaitable[Decimal | None]]):
        self._call = call
        self._config = config
        self._quote = quote

    def kind(self, instrument: str) -> str | None:
        if not self._config.broker_stops:
            return None
        return GTT if self._config.instruments[instrument].exchange == "NFO" else SL

    def _exchange(self, stop: StopOrder) -> str:
        return self._config.instruments[stop.instrument].exchange

    async def place(self, stop: StopOrder) -> str:
        if stop.kind == SL:
            order_id = await self._call("order", "place_order", placing=True,
                                        **self._sl_params(stop))
            return str(order_id)
        data = await self._call("order", "place_gtt", placing=True,
                                **await self._gtt_params(stop))
        return str(data["trigger_id"])

    async def modify(self, ref: str, stop: StopOrder) -> None:
        if stop.kind == SL:
            await self._call("order", "modify_order", placing=True,
                             variety=self._config.variety, order_id=ref,
                             trigger_price=float(stop.trigger), price=float(stop.limit),
                             order_type="SL")
            return
        await self._call("order", "modify_gtt", int(ref), placing=True,
                         **await self._gtt_params(stop))

    async def cancel(self, kind: str, ref: str) -> None:
        if kind == SL:
            await self._call("order", "cancel_order", placing=True,
                             variety=self._config.variety, order_id=ref)
        else:
            await self._call("order", "delete_gtt", int(ref), placing=True)

    async def state(self, kind: str, ref: str) -> VenueStop:
        if kind == SL:
            history = await self._call("other", "order_history", ref)
            return _sl_stop(history[-1])
        return _gtt_stop(await self._call("other", "get_gtt", int(ref)))

    async def states(self, kind: str, refs: Sequence[str]) -> dict[str, VenueStop]:
        """What Zerodha says of many stops of one kind, by reference, in one read: the
        day's order book for SL orders, the GTT list for GTTs (one not listed is left out)."""
        wanted = set(refs)
        if kind == SL:
            return {str(o["order_id"]): _sl_stop(o) for o in await self._call("other", "orders")
                    if str(o["order_id"]) in wanted}
        return {str(g["id"]): _gtt_stop(g) for g in await self._call("other", "get_gtts")
                if str(g["id"]) in wanted}

    async def find(self, stop: StopOrder, known: frozenset[str]) -> VenueStop | None:
        if stop.kind == SL:
            book = await self._call("other", "orders")
            found = [o for o in book if o.get("tag") == stop.tag]
            return _sl_stop(found[-1]) if found else None
        for raw in await self._call("other", "get_gtts"):
            venue = _gtt_stop(raw)
            condition = raw.get("condition") or {}
            order = (raw.get("orders") or [{}])[0]
            if (venue.ref not in known and condition.get("tradingsymbol") == stop.tradingsymbol
                    and order.get("transaction_type") == "SELL"
                    and venue.quantity == stop.quantity and venue.trigger == stop.trigger
                    and venue.state in (StopState.ACTIVE, StopState.REFUSED)):
                return venue
        return None

    def _sl_params(self, stop: StopOrder) -> dict[str, Any]:
        return {"variety": self._config.variety, "exchange": self._exchange(stop),
                "tradingsymbol": stop.tradingsymbol, "transaction_type": "SELL",
                "quantity": stop.quantity, "product": self._config.product,
                "order_type": "SL", "trigger_price": float(stop.trigger),
                "price": float(stop.limit), "validity": "DAY", "tag": stop.tag}

    async def _gtt_params(self, stop: StopOrder) -> dict[str, Any]:
        # Kite needs the last price to know which way the trigger lies; a stop at or above it
        # would fire at once, so it is refused here and the layer's own stop decides.
        last = await self._quote(stop.tradingsymbol)
        if last is None:
            raise OrderRejected(f"no last price for {stop.tradingsymbol}: GTT not placed")
        if last <= stop.trigger:
            raise OrderRejected(f"{stop.tradingsymbol} last price {last} is at or below the "
                                f"stop {stop.trigger}")
        if (last - stop.trigger) * 100 < last * GTT_MIN_DISTANCE_PERCENT:
            # Zerodha would accept it disabled: a GTT that never fires, left at the broker.
            raise OrderRejected(f"{stop.tradingsymbol} stop {stop.trigger} is within "
                                f"{GTT_MIN_DISTANCE_PERCENT} % of the last price {last}: a "
                                "GTT there is disabled")
        exchange = self._exchange(stop)
        return {"trigger_type": "single", "tradingsymbol": stop.tradingsymbol,
                "exchange": exchange, "trigger_values": [float(stop.trigger)],
                "last_price": float(last),
                "orders": [{"exchange": exchange, "tradingsymbol": stop.tradingsymbol,
                            "transaction_type": "SELL", "quantity": stop.quantity,
                            "order_type": "LIMIT", "product": self._config.product,
                            "price": float(stop.limit)}]}


def _sl_stop(raw: dict[str, Any]) -> VenueStop:
    status = str(raw.get("status") or "")
    filled = int(raw.get("filled_quantity") or 0)
    if status in FIRED or filled > 0:
        state = StopState.TRIGGERED
    elif status.startswith("REJECTED"):
        state = StopState.REFUSED
    elif status.startswith("CANCELLED"):
        state = StopState.GONE
    else:
        state = StopState.ACTIVE
    ref = str(raw["order_id"])
    return VenueStop(ref=ref, state=state, trigger=_decimal(raw.get("trigger_price")),
                     quantity=int(raw.get("quantity") or 0),
                     order_id=ref if state is StopState.TRIGGERED else None,
                     message=raw.get("status_message"))


def _gtt_stop(raw: dict[str, Any]) -> VenueStop:
    condition = raw.get("condition") or {}
    order = (raw.get("orders") or [{}])[0]
    result = order.get("result") or {}
    if isinstance(result, str):  # some API versions send nested JSON as text
        result = json.loads(result)
    placed = result.get("order_result") or {}
    state = GTT_STATES.get(str(raw.get("status")), StopState.GONE)
    return VenueStop(ref=str(raw["id"]), state=state,
                     trigger=_decimal((condition.get("trigger_values") or [0])[0]),
                     quantity=int(order.get("quantity") or 0),
                     order_id=str(placed.get("order_id") or "") or None,
                     message=placed.get("rejection_reason") or None)


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value or 0))
