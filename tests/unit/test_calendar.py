from datetime import UTC, date, datetime, time

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_holidays, load_instruments
from core.calendar import TradingCalendar
from core.signals import INDIA

SPECS = load_instruments(DEFAULT_CONFIG_DIR / "instruments.json")
BANK_NIFTY = SPECS["BANK_NIFTY"]  # NFO, 09:15-15:30
GOLD_MINI = SPECS["GOLD_MINI"]  # MCX, 09:00-23:30
SHIPPED = load_holidays(DEFAULT_CONFIG_DIR / "holidays.json")
WEEKDAYS = TradingCalendar({})


def ist(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0,
        microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=INDIA)


# --- trading days --------------------------------------------------------------------


def test_empty_calendar_is_weekdays_only() -> None:
    assert WEEKDAYS.is_trading_day("NFO", date(2026, 12, 4))  # Friday
    assert not WEEKDAYS.is_trading_day("NFO", date(2026, 12, 5))  # Saturday
    assert not WEEKDAYS.is_trading_day("MCX", date(2026, 12, 6))  # Sunday
    assert WEEKDAYS.is_trading_day("MCX", date(2026, 12, 25))  # no holidays known


def test_holidays_belong_to_their_exchange() -> None:
    # Holi 2026: NFO shut; MCX closes only its morning session, so it trades.
    assert not SHIPPED.is_trading_day("NFO", date(2026, 3, 3))
    assert SHIPPED.is_trading_day("MCX", date(2026, 3, 3))
    # Good Friday 2026: both closed all day.
    assert not SHIPPED.is_trading_day("NFO", date(2026, 4, 3))
    assert not SHIPPED.is_trading_day("MCX", date(2026, 4, 3))


def test_exchange_without_holidays_trades_every_weekday() -> None:
    calendar = TradingCalendar({"NFO": [date(2026, 3, 3)]})
    assert calendar.is_trading_day("MCX", date(2026, 3, 3))
    assert calendar.holidays("MCX") == frozenset()


def test_datetime_holidays_are_refused() -> None:
    with pytest.raises(TypeError, match="NFO: holidays must be dates"):
        TradingCalendar({"NFO": [datetime(2026, 3, 3, tzinfo=INDIA)]})


def test_previous_trading_day_is_strictly_before() -> None:
    assert SHIPPED.previous_trading_day("NFO", date(2026, 12, 2)) == date(2026, 12, 1)
    # Tue 27 Jan 2026: Mon 26 is Republic Day, so Friday 23.
    assert SHIPPED.previous_trading_day("NFO", date(2026, 1, 27)) == date(2026, 1, 23)
    # From a Sunday: Friday.
    assert WEEKDAYS.previous_trading_day("MCX", date(2026, 12, 6)) == date(2026, 12, 4)


def test_next_trading_day_skips_holiday_and_weekend() -> None:
    # Thu 2 Apr 2026 -> Good Friday, weekend -> Mon 6 Apr.
    assert SHIPPED.next_trading_day("MCX", date(2026, 4, 2)) == date(2026, 4, 6)


def test_trading_days_back() -> None:
    # Tue 2 Feb 2027, two trading days back: Mon 1 Feb, Fri 29 Jan.
    assert WEEKDAYS.trading_days_back("MCX", date(2027, 2, 2), 2) == date(2027, 1, 29)
    # A holiday in the window costs one more day.
    calendar = TradingCalendar({"MCX": [date(2027, 2, 1)]})
    assert calendar.trading_days_back("MCX", date(2027, 2, 2), 2) == date(2027, 1, 28)
    # From a Sunday the first step lands on Friday.
    assert WEEKDAYS.trading_days_back("NFO", date(2026, 12, 6), 1) == date(2026, 12, 4)


def test_trading_days_back_zero_returns_the_day_itself() -> None:
    sunday = date(2026, 12, 6)
    assert WEEKDAYS.trading_days_back("NFO", sunday, 0) == sunday


def test_trading_days_back_refuses_negative() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        WEEKDAYS.trading_days_back("NFO", date(2026, 12, 2), -1)


# --- sessions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (ist(2026, 12, 7, 9, 14, 59), False),
        (ist(2026, 12, 7, 9, 15), True),
        (ist(2026, 12, 7, 15, 29, 59, 999999), True),
        (ist(2026, 12, 7, 15, 30), False),
        (ist(2026, 12, 5, 10, 0), False),  # Saturday
        (ist(2026, 12, 25, 10, 0), False),  # Christmas
    ],
)
def test_in_session_boundaries(moment: datetime, expected: bool) -> None:
    assert SHIPPED.in_session(BANK_NIFTY, moment) is expected


def test_in_session_uses_india_wall_time() -> None:
    # 03:45 UTC is 09:15 IST; 18:00 UTC on Sunday is 23:30 IST on Sunday.
    assert SHIPPED.in_session(BANK_NIFTY, datetime(2026, 12, 7, 3, 45, tzinfo=UTC))
    assert not SHIPPED.in_session(BANK_NIFTY, datetime(2026, 12, 7, 3, 44, tzinfo=UTC))
    # Mon 7 Dec 17:59 UTC = 23:29 IST, inside MCX's evening session; 18:00 UTC = 23:30 IST.
    assert SHIPPED.in_session(GOLD_MINI, datetime(2026, 12, 7, 17, 59, tzinfo=UTC))
    assert not SHIPPED.in_session(GOLD_MINI, datetime(2026, 12, 7, 18, 0, tzinfo=UTC))


def test_in_session_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SHIPPED.in_session(BANK_NIFTY, ist(2026, 12, 7, 10).replace(tzinfo=None))


def test_next_session_open_inside_a_session_is_now() -> None:
    moment = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)  # 10:30 IST, Monday
    assert SHIPPED.next_session_open(BANK_NIFTY, moment) is moment


def test_next_session_open_before_the_open_is_today() -> None:
    opens = SHIPPED.next_session_open(BANK_NIFTY, ist(2026, 12, 7, 8, 0))
    assert opens == ist(2026, 12, 7, 9, 15)
    assert opens.tzinfo is INDIA


def test_next_session_open_across_a_weekend() -> None:
    friday_evening = ist(2026, 12, 4, 15, 30)
    assert SHIPPED.next_session_open(BANK_NIFTY, friday_evening) == ist(2026, 12, 7, 9, 15)
    saturday = ist(2026, 12, 5, 9, 30)
    assert SHIPPED.next_session_open(BANK_NIFTY, saturday) == ist(2026, 12, 7, 9, 15)


def test_next_session_open_across_a_holiday() -> None:
    # Fri 23 Jan 2026 after the close; Mon 26 is Republic Day: Tuesday 27.
    after_close = ist(2026, 1, 23, 16, 0)
    assert SHIPPED.next_session_open(BANK_NIFTY, after_close) == ist(2026, 1, 27, 9, 15)
    # MCX late on Thu 2 Apr 2026; Good Friday shut all day: Monday 6 Apr.
    late = datetime(2026, 4, 2, 18, 15, tzinfo=UTC)  # 23:45 IST
    assert SHIPPED.next_session_open(GOLD_MINI, late) == ist(2026, 4, 6, 9, 0)


def test_next_session_open_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SHIPPED.next_session_open(GOLD_MINI, datetime.combine(date(2026, 12, 7), time(8)))
