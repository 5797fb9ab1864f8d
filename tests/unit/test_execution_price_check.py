"""Entries are checked against the venue's quote before placing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from core.decisions import EntryPlan, Verdict, check_execution_price
from core.models import SignalType
from core.signals import Signal

D = Decimal


def signal(price: str) -> Signal:
    return Signal(SignalType.PYRAMID, "BANK_NIFTY", "Long_2", D(price), D("51500"), 1, D("350"),
                  D("1"), D("1"), datetime(2026, 11, 20, tzinfo=UTC), None, None, None)


PLAN = EntryPlan("Long_2", 4, "geometric", D("51500"))


def test_base_entry_within_two_percent_passes_unchanged():
    assert check_execution_price(PLAN, signal("52000"), D("53000"), False, D("2")) == PLAN


def test_divergence_beyond_the_limit_is_rejected_with_the_numbers():
    verdict = check_execution_price(PLAN, signal("52000"), D("53100"), False, D("2"))
    assert verdict == Verdict("rejected", "Quote 53100 diverges 2.12% from signal price "
                                          "52000 (limit 2%)")


def test_pyramid_shrinks_when_the_quote_raises_its_risk():
    # risk per lot 500 at the signal, 900 at the quote: 4 × 500/900 → 2 lots
    shrunk = check_execution_price(PLAN, signal("52000"), D("52400"), True, D("1"))
    assert (shrunk.lots, shrunk.limiter) == (2, "quote")


def test_pyramid_never_grows_on_a_lower_quote():
    assert check_execution_price(PLAN, signal("52000"), D("51800"), True, D("1")) == PLAN


def test_pyramid_that_would_shrink_to_nothing_is_blocked():
    small = EntryPlan("Long_2", 1, "geometric", D("51500"))
    verdict = check_execution_price(small, signal("52000"), D("52500"), True, D("1"))
    assert verdict == Verdict("blocked", "Zero lots (limited by quote)")
