"""What a roll does to the book (DOMAIN.md §9): old legs, carried layers, leg fills, alert basis."""

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest

from core.accounting import layer_pnl
from core.models import ContractRef, Layer, LayerStatus, PyramidingState
from core.rollover import (
    CLOSING,
    DONE,
    OPENING,
    LegProgress,
    Roll,
    alert_basis,
    carried,
    carried_pyramiding,
    close_progress,
    in_held_terms,
    new_roll,
    old_legs,
    open_progress,
)
from core.signals import parse_signal
from tests.support.trading import INSTRUMENTS, signal_payload

GOLD = INSTRUMENTS["GOLD_MINI"]
BN = INSTRUMENTS["BANK_NIFTY"]
AT = datetime(2026, 2, 2, 4, 30, tzinfo=UTC)
GOLD_FEB = ContractRef("GOLDM26FEBFUT", "MCX", date(2026, 2, 5))
GOLD_MAR = ContractRef("GOLDM26MARFUT", "MCX", date(2026, 3, 5))
BN_FEB = ContractRef("BANKNIFTY26FEBFUT", "NFO", date(2026, 2, 24))
BN_MAR = ContractRef("BANKNIFTY26MARFUT", "NFO", date(2026, 3, 31))


def make_layer(id: int, lots: int, entry: str, *, quantity: int | None = None,
               instrument: str = "GOLD_MINI", initial_stop: str | None = None,
               current_stop: str | None = None, highest_close: str | None = None,
               contract: ContractRef = GOLD_FEB, layer: str = "Long_1") -> Layer:
    return Layer(id=id, trade_id=7, instrument=instrument, layer=layer, status=LayerStatus.OPEN,
                 lots=lots, quantity=lots if quantity is None else quantity,
                 entry_price=D(entry), entry_timestamp=AT,
                 initial_stop=D(initial_stop) if initial_stop else D(entry) - 700,
                 current_stop=D(current_stop) if current_stop else D(entry) - 700,
                 highest_close=D(highest_close) if highest_close else D(entry), atr=D("700"),
                 limiter="risk", tradingsymbol=contract.tradingsymbol, signal_id=3,
                 exit_price=None, exit_timestamp=None, exit_reason=None, realized_pnl=None,
                 version=4, exchange=contract.exchange, expiry=contract.expiry)


def make_roll(**changes: object) -> Roll:
    fields: dict[str, object] = {
        "id": 1, "instrument": "GOLD_MINI", "status": DONE,
        "old_tradingsymbol": GOLD_FEB.tradingsymbol, "old_exchange": GOLD_FEB.exchange,
        "old_expiry": GOLD_FEB.expiry, "new_tradingsymbol": GOLD_MAR.tradingsymbol,
        "new_exchange": GOLD_MAR.exchange, "new_expiry": GOLD_MAR.expiry,
        "position_ids": [1, 2], "lots": 3, "quantity": 3, "new_quantity": 3,
        "closed_quantity": 0, "close_notional": D(0), "opened_quantity": 0,
        "open_notional": D(0), "close_price": D("79250"), "open_price": D("79430"),
        "spread": D("180"), "pnl": D("16500.00"), "quoted_spread": D("175"),
        "exit_reason": "ROLL", "exit_position_ids": [], "started_at": AT, "closed_at": AT,
        "completed_at": AT,
        "version": 3}
    return Roll(**{**fields, **changes})  # type: ignore[arg-type]


def rupee_risk(layer: Layer, point_value: D) -> D:
    return (layer.entry_price - layer.current_stop) * layer.lots * point_value


# --- old_legs ---------------------------------------------------------------------------------


def test_old_legs_book_each_layers_pnl_on_the_old_contract() -> None:
    layers = [make_layer(1, 2, "78500"), make_layer(2, 1, "79100", layer="Long_2"),
              make_layer(3, 1, "79400.25", layer="Long_3")]

    legs = old_legs(layers, D("79250.5"), GOLD)

    assert [leg.layer for leg in legs] == layers
    # (79250.5 − 78500) × 2 × 10; (79250.5 − 79100) × 1 × 10; (79250.5 − 79400.25) × 1 × 10
    assert [leg.pnl for leg in legs] == [D("15010.00"), D("1505.00"), D("-1497.50")]
    assert [str(leg.pnl) for leg in legs] == ["15010.00", "1505.00", "-1497.50"]


def test_old_legs_use_the_instruments_point_value_and_round_to_the_paisa() -> None:
    layers = [make_layer(1, 2, "52000.05", quantity=60, instrument="BANK_NIFTY",
                         contract=BN_FEB),
              make_layer(2, 1, "52150", quantity=30, instrument="BANK_NIFTY", contract=BN_FEB,
                         layer="Long_2")]

    legs = old_legs(layers, D("52100.1236"), BN)

    # 100.0736 × 2 × 30 = 6004.416; −49.8764 × 1 × 30 = −1496.292
    assert [str(leg.pnl) for leg in legs] == ["6004.42", "-1496.29"]
    assert [leg.pnl for leg in legs] == [
        layer_pnl(layer.entry_price, D("52100.1236"), layer.lots, D(30)) for layer in layers]


# --- carried ----------------------------------------------------------------------------------


def test_carried_layer_enters_at_the_new_fill_with_stops_shifted_by_a_positive_spread() -> None:
    layer = make_layer(1, 2, "78500", initial_stop="77800", current_stop="78100",
                       highest_close="79000")

    changes = carried(layer, GOLD_MAR, D("79430"), D("180"), GOLD)

    assert changes == {"entry_price": D("79430"), "initial_stop": D("77980"),
                       "current_stop": D("78280"), "highest_close": D("79180"),
                       "quantity": 2, "tradingsymbol": "GOLDM26MARFUT", "exchange": "MCX",
                       "expiry": date(2026, 3, 5)}


def test_carried_layer_stops_shift_down_with_a_negative_spread() -> None:
    layer = make_layer(1, 1, "78500", initial_stop="77800", current_stop="78100",
                       highest_close="79000")

    changes = carried(layer, GOLD_MAR, D("79000.5"), D("-249.5"), GOLD)

    assert changes["entry_price"] == D("79000.5")
    assert changes["initial_stop"] == D("77550.5")
    assert changes["current_stop"] == D("77850.5")
    assert changes["highest_close"] == D("78750.5")


@pytest.mark.parametrize("spread", [D("180"), D("-249.5")])
def test_carried_layer_keeps_its_rupee_risk_from_the_market_to_the_stop(spread: D) -> None:
    old_close = D("79250")
    layer = make_layer(1, 2, "79250", initial_stop="77800", current_stop="78100")
    new_fill = old_close + spread

    moved = replace(layer, **carried(layer, GOLD_MAR, new_fill, spread, GOLD))  # type: ignore[arg-type]

    # Entered at the old close, so entry − stop is the risk from the market before and after.
    assert rupee_risk(layer, GOLD.point_value) == D("23000")
    assert rupee_risk(moved, GOLD.point_value) == D("23000")


@pytest.mark.parametrize("spread", [D("180"), D("-249.5")])
def test_stopped_out_after_a_roll_the_trade_loses_what_it_would_have_before(spread: D) -> None:
    old_close = D("79250")
    layer = make_layer(1, 2, "78500", current_stop="78100")
    new_fill = old_close + spread
    moved = replace(layer, **carried(layer, GOLD_MAR, new_fill, spread, GOLD))  # type: ignore[arg-type]

    (leg,) = old_legs([layer], old_close, GOLD)
    after_roll = leg.pnl + layer_pnl(moved.entry_price, moved.current_stop, moved.lots,
                                     GOLD.point_value)

    before_roll = layer_pnl(layer.entry_price, layer.current_stop, layer.lots, GOLD.point_value)
    assert before_roll == D("-8000.00")
    assert after_roll == before_roll


def test_carried_layer_keeps_its_id_trade_and_lots() -> None:
    layer = make_layer(1, 2, "78500")

    changes = carried(layer, GOLD_MAR, D("79430"), D("180"), GOLD)

    assert not {"id", "trade_id", "lots", "layer", "instrument", "atr"} & changes.keys()
    moved = replace(layer, **changes)  # type: ignore[arg-type]
    assert moved.contract == GOLD_MAR
    assert (moved.id, moved.trade_id, moved.lots) == (1, 7, 2)


def test_carried_quantity_counts_units_for_bank_nifty_and_lots_for_gold_mini() -> None:
    # The old contract's quantity is recorded in an older lot size (15): the new leg is
    # counted afresh from the lots.
    bank_nifty = make_layer(1, 3, "52000", quantity=45, instrument="BANK_NIFTY",
                            contract=BN_FEB)
    gold = make_layer(2, 3, "78500")

    assert carried(bank_nifty, BN_MAR, D("52310"), D("310"), BN)["quantity"] == 90
    assert carried(gold, GOLD_MAR, D("79430"), D("180"), GOLD)["quantity"] == 3


def test_carried_contract_fields_are_the_new_contracts() -> None:
    layer = make_layer(1, 1, "52000", quantity=30, instrument="BANK_NIFTY", contract=BN_FEB)

    changes = carried(layer, BN_MAR, D("52310"), D("310"), BN)

    assert (changes["tradingsymbol"], changes["exchange"], changes["expiry"]) == (
        "BANKNIFTY26MARFUT", "NFO", date(2026, 3, 31))


def test_carried_stop_that_would_go_below_zero_is_floored_at_zero() -> None:
    layer = make_layer(1, 1, "500", initial_stop="100", current_stop="250",
                       highest_close="600")

    changes = carried(layer, GOLD_MAR, D("200"), D("-300"), GOLD)

    assert changes["initial_stop"] == D(0)
    assert changes["current_stop"] == D(0)
    assert changes["highest_close"] == D("300")


# --- carried_pyramiding -----------------------------------------------------------------------


@pytest.mark.parametrize(("spread", "shifted"), [(D("180"), D("79180")),
                                                 (D("-249.5"), D("78750.5"))])
def test_carried_pyramiding_shifts_the_last_pyramid_price(spread: D, shifted: D) -> None:
    state = PyramidingState(instrument="GOLD_MINI", trade_id=7, base_position_id=1,
                            last_pyramid_price=D("79000"), pyramid_count=2, version=5)

    assert carried_pyramiding(state, spread) == replace(state, last_pyramid_price=shifted)


def test_carried_pyramiding_without_a_state_stays_none() -> None:
    assert carried_pyramiding(None, D("180")) is None


# --- leg progress -----------------------------------------------------------------------------


def test_close_progress_accumulates_two_partial_fills() -> None:
    roll = make_roll(status=CLOSING, quantity=3, closed_quantity=0, close_notional=D(0))

    first = close_progress(roll, 1, D("79250"))

    assert first == LegProgress(quantity=1, notional=D("79250"), target=3)
    assert (first.complete, first.left, first.average) == (False, 2, D("79250.0000"))

    roll = replace(roll, closed_quantity=first.quantity, close_notional=first.notional)
    second = close_progress(roll, 2, D("79260"))

    assert second == LegProgress(quantity=3, notional=D("237770"), target=3)
    assert (second.complete, second.left) == (True, 0)
    # 237770 / 3 = 79256.666…, to four decimals
    assert str(second.average) == "79256.6667"


def test_open_progress_accumulates_in_the_new_contracts_units() -> None:
    roll = make_roll(instrument="BANK_NIFTY", status=OPENING, lots=3, quantity=45,
                     new_quantity=90, opened_quantity=0, open_notional=D(0))

    first = open_progress(roll, 30, D("52310.05"))

    assert (first.quantity, first.notional, first.target) == (30, D("1569301.50"), 90)
    assert (first.complete, first.left) == (False, 60)

    roll = replace(roll, opened_quantity=first.quantity, open_notional=first.notional)
    second = open_progress(roll, 60, D("52312.10"))

    assert (second.quantity, second.notional) == (90, D("4708027.50"))
    assert (second.complete, second.left) == (True, 0)
    # 4708027.5 / 90 = 52311.41666…
    assert str(second.average) == "52311.4167"


def test_close_progress_targets_the_old_quantity_and_open_progress_the_new() -> None:
    roll = make_roll(instrument="BANK_NIFTY", quantity=45, new_quantity=90)

    assert close_progress(roll, 45, D("52000")).complete is True
    assert open_progress(roll, 45, D("52310")).left == 45


# --- alert_basis ------------------------------------------------------------------------------


@pytest.mark.parametrize(("today", "basis"), [(date(2026, 2, 2), D("180")),
                                              (date(2026, 2, 5), D("180")),
                                              (date(2026, 2, 6), D(0)),
                                              (date(2026, 3, 1), D(0))])
def test_alert_basis_is_the_spread_through_the_old_expiry_day(today: date, basis: D) -> None:
    assert alert_basis(GOLD, [make_roll()], today) == basis


def test_alert_basis_is_zero_when_alerts_follow_the_traded_contract() -> None:
    spec = GOLD.model_copy(update={"alerts_follow": "traded_contract"})

    assert alert_basis(spec, [make_roll()], date(2026, 2, 2)) == D(0)


@pytest.mark.parametrize("roll", [
    make_roll(status=CLOSING, close_price=None, open_price=None, spread=None, pnl=None),
    make_roll(status=OPENING, open_price=None, spread=D("180")),
])
def test_alert_basis_ignores_a_roll_not_yet_done(roll: Roll) -> None:
    assert alert_basis(GOLD, [roll], date(2026, 2, 2)) == D(0)


def test_alert_basis_ignores_rolls_of_another_instrument() -> None:
    bank_nifty = make_roll(instrument="BANK_NIFTY", old_expiry=BN_FEB.expiry, spread=D("310"))

    assert alert_basis(GOLD, [bank_nifty], date(2026, 2, 2)) == D(0)
    assert alert_basis(BN, [bank_nifty, make_roll(id=2)], date(2026, 2, 2)) == D("310")


def test_alert_basis_with_two_done_rolls_takes_the_later() -> None:
    earlier = make_roll(id=4, spread=D("150"))
    later = make_roll(id=9, spread=D("180"))

    assert alert_basis(GOLD, [earlier, later], date(2026, 2, 3)) == D("180")
    assert alert_basis(GOLD, [later, earlier], date(2026, 2, 3)) == D("180")


def test_alert_basis_without_rolls_is_zero() -> None:
    assert alert_basis(GOLD, [], date(2026, 2, 2)) == D(0)


# --- in_held_terms ----------------------------------------------------------------------------


@pytest.mark.parametrize(("basis", "price", "stop", "supertrend", "entry"), [
    (D("180"), "78680", "77980", "77180", "78630"),
    (D("-249.5"), "78250.5", "77550.5", "76750.5", "78200.5"),
])
def test_in_held_terms_shifts_every_price_by_the_basis(basis: D, price: str, stop: str,
                                                       supertrend: str, entry: str) -> None:
    signal = parse_signal(signal_payload("BASE_ENTRY", price="78500", roc=D("1.5"),
                                         entry_price=D("78450"), er=D("0.8")), INSTRUMENTS)

    held = in_held_terms(signal, basis)

    assert held == replace(signal, price=D(price), stop=D(stop), supertrend=D(supertrend),
                           entry_price=D(entry))
    assert (held.atr, held.er, held.roc) == (D("700"), D("0.8"), D("1.5"))


def test_in_held_terms_keeps_an_exits_stop_of_zero() -> None:
    signal = parse_signal(signal_payload("EXIT", price="78500"), INSTRUMENTS)

    held = in_held_terms(signal, D("180"))

    assert held.stop == D(0)
    assert held.price == D("78680")
    assert held.supertrend == D("77180")


def test_in_held_terms_leaves_absent_prices_absent() -> None:
    signal = parse_signal(signal_payload("MARKET_DATA", position=None), INSTRUMENTS)

    held = in_held_terms(signal, D("180"))

    assert (held.stop, held.entry_price) == (None, None)
    assert held.price == D("78680")


def test_in_held_terms_with_zero_basis_returns_the_same_signal() -> None:
    signal = parse_signal(signal_payload("BASE_ENTRY"), INSTRUMENTS)

    assert in_held_terms(signal, D(0)) is signal


# --- new_roll ---------------------------------------------------------------------------------


def test_new_roll_sums_lots_and_quantities_and_counts_the_new_leg_in_units() -> None:
    layers = [make_layer(1, 2, "52000", quantity=30, instrument="BANK_NIFTY", contract=BN_FEB),
              make_layer(2, 1, "52400", quantity=15, instrument="BANK_NIFTY", contract=BN_FEB,
                         layer="Long_2")]

    roll = new_roll("BANK_NIFTY", BN_FEB, BN_MAR, layers, BN, D("305.5"), AT)

    assert (roll.lots, roll.quantity, roll.new_quantity) == (3, 45, 90)
    assert roll.position_ids == [1, 2]
    assert (roll.old_tradingsymbol, roll.old_exchange, roll.old_expiry) == (
        "BANKNIFTY26FEBFUT", "NFO", date(2026, 2, 24))
    assert (roll.new_tradingsymbol, roll.new_exchange, roll.new_expiry) == (
        "BANKNIFTY26MARFUT", "NFO", date(2026, 3, 31))
    assert (roll.instrument, roll.quoted_spread, roll.started_at) == (
        "BANK_NIFTY", D("305.5"), AT)


def test_new_roll_of_gold_mini_counts_lots() -> None:
    layers = [make_layer(1, 2, "78500"), make_layer(2, 1, "79100", layer="Long_2")]

    roll = new_roll("GOLD_MINI", GOLD_FEB, GOLD_MAR, layers, GOLD, D("175"), AT)

    assert (roll.lots, roll.quantity, roll.new_quantity) == (3, 3, 3)
