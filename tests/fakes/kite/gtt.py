"""GTT triggers (KITE.md §1.5, §8): place, modify, delete, list; fired by the fake's own price
feed, when they place their LIMIT order through the order book like any other order."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.fakes.kite.book import OrderBook
from tests.fakes.kite.market import Market
from tests.fakes.kite.validation import PRODUCTS, SIDES
from tests.fakes.kite.wire import (
    KiteError,
    input_error,
    json_number,
    kite_time,
    parse_decimal,
    parse_int,
)

TYPES = {"single": 1, "two-leg": 2}
MAX_ACTIVE = 250  # per account [SUP]
DISABLED_WITHIN_PERCENT = Decimal("0.25")  # a trigger this close to the LTP is disabled [SUP]
NO_GTT_EXCHANGES = frozenset({"MCX", "CDS", "BCD"})
APP_ID = 12617  # the app id Zerodha's GTT engine places under (fixture gtt_get_orders.json)
NOT_ACTIVE_MESSAGE = "Trigger is not active."  # text unverified; kept fixed for callers
ORDER_FIELDS = ("exchange", "tradingsymbol", "transaction_type", "quantity", "order_type",
                "product", "price")


@dataclass
class Gtt:
    id: int
    type: str
    status: str
    created_at: str
    updated_at: str
    expires_at: str
    condition: dict[str, Any]
    orders: list[dict[str, Any]]
    user_id: str = ""
    parent_trigger: None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "user_id": self.user_id, "parent_trigger": None,
                "type": self.type, "created_at": self.created_at,
                "updated_at": self.updated_at, "expires_at": self.expires_at,
                "status": self.status, "condition": dict(self.condition),
                "orders": [dict(o) for o in self.orders], "meta": dict(self.meta)}


class GttBook:
    def __init__(self, market: Market, book: OrderBook, clock: Callable[[], datetime],
                 user_id: str):
        self._market = market
        self._book = book
        self._clock = clock
        self._user_id = user_id
        self.gtts: dict[int, Gtt] = {}
        self.last_id = 100_000

    # ---- the API
    def place(self, form: Mapping[str, Any]) -> dict[str, Any]:
        kind, condition, orders = self._parse(form)
        if sum(1 for g in self.gtts.values() if g.status == "active") >= MAX_ACTIVE:
            raise input_error(f"You can have at most {MAX_ACTIVE} active GTTs.")
        now = self._clock()
        self.last_id += 1
        gtt = Gtt(self.last_id, kind, "active", kite_time(now), kite_time(now),
                  kite_time(now + timedelta(days=365)), condition, orders, self._user_id)
        gtt.status = self._initial_status(condition)
        self.gtts[gtt.id] = gtt
        self._fire_if_reached(gtt)
        return {"trigger_id": gtt.id}

    def modify(self, trigger_id: int, form: Mapping[str, Any]) -> dict[str, Any]:
        gtt = self.get(trigger_id)
        if gtt.status != "active":
            raise input_error(f"GTT {trigger_id} is {gtt.status}: only an active GTT can be "
                              "modified.")
        kind, condition, orders = self._parse(form)
        gtt.type, gtt.condition, gtt.orders = kind, condition, orders
        gtt.updated_at = kite_time(self._clock())
        gtt.status = self._initial_status(condition)
        self._fire_if_reached(gtt)
        return {"trigger_id": gtt.id}

    def delete(self, trigger_id: int) -> dict[str, Any]:
        gtt = self.get(trigger_id)
        # A disabled GTT never fires but is still the account's to delete.
        if gtt.status not in ("active", "disabled"):
            raise input_error(NOT_ACTIVE_MESSAGE)
        gtt.status = "deleted"
        gtt.updated_at = kite_time(self._clock())
        return {"trigger_id": gtt.id}

    def get(self, trigger_id: int) -> Gtt:
        gtt = self.gtts.get(trigger_id)
        if gtt is None:
            raise KiteError(404, "GeneralException", f"Trigger {trigger_id} not found.")
        return gtt

    def all(self) -> list[dict[str, Any]]:
        return [g.to_json() for g in sorted(self.gtts.values(), key=lambda g: -g.id)]

    # ---- firing
    def on_price(self, key: str) -> None:
        """Fire every active GTT on this contract whose trigger the price reached."""
        for gtt in [g for g in self.gtts.values() if _key(g) == key]:
            self._fire_if_reached(gtt)

    def _fire_if_reached(self, gtt: Gtt) -> None:
        # Also run at placement and modify: Kite's engine would fire on the very next tick,
        # and the fake only ticks when a test moves the price.
        last = self._market.last_price(_key(gtt))
        if gtt.status != "active" or last is None:
            return
        leg = _leg_reached(gtt, last)
        if leg is not None:
            self._fire(gtt, leg, last)

    def _fire(self, gtt: Gtt, leg: int, last: Decimal) -> None:
        now = kite_time(self._clock())
        gtt.status, gtt.updated_at = "triggered", now
        order = gtt.orders[leg]
        form = {"exchange": order["exchange"], "tradingsymbol": order["tradingsymbol"],
                "transaction_type": order["transaction_type"],
                "quantity": str(order["quantity"]), "product": order["product"],
                "order_type": "LIMIT", "price": str(order["price"]), "validity": "DAY"}
        try:
            order_id = self._book.place("regular", form, gtt_id=gtt.id)["order_id"]
            result = {"status": "success", "order_id": order_id, "rejection_reason": ""}
        except KiteError as error:
            result = {"status": "failed", "order_id": "", "rejection_reason": error.message}
        gtt.orders[leg] = {**order, "result": {
            "account_id": self._user_id, "exchange": order["exchange"],
            "tradingsymbol": order["tradingsymbol"], "validity": "DAY",
            "product": order["product"], "order_type": "LIMIT",
            "transaction_type": order["transaction_type"], "quantity": order["quantity"],
            "price": order["price"],
            "meta": json.dumps({"app_id": APP_ID, "gtt": gtt.id}, separators=(",", ":")),
            "timestamp": now, "triggered_at": json_number(last), "order_result": result}}

    # ---- checks
    def _parse(self, form: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
        kind = str(form.get("type") or "")
        if kind not in TYPES:
            raise input_error("Invalid `type`: single or two-leg.")
        condition = _json_field(form, "condition")
        orders = _json_field(form, "orders")
        if not isinstance(condition, dict) or not isinstance(orders, list):
            raise input_error("`condition` is an object and `orders` a list.")
        exchange = str(condition.get("exchange") or "")
        if exchange in NO_GTT_EXCHANGES:
            raise input_error(f"GTT is not available for the {exchange} segment "
                              "(commodity and currency).")
        symbol = str(condition.get("tradingsymbol") or "")
        instrument = self._market.instrument(exchange, symbol)
        if instrument is None:
            raise input_error(f"Invalid instrument {exchange}:{symbol}.")
        triggers = condition.get("trigger_values")
        if not isinstance(triggers, list) or len(triggers) != TYPES[kind] or len(orders) != len(
                triggers):
            raise input_error(f"A {kind} GTT has {TYPES[kind]} trigger value(s) and as many "
                              "orders.")
        if condition.get("last_price") in (None, ""):
            raise input_error("`last_price` is required.")
        values = [parse_decimal(v, "trigger_values") for v in triggers]
        if kind == "two-leg" and not values[0] < values[1]:
            # orders[i] belongs to trigger_values[i]: the stop-loss leg first (§1.5).
            raise input_error("A two-leg GTT's trigger_values are [lower, upper].")
        for order in orders:
            _check_gtt_order(order, exchange, symbol)
        condition = {"exchange": exchange, "tradingsymbol": symbol,
                     "trigger_values": [json_number(v) for v in values],
                     "last_price": json_number(parse_decimal(condition["last_price"],
                                                             "last_price")),
                     "instrument_token": instrument.instrument_token}
        kept = [{**{name: o[name] for name in ORDER_FIELDS}, "result": None} for o in orders]
        return kind, condition, kept

    def _initial_status(self, condition: Mapping[str, Any]) -> str:
        last = self._market.last_price(f"{condition['exchange']}:{condition['tradingsymbol']}")
        if last is None:
            return "active"
        for value in condition["trigger_values"]:
            if abs(Decimal(str(value)) - last) * 100 < last * DISABLED_WITHIN_PERCENT:
                return "disabled"
        return "active"


def _key(gtt: Gtt) -> str:
    return f"{gtt.condition['exchange']}:{gtt.condition['tradingsymbol']}"


def _check_gtt_order(order: Any, exchange: str, symbol: str) -> None:
    if not isinstance(order, dict) or any(order.get(name) in (None, "")
                                          for name in ORDER_FIELDS):
        raise input_error(f"Each GTT order needs {', '.join(ORDER_FIELDS)}.")
    if order["order_type"] != "LIMIT":
        raise input_error("GTT orders are LIMIT orders.")
    if (order["exchange"], order["tradingsymbol"]) != (exchange, symbol):
        raise input_error("GTT orders trade the condition's instrument.")
    if order["transaction_type"] not in SIDES or order["product"] not in PRODUCTS:
        raise input_error("Invalid `transaction_type` or `product` in a GTT order.")
    if parse_int(order["quantity"], "quantity") <= 0 or parse_decimal(
            order["price"], "price") <= 0:
        raise input_error("A GTT order needs a positive quantity and price.")


def _leg_reached(gtt: Gtt, last: Decimal) -> int | None:
    """Which leg the price fires: a trigger below the GTT's reference price fires when the
    price falls to it, one above when it rises to it (the two-leg lower, then upper)."""
    values = [Decimal(str(v)) for v in gtt.condition["trigger_values"]]
    reference = Decimal(str(gtt.condition["last_price"]))
    if gtt.type == "two-leg":
        lower, upper = values
        return 0 if last <= lower else 1 if last >= upper else None
    (trigger,) = values
    if trigger < reference:
        return 0 if last <= trigger else None
    return 0 if last >= trigger else None


def _json_field(form: Mapping[str, Any], name: str) -> Any:
    try:
        return json.loads(str(form.get(name) or ""))
    except json.JSONDecodeError:
        raise input_error(f"`{name}` is JSON text.") from None
