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
BASE = EntryPlan("Long_1", 4, "risk", D("51500"))
GROWTH = {False: D("50"), True: D("20")}  # DOMAIN.md §10 defaults: base 50 %, pyramid 20 %


def check(plan: EntryPlan, price: str, quote: str, pyramid: bool, limit: str = "2"):
    return check_execution_price(plan, signal(price), D(quote), pyramid, D(limit),
                                 GROWTH[pyramid])


def test_base_entry_within_the_limits_passes_unchanged():
    # risk per lot 500 at the alert, 700 at the quote: +40 % (limit 50 %)
    assert check(BASE, "52000", "52200", False) == BASE


def test_divergence_beyond_the_limit_is_rejected_with_the_numbers():
    verdict = check(BASE, "52000", "53100", False)
    assert verdict == Verdict("rejected", "Quote 53100 diverges 2.12% from signal price "
                                          "52000 (limit 2%)")


def test_base_entry_whose_risk_grew_past_the_cap_is_rejected():
    # 500 → 760: +52 % (limit 50 %), though only 0.5 % away from the alert
    verdict = check(BASE, "52000", "52260", False)
    assert verdict == Verdict("rejected", "risk per lot grew 52.0% from the alert to the quote "
                                          "(limit 50%)")


def test_base_entry_at_exactly_the_cap_passes():
    assert check(BASE, "52000", "52250", False) == BASE  # 500 → 750: +50 %


def test_entry_quoted_at_or_below_its_stop_is_rejected():
    for quote in ("51500", "51400"):
        verdict = check(BASE, "51600", quote, False)
        assert verdict == Verdict("rejected", f"quote at or below stop (quote {quote}, "
                                              "stop 51500)")


def test_pyramid_shrinks_when_the_quote_raises_its_risk_past_the_cap():
    # risk per lot 500 at the signal, 900 at the quote: 4 × 500/900 → 2 lots
    shrunk = check(PLAN, "52000", "52400", True, "1")
    assert (shrunk.lots, shrunk.limiter) == (2, "quote")


def test_pyramid_within_the_cap_is_unchanged():
    assert check(PLAN, "52000", "52100", True, "1") == PLAN  # 500 → 600: +20 %


def test_pyramid_never_grows_on_a_lower_quote():
    assert check(PLAN, "52000", "51800", True, "1") == PLAN


def test_pyramid_is_never_shrunk_below_one_lot():
    small = EntryPlan("Long_2", 1, "geometric", D("51500"))
    assert check(small, "52000", "52500", True, "1") == small  # 500 → 1000: floor(0.5) → 1
