"""Market data: the last price of each listed instrument and the quotes built from it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from tests.fakes.kite.config import FakeKiteConfig
from tests.fakes.kite.instruments import Instrument, build_instruments, render_instruments_csv
from tests.fakes.kite.wire import input_error, json_number, to_tick


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
