"""Signal field rules, normalisation and freshness (DOMAIN.md §3)."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D
from typing import Any

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_instruments
from core.models import SignalType
from core.signals import (
    InvalidSignal,
    Signal,
    entry_waited_too_long,
    fingerprint,
    freshness,
    parse_signal,
    storable_payload,
)

INSTRUMENTS = frozenset(load_instruments(DEFAULT_CONFIG_DIR / "instruments.json"))
IST = timezone(timedelta(hours=5, minutes=30))
MOMENT = datetime(2025, 1, 15, 4, 0, tzinfo=UTC)  # 09:30 IST


def trade_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "secret": "s3cret", "type": "BASE_ENTRY", "instrument": "BANK_NIFTY",
        "position": "Long_1", "price": D("52000"), "stop": D("51650"), "lots": 3,
        "atr": D("350"), "er": D("0.82"), "supertrend": D("51500"),
        "timestamp": "2025-01-15T04:00:00Z",
    }
    payload.update(changes)
    return payload


def exit_payload(**changes: Any) -> dict[str, Any]:
    return trade_payload(**{"type": "EXIT", "position": "ALL", "reason": "TREND_END",
                            **changes})


def market_payload(**changes: Any) -> dict[str, Any]:
    payload = {"type": "MARKET_DATA", "instrument": "GOLD_MINI", "price": D("78500"),
               "atr": D("700"), "supertrend": D("77000"), "timestamp": "2025-01-15T04:00:00Z"}
    return {**payload, **changes}


def without(payload: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key not in names}


def phrase_of(payload: dict[str, Any]) -> str:
    with pytest.raises(InvalidSignal) as caught:
        parse_signal(payload, INSTRUMENTS)
    assert str(caught.value) == caught.value.phrase
    return caught.value.phrase


# --- a valid signal -------------------------------------------------------------------------


def test_base_entry_parses_every_field() -> None:
    signal = parse_signal(trade_payload(roc="1.25", entry_price="51990"), INSTRUMENTS)

    assert signal == Signal(
        signal_type=SignalType.BASE_ENTRY, instrument="BANK_NIFTY", position="Long_1",
        price=D("52000"), stop=D("51650"), lots=3, atr=D("350"), er=D("0.82"),
        supertrend=D("51500"), timestamp=MOMENT, reason=None, roc=D("1.25"),
        entry_price=D("51990"))
    assert signal.timestamp.tzinfo is UTC


def test_optional_fields_default_to_none() -> None:
    signal = parse_signal(trade_payload(), INSTRUMENTS)

    assert (signal.roc, signal.entry_price, signal.reason) == (None, None, None)


def test_secret_and_unknown_keys_are_ignored() -> None:
    plain = parse_signal(without(trade_payload(), "secret"), INSTRUMENTS)

    assert parse_signal(trade_payload(secret="other", comment="hi"), INSTRUMENTS) == plain


def test_market_data_needs_no_trade_fields() -> None:
    signal = parse_signal(market_payload(), INSTRUMENTS)

    assert signal.signal_type == SignalType.MARKET_DATA
    assert (signal.position, signal.stop, signal.lots, signal.er) == (None, None, None, None)
    assert (signal.atr, signal.supertrend) == (D("700"), D("77000"))


def test_market_data_position_is_dropped() -> None:
    assert parse_signal(market_payload(position="Long_2"), INSTRUMENTS).position is None


def test_eod_monitor_needs_only_type_instrument_price_timestamp() -> None:
    payload = {"type": "EOD_MONITOR", "instrument": "COPPER", "price": "812.35",
               "timestamp": "2025-01-15T17:55:00Z"}

    signal = parse_signal(payload, INSTRUMENTS)

    assert (signal.signal_type, signal.price, signal.atr) == (SignalType.EOD_MONITOR,
                                                              D("812.35"), None)


def test_fingerprint_names_instrument_type_position_and_time() -> None:
    signal = parse_signal(trade_payload(type="PYRAMID", position="Long_3"), INSTRUMENTS)

    assert signal.fingerprint == fingerprint("BANK_NIFTY", "PYRAMID", "Long_3", MOMENT)


def test_z_and_zero_offset_give_the_same_fingerprint() -> None:
    zulu = parse_signal(trade_payload(timestamp="2025-01-15T04:00:00Z"), INSTRUMENTS)
    offset = parse_signal(trade_payload(timestamp="2025-01-15T04:00:00+00:00"), INSTRUMENTS)

    assert zulu.fingerprint == offset.fingerprint


# --- type ------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    without(trade_payload(), "type"),
    trade_payload(type=None),
    {"secret": "s3cret"},
])
def test_missing_type_is_reported_alone(payload: dict[str, Any]) -> None:
    assert phrase_of(payload) == "Missing required fields: type"


@pytest.mark.parametrize("value", ["BUY", "", "BASE ENTRY", 1, True, ["EXIT"]])
def test_unknown_type_is_invalid(value: object) -> None:
    assert phrase_of(trade_payload(type=value)) == "Invalid signal type"


def test_unknown_type_is_reported_before_missing_fields() -> None:
    assert phrase_of({"type": "BUY"}) == "Invalid signal type"


@pytest.mark.parametrize("value", ["base_entry", "Base_Entry", " BASE_ENTRY "])
def test_type_is_upper_cased(value: str) -> None:
    assert parse_signal(trade_payload(type=value), INSTRUMENTS).signal_type == "BASE_ENTRY"


# --- required fields -------------------------------------------------------------------------


@pytest.mark.parametrize(("signal_type", "expected"), [
    ("BASE_ENTRY", "instrument, position, price, stop, lots, atr, er, supertrend, timestamp"),
    ("PYRAMID", "instrument, position, price, stop, lots, atr, er, supertrend, timestamp"),
    ("EXIT", "instrument, position, price, stop, lots, atr, er, supertrend, timestamp"),
    ("MARKET_DATA", "instrument, price, atr, supertrend, timestamp"),
    ("EOD_MONITOR", "instrument, price, timestamp"),
])
def test_missing_fields_are_listed_in_table_order(signal_type: str, expected: str) -> None:
    assert phrase_of({"type": signal_type, "secret": "x"}) == f"Missing required fields: {expected}"


@pytest.mark.parametrize("name", ["instrument", "position", "price", "stop", "lots", "atr",
                                  "er", "supertrend", "timestamp"])
@pytest.mark.parametrize("signal_type", ["BASE_ENTRY", "PYRAMID", "EXIT"])
def test_each_trade_field_is_required(signal_type: str, name: str) -> None:
    payload = without(exit_payload(type=signal_type, position="Long_2"), name)

    assert phrase_of(payload) == f"Missing required fields: {name}"


@pytest.mark.parametrize("name", ["instrument", "price", "atr", "supertrend", "timestamp"])
def test_each_market_data_field_is_required(name: str) -> None:
    assert phrase_of(without(market_payload(), name)) == f"Missing required fields: {name}"


@pytest.mark.parametrize("name", ["instrument", "price", "timestamp"])
def test_each_eod_monitor_field_is_required(name: str) -> None:
    payload = without(market_payload(type="EOD_MONITOR"), name)

    assert phrase_of(payload) == f"Missing required fields: {name}"


def test_null_counts_as_missing() -> None:
    assert phrase_of(trade_payload(stop=None, er=None)) == "Missing required fields: stop, er"


def test_missing_fields_come_before_the_exit_reason() -> None:
    payload = without(exit_payload(), "reason", "price")

    assert phrase_of(payload) == "Missing required fields: price"


# --- instrument and position -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["gold_mini", "Gold_Mini", " GOLD_MINI"])
def test_instrument_is_upper_cased(value: str) -> None:
    assert parse_signal(trade_payload(instrument=value), INSTRUMENTS).instrument == "GOLD_MINI"


@pytest.mark.parametrize("value", ["NIFTY", "", 7, "GOLD MINI"])
def test_unknown_instrument_is_invalid(value: object) -> None:
    assert phrase_of(trade_payload(instrument=value)) == "Invalid instrument"


@pytest.mark.parametrize(("value", "expected"), [
    ("Long_1", "Long_1"), ("long_2", "Long_2"), ("LONG_6", "Long_6"), (" Long_4 ", "Long_4"),
])
def test_position_is_normalised(value: str, expected: str) -> None:
    assert parse_signal(trade_payload(position=value), INSTRUMENTS).position == expected


@pytest.mark.parametrize("value", ["Long_0", "Long_7", "Long_10", "Short_1", "Long1", "", 1])
def test_unknown_position_is_invalid(value: object) -> None:
    assert phrase_of(trade_payload(position=value)) == "Invalid position"


@pytest.mark.parametrize("value", ["ALL", "all", "All"])
def test_exit_all(value: str) -> None:
    assert parse_signal(exit_payload(position=value), INSTRUMENTS).position == "ALL"


@pytest.mark.parametrize("signal_type", ["BASE_ENTRY", "PYRAMID"])
def test_all_is_only_for_exit(signal_type: str) -> None:
    assert phrase_of(trade_payload(type=signal_type, position="ALL")) == "Invalid position"


# --- timestamp -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "2025-01-15T09:30:00",             # naive: India time
    "2025-01-15 09:30:00",
    "2025-01-15T09:30:00+05:30",
    "2025-01-15T04:00:00Z",
    "2025-01-15T04:00:00+00:00",
    "2025-01-14T23:00:00-05:00",
    "2025-01-15T04:00:00.999Z",       # fractions dropped, not rounded
])
def test_timestamp_forms(value: str) -> None:
    assert parse_signal(trade_payload(timestamp=value), INSTRUMENTS).timestamp == MOMENT


@pytest.mark.parametrize("value", [
    "yesterday", "2025-13-01T00:00:00", "2025-01-15", "15/01/2025 09:30", "", 1736913600,
    "0001-01-01T00:00:00+05:30",
])
def test_bad_timestamp_is_invalid(value: object) -> None:
    assert phrase_of(trade_payload(timestamp=value)) == "Invalid timestamp format"


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (D("52000.5"), D("52000.5")), (52000, D("52000")), ("52000.5", D("52000.5")),
    (" 52000 ", D("52000")), ("5.2E+4", D("52000")),
    (52000.1, D("52000.1")),  # a float only if a caller skipped parse_float=Decimal
])
def test_price_accepts_numbers_and_numeric_strings(value: object, expected: D) -> None:
    price = parse_signal(trade_payload(price=value, stop="100"), INSTRUMENTS).price

    assert isinstance(price, D)
    assert price == expected


@pytest.mark.parametrize("value", [
    0, "0", -1, "abc", True, False, "NaN", D("NaN"), "Infinity", D("Infinity"), D("-Infinity"),
    "1_000", "", [52000], "1e999999999",
])
def test_bad_price_is_invalid(value: object) -> None:
    assert phrase_of(trade_payload(price=value)) == "Invalid price"


@pytest.mark.parametrize("value", [0, "0", -1, "abc", True, D("NaN")])
def test_bad_stop_is_invalid_on_entries(value: object) -> None:
    assert phrase_of(trade_payload(stop=value)) == "Invalid stop"


def test_exit_allows_zero_stop() -> None:
    assert parse_signal(exit_payload(stop=0), INSTRUMENTS).stop == D("0")


@pytest.mark.parametrize("value", [-1, "-0.05", "abc", True])
def test_bad_stop_is_invalid_on_exit(value: object) -> None:
    assert phrase_of(exit_payload(stop=value)) == "Invalid stop"


def test_atr_may_be_zero() -> None:
    assert parse_signal(trade_payload(atr="0"), INSTRUMENTS).atr == D("0")


@pytest.mark.parametrize("value", [-1, "-0.5", "abc", True, "Infinity"])
def test_bad_atr_is_invalid(value: object) -> None:
    assert phrase_of(trade_payload(atr=value)) == "Invalid ATR"


@pytest.mark.parametrize("value", [-1, "-0.5", "abc"])
def test_bad_atr_is_invalid_on_market_data(value: object) -> None:
    assert phrase_of(market_payload(atr=value)) == "Invalid ATR"


@pytest.mark.parametrize(("value", "expected"), [(3, 3), ("3", 3), (D("3"), 3), (D("3.0"), 3),
                                                 ("0", 0)])
def test_lots_accepts_integral_numbers(value: object, expected: int) -> None:
    lots = parse_signal(trade_payload(lots=value), INSTRUMENTS).lots

    assert isinstance(lots, int)
    assert lots == expected


@pytest.mark.parametrize("value", [D("2.5"), "2.5", "abc", True, D("NaN"), "1e999999999"])
def test_bad_lots_is_invalid(value: object) -> None:
    assert phrase_of(trade_payload(lots=value)) == "Invalid numeric field"


@pytest.mark.parametrize("name", ["supertrend", "roc", "entry_price"])
@pytest.mark.parametrize("value", ["abc", True, "NaN", D("Infinity")])
def test_bad_recorded_number_is_invalid(name: str, value: object) -> None:
    assert phrase_of(trade_payload(**{name: value})) == "Invalid numeric field"


@pytest.mark.parametrize("value", ["abc", True, "NaN", D("-0.01"), D("1.01"), D("500"), "2"])
def test_er_outside_zero_to_one_is_invalid(value: object) -> None:
    assert phrase_of(trade_payload(er=value)) == "Invalid ER"


@pytest.mark.parametrize("value", [D("0"), D("0.82"), D("1"), "0.5"])
def test_er_within_zero_to_one_is_taken(value: object) -> None:
    assert parse_signal(trade_payload(er=value), INSTRUMENTS).er == D(str(value))


@pytest.mark.parametrize("name", ["supertrend", "roc", "entry_price"])
def test_recorded_numbers_accept_numeric_strings(name: str) -> None:
    signal = parse_signal(trade_payload(**{name: "-1.5"}), INSTRUMENTS)

    assert getattr(signal, name) == D("-1.5")


# --- exit reason -----------------------------------------------------------------------------


def test_exit_keeps_its_reason() -> None:
    assert parse_signal(exit_payload(reason="TREND_END"), INSTRUMENTS).reason == "TREND_END"


@pytest.mark.parametrize("payload", [
    without(exit_payload(), "reason"), exit_payload(reason=None), exit_payload(reason=""),
    exit_payload(reason="   "), exit_payload(reason=5),
])
def test_exit_without_reason_is_invalid(payload: dict[str, Any]) -> None:
    assert phrase_of(payload) == "EXIT signals require a 'reason' field"


# --- order of checks -------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "phrase"), [
    ({"instrument": "NIFTY", "position": "Long_9"}, "Invalid instrument"),
    ({"position": "Long_9", "timestamp": "never"}, "Invalid position"),
    ({"timestamp": "never", "price": 0}, "Invalid timestamp format"),
    ({"price": 0, "stop": 0}, "Invalid price"),
    ({"stop": -1, "atr": -1}, "Invalid stop"),
    ({"atr": -1, "reason": ""}, "Invalid ATR"),
    ({"reason": "", "lots": "2.5"}, "EXIT signals require a 'reason' field"),
])
def test_first_failing_rule_is_reported(changes: dict[str, Any], phrase: str) -> None:
    assert phrase_of(exit_payload(**{"position": "Long_1", **changes})) == phrase


# --- storage ---------------------------------------------------------------------------------


def test_storable_payload_drops_the_secret_only() -> None:
    payload = trade_payload(comment="hi")

    stored = storable_payload(payload)

    assert "secret" not in stored
    assert stored == without(payload, "secret")
    assert payload["secret"] == "s3cret"


# --- freshness -------------------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return MOMENT + timedelta(seconds=seconds)


@pytest.mark.parametrize(("received_at", "expected"), [
    (at(0), None),
    (at(300), None),
    (at(300.001), "stale"),
    (at(301), "stale"),
    (at(-60), None),
    (at(-60.001), "future"),
    (at(-61), "future"),
])
def test_freshness_boundaries(received_at: datetime, expected: str | None) -> None:
    signal = parse_signal(trade_payload(), INSTRUMENTS)

    assert freshness(signal, received_at, 300, 60) == expected


def test_freshness_compares_instants_not_wall_clocks() -> None:
    signal = parse_signal(trade_payload(), INSTRUMENTS)
    india = datetime(2025, 1, 15, 9, 35, tzinfo=IST)

    assert freshness(signal, india, 299, 60) == "stale"
    assert freshness(signal, india, 300, 60) is None


@pytest.mark.parametrize("received_at", [at(100_000), at(-100_000)])
def test_exit_is_always_fresh(received_at: datetime) -> None:
    signal = parse_signal(exit_payload(), INSTRUMENTS)

    assert freshness(signal, received_at, 300, 60) is None


def test_market_data_can_be_stale() -> None:
    signal = parse_signal(market_payload(), INSTRUMENTS)

    assert freshness(signal, at(301), 300, 60) == "stale"


def test_freshness_refuses_naive_time() -> None:
    signal = parse_signal(trade_payload(), INSTRUMENTS)

    with pytest.raises(ValueError, match="timezone-aware"):
        freshness(signal, at(0).replace(tzinfo=None), 300, 60)


@pytest.mark.parametrize(("waited_s", "expected"), [(0, False), (120, False), (120.001, True),
                                                    (500, True)])
def test_entry_waited_too_long(waited_s: float, expected: bool) -> None:
    assert entry_waited_too_long(MOMENT, at(waited_s), 120) is expected

