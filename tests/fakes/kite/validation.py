"""Order validation: parse a placement form and refuse what Kite's pre-validation refuses.

Kite's exact texts for these are not in KITE.md except the freeze and market-protection ones
(§3.3, §1.2); the others are plain wording of our own (unverified).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from tests.fakes.kite.instruments import EXCHANGES
from tests.fakes.kite.market import Market
from tests.fakes.kite.orders import PRICED_TYPES, PROTECTED_TYPES, STOP_TYPES, Order
from tests.fakes.kite.wire import (
    form_choice,
    form_value,
    input_error,
    parse_decimal,
    parse_int,
)

VARIETIES = frozenset({"regular", "amo", "co", "iceberg", "auction"})
PRODUCTS = frozenset({"CNC", "NRML", "MIS", "MTF", "CO"})
ORDER_TYPES = frozenset({"MARKET", "LIMIT", "SL", "SL-M"})
VALIDITIES = frozenset({"DAY", "IOC", "TTL"})
SIDES = frozenset({"BUY", "SELL"})
MAX_MODIFICATIONS = 25  # §1.2
MAX_AUTOSLICES = 10  # §1.2
TAG_PATTERN = re.compile(r"[A-Za-z0-9]{1,20}")  # §1.2: the only safe form
PROTECTION_MESSAGE = ("Market orders without market protection are not allowed via API. "
                      "Please set market protection or use a Limit order.")
FREEZE_MESSAGE = ("The order quantity {quantity} ({lots} lots) is higher than the maximum quantity "
                  "of {freeze} ({freeze_lots} lots) allowed by the exchanges. Please reduce the "
                  "order quantity or use iceberg orders.")


def parse_market_protection(form: Mapping[str, Any]) -> Decimal:
    """Return market_protection: -1 (auto), 0 (none, the default) or a percent in (0, 100]."""
    text = form_value(form, "market_protection")
    if text is None:
        return Decimal(0)
    try:
        value = Decimal(text)
    except InvalidOperation:
        # §1.2: a Python True arrives as "True" and fails to decode.
        raise input_error(f'Invalid request (failed to decode market_protection "{text}").') \
            from None
    if not value.is_finite() or not (value == -1 or 0 <= value <= 100):
        raise input_error("Invalid `market_protection`: use -1 or a percent up to 100.")
    return value


def parse_tag(form: Mapping[str, Any]) -> str | None:
    tag = form_value(form, "tag")
    if tag is not None and not TAG_PATTERN.fullmatch(tag):
        raise input_error("Invalid `tag`: it must be alphanumeric and at most 20 characters.")
    return tag


def draft_order(variety: str, form: Mapping[str, Any], market: Market, user_id: str) -> Order:
    """Parse a placement form into an order that is not yet in the book."""
    if variety not in VARIETIES:
        raise input_error("Invalid `variety`.")
    exchange = form_choice(form, "exchange", EXCHANGES)
    instrument = market.instrument(exchange, form_value(form, "tradingsymbol") or "")
    if instrument is None:
        raise input_error("Invalid `tradingsymbol`: no such instrument on this exchange.")
    quantity = parse_int(form_value(form, "quantity"), "quantity")
    if quantity <= 0:
        raise input_error("Invalid `quantity`.")
    tag = parse_tag(form)
    return Order(
        order_id="", placed_by=user_id, variety=variety, exchange=exchange,
        tradingsymbol=instrument.tradingsymbol, instrument_token=instrument.instrument_token,
        transaction_type=form_choice(form, "transaction_type", SIDES),
        product=form_choice(form, "product", PRODUCTS),
        order_type=form_choice(form, "order_type", ORDER_TYPES),
        validity=form_choice(form, "validity", VALIDITIES, default="DAY"),
        validity_ttl=parse_int(form_value(form, "validity_ttl") or 0, "validity_ttl"),
        quantity=quantity, pending_quantity=quantity,
        disclosed_quantity=parse_int(form_value(form, "disclosed_quantity") or 0,
                                     "disclosed_quantity"),
        price=parse_decimal(form_value(form, "price") or 0, "price"),
        trigger_price=parse_decimal(form_value(form, "trigger_price") or 0, "trigger_price"),
        market_protection=parse_market_protection(form), tag=tag,
        tags=[tag] if tag else [], tick_size=instrument.tick_size,
        lot_size=instrument.lot_size, quantity_unit=instrument.quantity_unit,
        multiplier=instrument.multiplier, freeze_quantity=instrument.freeze_quantity)


def check_order(order: Order, last_price: Decimal | None, *, autoslice: bool = False) -> None:
    """Raise the InputException Kite's pre-validation gives for `order`, if any (§6.1 item 8)."""
    _check_prices(order)
    _check_ticks(order)
    _check_lots(order)
    if not autoslice:
        _check_freeze(order)
    _check_stop(order, last_price)


def _check_prices(order: Order) -> None:
    if order.validity == "TTL" and order.validity_ttl <= 0:
        raise input_error("`validity_ttl` is required for TTL orders.")
    if order.order_type in PRICED_TYPES and order.price <= 0:
        raise input_error(f"Price is required for {order.order_type} orders.")
    if order.order_type in STOP_TYPES and order.trigger_price <= 0:
        raise input_error(f"Trigger price is required for {order.order_type} orders.")
    if order.order_type in PROTECTED_TYPES and order.market_protection == 0:
        raise input_error(PROTECTION_MESSAGE)


def _check_ticks(order: Order) -> None:
    for value in (order.price, order.trigger_price):
        if value % order.tick_size:
            raise input_error(f"Tick size for this script is {order.tick_size}. Kindly enter "
                              "price in the multiple of tick size for this script.")


def _check_lots(order: Order) -> None:
    if order.quantity % order.quantity_unit:
        raise input_error(f"Quantity should be a multiple of the lot size {order.lot_size}.")


def _check_freeze(order: Order) -> None:
    # The freeze quantity is the largest quantity allowed (inclusive; §7 leaves it open).
    freeze = order.freeze_quantity
    if freeze is not None and order.quantity > freeze:
        lot = order.quantity_unit
        raise input_error(FREEZE_MESSAGE.format(quantity=order.quantity,
                                                lots=order.quantity // lot, freeze=freeze,
                                                freeze_lots=freeze // lot))


def _check_stop(order: Order, last_price: Decimal | None) -> None:
    if order.order_type not in STOP_TYPES or order.triggered:
        return
    buy = order.transaction_type == "BUY"
    if order.order_type == "SL" and (order.price < order.trigger_price if buy
                                     else order.price > order.trigger_price):
        raise input_error("Trigger price must be at or below the price for stoploss buy orders "
                          "and at or above it for sell orders.")
    if last_price is not None and (order.trigger_price <= last_price if buy
                                   else order.trigger_price >= last_price):
        side = "higher" if buy else "lower"
        raise input_error(f"Trigger price for stoploss {order.transaction_type.lower()} orders "
                          f"should be {side} than the last traded price.")


def slice_quantities(order: Order) -> list[int]:
    """Return the child quantities an autoslice order is split into (§1.2)."""
    freeze = order.freeze_quantity
    if freeze is None or order.quantity <= freeze:
        return [order.quantity]
    per_slice = freeze // order.quantity_unit * order.quantity_unit
    full, rest = divmod(order.quantity, per_slice)
    slices = [per_slice] * full + ([rest] if rest else [])
    if len(slices) > MAX_AUTOSLICES:
        # Kite's text for this case is unverified.
        raise input_error(f"The order quantity {order.quantity} needs {len(slices)} slices; "
                          f"autoslice allows at most {MAX_AUTOSLICES}.")
    return slices


def marketable(order: Order, last_price: Decimal) -> bool:
    """Return whether the order can trade at `last_price` (limit, or the protection band)."""
    limit = order.price if order.order_type in PRICED_TYPES else order.protection_limit
    if limit is None:
        return True
    return last_price <= limit if order.transaction_type == "BUY" else last_price >= limit


def triggered_by(order: Order, last_price: Decimal) -> bool:
    if order.transaction_type == "BUY":
        return last_price >= order.trigger_price
    return last_price <= order.trigger_price
