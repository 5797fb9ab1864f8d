"""What a fill does to the book: entries, pyramiding state and exit allocation (§5–§7)."""

from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_instruments
from core.booking import (
    Filled,
    average_price,
    book_exit,
    entry_layer,
    filled,
    next_pyramiding,
)
from core.intents import EntryPurpose
from core.models import ContractRef, Layer, LayerStatus, NewLayer, PyramidingState

INSTRUMENTS = load_instruments(DEFAULT_CONFIG_DIR / "instruments.json")
GOLD = INSTRUMENTS["GOLD_MINI"]
BN = INSTRUMENTS["BANK_NIFTY"]
AT = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)


def make_layer(id: int, lots: int, entry: str, *, quantity: int | None = None,
               instrument: str = "GOLD_MINI", layer: str = "Long_1", trade_id: int = 7,
               status: LayerStatus = LayerStatus.CLOSING) -> Layer:
    return Layer(id=id, trade_id=trade_id, instrument=instrument, layer=layer, status=status,
                 lots=lots, quantity=lots if quantity is None else quantity,
                 entry_price=D(entry), entry_timestamp=AT, initial_stop=D(entry) - 700,
                 current_stop=D(entry) - 700, highest_close=D(entry), atr=D("700"),
                 limiter="risk", tradingsymbol="GOLDM25FEBFUT", signal_id=3, exit_price=None,
                 exit_timestamp=None, exit_reason=None, realized_pnl=None, version=1)


def base_purpose(**changes: object) -> EntryPurpose:
    fields = {"layer": "Long_1", "trade_id": None, "initial_stop": D("77800"),
              "atr": D("700"), "limiter": "risk"}
    return EntryPurpose(**{**fields, **changes})  # type: ignore[arg-type]


def pyramid_purpose(trade_id: int = 7) -> EntryPurpose:
    return base_purpose(layer="Long_2", trade_id=trade_id, initial_stop=D("78600"),
                        limiter="geometric")


# --- book_exit: full fills -------------------------------------------------------------------


def test_single_layer_full_fill_books_pnl_to_the_paisa() -> None:
    layer = make_layer(1, 3, "78500")

    booking = book_exit([layer], {1}, 3, D("79000"), GOLD)

    (close,) = booking.closes
    assert (close.layer, close.lots, close.quantity, close.whole) == (layer, 3, 3, True)
    assert (close.kept_lots, close.kept_quantity) == (0, 0)
    assert close.pnl == D("15000")
    assert str(close.pnl) == "15000.00"
    assert booking.total_pnl == D("15000.00")
    assert booking.reopened == ()
    assert booking.flat is True


def test_losing_exit_books_negative_pnl() -> None:
    booking = book_exit([make_layer(1, 2, "78500")], {1}, 2, D("78100"), GOLD)

    assert booking.closes[0].pnl == D("-8000.00")
    assert booking.total_pnl == D("-8000.00")


def test_pnl_is_quantized_to_the_paisa() -> None:
    layer = make_layer(1, 1, "52000.05", quantity=30, instrument="BANK_NIFTY")

    booking = book_exit([layer], {1}, 30, D("52000.1234"), BN)

    # 0.0734 × 1 × 30 = 2.202
    assert str(booking.closes[0].pnl) == "2.20"


def test_exit_all_of_three_layers_closes_each_whole_at_the_one_price() -> None:
    layers = [make_layer(1, 4, "78500"), make_layer(2, 2, "79000", layer="Long_2"),
              make_layer(3, 1, "79300", layer="Long_3")]

    booking = book_exit(layers, {1, 2, 3}, 7, D("79500"), GOLD)

    assert [(c.layer.id, c.lots, c.quantity, c.whole) for c in booking.closes] == [
        (1, 4, 4, True), (2, 2, 2, True), (3, 1, 1, True)]
    assert [c.pnl for c in booking.closes] == [D("40000.00"), D("10000.00"), D("2000.00")]
    assert booking.total_pnl == D("52000.00")
    assert booking.reopened == ()
    assert booking.flat is True


# --- book_exit: partial fills ----------------------------------------------------------------


def test_partial_exit_all_shares_lots_in_order_and_splits_the_layer_reached() -> None:
    layers = [make_layer(1, 3, "78500"), make_layer(2, 2, "79000", layer="Long_2"),
              make_layer(3, 1, "79300", layer="Long_3")]

    booking = book_exit(layers, {1, 2, 3}, 4, D("79500"), GOLD)

    first, second = booking.closes
    assert (first.layer.id, first.lots, first.quantity, first.whole) == (1, 3, 3, True)
    assert first.pnl == D("30000.00")
    assert (second.layer.id, second.lots, second.quantity, second.whole) == (2, 1, 1, False)
    assert (second.kept_lots, second.kept_quantity) == (1, 1)
    assert second.pnl == D("5000.00")  # only the closed lot
    assert booking.total_pnl == D("35000.00")
    assert booking.reopened == (layers[2],)
    assert booking.flat is False


def test_partial_fill_follows_the_given_order_not_the_layer_ids() -> None:
    layers = [make_layer(3, 1, "79300", layer="Long_3"), make_layer(1, 3, "78500")]

    booking = book_exit(layers, {1, 3}, 2, D("79500"), GOLD)

    assert [(c.layer.id, c.lots, c.whole) for c in booking.closes] == [(3, 1, True),
                                                                       (1, 1, False)]
    assert booking.total_pnl == D("2000.00") + D("10000.00")
    assert booking.flat is False


def test_partial_fill_ending_on_a_layer_boundary_reopens_the_rest_whole() -> None:
    layers = [make_layer(1, 3, "78500"), make_layer(2, 2, "79000", layer="Long_2"),
              make_layer(3, 1, "79300", layer="Long_3")]

    booking = book_exit(layers, {1, 2, 3}, 3, D("79500"), GOLD)

    assert [(c.layer.id, c.lots, c.whole) for c in booking.closes] == [(1, 3, True)]
    assert booking.reopened == (layers[1], layers[2])
    assert booking.flat is False


def test_split_of_a_single_layer_exit() -> None:
    booking = book_exit([make_layer(1, 5, "78500")], {1}, 2, D("79000"), GOLD)

    (close,) = booking.closes
    assert (close.lots, close.quantity, close.kept_lots, close.kept_quantity) == (2, 2, 3, 3)
    assert close.whole is False
    assert close.pnl == D("10000.00")
    assert booking.reopened == ()
    assert booking.flat is False


def test_zero_fill_reopens_everything() -> None:
    layers = [make_layer(1, 3, "78500"), make_layer(2, 2, "79000", layer="Long_2")]

    booking = book_exit(layers, {1, 2}, 0, D("79500"), GOLD)

    assert booking.closes == ()
    assert booking.reopened == tuple(layers)
    assert booking.total_pnl == 0
    assert booking.flat is False


def test_negative_filled_quantity_raises() -> None:
    with pytest.raises(ValueError, match="filled quantity"):
        book_exit([make_layer(1, 3, "78500")], {1}, -1, D("79000"), GOLD)


# --- book_exit: flat -------------------------------------------------------------------------


def test_exit_of_one_layer_while_another_stays_live_is_not_flat() -> None:
    pyramid = make_layer(2, 1, "79000", layer="Long_2")

    booking = book_exit([pyramid], {1, 2}, 1, D("79500"), GOLD)

    assert booking.closes[0].whole is True
    assert booking.flat is False


def test_exit_of_the_last_live_layer_is_flat() -> None:
    pyramid = make_layer(2, 1, "79000", layer="Long_2")

    booking = book_exit([pyramid], {2}, 1, D("79500"), GOLD)

    assert booking.flat is True


def test_split_layer_keeps_the_instrument_live() -> None:
    layers = [make_layer(1, 3, "78500"), make_layer(2, 2, "79000", layer="Long_2")]

    booking = book_exit(layers, {1, 2}, 4, D("79500"), GOLD)

    assert booking.reopened == ()
    assert booking.closes[-1].whole is False
    assert booking.flat is False


# --- book_exit: Bank Nifty quantities in units -----------------------------------------------


def test_bank_nifty_full_exit_closes_the_stored_units() -> None:
    layer = make_layer(1, 3, "52000", quantity=90, instrument="BANK_NIFTY")

    booking = book_exit([layer], {1}, 90, D("52300"), BN)

    (close,) = booking.closes
    assert (close.lots, close.quantity, close.kept_quantity) == (3, 90, 0)
    assert close.pnl == D("27000.00")  # 300 × 3 × 30
    assert booking.flat is True


def test_bank_nifty_split_uses_units_per_lot() -> None:
    layers = [make_layer(1, 3, "52000", quantity=90, instrument="BANK_NIFTY"),
              make_layer(2, 2, "52400", quantity=60, instrument="BANK_NIFTY", layer="Long_2")]

    booking = book_exit(layers, {1, 2}, 120, D("52500"), BN)

    first, second = booking.closes
    assert (first.lots, first.quantity, first.whole) == (3, 90, True)
    assert (second.lots, second.quantity, second.kept_lots, second.kept_quantity) == (
        1, 30, 1, 30)
    assert second.pnl == D("3000.00")  # 100 × 1 × 30
    assert booking.flat is False


def test_split_uses_the_layers_own_quantity_per_lot_not_the_configured_lot_size() -> None:
    spec = BN.model_copy(update={"lot_size": 15})
    layer = make_layer(1, 3, "52000", quantity=90, instrument="BANK_NIFTY")

    booking = book_exit([layer], {1}, 30, D("52100"), spec)  # 30 units: 1 lot of this layer

    (close,) = booking.closes
    assert (close.lots, close.quantity) == (1, 30)
    assert (close.kept_lots, close.kept_quantity) == (2, 60)
    assert close.pnl == D("3000.00")


# --- average_price ---------------------------------------------------------------------------


def test_average_price_is_volume_weighted() -> None:
    assert average_price([(30, D("52000")), (60, D("52030"))]) == D("52020")


def test_average_price_is_quantized_to_four_decimals() -> None:
    price = average_price([(1, D("100")), (2, D("100.01"))])

    assert price == D("100.0067")
    assert price.as_tuple().exponent == -4


def test_average_price_ignores_zero_quantity_fills() -> None:
    assert average_price([(0, D("99999")), (3, D("78500")), (0, D("1"))]) == D("78500")


@pytest.mark.parametrize("fills", [[], [(0, D("78500"))], [(0, D("1")), (0, D("2"))]])
def test_average_price_without_quantity_raises(fills: list[tuple[int, D]]) -> None:
    with pytest.raises(ValueError):
        average_price(fills)


# --- filled ----------------------------------------------------------------------------------


def test_filled_counts_bank_nifty_units_as_lots() -> None:
    assert filled(90, D("52000"), BN) == Filled(lots=3, quantity=90, price=D("52000"))


def test_filled_takes_gold_quantity_as_lots() -> None:
    assert filled(3, D("78500"), GOLD) == Filled(lots=3, quantity=3, price=D("78500"))


# --- entry_layer -----------------------------------------------------------------------------


def test_entry_layer_opens_at_the_fill_with_the_purposes_stops() -> None:
    purpose = base_purpose()
    fill = Filled(lots=3, quantity=90, price=D("52010.5"))

    contract = ContractRef("BANKNIFTY25JANFUT", "NFO", date(2025, 1, 30))
    layer = entry_layer(purpose, fill, trade_id=11, instrument="BANK_NIFTY",
                        contract=contract, signal_id=42, at=AT)

    assert layer == NewLayer(trade_id=11, instrument="BANK_NIFTY", layer="Long_1", lots=3,
                             quantity=90, entry_price=D("52010.5"), entry_timestamp=AT,
                             initial_stop=D("77800"), atr=D("700"), limiter="risk",
                             tradingsymbol="BANKNIFTY25JANFUT", signal_id=42, exchange="NFO",
                             expiry=date(2025, 1, 30))


def test_entry_layer_of_a_pyramid_carries_its_layer_and_limiter() -> None:
    layer = entry_layer(pyramid_purpose(), Filled(1, 1, D("79200")), trade_id=7,
                        instrument="GOLD_MINI", contract=None, signal_id=None, at=AT)

    assert (layer.layer, layer.trade_id, layer.initial_stop, layer.limiter) == (
        "Long_2", 7, D("78600"), "geometric")
    assert (layer.tradingsymbol, layer.signal_id) == (None, None)


# --- next_pyramiding -------------------------------------------------------------------------


def test_base_entry_starts_the_trades_state() -> None:
    state = next_pyramiding(None, base_purpose(), instrument="GOLD_MINI", trade_id=12,
                            layer_id=40, price=D("78500"))

    assert state == PyramidingState("GOLD_MINI", 12, 40, D("78500"), 0, 0)


def test_base_entry_replaces_a_previous_trades_state_keeping_its_version() -> None:
    old = PyramidingState("GOLD_MINI", 7, 20, D("80100"), 2, version=5)

    state = next_pyramiding(old, base_purpose(), instrument="GOLD_MINI", trade_id=12,
                            layer_id=40, price=D("78500"))

    assert state == PyramidingState("GOLD_MINI", 12, 40, D("78500"), 0, version=5)


def test_pyramid_counts_itself_and_moves_the_last_pyramid_price() -> None:
    current = PyramidingState("GOLD_MINI", 7, 20, D("78500"), 1, version=3)

    state = next_pyramiding(current, pyramid_purpose(), instrument="GOLD_MINI", trade_id=7,
                            layer_id=41, price=D("79200"))

    assert state == PyramidingState("GOLD_MINI", 7, 20, D("79200"), 2, version=3)


def test_pyramid_without_a_state_gets_one_of_its_own_trade() -> None:
    state = next_pyramiding(None, pyramid_purpose(), instrument="GOLD_MINI", trade_id=7,
                            layer_id=41, price=D("79200"))

    assert state == PyramidingState("GOLD_MINI", 7, None, D("79200"), 1, version=0)


def test_pyramid_with_another_trades_state_gets_one_of_its_own_trade() -> None:
    other = PyramidingState("GOLD_MINI", 6, 15, D("80000"), 3, version=4)

    state = next_pyramiding(other, pyramid_purpose(), instrument="GOLD_MINI", trade_id=7,
                            layer_id=41, price=D("79200"))

    assert state == PyramidingState("GOLD_MINI", 7, None, D("79200"), 1, version=4)
