"""Synthetic monthly futures for the paper broker's `paper_contracts: monthly` (DOMAIN.md §9).

Pure: standard library, decimal and `core` only. Expiries follow the real rules closely enough
to exercise rolls on paper: GOLD_MINI the 5th, SILVER_MINI and COPPER the month's last weekday,
BANK_NIFTY the last Tuesday, any other instrument the last weekday; an expiry on a day the
exchange does not trade moves to the previous trading day.
"""

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from core.calendar import TradingCalendar
from core.models import ContractRef

PRICE_SCALE = Decimal("0.0001")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_TUESDAY = 1
_FRIDAY = 4
_ON_THE_FIFTH = frozenset({"GOLD_MINI"})
_LAST_TUESDAY = frozenset({"BANK_NIFTY"})


def monthly_expiry(
    instrument: str, exchange: str, calendar: TradingCalendar, year: int, month: int
) -> date:
    """Return the expiry of `instrument`'s contract for `month` of `year`."""
    if instrument in _ON_THE_FIFTH:
        expiry = date(year, month, 5)
    elif instrument in _LAST_TUESDAY:
        last = _last_day(year, month)
        expiry = last - timedelta(days=(last.weekday() - _TUESDAY) % 7)
    else:
        last = _last_day(year, month)
        expiry = last - timedelta(days=max(last.weekday() - _FRIDAY, 0))
    if not calendar.is_trading_day(exchange, expiry):
        expiry = calendar.previous_trading_day(exchange, expiry)
    return expiry


def monthly_contracts(
    instrument: str, exchange: str, calendar: TradingCalendar, today: date, count: int = 3
) -> list[ContractRef]:
    """Return the `count` nearest contracts of `instrument` expiring on or after `today`.

    Nearest first; each named like Kite's, `<instrument><yy><MON>FUT` (`GOLD_MINI26DECFUT`).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    contracts: list[ContractRef] = []
    year, month = today.year, today.month
    while len(contracts) < count:
        expiry = monthly_expiry(instrument, exchange, calendar, year, month)
        if expiry >= today:
            symbol = f"{instrument}{year % 100:02d}{_MONTHS[month - 1]}FUT"
            contracts.append(ContractRef(symbol, exchange, expiry))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return contracts


def monthly_price(front_price: Decimal, months_out: int, basis_percent: Decimal) -> Decimal:
    """Return the price of a contract `months_out` months after the front one.

    front × (1 + basis_percent / 100 × months_out), to 4 decimals (half up): a steady contango.
    """
    factor = 1 + basis_percent / 100 * months_out
    return (front_price * factor).quantize(PRICE_SCALE, rounding=ROUND_HALF_UP)


def months_between(front: ContractRef, other: ContractRef) -> int:
    """Return the calendar months from `front`'s expiry to `other`'s (negative if earlier)."""
    if front.expiry is None or other.expiry is None:
        raise ValueError(
            f"months between {front.tradingsymbol} and {other.tradingsymbol} need two expiries"
        )
    return (other.expiry.year - front.expiry.year) * 12 + other.expiry.month - front.expiry.month


def _last_day(year: int, month: int) -> date:
    first_of_next = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return first_of_next - timedelta(days=1)
