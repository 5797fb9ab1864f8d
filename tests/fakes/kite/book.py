"""The order book: placement, autoslice, RMS and margin refusals, fills, modify and cancel."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from tests.fakes.kite.config import FakeKiteConfig
from tests.fakes.kite.market import Market
from tests.fakes.kite.orders import (
    PROTECTED_TYPES,
    RESTING_STATUSES,
    STOP_TYPES,
    Order,
    Trade,
)
from tests.fakes.kite.positions import positions_payload, segment_margins, segment_of
from tests.fakes.kite.validation import (
    MAX_MODIFICATIONS,
    ORDER_TYPES,
    VALIDITIES,
    check_order,
    draft_order,
    marketable,
    parse_market_protection,
    slice_quantities,
    triggered_by,
)
from tests.fakes.kite.wire import (
    KiteError,
    form_choice,
    form_value,
    input_error,
    kite_time,
    money_text,
    parse_decimal,
    parse_int,
    to_tick,
)

# Kite's 19-digit order ids decode as Twitter-style snowflakes: 1953341975595868160 >> 22 is
# 2025-08-07 11:56:32.978 IST, the fixture order's own timestamp. Ours are made the same way.
SNOWFLAKE_EPOCH_MS = 1_288_834_974_657
RMS_MESSAGE = ("Insufficient funds. Required margin is {required} but available margin is "
               "{available}. Check the orderbook for open orders.")
RMS_RAW = ("RMS:Margin Exceeds,Required:{required}, Available:{available} for entity "
           "account-{user} across exchange across segment across product ")
FILL_MODES = frozenset({"immediate", "rest", "partial"})
DAY_END_MESSAGE = "Order cancelled at the end of the trading session."


class OrderBook:
    """Orders, fills and the controls that steer them (fill mode, RMS and margin errors)."""

    def __init__(self, config: FakeKiteConfig, market: Market, clock: Callable[[], datetime],
                 notify: Callable[[Order, str], None]):
        self._config = config
        self._market = market
        self._clock = clock
        self._notify = notify
        self.orders: dict[str, Order] = {}
        self.trades: list[Trade] = []
        self.last_order_id = 0
        self.trade_seq = 0
        self.exchange_seq = 0
        self.fill_mode = "immediate"
        self.fill_fraction = Decimal("0.5")
        self.rms_reject_next = 0
        self.margin_error_next = 0
        self.cash = {segment: Decimal(str(cash))
                     for segment, cash in config.available_cash_inr.items()}

    # ---- reads

    def get(self, order_id: str) -> Order:
        order = self.orders.get(order_id)
        if order is None:
            # Type and text for an unknown id are unverified.
            raise KiteError(400, "OrderException", "Couldn't find that `order_id`.")
        return order

    def order_trades(self, order_id: str) -> list[dict[str, Any]]:
        self.get(order_id)
        return [trade.to_json() for trade in self.trades if trade.order_id == order_id]

    def margins(self, segment: str) -> dict[str, Any]:
        if segment not in self.cash:
            raise input_error("Invalid segment.")
        return segment_margins(self.cash[segment], self.used_margin(segment))

    def used_margin(self, segment: str) -> Decimal:
        """Return the margin blocked by open positions of the segment (notional × rate)."""
        used = Decimal(0)
        for row in positions_payload(self.trades, self._market)["net"]:
            if segment_of(row["exchange"]) == segment:
                notional = abs(row["quantity"]) * Decimal(str(row["last_price"]))
                used += notional * row["multiplier"] * self._config.margin_rate
        return used

    # ---- placement

    def place(self, variety: str, form: Mapping[str, Any], *,
              gtt_id: int | None = None) -> dict[str, Any]:
        """Place an order (or an autoslice parent); return the `data` of the answer.
        `gtt_id` names the GTT that placed it, so even its first history entry and
        postback carry the GTT's meta."""
        draft = draft_order(variety, form, self._market, self._config.user_id)
        draft.gtt_id = gtt_id
        autoslice = form_value(form, "autoslice") == "true"
        check_order(draft, self._market.last_price(draft.key), autoslice=autoslice)
        if autoslice:
            return self._place_slices(draft)
        self._take_margin_error(draft)
        return {"order_id": self._accept(draft).order_id}

    def _place_slices(self, draft: Order) -> dict[str, Any]:
        quantities = slice_quantities(draft)
        parent = self._next_order_id()  # an id only; the parent never enters the book
        system_tags = ["autoslice", f"autoslice:{parent}"]
        children: list[dict[str, Any]] = []
        for quantity in quantities:
            child = replace(draft, quantity=quantity, pending_quantity=quantity,
                            tags=draft.tags + system_tags, history=[])
            try:
                self._take_margin_error(child)
            except KiteError as error:
                children.append({"error": {"code": error.status, "error_type": error.error_type,
                                           "message": error.message, "data": None}})
                continue
            children.append({"order_id": self._accept(child).order_id})
        return {"order_id": parent, "children": children}

    def _take_margin_error(self, order: Order) -> None:
        if self.margin_error_next <= 0:
            return
        self.margin_error_next -= 1
        required, available = self._margin_numbers(order)
        raise KiteError(400, "MarginException",
                        f"Insufficient funds. Required margin is {money_text(required)} but "
                        f"available margin is {money_text(available)}.")

    def _margin_numbers(self, order: Order) -> tuple[Decimal, Decimal]:
        price = order.price or self._market.last_price(order.key) or Decimal(0)
        required = price * order.quantity * order.multiplier * self._config.margin_rate
        segment = segment_of(order.exchange)
        return required, self.cash.get(segment, Decimal(0)) - self.used_margin(segment)

    def _accept(self, order: Order) -> Order:
        now = self._now()
        order.order_id = self._next_order_id()
        order.order_timestamp = now
        order.guid = secrets.token_hex(8)
        if order.order_type in PROTECTED_TYPES:
            percent = self._protection_percent(order)
            order.tags = order.tags + ["mktp", f"mktp:{percent:.2f}"]  # §3.2 system tags
        self.orders[order.order_id] = order
        order.record("PUT ORDER REQ RECEIVED")
        order.record("VALIDATION PENDING")
        if self.rms_reject_next > 0:
            self.rms_reject_next -= 1
            self._reject_for_margin(order)
            return order
        order.record("OPEN PENDING")
        self._open(order, now)
        return order

    def _reject_for_margin(self, order: Order) -> None:
        # §3.3: accepted, then REJECTED by RMS before reaching the exchange (no exchange id).
        required, available = (money_text(value) for value in self._margin_numbers(order))
        order.status_message = RMS_MESSAGE.format(required=required, available=available)
        order.status_message_raw = RMS_RAW.format(required=required, available=available,
                                                  user=self._config.user_id)
        order.pending_quantity = 0  # as in the fixture's REJECTED order
        order.exchange_update_timestamp = self._now()
        order.record("REJECTED")
        self._notify(order, "REJECTED")

    def _open(self, order: Order, now: str) -> None:
        self.exchange_seq += 1
        order.exchange_order_id = str(1_300_000_000_000_000 + self.exchange_seq)
        order.exchange_timestamp = order.exchange_update_timestamp = now
        if order.order_type == "MARKET":
            self._arm_protection(order)
        order.record(self._resting_status(order))
        self._evaluate(order, at_placement=True)

    def _resting_status(self, order: Order) -> str:
        return "TRIGGER PENDING" if order.order_type in STOP_TYPES and not order.triggered \
            else "OPEN"

    def _protection_percent(self, order: Order) -> Decimal:
        if order.market_protection == -1:
            return self._config.auto_market_protection_percent
        return order.market_protection

    def _arm_protection(self, order: Order) -> None:
        """Fix the band edge a MARKET order may fill up to: LTP ± protection (§6.2 item 4)."""
        last = self._market.last_price(order.key)
        if last is None:
            order.protection_limit = None
            return
        step = last * self._protection_percent(order) / 100
        if order.transaction_type == "BUY":
            order.protection_limit = to_tick(last + step, order.tick_size, ROUND_FLOOR)
        else:
            order.protection_limit = to_tick(last - step, order.tick_size, ROUND_CEILING)

    # ---- fills

    def on_price(self, key: str) -> None:
        """Re-evaluate the resting orders of an instrument after its price moved."""
        for order in list(self.orders.values()):
            if order.key == key and order.status in RESTING_STATUSES:
                self._evaluate(order, at_placement=False)

    def _evaluate(self, order: Order, *, at_placement: bool) -> None:
        last = self._market.last_price(order.key)
        if last is None:
            return
        if order.status == "TRIGGER PENDING":
            if not triggered_by(order, last):
                return
            self._trigger(order)
        if order.status != "OPEN" or not marketable(order, last):
            return
        quantity = self._fill_quantity(order, at_placement)
        if quantity > 0:
            self._fill(order, quantity, last)

    def _trigger(self, order: Order) -> None:
        order.triggered = True
        if order.order_type == "SL-M":
            self._arm_protection(order)
        order.record("OPEN")

    def _fill_quantity(self, order: Order, at_placement: bool) -> int:
        """Return how much to fill now: a later price move or modify fills all that is left."""
        remaining = order.quantity - order.filled_quantity
        if not at_placement or self.fill_mode == "immediate":
            return remaining
        if self.fill_mode == "rest":
            return 0
        unit = order.quantity_unit
        chunk = int(order.quantity * self.fill_fraction) // unit * unit
        # Strictly between 0 and the quantity, so the order stays OPEN; one lot cannot split.
        return min(max(chunk, unit), order.quantity - unit) if order.quantity > unit else 0

    def fill(self, order_id: str, quantity: int | None, price: Decimal | None) -> Order:
        """Fill part or all of a resting order (a test control), at `price` or the LTP."""
        order = self.get(order_id)
        if order.status != "OPEN":
            raise KiteError(409, "InputException", f"Order {order_id} is {order.status}.")
        remaining = order.quantity - order.filled_quantity
        quantity = remaining if quantity is None else quantity
        price = price if price is not None else self._market.last_price(order.key)
        if not 0 < quantity <= remaining or quantity % order.quantity_unit:
            raise input_error(f"Fill quantity must be lots up to the {remaining} left.")
        if price is None or price <= 0 or price % order.tick_size:
            raise input_error("Fill price must be a positive multiple of the tick.")
        self._fill(order, quantity, price)
        return order

    def _fill(self, order: Order, quantity: int, price: Decimal) -> None:
        now = self._now()
        self.trade_seq += 1
        self.trades.append(Trade(str(50_000_000 + self.trade_seq), order.order_id,
                                 order.exchange_order_id or "", order.exchange,
                                 order.tradingsymbol, order.instrument_token, order.product,
                                 order.transaction_type, quantity, price, order.multiplier, now))
        self._market.add_volume(order.key, quantity)
        order.filled_quantity += quantity
        order.fill_value += price * quantity
        order.pending_quantity = order.quantity - order.filled_quantity
        order.exchange_update_timestamp = now
        done = order.pending_quantity == 0
        order.record("COMPLETE" if done else "OPEN")
        self._notify(order, "COMPLETE" if done else "UPDATE")  # §3.4: partial fills are UPDATE

    def square_off(self, draft: Order, price: Decimal) -> Order:
        """Book the broker's own closing order (its RMS square-off): accepted past every
        refusal control, and filled at once, whole, at `price`."""
        mode, rms, self.fill_mode, self.rms_reject_next = (
            self.fill_mode, self.rms_reject_next, "rest", 0)
        try:
            order = self._accept(draft)
        finally:
            self.fill_mode, self.rms_reject_next = mode, rms
        self._fill(order, order.quantity, price)
        return order

    # ---- modify and cancel

    def modify(self, order_id: str, form: Mapping[str, Any]) -> dict[str, Any]:
        """Modify price, type, quantity, trigger, validity or protection of a resting order."""
        order = self.get(order_id)
        self._check_changeable(order, "modified")
        if order.modifications >= MAX_MODIFICATIONS:
            raise input_error("Maximum allowed order modifications exceeded.")
        changed = self._modified_copy(order, form)
        check_order(changed, self._market.last_price(order.key))
        self._apply_modification(order, changed)
        return {"order_id": order.order_id}

    def _modified_copy(self, order: Order, form: Mapping[str, Any]) -> Order:
        changes: dict[str, Any] = {"history": []}
        for name in ("price", "trigger_price"):
            if form_value(form, name) is not None:
                changes[name] = parse_decimal(form_value(form, name), name)
        for name in ("quantity", "disclosed_quantity"):
            if form_value(form, name) is not None:
                changes[name] = parse_int(form_value(form, name), name)
        if form_value(form, "order_type") is not None:
            changes["order_type"] = form_choice(form, "order_type", ORDER_TYPES)
        if form_value(form, "validity") is not None:
            changes["validity"] = form_choice(form, "validity", VALIDITIES)
        if form_value(form, "market_protection") is not None:
            changes["market_protection"] = parse_market_protection(form)
        changed = replace(order, **changes)
        if changed.quantity <= order.filled_quantity:
            raise input_error("Quantity must be more than the filled quantity.")
        return changed

    def _apply_modification(self, order: Order, changed: Order) -> None:
        now = self._now()
        # order_info.json: the MODIFY entries carry the modify time as order_timestamp, and the
        # new terms only show from the OPEN entry that follows MODIFIED.
        order.order_timestamp = now
        order.record("MODIFY VALIDATION PENDING")
        order.record("MODIFY PENDING")
        order.exchange_timestamp = order.exchange_update_timestamp = now
        order.record("MODIFIED")
        for name in ("price", "trigger_price", "quantity", "disclosed_quantity", "order_type",
                     "validity", "market_protection"):
            setattr(order, name, getattr(changed, name))
        order.pending_quantity = order.quantity - order.filled_quantity
        order.modifications += 1
        if order.order_type == "MARKET" or (order.order_type == "SL-M" and order.triggered):
            self._arm_protection(order)
        order.record(self._resting_status(order))
        self._notify(order, "UPDATE")
        self._evaluate(order, at_placement=False)

    def cancel(self, order_id: str) -> dict[str, Any]:
        """Cancel a resting order; what was filled stays filled (§3.3)."""
        order = self.get(order_id)
        self._check_changeable(order, "cancelled")
        order.record("CANCEL PENDING")
        order.cancelled_quantity = order.quantity - order.filled_quantity
        order.exchange_update_timestamp = self._now()
        # pending_quantity is left as it was: the fixtures' CANCELLED orders keep it (§3.2).
        order.record("CANCELLED")
        self._notify(order, "CANCELLED")
        return {"order_id": order.order_id}

    def expire_day_orders(self, exchange: str | None = None) -> list[str]:
        """End the session: every resting DAY order (of `exchange`, or all) is cancelled,
        as Zerodha does at the day's close; return their ids."""
        expired = []
        for order in self.orders.values():
            if (order.status in RESTING_STATUSES and order.validity == "DAY"
                    and exchange in (None, order.exchange)):
                order.cancelled_quantity = order.quantity - order.filled_quantity
                order.status_message = DAY_END_MESSAGE
                order.exchange_update_timestamp = self._now()
                order.record("CANCELLED")
                self._notify(order, "CANCELLED")
                expired.append(order.order_id)
        return expired

    @staticmethod
    def _check_changeable(order: Order, verb: str) -> None:
        # §6.1 item 7: a 400-class error; type and text unverified.
        if order.is_final:
            raise input_error(f"Order cannot be {verb} as it is already {order.status}.")

    # ---- ids and time

    def _next_order_id(self) -> str:
        moment_ms = int(self._clock().timestamp() * 1000)
        self.last_order_id = max(self.last_order_id + 1,
                                 (moment_ms - SNOWFLAKE_EPOCH_MS) << 22)
        return str(self.last_order_id)

    def _now(self) -> str:
        return kite_time(self._clock())
