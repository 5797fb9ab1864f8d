"""Money in Indian grouping and times in IST, as the dashboard writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from live.web_format import indian_grouping, ist, number, percent, rupees, signed_rupees


@pytest.mark.parametrize(("digits", "grouped"), [
    ("0", "0"), ("999", "999"), ("1000", "1,000"), ("99999", "99,999"),
    ("100000", "1,00,000"), ("5000000", "50,00,000"), ("123456789", "12,34,56,789"),
    ("1000000000000", "10,00,00,00,00,000")])
def test_digits_group_in_threes_then_pairs(digits, grouped):
    assert indian_grouping(digits) == grouped


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("5015000"), "₹50,15,000.00"), (Decimal("-1250.5"), "-₹1,250.50"),
    (Decimal("0.005"), "₹0.01"), (Decimal("-0.004"), "₹0.00"), (12, "₹12.00"),
    (None, "—")])
def test_rupees_keep_paise_and_put_the_sign_before_the_symbol(value, text):
    assert rupees(value) == text


def test_gains_carry_a_plus_and_losses_a_minus():
    assert signed_rupees(Decimal("70000")) == "+₹70,000.00"
    assert signed_rupees(Decimal("-70000")) == "-₹70,000.00"
    assert signed_rupees(Decimal(0)) == "₹0.00"


def test_prices_and_percentages_are_exact_decimals():
    assert number(Decimal("78123.4567")) == "78,123.46"
    assert number(Decimal("52000"), 0) == "52,000"
    assert percent(Decimal("1.755")) == "1.76%"


def test_times_are_shown_in_india_time_whatever_the_zone_given():
    moment = datetime(2026, 12, 3, 4, 0, 9, tzinfo=UTC)
    assert ist(moment) == "03 Dec 09:30:09 IST"
    assert ist(moment, with_date=False) == "09:30:09 IST"
    assert ist(None) == "—"
