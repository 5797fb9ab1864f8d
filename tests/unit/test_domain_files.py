import json
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_instruments, load_portfolio_config
from config.errors import ConfigError
from core.specs import InstrumentSpec, PortfolioConfig

SHIPPED_INSTRUMENTS = DEFAULT_CONFIG_DIR / "instruments.json"
SHIPPED_PORTFOLIO = DEFAULT_CONFIG_DIR / "portfolio.json"

DECIMAL_INSTRUMENT_FIELDS = (
    "point_value",
    "margin_per_lot",
    "initial_risk_percent",
    "initial_vol_percent",
    "ongoing_risk_percent",
    "ongoing_vol_percent",
    "initial_atr_mult",
    "trailing_atr_mult",
    "tick_size",
)

# DOMAIN.md §2, transcribed by hand so the shipped file is checked against the document.
DOMAIN_TABLE: dict[str, dict[str, Any]] = {
    "BANK_NIFTY": {
        "exchange": "NFO", "lot_size": 30, "point_value": Decimal("30"),
        "quantity_unit": "units", "margin_per_lot": Decimal("270000"),
        "initial_risk_percent": Decimal("1.0"), "initial_vol_percent": Decimal("0.5"),
        "ongoing_risk_percent": Decimal("1.0"), "ongoing_vol_percent": Decimal("0.7"),
        "initial_atr_mult": Decimal("1.5"), "trailing_atr_mult": Decimal("2.5"),
        "max_pyramids": 5, "tick_size": Decimal("0.05"),
        "session_open": time(9, 15), "session_close": time(15, 30),
    },
    "GOLD_MINI": {
        "exchange": "MCX", "lot_size": 100, "point_value": Decimal("10"),
        "quantity_unit": "lots", "margin_per_lot": Decimal("105000"),
        "initial_risk_percent": Decimal("1.0"), "initial_vol_percent": Decimal("0.2"),
        "ongoing_risk_percent": Decimal("1.0"), "ongoing_vol_percent": Decimal("0.3"),
        "initial_atr_mult": Decimal("1.0"), "trailing_atr_mult": Decimal("2.0"),
        "max_pyramids": 3, "tick_size": Decimal("1.0"),
        "session_open": time(9, 0), "session_close": time(23, 30),
    },
    "SILVER_MINI": {
        "exchange": "MCX", "lot_size": 5, "point_value": Decimal("5"),
        "quantity_unit": "lots", "margin_per_lot": Decimal("385000"),
        "initial_risk_percent": Decimal("1.0"), "initial_vol_percent": Decimal("0.2"),
        "ongoing_risk_percent": Decimal("1.0"), "ongoing_vol_percent": Decimal("0.3"),
        "initial_atr_mult": Decimal("2.0"), "trailing_atr_mult": Decimal("3.0"),
        "max_pyramids": 5, "tick_size": Decimal("1.0"),
        "session_open": time(9, 0), "session_close": time(23, 30),
    },
    "COPPER": {
        "exchange": "MCX", "lot_size": 2500, "point_value": Decimal("2500"),
        "quantity_unit": "lots", "margin_per_lot": Decimal("300000"),
        "initial_risk_percent": Decimal("1.0"), "initial_vol_percent": Decimal("0.2"),
        "ongoing_risk_percent": Decimal("1.0"), "ongoing_vol_percent": Decimal("0.3"),
        "initial_atr_mult": Decimal("3.0"), "trailing_atr_mult": Decimal("5.0"),
        "max_pyramids": 3, "tick_size": Decimal("0.05"),
        "session_open": time(9, 0), "session_close": time(23, 30),
    },
}

DOMAIN_PORTFOLIO: dict[str, Any] = {
    "max_portfolio_risk_percent": Decimal("15"),
    "max_portfolio_vol_percent": Decimal("5"),
    "max_margin_utilization_percent": Decimal("60"),
    "pyramid_risk_block": Decimal("12"),
    "pyramid_vol_block": Decimal("4"),
    "atr_pyramid_spacing": Decimal("0.5"),
    "use_1r_gate": True,
    "sizing_equity": "equity_high",
    "paper_margin_fraction": Decimal("0.6"),
    "use_volatility_constraint": False,
    "stop_source": "signal",
    "initial_capital": Decimal("5000000"),
    "paper_slippage_ticks": 0,
    "paper_enforce_sessions": False,
    "max_signal_age_s": 300,
    "max_future_skew_s": 60,
    "max_entry_delay_s": 120,
    "max_base_risk_increase_percent": Decimal("50"),
    "max_pyramid_risk_increase_percent": Decimal("20"),
    "dedup_window_s": 60,
}


def shipped_instrument_data() -> dict[str, dict[str, Any]]:
    return json.loads(SHIPPED_INSTRUMENTS.read_text())


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def error_text(path: Path, loader: Any = load_instruments) -> str:
    with pytest.raises(ConfigError) as info:
        loader(path)
    return str(info.value)


# --- shipped files -------------------------------------------------------------------


def test_shipped_instruments_match_domain_table() -> None:
    instruments = load_instruments(SHIPPED_INSTRUMENTS)

    assert set(instruments) == set(DOMAIN_TABLE)
    for name, expected in DOMAIN_TABLE.items():
        spec = instruments[name]
        assert spec.name == name
        assert spec.freeze_quantity is None
        assert {field: getattr(spec, field) for field in expected} == expected, name


def test_shipped_decimal_fields_are_decimals_written_as_strings() -> None:
    instruments = load_instruments(SHIPPED_INSTRUMENTS)
    raw = shipped_instrument_data()

    for name, spec in instruments.items():
        for field in DECIMAL_INSTRUMENT_FIELDS:
            assert type(getattr(spec, field)) is Decimal, (name, field)
            assert isinstance(raw[name][field], str), (name, field)


def test_spot_values_from_domain_table() -> None:
    instruments = load_instruments(SHIPPED_INSTRUMENTS)

    assert instruments["GOLD_MINI"].point_value == Decimal("10")
    assert instruments["COPPER"].tick_size == Decimal("0.05")
    assert str(instruments["COPPER"].tick_size) == "0.05"
    assert instruments["BANK_NIFTY"].broker_quantity(3) == 90


@pytest.mark.parametrize(
    ("name", "lots", "expected"),
    [("BANK_NIFTY", 3, 90), ("BANK_NIFTY", 0, 0), ("GOLD_MINI", 3, 3), ("COPPER", 7, 7)],
)
def test_broker_quantity_follows_quantity_unit(name: str, lots: int, expected: int) -> None:
    assert load_instruments(SHIPPED_INSTRUMENTS)[name].broker_quantity(lots) == expected


def test_broker_quantity_rejects_negative_lots() -> None:
    spec = load_instruments(SHIPPED_INSTRUMENTS)["BANK_NIFTY"]
    with pytest.raises(ValueError, match="lots must be >= 0"):
        spec.broker_quantity(-1)


def test_shipped_portfolio_matches_domain_defaults() -> None:
    portfolio = load_portfolio_config(SHIPPED_PORTFOLIO)

    assert portfolio.model_dump() == DOMAIN_PORTFOLIO
    assert portfolio == PortfolioConfig()
    raw = json.loads(SHIPPED_PORTFOLIO.read_text())
    assert set(raw) == set(DOMAIN_PORTFOLIO)
    assert all(isinstance(raw[k], str) for k, v in DOMAIN_PORTFOLIO.items() if type(v) is Decimal)


def test_specs_are_frozen() -> None:
    spec = load_instruments(SHIPPED_INSTRUMENTS)["GOLD_MINI"]
    with pytest.raises(ValueError, match="frozen"):
        spec.lot_size = 1  # type: ignore[misc]


# --- bad instrument files ------------------------------------------------------------


def test_zero_lot_size_names_file_and_field(tmp_path: Path) -> None:
    data = shipped_instrument_data()
    data["GOLD_MINI"]["lot_size"] = 0
    path = write_json(tmp_path / "instruments.json", data)

    assert error_text(path) == f"{path}: GOLD_MINI.lot_size: Input should be greater than 0"


def test_missing_field_names_file_and_field(tmp_path: Path) -> None:
    data = shipped_instrument_data()
    del data["COPPER"]["tick_size"]
    path = write_json(tmp_path / "instruments.json", data)

    message = error_text(path)
    assert message.startswith(f"{path}: ")
    assert "COPPER.tick_size: Field required" in message


def test_unknown_field_is_rejected_by_name(tmp_path: Path) -> None:
    data = shipped_instrument_data()
    data["SILVER_MINI"]["lot_sise"] = 5
    path = write_json(tmp_path / "instruments.json", data)

    assert "SILVER_MINI.lot_sise: Extra inputs are not permitted" in error_text(path)


def test_every_bad_instrument_is_reported(tmp_path: Path) -> None:
    data = shipped_instrument_data()
    data["GOLD_MINI"]["exchange"] = "NSE"
    data["BANK_NIFTY"]["margin_per_lot"] = "-1"
    path = write_json(tmp_path / "instruments.json", data)

    message = error_text(path)
    assert "GOLD_MINI.exchange: Input should be 'NFO' or 'MCX'" in message
    assert "BANK_NIFTY.margin_per_lot: Input should be greater than 0" in message


def test_name_inside_block_must_match_key(tmp_path: Path) -> None:
    data = shipped_instrument_data()
    data["SILVER_MINI"]["name"] = "SILVER"
    path = write_json(tmp_path / "instruments.json", data)

    assert "SILVER_MINI: name 'SILVER' does not match its key" in error_text(path)


def test_session_close_before_open_is_rejected(tmp_path: Path) -> None:
    data = shipped_instrument_data()
    data["BANK_NIFTY"]["session_close"] = "09:00"
    path = write_json(tmp_path / "instruments.json", data)

    assert "BANK_NIFTY: Value error, session_close must be after session_open" in error_text(path)


def test_invalid_json_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "instruments.json"
    path.write_text('{"GOLD_MINI": {"lot_size": 100,}}')

    message = error_text(path)
    assert message.startswith(f"{path}: invalid JSON at line 1 column ")


def test_missing_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    assert error_text(path) == f"{path}: file not found"


@pytest.mark.parametrize("document", [[], {}, {"GOLD_MINI": "x"}])
def test_wrong_shapes_are_config_errors(tmp_path: Path, document: object) -> None:
    path = write_json(tmp_path / "instruments.json", document)
    assert error_text(path).startswith(f"{path}: ")


def test_bare_json_numbers_parse_without_float_rounding(tmp_path: Path) -> None:
    data = shipped_instrument_data()
    path = tmp_path / "instruments.json"
    precise = '"point_value": 10.000000000000000000001'
    text = json.dumps(data).replace('"point_value": "10"', precise)
    path.write_text(text.replace('"tick_size": "0.05"', '"tick_size": 0.05'))

    instruments = load_instruments(path)
    assert instruments["GOLD_MINI"].point_value == Decimal("10.000000000000000000001")
    assert str(instruments["COPPER"].tick_size) == "0.05"


def test_nan_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "instruments.json"
    path.write_text(SHIPPED_INSTRUMENTS.read_text().replace('"0.05"', "NaN", 1))

    assert "NaN" in error_text(path)


def test_instrument_spec_rejects_offset_session_times() -> None:
    fields = {"name": "GOLD_MINI", **shipped_instrument_data()["GOLD_MINI"]}
    fields["session_open"] = "09:00+05:30"
    with pytest.raises(ValueError, match="without an offset"):
        InstrumentSpec.model_validate(fields)


# --- bad portfolio files -------------------------------------------------------------


def test_bad_portfolio_value_names_file_and_field(tmp_path: Path) -> None:
    path = write_json(tmp_path / "portfolio.json", {"paper_margin_fraction": "1.5"})

    message = error_text(path, load_portfolio_config)
    assert message == f"{path}: paper_margin_fraction: Input should be less than or equal to 1"


def test_unknown_portfolio_key_is_rejected(tmp_path: Path) -> None:
    path = write_json(tmp_path / "portfolio.json", {"max_risk": "10"})

    assert "max_risk: Extra inputs are not permitted" in error_text(path, load_portfolio_config)


def test_partial_portfolio_file_takes_defaults(tmp_path: Path) -> None:
    path = write_json(tmp_path / "portfolio.json", {"stop_source": "atr"})

    portfolio = load_portfolio_config(path)
    assert portfolio.stop_source == "atr"
    assert portfolio.max_portfolio_risk_percent == Decimal("15")
