"""The whole fake: market, sessions, order book, faults, limits, postbacks and the state file."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.kite.book import FILL_MODES, OrderBook
from tests.fakes.kite.config import FakeKiteConfig
from tests.fakes.kite.faults import FAULT_ENDPOINTS, FAULTS, PendingFault, RateLimiter
from tests.fakes.kite.gtt import GttBook
from tests.fakes.kite.instruments import EXCHANGES
from tests.fakes.kite.market import Market
from tests.fakes.kite.orders import Order
from tests.fakes.kite.persistence import read_state, to_state, write_state
from tests.fakes.kite.positions import positions_payload
from tests.fakes.kite.sessions import Sessions, user_fields
from tests.fakes.kite.validation import draft_order
from tests.fakes.kite.wire import (
    IST,
    KiteError,
    input_error,
    kite_time,
    now_ist,
    parse_decimal,
    parse_int,
)

log = logging.getLogger("fake_kite")


class FakeKite:
    """The fake's state: market, sessions, order book, faults, limits and postbacks.

    Every method runs on the server's event loop; in-process tests call the control methods
    from that same loop (the one `running_fake_kite` was entered on).
    """

    def __init__(self, config: FakeKiteConfig, clock: Callable[[], datetime] = now_ist):
        self.config = config
        self._clock = clock
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._closing = asyncio.Event()
        self._fresh()
        if config.state_file is not None and config.state_file.exists():
            self._load(config.state_file)

    def _fresh(self) -> None:
        today = self.config.today or self._clock().astimezone(IST).date()
        self.market = Market(self.config, today, self._now())
        self.sessions = Sessions(self.config)
        self.book = OrderBook(self.config, self.market, self._clock, self._order_event)
        self.gtt = GttBook(self.market, self.book, self._clock, self.config.user_id)
        self.faults: list[PendingFault] = []
        self.limiter = RateLimiter(self.config.enforce_rate_limits)
        self.calls: Counter[str] = Counter()
        self.postback_url = self.config.postback_url
        self.postbacks: Counter[str] = Counter()

    def _now(self) -> str:
        return kite_time(self._clock())

    # ---- API operations (called by the HTTP handlers)

    def login(self, form: Mapping[str, Any]) -> dict[str, Any]:
        """Exchange a request token for a session, answered like generate_session.json."""
        try:
            token = self.sessions.exchange(form)
        finally:
            self.save()
        return {**user_fields(self.config), "api_key": self.config.api_key,
                "access_token": token, "public_token": secrets.token_hex(16),
                "enctoken": secrets.token_hex(24), "refresh_token": "", "silo": "",
                "login_time": self._now()}

    def logout(self, query: Mapping[str, str]) -> bool:
        """Invalidate the access token named in the query (§1.1)."""
        if query.get("api_key") != self.config.api_key:
            raise KiteError(403, "TokenException", "Invalid `api_key`.")
        self.sessions.valid.discard(query.get("access_token", ""))
        self.save()
        return True

    def profile(self) -> dict[str, Any]:
        return user_fields(self.config)

    def margins(self, segment: str | None) -> dict[str, Any]:
        if segment is not None:
            return self.book.margins(segment)
        return {name: self.book.margins(name) for name in self.book.cash}

    def place(self, variety: str, form: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self.book.place(variety, form)
        finally:
            self.save()

    def modify(self, order_id: str, form: Mapping[str, Any]) -> dict[str, Any]:
        # The variety in the path is not checked against the order's (unverified in Kite).
        try:
            return self.book.modify(order_id, form)
        finally:
            self.save()

    def cancel(self, order_id: str) -> dict[str, Any]:
        try:
            return self.book.cancel(order_id)
        finally:
            self.save()

    def place_gtt(self, form: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self.gtt.place(form)
        finally:
            self.save()

    def modify_gtt(self, trigger_id: str, form: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self.gtt.modify(parse_int(trigger_id, "trigger_id"), form)
        finally:
            self.save()

    def delete_gtt(self, trigger_id: str) -> dict[str, Any]:
        try:
            return self.gtt.delete(parse_int(trigger_id, "trigger_id"))
        finally:
            self.save()

    def get_gtt(self, trigger_id: str) -> dict[str, Any]:
        return self.gtt.get(parse_int(trigger_id, "trigger_id")).to_json()

    def gtts(self) -> list[dict[str, Any]]:
        return self.gtt.all()

    def orders(self) -> list[dict[str, Any]]:
        return [order.to_json() for order in self.book.orders.values()]

    def order_history(self, order_id: str) -> list[dict[str, Any]]:
        return list(self.book.get(order_id).history)

    def order_trades(self, order_id: str) -> list[dict[str, Any]]:
        return self.book.order_trades(order_id)

    def trades(self) -> list[dict[str, Any]]:
        return [trade.to_json() for trade in self.book.trades]

    def positions(self) -> dict[str, list[dict[str, Any]]]:
        return positions_payload(self.book.trades, self.market)

    def instruments_csv(self, exchange: str | None) -> str:
        if exchange is not None and exchange not in EXCHANGES:
            raise input_error("Invalid `exchange`.")
        return self.market.csv(exchange)

    def quote(self, keys: list[str], kind: str) -> dict[str, Any]:
        return self.market.quote(keys, kind, self._now())

    # ---- gateway behaviour

    def take_fault(self, endpoint: str) -> str | None:
        """Return the fault to inject into this call, if one is pending for its endpoint."""
        for pending in self.faults:
            if pending.endpoint in (endpoint, "any"):
                pending.remaining -= 1
                if pending.remaining <= 0:
                    self.faults.remove(pending)
                return pending.fault
        return None

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up when the server shuts down."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def close(self) -> None:
        self._closing.set()

    # ---- test controls

    def set_price(self, symbol: str, price: Decimal | str, exchange: str | None = None) -> None:
        """Move an instrument's last price; resting orders that now cross fill."""
        instrument = self.market.resolve(symbol, exchange)
        self.market.set_price(instrument, parse_decimal(price, "price"), self._now())
        self.book.on_price(instrument.key)
        self.gtt.on_price(instrument.key)
        self.save()

    def expire_day_orders(self, exchange: str | None = None) -> list[str]:
        """The session's end: resting DAY orders (SL orders, a GTT's unfilled LIMIT) lapse."""
        try:
            return self.book.expire_day_orders(exchange)
        finally:
            self.save()

    def set_fill_mode(self, mode: str, fraction: Decimal | str | None = None) -> None:
        """Choose how new orders fill: `immediate`, `rest` or `partial` (with a fraction)."""
        if mode not in FILL_MODES:
            raise input_error(f"mode must be one of {sorted(FILL_MODES)}")
        if fraction is not None:
            value = parse_decimal(fraction, "fraction")
            if not 0 < value < 1:
                raise input_error("fraction must be between 0 and 1")
            self.book.fill_fraction = value
        self.book.fill_mode = mode

    def add_fault(self, endpoint: str, fault: str, count: int = 1) -> None:
        """Inject `fault` into the next `count` calls of `endpoint` (or of `any`)."""
        if endpoint not in FAULT_ENDPOINTS or fault not in FAULTS or count < 1:
            raise input_error(f"endpoint must be one of {sorted(FAULT_ENDPOINTS)}, fault one "
                              f"of {sorted(FAULTS)}, count at least 1")
        self.faults.append(PendingFault(endpoint, fault, count))

    def reject_next_for_margin(self, count: int) -> None:
        """Accept the next `count` orders, then REJECT them in RMS (§3.3)."""
        self.book.rms_reject_next = count

    def fail_next_with_margin_error(self, count: int) -> None:
        """Refuse the next `count` placements with HTTP 400 MarginException."""
        self.book.margin_error_next = count

    def expire_token(self) -> None:
        """Invalidate every access token now, as the morning flush does (§1.1)."""
        self.sessions.valid.clear()
        self.save()

    def register_request_token(self, request_token: str | None = None) -> str:
        """Allow one login with `request_token` (a new random one if not given)."""
        request_token = request_token or secrets.token_hex(16)
        self.sessions.request_tokens.add(request_token)
        self.save()
        return request_token

    def enforce_rate_limits(self, enforce: bool) -> None:
        self.limiter.set_enforced(enforce)

    def fill(self, order_id: str, quantity: int | None = None,
             price: Decimal | str | None = None) -> dict[str, Any]:
        """Fill part or all of a resting order; return the order."""
        try:
            value = None if price is None else parse_decimal(price, "price")
            return self.book.fill(order_id, quantity, value).to_json()
        finally:
            self.save()

    def square_off(self, tradingsymbol: str, price: Decimal | str | None = None,
                   exchange: str | None = None) -> list[dict[str, Any]]:
        """Close a contract's whole net position as the broker does at its square-off: one
        untagged MARKET order per product, filled at `price` (the last price if not given).
        Positions and the trade book show it; return the orders."""
        instrument = self.market.resolve(tradingsymbol, exchange)
        value = (self.market.last_price(instrument.key) if price is None
                 else parse_decimal(price, "price"))
        if value is None or value <= 0:
            raise input_error("square-off needs a price (no last price for the contract)")
        orders = []
        try:
            for row in positions_payload(self.book.trades, self.market)["net"]:
                if (row["tradingsymbol"], row["exchange"]) != (
                        instrument.tradingsymbol, instrument.exchange) or not row["quantity"]:
                    continue
                form = {"exchange": row["exchange"], "tradingsymbol": row["tradingsymbol"],
                        "transaction_type": "SELL" if row["quantity"] > 0 else "BUY",
                        "quantity": str(abs(row["quantity"])), "product": row["product"],
                        "order_type": "MARKET", "market_protection": "-1"}
                draft = draft_order("regular", form, self.market, self.config.user_id)
                orders.append(self.book.square_off(draft, value).to_json())
        finally:
            self.save()
        return orders

    def set_today(self, day: date) -> None:
        """List the contracts of another day."""
        self.market.set_today(day, self._now())

    def set_cash(self, segment: str, cash: Decimal | str) -> None:
        if segment not in self.book.cash:
            raise input_error("segment must be equity or commodity")
        self.book.cash[segment] = parse_decimal(cash, "cash")

    def set_postback_url(self, url: str | None) -> None:
        self.postback_url = url

    def reset(self) -> None:
        """Forget everything: the state the fake started with, from its config."""
        self._fresh()
        self.save()

    def snapshot(self) -> dict[str, Any]:
        """Return what tests inspect: orders with history, trades, positions, tokens, limits."""
        return {
            "orders": [{**order.to_json(), "history": order.history}
                       for order in self.book.orders.values()],
            "trades": self.trades(), "positions": self.positions(),
            "tokens": {"valid": sorted(self.sessions.valid),
                       "request_tokens": sorted(self.sessions.request_tokens)},
            "token_valid": bool(self.sessions.valid),
            "rate_limits": {"enforced": self.limiter.enforced,
                            "violations": dict(self.limiter.violations),
                            "total_violations": sum(self.limiter.violations.values())},
            "fill_mode": {"mode": self.book.fill_mode, "fraction": str(self.book.fill_fraction)},
            "faults": [to_state(pending) for pending in self.faults],
            "rms_reject_next": self.book.rms_reject_next,
            "margin_error_next": self.book.margin_error_next,
            "prices": {key: str(state.last) for key, state in self.market.prices.items()},
            "today": self.market.today.isoformat(), "calls": dict(self.calls),
            "gtts": self.gtt.all(),
            "postbacks": {"url": self.postback_url, **self.postbacks},
        }

    # ---- postbacks (§3.4)

    def _order_event(self, order: Order, status: str) -> None:
        if self.postback_url is not None:
            self._outbox.put_nowait(self._postback_payload(order, status))

    def _postback_payload(self, order: Order, status: str) -> dict[str, Any]:
        body = order.to_json()
        checksum = hashlib.sha256(
            (order.order_id + body["order_timestamp"] + self.config.api_secret).encode())
        return {"user_id": self.config.user_id, "app_id": self.config.app_id,
                "unfilled_quantity": order.quantity - order.filled_quantity,
                "checksum": checksum.hexdigest(), **body, "status": status}

    async def deliver_postbacks(self, session: aiohttp.ClientSession) -> None:
        """POST queued order updates, in order, until cancelled."""
        while True:
            payload = await self._outbox.get()
            await self._post_one(session, payload)

    async def _post_one(self, session: aiohttp.ClientSession, payload: dict[str, Any]) -> None:
        if self.postback_url is None:
            return
        timeout = aiohttp.ClientTimeout(total=self.config.postback_timeout_s)
        try:
            async with session.post(self.postback_url, json=payload, timeout=timeout) as answer:
                self.postbacks["sent" if answer.status < 400 else "failed"] += 1
        except (aiohttp.ClientError, TimeoutError) as error:
            self.postbacks["failed"] += 1
            log.warning("postback to %s failed: %r", self.postback_url, error)
        except Exception:  # a failed postback must never break the fake
            self.postbacks["failed"] += 1
            log.exception("postback to %s failed", self.postback_url)

    # ---- persistence

    def save(self) -> None:
        """Write the book to the state file (if any), atomically."""
        path = self.config.state_file
        if path is None:
            return
        write_state(path, self.book, self.sessions, self.market, self.gtt)

    def _load(self, path: Path) -> None:
        read_state(path, self.book, self.sessions, self.market, self.config.access_token,
                   self.gtt)
