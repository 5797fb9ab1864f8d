"""A fake Kite Connect v3 HTTP server, driven in tests by the real `kiteconnect` client.

It follows /work/shared/docs/KITE.md (cited as §n): the routes, form encoding and parsing of
pykiteconnect 5.2.2 (§1, §2.3), the envelope and error types (§2), order states and fields (§3),
limits (§4) and the fake-server recommendations (§6.1). Where KITE.md marks a detail as
unverified, the choice made here says "unverified" in a comment.

In-process:   async with running_fake_kite(FakeKiteConfig()) as fake: ...  (fake.url, fake.state)
Own process:  python -m tests.fakes.kite_server --host 127.0.0.1 --port P --api-key K \\
                  --api-secret S --access-token T [--today YYYY-MM-DD] [--state-file PATH]
              or FakeKiteProcess(...).start() from a synchronous test.
Test controls: JSON under /_test/ (no auth), and the same as methods of `FakeKite`.

Rules of our own (simple, documented, not Kite's): NFO futures expire on the last Thursday of
the month, MCX futures on the 5th; the dump lists, per series, the first three monthly contracts
whose expiry is on or after `today` (so an expired current-month contract is not listed). There is
no overnight carry: `net` and `day` positions are the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger("fake_kite")

IST = timezone(timedelta(hours=5, minutes=30), "IST")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
REPO = Path(__file__).resolve().parents[2]
FIXTURE_INSTRUMENTS = REPO.parent / "shared" / "kite_fixtures" / "instruments_all.csv"

# §1.4: the dump's columns, in order.
CSV_COLUMNS = ("instrument_token", "exchange_token", "tradingsymbol", "name", "last_price",
               "expiry", "strike", "tick_size", "lot_size", "instrument_type", "segment",
               "exchange")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# Kite's segment ids, the low byte of an instrument_token (as in the client's KiteTicker).
SEGMENT_IDS = {"NSE": 1, "NFO": 2, "CDS": 3, "BSE": 4, "BFO": 5, "BCD": 6, "MCX": 7}

VARIETIES = frozenset({"regular", "amo", "co", "iceberg", "auction"})
EXCHANGES = frozenset(SEGMENT_IDS)
PRODUCTS = frozenset({"CNC", "NRML", "MIS", "MTF", "CO"})
ORDER_TYPES = frozenset({"MARKET", "LIMIT", "SL", "SL-M"})
VALIDITIES = frozenset({"DAY", "IOC", "TTL"})
SIDES = frozenset({"BUY", "SELL"})
FINAL_STATUSES = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})
RESTING_STATUSES = frozenset({"OPEN", "TRIGGER PENDING"})
PRICED_TYPES = frozenset({"LIMIT", "SL"})
STOP_TYPES = frozenset({"SL", "SL-M"})
PROTECTED_TYPES = frozenset({"MARKET", "SL-M"})
LOT_MULTIPLE_EXCHANGES = frozenset({"NFO", "BFO"})  # quantity in units, a multiple of lot_size
LOT_QUANTITY_EXCHANGES = frozenset({"MCX"})  # quantity in lots; multiplier = lot_size (§4.4)
MAX_MODIFICATIONS = 25  # §1.2
MAX_AUTOSLICES = 10  # §1.2
TAG_PATTERN = re.compile(r"[A-Za-z0-9]{1,20}")  # §1.2: the only safe form
# Kite's 19-digit order ids decode as Twitter-style snowflakes: 1953341975595868160 >> 22 is
# 2025-08-07 11:56:32.978 IST, the fixture order's own timestamp. Ours are made the same way.
SNOWFLAKE_EPOCH_MS = 1_288_834_974_657

TOKEN_MESSAGE = "Incorrect `api_key` or `access_token`."
PROTECTION_MESSAGE = ("Market orders without market protection are not allowed via API. "
                      "Please set market protection or use a Limit order.")
FREEZE_MESSAGE = ("The order quantity {quantity} ({lots} lots) is higher than the maximum quantity "
                  "of {freeze} ({freeze_lots} lots) allowed by the exchanges. Please reduce the "
                  "order quantity or use iceberg orders.")
RMS_MESSAGE = ("Insufficient funds. Required margin is {required} but available margin is "
               "{available}. Check the orderbook for open orders.")
RMS_RAW = ("RMS:Margin Exceeds,Required:{required}, Available:{available} for entity "
           "account-{user} across exchange across segment across product ")

FILL_MODES = frozenset({"immediate", "rest", "partial"})
FAULTS = frozenset({"rate_limited", "html_502", "html_429", "network_503", "timeout", "drop",
                    "token_expired"})
FAULT_ENDPOINTS = frozenset({"place", "modify", "cancel", "orders", "order_history",
                             "order_trades", "trades", "positions", "quote", "margins",
                             "profile", "instruments", "session", "any"})
ANSWERING_FAULTS = frozenset({"rate_limited", "html_502", "html_429", "network_503",
                              "token_expired"})
ORDER_ENDPOINTS = frozenset({"place", "modify", "cancel"})
# §4.1, as token buckets (capacity, period): a burst of `capacity`, refilled over `period`.
RATE_LIMITS: Mapping[str, tuple[tuple[int, float], ...]] = {
    "orders": ((10, 1.0), (400, 60.0), (5000, 86_400.0)),
    "quote": ((1, 1.0),),
    "other": ((10, 1.0),),
}
SHUTDOWN_TIMEOUT_S = 2.0
LAST_THURSDAY = "last_thursday"
FIFTH_OF_MONTH = "fifth_of_month"


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class FutureSpec:
    """A monthly futures series listed in the fake's instruments dump."""

    name: str
    exchange: str
    segment: str
    lot_size: int
    tick_size: Decimal
    expiry_rule: str  # LAST_THURSDAY or FIFTH_OF_MONTH
    exchange_token_base: int
    freeze_quantity: int | None = None  # max units per order (§4.2); None: no cap


DEFAULT_FUTURES = (
    FutureSpec("BANKNIFTY", "NFO", "NFO-FUT", 30, Decimal("0.05"), LAST_THURSDAY, 910_000, 600),
    FutureSpec("GOLDM", "MCX", "MCX-FUT", 100, Decimal("1.0"), FIFTH_OF_MONTH, 920_000),
    FutureSpec("SILVERM", "MCX", "MCX-FUT", 5, Decimal("1.0"), FIFTH_OF_MONTH, 930_000),
    FutureSpec("COPPER", "MCX", "MCX-FUT", 2500, Decimal("0.05"), FIFTH_OF_MONTH, 940_000),
)


def _default_prices() -> dict[str, Decimal]:
    # Keyed by series name; a tradingsymbol or "EXCH:SYMBOL" key overrides it for one contract.
    return {"BANKNIFTY": Decimal("52000"), "GOLDM": Decimal("72000"),
            "SILVERM": Decimal("88000"), "COPPER": Decimal("850")}


def _default_cash() -> dict[str, Decimal]:
    return {"equity": Decimal("5000000"), "commodity": Decimal("5000000")}


def _default_fixture_csv() -> Path | None:
    return FIXTURE_INSTRUMENTS if FIXTURE_INSTRUMENTS.exists() else None


@dataclass(frozen=True)
class FakeKiteConfig:
    """Everything the fake is started with; controls change the running state, not this."""

    api_key: str = "fake_api_key"
    api_secret: str = "fake_api_secret"
    access_token: str | None = "fake_access_token"  # valid from the start; None: log in first
    user_id: str = "AB1234"
    user_name: str = "Fake Kite"
    app_id: int = 1234
    today: date | None = None  # contracts are listed relative to it; None: today in IST
    futures: tuple[FutureSpec, ...] = DEFAULT_FUTURES
    default_prices: Mapping[str, Decimal] = field(default_factory=_default_prices)
    fixture_instruments_csv: Path | None = field(default_factory=_default_fixture_csv)
    available_cash_inr: Mapping[str, Decimal] = field(default_factory=_default_cash)
    margin_rate: Decimal = Decimal("0.12")  # margin blocked per rupee of notional
    circuit_percent: Decimal = Decimal("10")  # circuit limits: close ± this
    auto_market_protection_percent: Decimal = Decimal("2")  # what market_protection=-1 means
    accept_any_request_token: bool = False
    single_session: bool = True  # a new login kills the older access tokens
    require_kite_version: bool = True  # 400 without `X-Kite-Version: 3` (§6.1 item 2)
    enforce_rate_limits: bool = False
    fault_timeout_s: float = 8.0  # the `timeout` fault; above the client's 7 s default
    postback_url: str | None = None
    postback_timeout_s: float = 2.0
    state_file: Path | None = None


# --------------------------------------------------------------------------- small helpers


class KiteError(Exception):
    """An error answer: HTTP status, Kite `error_type` and message (§2.1)."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def body(self) -> dict[str, Any]:
        """Return the error envelope."""
        return {"status": "error", "message": self.message, "data": None,
                "error_type": self.error_type}


def input_error(message: str) -> KiteError:
    """Return a 400 InputException."""
    return KiteError(400, "InputException", message)


def now_ist() -> datetime:
    """Return the current time in IST."""
    return datetime.now(IST)


def kite_time(moment: datetime) -> str:
    """Return `moment` as Kite prints it: 19-char IST, `YYYY-MM-DD HH:MM:SS`."""
    return moment.astimezone(IST).strftime(TIMESTAMP_FORMAT)


def json_number(value: Decimal) -> int | float:
    """Return `value` as the fixtures print numbers: integral values as ints."""
    return int(value) if value == value.to_integral_value() else float(value)


def to_tick(value: Decimal, tick: Decimal, rounding: str) -> Decimal:
    """Round `value` to a multiple of `tick` in the given direction."""
    return (value / tick).to_integral_value(rounding=rounding) * tick


def money_text(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"


def parse_decimal(text: Any, what: str) -> Decimal:
    """Parse a decimal sent as text, or raise an InputException naming it."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise input_error(f"Invalid `{what}`.") from None
    if not value.is_finite():
        raise input_error(f"Invalid `{what}`.")
    return value


def parse_int(text: Any, what: str) -> int:
    """Parse an integer sent as text, or raise an InputException naming it."""
    try:
        return int(str(text))
    except ValueError:
        raise input_error(f"Invalid `{what}`.") from None


# --------------------------------------------------------------------------- instruments


@dataclass(frozen=True, slots=True)
class Instrument:
    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    last_price: str  # the dump's stale price cell, kept as text
    expiry: date | None
    strike: str
    tick_size: Decimal
    lot_size: int
    instrument_type: str
    segment: str
    exchange: str
    freeze_quantity: int | None = None

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"

    @property
    def multiplier(self) -> int:
        return self.lot_size if self.exchange in LOT_QUANTITY_EXCHANGES else 1

    @property
    def quantity_unit(self) -> int:
        """Return the quantity of one lot in order units (units on NFO/BFO, lots on MCX)."""
        return self.lot_size if self.exchange in LOT_MULTIPLE_EXCHANGES else 1

    def csv_row(self) -> list[str]:
        """Return the dump row; the client needs numeric cells never empty (§1.4)."""
        expiry = self.expiry.isoformat() if self.expiry else ""
        return [str(self.instrument_token), str(self.exchange_token), self.tradingsymbol,
                self.name, self.last_price, expiry, self.strike, repr(float(self.tick_size)),
                str(self.lot_size), self.instrument_type, self.segment, self.exchange]


def last_thursday(year: int, month: int) -> date:
    """Return the last Thursday of the month (our NFO monthly expiry rule)."""
    last = date(year, month, calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - calendar.THURSDAY) % 7)


def fifth_of_month(year: int, month: int) -> date:
    """Return the 5th of the month (our MCX expiry rule; no holiday shifts)."""
    return date(year, month, 5)


EXPIRY_RULES: Mapping[str, Callable[[int, int], date]] = {
    LAST_THURSDAY: last_thursday, FIFTH_OF_MONTH: fifth_of_month}


def listed_expiries(spec: FutureSpec, today: date, count: int = 3) -> list[date]:
    """Return the next `count` monthly expiries on or after `today`."""
    rule = EXPIRY_RULES[spec.expiry_rule]
    start = today.year * 12 + today.month - 1
    if rule(today.year, today.month) < today:
        start += 1
    return [rule(index // 12, index % 12 + 1) for index in range(start, start + count)]


def future_instrument(spec: FutureSpec, expiry: date) -> Instrument:
    """Return the dump row of one monthly contract, e.g. BANKNIFTY26DECFUT."""
    exchange_token = spec.exchange_token_base + (expiry.year % 100) * 100 + expiry.month
    symbol = f"{spec.name}{expiry.year % 100:02d}{MONTHS[expiry.month - 1]}FUT"
    return Instrument(exchange_token * 256 + SEGMENT_IDS[spec.exchange], exchange_token, symbol,
                      spec.name, "0.0", expiry, "0.0", spec.tick_size, spec.lot_size, "FUT",
                      spec.segment, spec.exchange, spec.freeze_quantity)


def read_fixture_instruments(path: Path) -> list[Instrument]:
    """Return the rows of an official instruments fixture CSV."""
    with path.open(newline="") as handle:
        return [Instrument(int(row["instrument_token"]), int(row["exchange_token"]),
                           row["tradingsymbol"], row["name"], row["last_price"],
                           date.fromisoformat(row["expiry"]) if row["expiry"] else None,
                           row["strike"], Decimal(row["tick_size"]), int(row["lot_size"]),
                           row["instrument_type"], row["segment"], row["exchange"])
                for row in csv.DictReader(handle)]


def build_instruments(config: FakeKiteConfig, today: date) -> dict[str, Instrument]:
    """Return the dump for `today`: the fixture rows, then the listed futures."""
    rows = read_fixture_instruments(config.fixture_instruments_csv) \
        if config.fixture_instruments_csv else []
    rows += [future_instrument(spec, expiry)
             for spec in config.futures for expiry in listed_expiries(spec, today)]
    return {row.key: row for row in rows}


def render_instruments_csv(rows: list[Instrument]) -> str:
    """Return the dump as CSV with CRLF line ends, like the fixtures."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(row.csv_row() for row in rows)
    return buffer.getvalue()


# --------------------------------------------------------------------------- market data


@dataclass(slots=True)
class PriceState:
    last: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal  # previous close: the starting price
    volume: int
    last_trade_time: str

    @classmethod
    def starting_at(cls, price: Decimal, at: str) -> PriceState:
        return cls(price, price, price, price, price, 0, at)

    def move(self, price: Decimal, at: str) -> None:
        self.last = price
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.last_trade_time = at


class Market:
    """The instruments dump of `today` and the last price of each instrument."""

    def __init__(self, config: FakeKiteConfig, today: date, at: str):
        self._config = config
        self.today = today
        self.instruments = build_instruments(config, today)
        self.prices: dict[str, PriceState] = {}
        self._seed_prices(at)

    def set_today(self, today: date, at: str) -> None:
        """List the contracts of another day; prices already set are kept."""
        self.today = today
        self.instruments = build_instruments(self._config, today)
        self._seed_prices(at)

    def _seed_prices(self, at: str) -> None:
        for key, instrument in self.instruments.items():
            price = self._default_price(instrument)
            if key not in self.prices and price is not None:
                self.prices[key] = PriceState.starting_at(price, at)

    def _default_price(self, instrument: Instrument) -> Decimal | None:
        table = self._config.default_prices
        for name in (instrument.key, instrument.tradingsymbol, instrument.name):
            if name and name in table:
                return Decimal(str(table[name]))
        return None

    def instrument(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        return self.instruments.get(f"{exchange}:{tradingsymbol}")

    def resolve(self, symbol: str, exchange: str | None = None) -> Instrument:
        """Return the instrument named `EXCH:SYMBOL`, or by a tradingsymbol that is unique."""
        if exchange:
            symbol = f"{exchange}:{symbol}"
        if symbol in self.instruments:
            return self.instruments[symbol]
        found = [row for row in self.instruments.values() if row.tradingsymbol == symbol]
        if len(found) != 1:
            raise input_error(f"Unknown or ambiguous instrument {symbol!r}; use EXCH:SYMBOL.")
        return found[0]

    def last_price(self, key: str) -> Decimal | None:
        state = self.prices.get(key)
        return state.last if state else None

    def set_price(self, instrument: Instrument, price: Decimal, at: str) -> None:
        """Move the last price; a real last price is always on the tick."""
        if price <= 0 or price % instrument.tick_size:
            raise input_error(f"Price {price} is not a positive multiple of the tick "
                              f"{instrument.tick_size} of {instrument.key}.")
        state = self.prices.get(instrument.key)
        if state is None:
            self.prices[instrument.key] = PriceState.starting_at(price, at)
        else:
            state.move(price, at)

    def add_volume(self, key: str, quantity: int) -> None:
        if key in self.prices:
            self.prices[key].volume += quantity

    def csv(self, exchange: str | None) -> str:
        rows = [row for row in self.instruments.values()
                if exchange is None or row.exchange == exchange]
        return render_instruments_csv(rows)

    def quote(self, keys: list[str], kind: str, at: str) -> dict[str, Any]:
        """Return quotes keyed by `EXCH:SYMBOL`; unknown or unpriced ones are dropped (§7)."""
        builders = {"full": self._full_quote, "ltp": _ltp_quote, "ohlc": _ohlc_quote}
        build = builders[kind]
        return {key: build(self.instruments[key], self.prices[key], at)
                for key in keys if key in self.instruments and key in self.prices}

    def _full_quote(self, instrument: Instrument, state: PriceState, at: str) -> dict[str, Any]:
        band = state.close * self._config.circuit_percent / 100
        depth = _depth(instrument, state.last)
        return {
            "instrument_token": instrument.instrument_token, "timestamp": at,
            "last_trade_time": state.last_trade_time, "last_price": json_number(state.last),
            "last_quantity": instrument.quantity_unit,
            "buy_quantity": sum(level["quantity"] for level in depth["buy"]),
            "sell_quantity": sum(level["quantity"] for level in depth["sell"]),
            "volume": state.volume, "average_price": json_number(state.last), "oi": 0,
            "oi_day_high": 0, "oi_day_low": 0,
            "net_change": 0,  # the fixture shows 0 even when last != close
            "lower_circuit_limit": json_number(
                to_tick(state.close - band, instrument.tick_size, ROUND_CEILING)),
            "upper_circuit_limit": json_number(
                to_tick(state.close + band, instrument.tick_size, ROUND_FLOOR)),
            "ohlc": _ohlc(state), "depth": depth,
        }


def _ohlc(state: PriceState) -> dict[str, int | float]:
    return {"open": json_number(state.open), "high": json_number(state.high),
            "low": json_number(state.low), "close": json_number(state.close)}


def _ltp_quote(instrument: Instrument, state: PriceState, at: str) -> dict[str, Any]:
    return {"instrument_token": instrument.instrument_token, "last_price": json_number(state.last)}


def _ohlc_quote(instrument: Instrument, state: PriceState, at: str) -> dict[str, Any]:
    return {**_ltp_quote(instrument, state, at), "ohlc": _ohlc(state)}


def _depth(instrument: Instrument, last: Decimal) -> dict[str, list[dict[str, Any]]]:
    # Five levels a tick apart around the last price: best ask at it, best bid a tick below.
    tick, unit = instrument.tick_size, instrument.quantity_unit

    def level(price: Decimal, n: int) -> dict[str, Any]:
        return {"price": json_number(max(price, Decimal(0))), "quantity": unit * n, "orders": n}

    return {"buy": [level(last - tick * n, n) for n in range(1, 6)],
            "sell": [level(last + tick * (n - 1), n) for n in range(1, 6)]}


# --------------------------------------------------------------------------- orders and trades


@dataclass(slots=True)
class Order:
    order_id: str
    placed_by: str
    variety: str
    exchange: str
    tradingsymbol: str
    instrument_token: int
    transaction_type: str
    product: str
    order_type: str
    validity: str
    validity_ttl: int
    quantity: int
    disclosed_quantity: int
    price: Decimal
    trigger_price: Decimal
    market_protection: Decimal
    tag: str | None
    tags: list[str]
    # Instrument facts the rules need, kept here so an order outlives a dump regeneration.
    tick_size: Decimal
    lot_size: int
    quantity_unit: int
    multiplier: int
    freeze_quantity: int | None
    order_timestamp: str = ""
    guid: str = ""
    status: str = "PUT ORDER REQ RECEIVED"
    status_message: str | None = None
    status_message_raw: str | None = None
    exchange_order_id: str | None = None
    exchange_timestamp: str | None = None
    exchange_update_timestamp: str | None = None
    filled_quantity: int = 0
    pending_quantity: int = 0
    cancelled_quantity: int = 0
    fill_value: Decimal = Decimal(0)
    protection_limit: Decimal | None = None  # MARKET/SL-M: the band edge it may fill up to
    triggered: bool = False
    modifications: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def average_price(self) -> Decimal:
        return self.fill_value / self.filled_quantity if self.filled_quantity else Decimal(0)

    def record(self, status: str) -> None:
        """Enter `status` and append the snapshot `order_history` will show."""
        self.status = status
        self.history.append(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """Return the order object as the order book shows it (§3.2)."""
        body: dict[str, Any] = {
            "account_id": self.placed_by, "placed_by": self.placed_by,
            "order_id": self.order_id, "exchange_order_id": self.exchange_order_id,
            "parent_order_id": None, "status": self.status,
            "status_message": self.status_message, "status_message_raw": self.status_message_raw,
            "order_timestamp": self.order_timestamp,
            "exchange_update_timestamp": self.exchange_update_timestamp,
            "exchange_timestamp": self.exchange_timestamp, "variety": self.variety,
            "modified": False,  # the fixtures keep it false even after a modify (§3.2)
            "exchange": self.exchange, "tradingsymbol": self.tradingsymbol,
            "instrument_token": self.instrument_token, "order_type": self.order_type,
            "transaction_type": self.transaction_type, "validity": self.validity,
            "validity_ttl": self.validity_ttl, "product": self.product,
            "quantity": self.quantity, "disclosed_quantity": self.disclosed_quantity,
            "price": json_number(self.price), "trigger_price": json_number(self.trigger_price),
            "average_price": json_number(self.average_price),
            "filled_quantity": self.filled_quantity, "pending_quantity": self.pending_quantity,
            "cancelled_quantity": self.cancelled_quantity,
            "market_protection": json_number(self.market_protection), "meta": {},
            "tag": self.tag, "guid": self.guid,
        }
        if self.tags:  # the fixtures leave `tags` out when there are none
            body["tags"] = list(self.tags)
        return body


@dataclass(slots=True)
class Trade:
    trade_id: str
    order_id: str
    exchange_order_id: str
    exchange: str
    tradingsymbol: str
    instrument_token: int
    product: str
    transaction_type: str
    quantity: int
    price: Decimal
    multiplier: int
    fill_timestamp: str

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"

    def to_json(self) -> dict[str, Any]:
        """Return the trade row; its `order_timestamp` is time-only, as in the fixtures."""
        return {"trade_id": self.trade_id, "order_id": self.order_id, "exchange": self.exchange,
                "tradingsymbol": self.tradingsymbol, "instrument_token": self.instrument_token,
                "product": self.product, "average_price": json_number(self.price),
                "quantity": self.quantity, "exchange_order_id": self.exchange_order_id,
                "transaction_type": self.transaction_type, "fill_timestamp": self.fill_timestamp,
                "order_timestamp": self.fill_timestamp[11:],
                "exchange_timestamp": self.fill_timestamp}


def to_state(record: Any) -> dict[str, Any]:
    """Return a dataclass record as JSON-ready values (Decimals as text)."""
    return {f.name: _encode(getattr(record, f.name)) for f in fields(record)}


def _encode(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def from_state(cls: Any, data: Mapping[str, Any]) -> Any:
    """Rebuild a record saved by `to_state`."""
    values = {f.name: Decimal(data[f.name]) if data[f.name] is not None and "Decimal" in str(f.type)
              else data[f.name] for f in fields(cls)}
    return cls(**values)


# --------------------------------------------------------------------------- order validation
# Kite's exact texts for these are not in KITE.md except the freeze and market-protection ones
# (§3.3, §1.2); the others are plain wording of our own (unverified).


def form_value(form: Mapping[str, Any], name: str) -> str | None:
    """Return a form field; the client never sends None, and an empty value counts as absent."""
    value = form.get(name)
    return None if value is None or value == "" else str(value)


def form_choice(form: Mapping[str, Any], name: str, allowed: frozenset[str],
                default: str | None = None) -> str:
    value = form_value(form, name) or default
    if value not in allowed:
        raise input_error(f"Invalid `{name}`.")
    return value


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


# --------------------------------------------------------------------------- positions, margins


def segment_of(exchange: str) -> str:
    return "commodity" if exchange == "MCX" else "equity"


def positions_payload(trades: list[Trade], market: Market) -> dict[str, list[dict[str, Any]]]:
    """Return `net` and `day` positions from the fills; no overnight carry, so they match."""
    groups: dict[tuple[str, str], list[Trade]] = {}
    for trade in trades:
        groups.setdefault((trade.key, trade.product), []).append(trade)
    rows = [position_row(group, market.last_price(key)) for (key, _), group in groups.items()]
    return {"net": rows, "day": [dict(row) for row in rows]}


def _side_totals(trades: list[Trade], side: str) -> tuple[int, Decimal]:
    mine = [trade for trade in trades if trade.transaction_type == side]
    return (sum(trade.quantity for trade in mine),
            sum((trade.price * trade.quantity * trade.multiplier for trade in mine), Decimal(0)))


def position_row(trades: list[Trade], last_price: Decimal | None) -> dict[str, Any]:
    """Return one position row with the fixture's fields (positions.json)."""
    first, multiplier = trades[0], trades[0].multiplier
    buy_quantity, buy_value = _side_totals(trades, "BUY")
    sell_quantity, sell_value = _side_totals(trades, "SELL")
    buy_price = buy_value / (buy_quantity * multiplier) if buy_quantity else Decimal(0)
    sell_price = sell_value / (sell_quantity * multiplier) if sell_quantity else Decimal(0)
    quantity = buy_quantity - sell_quantity
    last = last_price or Decimal(0)
    value = sell_value - buy_value  # the fixture's sign: cash out is negative
    pnl = value + quantity * last * multiplier
    average = buy_price if quantity > 0 else sell_price if quantity < 0 else Decimal(0)
    money = {"average_price": average, "close_price": Decimal(0), "last_price": last,
             "value": value, "pnl": pnl, "m2m": pnl,
             # The fixture books all of pnl as unrealised, even for flat positions.
             "unrealised": pnl, "realised": Decimal(0)}
    sides = {"buy_quantity": buy_quantity, "buy_price": buy_price, "buy_value": buy_value,
             "buy_m2m": buy_value, "sell_quantity": sell_quantity, "sell_price": sell_price,
             "sell_value": sell_value, "sell_m2m": sell_value}
    day = {"day_buy_quantity": buy_quantity, "day_buy_price": buy_price,
           "day_buy_value": buy_value, "day_sell_quantity": sell_quantity,
           "day_sell_price": sell_price, "day_sell_value": sell_value}
    head = {"tradingsymbol": first.tradingsymbol, "exchange": first.exchange,
            "instrument_token": first.instrument_token, "product": first.product,
            "quantity": quantity, "overnight_quantity": 0, "multiplier": multiplier}
    return {**head, **{k: _out(v) for k, v in {**money, **sides, **day}.items()}}


def _out(value: int | Decimal) -> int | float:
    return json_number(value) if isinstance(value, Decimal) else value


def segment_margins(cash: Decimal, used: Decimal) -> dict[str, Any]:
    """Return one segment of /user/margins (margins_equity.json's shape)."""
    net = cash - used
    return {
        "enabled": True, "net": json_number(net),
        "available": {"adhoc_margin": 0, "cash": json_number(cash),
                      "opening_balance": json_number(cash), "live_balance": json_number(net),
                      "collateral": 0, "intraday_payin": 0},
        "utilised": {"debits": json_number(used), "exposure": 0, "m2m_realised": 0,
                     "m2m_unrealised": 0, "option_premium": 0, "payout": 0,
                     "span": json_number(used), "holding_sales": 0, "turnover": 0,
                     "liquid_collateral": 0, "stock_collateral": 0, "delivery": 0},
    }


# --------------------------------------------------------------------------- the order book


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

    def place(self, variety: str, form: Mapping[str, Any]) -> dict[str, Any]:
        """Place an order (or an autoslice parent); return the `data` of the answer."""
        draft = draft_order(variety, form, self._market, self._config.user_id)
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


# --------------------------------------------------------------------------- sessions


class Sessions:
    """Access tokens (valid and ever issued) and the request tokens a login may exchange."""

    def __init__(self, config: FakeKiteConfig):
        self._config = config
        self.valid: set[str] = set()
        self.known: set[str] = set()
        self.request_tokens: set[str] = set()
        if config.access_token:
            self.admit(config.access_token)

    def admit(self, token: str) -> None:
        self.valid.add(token)
        self.known.add(token)

    def authorized(self, header: str | None) -> bool:
        """Return whether `Authorization: token <api_key>:<access_token>` names a valid token."""
        prefix = f"token {self._config.api_key}:"
        return bool(header and header.startswith(prefix) and header[len(prefix):] in self.valid)

    def exchange(self, form: Mapping[str, Any]) -> str:
        """Check a login (§1.1) and return the new access token."""
        api_key = form_value(form, "api_key") or ""
        request_token = form_value(form, "request_token") or ""
        if api_key != self._config.api_key:
            raise KiteError(403, "TokenException", "Invalid `api_key`.")
        if not self._request_token_usable(request_token):
            raise KiteError(403, "TokenException", "Token is invalid or has expired.")
        expected = hashlib.sha256(
            (api_key + request_token + self._config.api_secret).encode()).hexdigest()
        if not hmac.compare_digest(expected, form_value(form, "checksum") or ""):
            raise KiteError(403, "TokenException", "Invalid `checksum`.")
        self.request_tokens.discard(request_token)  # request tokens are single-use
        if self._config.single_session:
            self.valid.clear()
        token = secrets.token_hex(16)
        self.admit(token)
        return token

    def _request_token_usable(self, request_token: str) -> bool:
        if request_token in self.request_tokens:
            return True
        return self._config.accept_any_request_token and bool(request_token)


def user_fields(config: FakeKiteConfig) -> dict[str, Any]:
    """Return the user part shared by profile.json and generate_session.json."""
    return {"user_id": config.user_id, "user_type": "individual", "email": "fake@example.com",
            "user_name": config.user_name, "user_shortname": config.user_name.split()[0],
            "broker": "ZERODHA",
            "exchanges": ["BFO", "MCX", "NSE", "CDS", "BSE", "BCD", "MF", "NFO"],
            "products": ["CNC", "NRML", "MIS", "BO", "CO"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"], "avatar_url": None,
            "meta": {"demat_consent": "physical"}}


# --------------------------------------------------------------------------- rate limits, faults


class TokenBucket:
    def __init__(self, capacity: int, period_s: float, clock: Callable[[], float]):
        self._capacity = capacity
        self._rate = capacity / period_s
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()

    def available(self) -> bool:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        return self._tokens >= 1

    def take(self) -> None:
        self._tokens -= 1


class RateLimiter:
    """Per-category token buckets (§4.1); a refused call counts as a violation."""

    def __init__(self, enforced: bool, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.violations: Counter[str] = Counter()
        self.set_enforced(enforced)

    def set_enforced(self, enforced: bool) -> None:
        """Switch limiting on or off; buckets start full so earlier traffic does not count."""
        self.enforced = enforced
        self._buckets = {category: [TokenBucket(capacity, period, self._clock)
                                    for capacity, period in limits]
                         for category, limits in RATE_LIMITS.items()}

    def admit(self, category: str) -> bool:
        if not self.enforced:
            return True
        buckets = self._buckets[category]
        if all([bucket.available() for bucket in buckets]):  # refill every bucket first
            for bucket in buckets:
                bucket.take()
            return True
        self.violations[category] += 1
        return False


def rate_category(endpoint: str) -> str:
    if endpoint in ORDER_ENDPOINTS:
        return "orders"
    return "quote" if endpoint == "quote" else "other"


@dataclass(slots=True)
class PendingFault:
    endpoint: str
    fault: str
    remaining: int


# --------------------------------------------------------------------------- the whole fake


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
        scratch = path.with_name(path.name + ".tmp")
        scratch.write_text(json.dumps(self._document()))
        os.replace(scratch, path)

    def _document(self) -> dict[str, Any]:
        book = self.book
        return {"version": 1,
                "orders": [to_state(order) for order in book.orders.values()],
                "trades": [to_state(trade) for trade in book.trades],
                "sequences": {"order_id": book.last_order_id, "trade": book.trade_seq,
                              "exchange": book.exchange_seq},
                "sessions": {"valid": sorted(self.sessions.valid),
                             "known": sorted(self.sessions.known),
                             "request_tokens": sorted(self.sessions.request_tokens)},
                "prices": {key: to_state(state) for key, state in self.market.prices.items()}}

    def _load(self, path: Path) -> None:
        document = json.loads(path.read_text())
        book = self.book
        book.orders = {data["order_id"]: from_state(Order, data) for data in document["orders"]}
        book.trades = [from_state(Trade, data) for data in document["trades"]]
        sequences = document["sequences"]
        book.last_order_id = sequences["order_id"]
        book.trade_seq, book.exchange_seq = sequences["trade"], sequences["exchange"]
        sessions = document["sessions"]
        self.sessions.valid = set(sessions["valid"])
        self.sessions.known = set(sessions["known"])
        self.sessions.request_tokens = set(sessions["request_tokens"])
        if self.config.access_token and self.config.access_token not in self.sessions.known:
            self.sessions.admit(self.config.access_token)  # a token never seen before is new
        self.market.prices.update({key: from_state(PriceState, data)
                                   for key, data in document["prices"].items()})


# --------------------------------------------------------------------------- HTTP layer

FAKE_KITE = web.AppKey("fake_kite", FakeKite)
Handler = Callable[[web.Request], Awaitable[Any]]


def state_of(request: web.Request) -> FakeKite:
    return request.app[FAKE_KITE]


def success(data: Any) -> web.Response:
    return web.json_response({"status": "success", "data": data})


def error_response(error: KiteError) -> web.Response:
    return web.json_response(error.body(), status=error.status)


def too_many_requests() -> web.Response:
    return error_response(KiteError(429, "NetworkException", "Too many requests"))


def html_response(status: int) -> web.Response:
    """Return what a proxy in front of Kite answers: an HTML page (§2.3: DataException)."""
    reason = {429: "Too Many Requests", 502: "Bad Gateway"}[status]
    page = (f"<html><head><title>{status} {reason}</title></head><body><center><h1>{status} "
            f"{reason}</h1></center><hr><center>nginx</center></body></html>")
    return web.Response(status=status, text=page, content_type="text/html")


def fault_response(state: FakeKite, fault: str) -> web.Response:
    """Answer a call with an injected fault instead of the real thing."""
    if fault == "rate_limited":
        return too_many_requests()
    if fault == "network_503":
        return error_response(KiteError(503, "NetworkException",
                                        "Couldn't reach the OMS. Please try again."))
    if fault == "token_expired":
        state.expire_token()
        return error_response(KiteError(403, "TokenException", TOKEN_MESSAGE))
    return html_response(502 if fault == "html_502" else 429)


def check_gateway(request: web.Request, state: FakeKite, endpoint: str) -> None:
    """Refuse calls without the version header or (except the login) a valid token."""
    if state.config.require_kite_version and request.headers.get("X-Kite-Version") != "3":
        raise input_error("Missing or invalid `X-Kite-Version` header.")  # text unverified
    if endpoint != "session.create" and \
            not state.sessions.authorized(request.headers.get("Authorization")):
        raise KiteError(403, "TokenException", TOKEN_MESSAGE)


async def answer(request: web.Request, handler: Handler, state: FakeKite,
                 endpoint: str) -> web.StreamResponse:
    """Run an API handler and wrap its result in the envelope (§2.1)."""
    try:
        check_gateway(request, state, endpoint)
        result = await handler(request)
    except KiteError as error:
        return error_response(error)
    except Exception:  # handler boundary: a bug in the fake answers 500, as Kite's would
        log.exception("fake kite failed on %s %s", request.method, request.path)
        return error_response(KiteError(500, "GeneralException", "Internal error in fake kite"))
    return result if isinstance(result, web.StreamResponse) else success(result)


async def api_call(request: web.Request, handler: Handler, endpoint: str) -> web.StreamResponse:
    """Apply what sits in front of Kite's handlers: faults, rate limits, auth, envelope."""
    state = state_of(request)
    category = endpoint.split(".")[0]
    state.calls[category] += 1
    fault = state.take_fault(category)
    if fault in ANSWERING_FAULTS:
        return fault_response(state, fault)
    if not state.limiter.admit(rate_category(category)):
        return too_many_requests()
    response = await answer(request, handler, state, endpoint)
    # For timeout and drop the call has had its effect (an order placed, modified, cancelled);
    # only the answer is lost: the "accepted, then timed out" case.
    if fault == "timeout":
        await state.sleep(state.config.fault_timeout_s)
    elif fault == "drop" and request.transport is not None:
        request.transport.abort()
    return response


async def control_call(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return success(await handler(request))
    except KiteError as error:
        return error_response(error)


@web.middleware
async def kite_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Route every request through the gateway rules; unknown routes answer JSON errors."""
    http_error = request.match_info.http_exception
    if http_error is not None:
        message = "Route not found" if http_error.status == 404 else http_error.reason
        return error_response(KiteError(http_error.status, "GeneralException", message))
    endpoint = request.match_info.route.name or ""
    if endpoint.startswith("control."):
        return await control_call(request, handler)
    return await api_call(request, handler, endpoint)


# ---- API handlers


async def handle_login(request: web.Request) -> Any:
    return state_of(request).login(await request.post())


async def handle_logout(request: web.Request) -> Any:
    return state_of(request).logout(request.query)


async def handle_profile(request: web.Request) -> Any:
    return state_of(request).profile()


async def handle_margins(request: web.Request) -> Any:
    return state_of(request).margins(request.match_info.get("segment"))


async def handle_place(request: web.Request) -> Any:
    return state_of(request).place(request.match_info["variety"], await request.post())


async def handle_modify(request: web.Request) -> Any:
    return state_of(request).modify(request.match_info["order_id"], await request.post())


async def handle_cancel(request: web.Request) -> Any:
    return state_of(request).cancel(request.match_info["order_id"])


async def handle_orders(request: web.Request) -> Any:
    return state_of(request).orders()


async def handle_order_history(request: web.Request) -> Any:
    return state_of(request).order_history(request.match_info["order_id"])


async def handle_order_trades(request: web.Request) -> Any:
    return state_of(request).order_trades(request.match_info["order_id"])


async def handle_trades(request: web.Request) -> Any:
    return state_of(request).trades()


async def handle_positions(request: web.Request) -> Any:
    return state_of(request).positions()


async def handle_holdings(request: web.Request) -> Any:
    return []  # the daemon trades futures only; holdings are always empty here


async def handle_instruments(request: web.Request) -> Any:
    text = state_of(request).instruments_csv(request.match_info.get("exchange"))
    return web.Response(text=text, content_type="text/csv")


def quote_handler(kind: str) -> Handler:
    async def handle(request: web.Request) -> Any:
        return state_of(request).quote(request.query.getall("i", []), kind)
    return handle


# ---- control handlers (/_test/*)


async def control_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise input_error("control bodies are JSON objects") from None
    if not isinstance(body, dict):
        raise input_error("control bodies are JSON objects")
    return body


def need(body: Mapping[str, Any], name: str) -> Any:
    if body.get(name) is None:
        raise input_error(f"`{name}` is required")
    return body[name]


async def control_state(request: web.Request) -> Any:
    return state_of(request).snapshot()


async def control_price(request: web.Request) -> Any:
    body = await control_body(request)
    state_of(request).set_price(need(body, "tradingsymbol"), need(body, "price"),
                                body.get("exchange"))
    return state_of(request).snapshot()["prices"]


async def control_fill_mode(request: web.Request) -> Any:
    body = await control_body(request)
    state_of(request).set_fill_mode(need(body, "mode"), body.get("fraction"))
    return state_of(request).snapshot()["fill_mode"]


async def control_fault(request: web.Request) -> Any:
    body = await control_body(request)
    state_of(request).add_fault(need(body, "endpoint"), need(body, "fault"),
                                parse_int(body.get("count", 1), "count"))
    return state_of(request).snapshot()["faults"]


async def control_rms_reject(request: web.Request) -> Any:
    count = parse_int((await control_body(request)).get("count", 1), "count")
    state_of(request).reject_next_for_margin(count)
    return {"rms_reject_next": count}


async def control_margin_error(request: web.Request) -> Any:
    count = parse_int((await control_body(request)).get("count", 1), "count")
    state_of(request).fail_next_with_margin_error(count)
    return {"margin_error_next": count}


async def control_expire_token(request: web.Request) -> Any:
    state_of(request).expire_token()
    return True


async def control_request_token(request: web.Request) -> Any:
    body = await control_body(request)
    return {"request_token": state_of(request).register_request_token(body.get("request_token"))}


async def control_rate_limits(request: web.Request) -> Any:
    body = await control_body(request)
    state_of(request).enforce_rate_limits(bool(need(body, "enforce")))
    return state_of(request).snapshot()["rate_limits"]


async def control_fill(request: web.Request) -> Any:
    body = await control_body(request)
    quantity = body.get("quantity")
    return state_of(request).fill(str(need(body, "order_id")),
                                  None if quantity is None else parse_int(quantity, "quantity"),
                                  body.get("price"))


async def control_today(request: web.Request) -> Any:
    text = str(need(await control_body(request), "date"))
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise input_error("date must be YYYY-MM-DD") from None
    state_of(request).set_today(day)
    return {"today": day.isoformat()}


async def control_cash(request: web.Request) -> Any:
    body = await control_body(request)
    state_of(request).set_cash(need(body, "segment"), need(body, "cash"))
    return state_of(request).margins(None)


async def control_postback_url(request: web.Request) -> Any:
    url = (await control_body(request)).get("url")
    state_of(request).set_postback_url(url)
    return {"url": url}


async def control_reset(request: web.Request) -> Any:
    state_of(request).reset()
    return True


ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("POST", "/session/token", "session.create", handle_login),
    ("DELETE", "/session/token", "session.delete", handle_logout),
    ("GET", "/user/profile", "profile", handle_profile),
    ("GET", "/user/margins", "margins", handle_margins),
    ("GET", "/user/margins/{segment}", "margins.segment", handle_margins),
    ("POST", "/orders/{variety}", "place", handle_place),
    ("PUT", "/orders/{variety}/{order_id}", "modify", handle_modify),
    ("DELETE", "/orders/{variety}/{order_id}", "cancel", handle_cancel),
    ("GET", "/orders", "orders", handle_orders),
    ("GET", "/orders/{order_id}", "order_history", handle_order_history),
    ("GET", "/orders/{order_id}/trades", "order_trades", handle_order_trades),
    ("GET", "/trades", "trades", handle_trades),
    ("GET", "/portfolio/positions", "positions", handle_positions),
    ("GET", "/portfolio/holdings", "holdings", handle_holdings),
    ("GET", "/instruments", "instruments", handle_instruments),
    ("GET", "/instruments/{exchange}", "instruments.exchange", handle_instruments),
    ("GET", "/quote", "quote", quote_handler("full")),
    ("GET", "/quote/ltp", "quote.ltp", quote_handler("ltp")),
    ("GET", "/quote/ohlc", "quote.ohlc", quote_handler("ohlc")),
    ("GET", "/_test/state", "control.state", control_state),
    ("POST", "/_test/price", "control.price", control_price),
    ("POST", "/_test/fill_mode", "control.fill_mode", control_fill_mode),
    ("POST", "/_test/fault", "control.fault", control_fault),
    ("POST", "/_test/rms_reject", "control.rms_reject", control_rms_reject),
    ("POST", "/_test/margin_error", "control.margin_error", control_margin_error),
    ("POST", "/_test/expire_token", "control.expire_token", control_expire_token),
    ("POST", "/_test/request_token", "control.request_token", control_request_token),
    ("POST", "/_test/rate_limits", "control.rate_limits", control_rate_limits),
    ("POST", "/_test/fill", "control.fill", control_fill),
    ("POST", "/_test/today", "control.today", control_today),
    ("POST", "/_test/cash", "control.cash", control_cash),
    ("POST", "/_test/postback_url", "control.postback_url", control_postback_url),
    ("POST", "/_test/reset", "control.reset", control_reset),
)


async def postback_sender(app: web.Application) -> AsyncIterator[None]:
    """Own the postback task and its HTTP session for the app's lifetime."""
    state = app[FAKE_KITE]
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(state.deliver_postbacks(session), name="fake-kite-postbacks")
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def wake_sleepers(app: web.Application) -> None:
    app[FAKE_KITE].close()


def build_fake_kite(config: FakeKiteConfig, state: FakeKite | None = None) -> web.Application:
    """Return the fake's aiohttp application (its `FakeKite` is `app[FAKE_KITE]`)."""
    app = web.Application(middlewares=[kite_middleware])
    app[FAKE_KITE] = state or FakeKite(config)
    for method, path, name, handler in ROUTES:
        app.router.add_route(method, path, handler, name=name)
    app.cleanup_ctx.append(postback_sender)
    app.on_shutdown.append(wake_sleepers)
    return app


# --------------------------------------------------------------------------- running it


@dataclass(frozen=True, slots=True)
class FakeKiteHandle:
    url: str
    state: FakeKite


@asynccontextmanager
async def running_fake_kite(config: FakeKiteConfig | None = None, *, host: str = "127.0.0.1",
                            port: int = 0) -> AsyncIterator[FakeKiteHandle]:
    """Serve the fake on this event loop (a free port unless given) until the block ends."""
    app = build_fake_kite(config or FakeKiteConfig())
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = runner.addresses[0][1]
        yield FakeKiteHandle(f"http://{host}:{bound_port}", app[FAKE_KITE])
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scratch_log() -> Path:
    handle, name = tempfile.mkstemp(prefix="fake-kite-", suffix=".log")
    os.close(handle)
    return Path(name)


class FakeKiteProcess:
    """The fake as its own process, for end-to-end tests; `start()` waits until it answers."""

    START_TIMEOUT_S = 30.0

    def __init__(self, *, api_key: str = "fake_api_key", api_secret: str = "fake_api_secret",
                 access_token: str | None = "fake_access_token", today: date | None = None,
                 state_file: Path | None = None, port: int | None = None,
                 extra_args: tuple[str, ...] = (), log_path: Path | None = None):
        self.port = port or free_port()
        self.args = [sys.executable, "-m", "tests.fakes.kite_server", "--host", "127.0.0.1",
                     "--port", str(self.port), "--api-key", api_key, "--api-secret", api_secret,
                     *(["--access-token", access_token] if access_token else []),
                     *(["--today", today.isoformat()] if today else []),
                     *(["--state-file", str(state_file)] if state_file else []), *extra_args]
        self.log_path = log_path or scratch_log()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKiteProcess:
        """Start the process and wait until its control API answers."""
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(self.args, cwd=REPO, stdout=log_file,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake kite exited {self.process.returncode}:\n{self.output()}")
            with suppress(OSError):
                self.state()
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake kite did not start:\n{self.output()}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> FakeKiteProcess:
        self.stop()
        return self.start()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> FakeKiteProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """Call a control endpoint; return its `data`."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())["data"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: {error.code} {error.read()!r}") from None

    def control(self, name: str, **body: Any) -> Any:
        """POST /_test/<name> with `body`, e.g. control("price", tradingsymbol=..., price=...)."""
        return self.call("POST", f"/_test/{name}", body)

    def state(self) -> dict[str, Any]:
        return self.call("GET", "/_test/state")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake Kite Connect v3 server for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--access-token")
    parser.add_argument("--today", type=date.fromisoformat)
    parser.add_argument("--state-file", type=Path)
    parser.add_argument("--postback-url")
    parser.add_argument("--user-id", default="AB1234")
    parser.add_argument("--accept-any-request-token", action="store_true")
    parser.add_argument("--enforce-rate-limits", action="store_true")
    parser.add_argument("--fault-timeout-s", type=float, default=8.0)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> FakeKiteConfig:
    return FakeKiteConfig(api_key=args.api_key, api_secret=args.api_secret,
                          access_token=args.access_token, user_id=args.user_id, today=args.today,
                          state_file=args.state_file, postback_url=args.postback_url,
                          accept_any_request_token=args.accept_any_request_token,
                          enforce_rate_limits=args.enforce_rate_limits,
                          fault_timeout_s=args.fault_timeout_s)


async def serve(config: FakeKiteConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running_fake_kite(config, host=host, port=port) as fake:
        print(f"fake kite listening on {fake.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Run the fake as its own process."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(config_from_args(args), args.host, args.port))


if __name__ == "__main__":
    main()
