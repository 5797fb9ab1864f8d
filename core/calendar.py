"""Trading days and sessions per exchange (DOMAIN.md §9).

Pure: standard library and `core` only. A holiday is a full-day closure of an exchange: a day
on which MCX closes only its morning session (its evening session trades) is a trading day.
An exchange the calendar has no holidays for trades every weekday.
"""

from collections.abc import Collection, Mapping
from datetime import date, datetime, timedelta

from core.signals import INDIA
from core.specs import InstrumentSpec

_ONE_DAY = timedelta(days=1)
_SATURDAY = 5


class TradingCalendar:
    """Weekdays minus each exchange's holidays, and the session times of an instrument."""

    def __init__(self, holidays: Mapping[str, Collection[date]]) -> None:
        self._holidays = {
            exchange: frozenset(_checked_day(exchange, day) for day in days)
            for exchange, days in holidays.items()
        }

    def holidays(self, exchange: str) -> frozenset[date]:
        """Return the holidays recorded for `exchange` (empty if none)."""
        return self._holidays.get(exchange, frozenset())

    def is_trading_day(self, exchange: str, day: date) -> bool:
        """Return whether `exchange` trades on `day`: a weekday that is not its holiday."""
        return day.weekday() < _SATURDAY and day not in self.holidays(exchange)

    def previous_trading_day(self, exchange: str, day: date) -> date:
        """Return the last trading day of `exchange` strictly before `day`."""
        candidate = day - _ONE_DAY
        while not self.is_trading_day(exchange, candidate):
            candidate -= _ONE_DAY
        return candidate

    def next_trading_day(self, exchange: str, day: date) -> date:
        """Return the first trading day of `exchange` strictly after `day`."""
        candidate = day + _ONE_DAY
        while not self.is_trading_day(exchange, candidate):
            candidate += _ONE_DAY
        return candidate

    def trading_days_back(self, exchange: str, day: date, n: int) -> date:
        """Return the day `n` trading days of `exchange` before `day`.

        Each step goes to the previous trading day, so `day` itself never counts: from a
        Tuesday, one day back is Monday; from a Sunday, Friday. `n` = 0 returns `day`
        unchanged, even when it is not a trading day — no move was asked for.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        for _ in range(n):
            day = self.previous_trading_day(exchange, day)
        return day

    def in_session(self, spec: InstrumentSpec, moment: datetime) -> bool:
        """Return whether `moment` falls in a session of `spec`: a trading day of its exchange,
        from `session_open` (inclusive) to `session_close` (exclusive), IST wall time."""
        local = india_time(moment)
        return self.is_trading_day(spec.exchange, local.date()) and (
            spec.session_open <= local.time() < spec.session_close
        )

    def next_session_open(self, spec: InstrumentSpec, moment: datetime) -> datetime:
        """Return the next session open of `spec` at or after `moment` (aware, IST).

        Inside a session, `moment` itself is returned: the session is open now.
        """
        local = india_time(moment)
        if self.in_session(spec, local):
            return moment
        day = local.date()
        if not (self.is_trading_day(spec.exchange, day) and local.time() < spec.session_open):
            day = self.next_trading_day(spec.exchange, day)
        return datetime.combine(day, spec.session_open, tzinfo=INDIA)


def _checked_day(exchange: str, day: object) -> date:
    # A datetime is a date, but never equal to one: it would be a holiday nothing matches.
    if not isinstance(day, date) or isinstance(day, datetime):
        raise TypeError(f"{exchange}: holidays must be dates, got {day!r}")
    return day


def india_time(moment: datetime) -> datetime:
    """Return `moment` in IST; raise ValueError if it is naive (a naive time has no place)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"moment must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(INDIA)
