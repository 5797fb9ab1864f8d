"""Contract choice, tick rounding and freeze slicing for the Kite adapter."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from live.brokers.kite_contracts import futures, round_to_tick, slice_quantity


def rows():
    def fut(symbol, expiry):
        return {"instrument_type": "FUT", "tradingsymbol": symbol, "exchange": "NFO",
                "name": "BANKNIFTY", "expiry": expiry, "lot_size": 30, "tick_size": 0.05}
    return [fut("BANKNIFTY27JANFUT", date(2027, 1, 28)), fut("BANKNIFTY26DECFUT",
                                                             date(2026, 12, 31)),
            {"instrument_type": "CE", "tradingsymbol": "X", "exchange": "NFO",
             "name": "BANKNIFTY", "expiry": date(2026, 12, 31), "lot_size": 30,
             "tick_size": 0.05}]


def test_tick_and_lot_come_from_the_dump():
    contract = futures(rows())[("NFO", "BANKNIFTY")][0]
    assert (contract.tick_size, contract.lot_size) == (Decimal("0.05"), 30)


def test_limit_prices_round_towards_a_fill():
    assert round_to_tick(Decimal("52000.12"), Decimal("0.05"), "BUY") == Decimal("52000.15")
    assert round_to_tick(Decimal("52000.12"), Decimal("0.05"), "SELL") == Decimal("52000.10")
    assert round_to_tick(Decimal("78500.4"), Decimal("1"), "BUY") == Decimal("78501")


def test_slices_respect_freeze_and_lots():
    assert slice_quantity(1530, 30, 600) == [600, 600, 330]
    assert slice_quantity(600, 30, 600) == [600]
    assert slice_quantity(5, 1, None) == [5]
    assert slice_quantity(1050, 35, 600) == [595, 455]  # 17 + 13 lots
    with pytest.raises(ValueError):
        slice_quantity(100, 50, 40)
