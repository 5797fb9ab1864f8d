"""The instruments dump: the fixture rows plus the monthly futures listed for `today`.

Rules of our own (simple, documented, not Kite's): NFO futures expire on the last Thursday of
the month, MCX futures on the 5th; the dump lists, per series, the first three monthly contracts
whose expiry is on or after `today` (so an expired current-month contract is not listed).
"""

from __future__ import annotations

import calendar
import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from tests.fakes.kite.config import FIFTH_OF_MONTH, LAST_THURSDAY, FakeKiteConfig, FutureSpec

# §1.4: the dump's columns, in order.
CSV_COLUMNS = ("instrument_token", "exchange_token", "tradingsymbol", "name", "last_price",
               "expiry", "strike", "tick_size", "lot_size", "instrument_type", "segment",
               "exchange")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# Kite's segment ids, the low byte of an instrument_token (as in the client's KiteTicker).
SEGMENT_IDS = {"NSE": 1, "NFO": 2, "CDS": 3, "BSE": 4, "BFO": 5, "BCD": 6, "MCX": 7}
EXCHANGES = frozenset(SEGMENT_IDS)
LOT_MULTIPLE_EXCHANGES = frozenset({"NFO", "BFO"})  # quantity in units, a multiple of lot_size
LOT_QUANTITY_EXCHANGES = frozenset({"MCX"})  # quantity in lots; multiplier = lot_size (§4.4)


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
