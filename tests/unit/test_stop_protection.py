"""Which layers are shown unprotected: each instrument's round says what is true of its own
layers only, whatever the other instruments (a name that begins another's included)."""

from __future__ import annotations

from live.readiness import Readiness
from live.stop_protection import Protection


def test_each_instrument_says_only_what_is_true_of_its_own_layers():
    readiness = Readiness()
    protection = Protection(readiness)
    protection.show("GOLD", {"GOLD Long_1": "none"}, set())
    protection.show("GOLD_MINI", {"GOLD_MINI Long_1": "rejected"}, {"GOLD_MINI Long_2"})
    assert protection.unprotected() == ["unprotected:GOLD Long_1",
                                        "unprotected:GOLD_MINI Long_1"]
    protection.show("GOLD", {}, set())  # protected again: GOLD_MINI's stay
    assert protection.unprotected() == ["unprotected:GOLD_MINI Long_1"]
    assert readiness.reasons() == ["starting:load", "unprotected:GOLD_MINI Long_1"]
    assert protection.report() == {"unprotected": {"GOLD_MINI Long_1": "rejected"},
                                   "waiting_for_session": ["GOLD_MINI Long_2"]}
    protection.show("GOLD_MINI", {}, set())
    assert protection.report() == {"unprotected": {}, "waiting_for_session": []}
    assert readiness.reasons() == ["starting:load"]
