from datetime import date
from decimal import Decimal

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_holidays
from core.calendar import TradingCalendar
from core.models import ContractRef
from core.monthly_contracts import monthly_contracts, monthly_expiry, monthly_price, months_between

SHIPPED = load_holidays(DEFAULT_CONFIG_DIR / "holidays.json")
WEEKDAYS = TradingCalendar({})


@pytest.mark.parametrize(
    ("year", "month", "expected"),
    [
        (2027, 2, date(2027, 2, 5)),  # a Friday
        (2026, 12, date(2026, 12, 4)),  # Sat 5 Dec -> Friday
        (2026, 4, date(2026, 4, 2)),  # Sun 5 Apr -> Good Friday (MCX shut) -> Thursday
    ],
)
def test_gold_mini_expires_on_the_fifth(year: int, month: int, expected: date) -> None:
    assert monthly_expiry("GOLD_MINI", "MCX", SHIPPED, year, month) == expected


@pytest.mark.parametrize("instrument", ["SILVER_MINI", "COPPER", "ZINC_MINI"])
@pytest.mark.parametrize(
    ("year", "month", "expected"),
    [
        (2026, 12, date(2026, 12, 31)),  # a Thursday
        (2026, 10, date(2026, 10, 30)),  # Sat 31 Oct -> Friday
        (2027, 1, date(2027, 1, 29)),  # Sun 31 Jan -> Friday
        (2028, 2, date(2028, 2, 29)),  # leap year, a Tuesday
    ],
)
def test_last_weekday_of_the_month(instrument: str, year: int, month: int, expected: date) -> None:
    assert monthly_expiry(instrument, "MCX", SHIPPED, year, month) == expected


def test_last_weekday_on_a_holiday_moves_back() -> None:
    calendar = TradingCalendar({"MCX": [date(2026, 12, 31)]})
    assert monthly_expiry("SILVER_MINI", "MCX", calendar, 2026, 12) == date(2026, 12, 30)


@pytest.mark.parametrize(
    ("year", "month", "expected"),
    [
        (2026, 12, date(2026, 12, 29)),
        (2026, 9, date(2026, 9, 29)),
        (2026, 3, date(2026, 3, 30)),  # Tue 31 Mar is Mahavir Jayanti -> Monday
        (2026, 11, date(2026, 11, 23)),  # Tue 24 Nov is Guru Nanak Jayanti -> Monday
    ],
)
def test_bank_nifty_expires_on_the_last_tuesday(year: int, month: int, expected: date) -> None:
    assert monthly_expiry("BANK_NIFTY", "NFO", SHIPPED, year, month) == expected


def test_holiday_tuesday_only_counts_on_its_exchange() -> None:
    assert monthly_expiry("BANK_NIFTY", "NFO", WEEKDAYS, 2026, 3) == date(2026, 3, 31)


def test_three_nearest_contracts_nearest_first() -> None:
    contracts = monthly_contracts("GOLD_MINI", "MCX", SHIPPED, date(2026, 12, 2))
    assert contracts == [
        ContractRef("GOLD_MINI26DECFUT", "MCX", date(2026, 12, 4)),
        ContractRef("GOLD_MINI27JANFUT", "MCX", date(2027, 1, 5)),
        ContractRef("GOLD_MINI27FEBFUT", "MCX", date(2027, 2, 5)),
    ]


def test_contract_expiring_today_is_listed_and_then_dropped() -> None:
    on_expiry = monthly_contracts("GOLD_MINI", "MCX", SHIPPED, date(2026, 12, 4), count=1)
    assert on_expiry == [ContractRef("GOLD_MINI26DECFUT", "MCX", date(2026, 12, 4))]
    after = monthly_contracts("GOLD_MINI", "MCX", SHIPPED, date(2026, 12, 5), count=2)
    assert [c.tradingsymbol for c in after] == ["GOLD_MINI27JANFUT", "GOLD_MINI27FEBFUT"]


def test_bank_nifty_contracts_across_the_year_end() -> None:
    contracts = monthly_contracts("BANK_NIFTY", "NFO", SHIPPED, date(2026, 12, 30), count=2)
    assert [c.tradingsymbol for c in contracts] == ["BANK_NIFTY27JANFUT", "BANK_NIFTY27FEBFUT"]
    assert contracts[1].expiry == date(2027, 2, 23)


def test_contract_count() -> None:
    assert monthly_contracts("COPPER", "MCX", SHIPPED, date(2026, 12, 2), count=0) == []
    assert len(monthly_contracts("COPPER", "MCX", SHIPPED, date(2026, 12, 2), count=14)) == 14
    with pytest.raises(ValueError, match="count must be >= 0"):
        monthly_contracts("COPPER", "MCX", SHIPPED, date(2026, 12, 2), count=-1)


@pytest.mark.parametrize(
    ("front", "months_out", "basis", "expected"),
    [
        (Decimal("78500"), 0, Decimal("0.5"), "78500.0000"),
        (Decimal("78500"), 1, Decimal("0.5"), "78892.5000"),
        (Decimal("78500"), 2, Decimal("0.5"), "79285.0000"),
        (Decimal("33.3333"), 1, Decimal("0.5"), "33.5000"),  # 33.4999665, half up
        (Decimal("812.35"), 3, Decimal("0"), "812.3500"),
        (Decimal("1000"), -1, Decimal("0.5"), "995.0000"),
    ],
)
def test_monthly_price(front: Decimal, months_out: int, basis: Decimal, expected: str) -> None:
    price = monthly_price(front, months_out, basis)
    assert type(price) is Decimal
    assert str(price) == expected


def test_months_between() -> None:
    dec = ContractRef("GOLD_MINI26DECFUT", "MCX", date(2026, 12, 4))
    feb = ContractRef("GOLD_MINI27FEBFUT", "MCX", date(2027, 2, 5))
    assert months_between(dec, feb) == 2
    assert months_between(dec, dec) == 0
    assert months_between(feb, dec) == -2


def test_months_between_needs_expiries() -> None:
    paper = ContractRef("GOLD_MINI", "MCX", None)
    dec = ContractRef("GOLD_MINI26DECFUT", "MCX", date(2026, 12, 4))
    with pytest.raises(ValueError, match="need two expiries"):
        months_between(paper, dec)
