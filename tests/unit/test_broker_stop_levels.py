"""A broker stop follows its layer's stop up (DOMAIN.md §12): a round that skips working out
the levels of a layer whose stop is not above the broker's never misses a move."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from core.broker_stops import StopRecord, StopStatus, may_move, should_move, stop_levels
from core.models import Layer, LayerStatus

LAYER = Layer(id=1, trade_id=1, instrument="GOLD_MINI", layer="Long_1", status=LayerStatus.OPEN,
              lots=1, quantity=1, entry_price=D("100"), entry_timestamp=datetime.now(UTC),
              initial_stop=D("1"), current_stop=D("90"), highest_close=D("100"), atr=D("5"),
              limiter="risk", tradingsymbol="GOLDM", signal_id=None, exit_price=None,
              exit_timestamp=None, exit_reason=None, realized_pnl=None, version=1)
STOP = StopRecord(id=1, tag="BS1", position_id=1, instrument="GOLD_MINI", kind="gtt",
                  tradingsymbol="GOLDM", exchange=None, quantity=1, trigger_price=D("90"),
                  limit_price=D("89"), status=StopStatus.ACTIVE, broker_ref="G1",
                  pending_trigger=None, pending_limit=None, exit_intent_id=None, reason=None,
                  version=1)
PRICES = st.decimals(min_value=D("0.05"), max_value=D("200000"), places=4)


@given(stop=PRICES, trigger=PRICES,
       tick=st.sampled_from([D("0.05"), D("0.1"), D("0.25"), D("1"), D("1.0"), D("5")]),
       band=st.sampled_from([D("0.5"), D("1.0"), D("2")]))
def test_a_stop_that_should_move_is_never_skipped(stop, trigger, tick, band) -> None:
    layer = replace(LAYER, current_stop=stop)
    record = replace(STOP, trigger_price=trigger)
    if should_move(record, stop_levels(layer, band, tick)):
        assert may_move(record, layer)

