import json
from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config.domain_files import (
    DEFAULT_CONFIG_DIR,
    load_holidays,
    load_instruments,
    load_portfolio_config,
)
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
    "paper_contracts": "none",
    "paper_monthly_basis_percent": Decimal("0.5"),
    "daily_loss_limit_percent": None,
    "daily_loss_action": "reduce",
    "max_entries_per_day": None,
    "snapshot_interval_s": 60,
    "stop_limit_band_percent": Decimal("1.0"),
    "paper_broker_stops": True,
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


# --- roll schedule and holidays (DOMAIN.md §9) ----------------------------------------

SHIPPED_HOLIDAYS = DEFAULT_CONFIG_DIR / "holidays.json"
ROLL_TABLE = {"BANK_NIFTY": 0, "GOLD_MINI": 3, "SILVER_MINI": 7, "COPPER": 8}


def holiday_document(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "_source": "test", "_updated": "2026-12-02", "NFO": ["2026-01-26"], "MCX": [],
    }
    document.update(changes)
    return document


def test_shipped_roll_schedule_matches_domain_table() -> None:
    for name, spec in load_instruments(SHIPPED_INSTRUMENTS).items():
        assert spec.cutoff_days_before_expiry == ROLL_TABLE[name], name
        assert spec.roll_lead_trading_days == 2, name
        assert spec.roll_at == time(10, 0), name
        assert spec.alerts_follow == "continuous_front", name


def test_roll_at_is_validated_like_the_session_times() -> None:
    fields = {"name": "GOLD_MINI", **shipped_instrument_data()["GOLD_MINI"]}
    with pytest.raises(ValueError, match="without an offset"):
        InstrumentSpec.model_validate({**fields, "roll_at": "10:00+05:30"})
    with pytest.raises(ValueError, match="roll_at must be within the session"):
        InstrumentSpec.model_validate({**fields, "roll_at": "08:59"})


def test_bad_roll_schedule_names_file_and_field(tmp_path: Path) -> None:
    data = shipped_instrument_data()
    data["COPPER"]["cutoff_days_before_expiry"] = 32
    data["GOLD_MINI"]["alerts_follow"] = "front"
    path = write_json(tmp_path / "instruments.json", data)

    message = error_text(path)
    assert "COPPER.cutoff_days_before_expiry: Input should be less than or equal to 31" in message
    assert "GOLD_MINI.alerts_follow: Input should be 'continuous_front' or 'traded_contract'" in (
        message
    )


def test_bad_paper_contracts_settings_are_rejected(tmp_path: Path) -> None:
    path = write_json(tmp_path / "portfolio.json", {
        "paper_contracts": "weekly", "paper_monthly_basis_percent": "11",
    })

    message = error_text(path, load_portfolio_config)
    assert "paper_contracts: Input should be 'none' or 'monthly'" in message
    assert "paper_monthly_basis_percent: Input should be less than or equal to 10" in message


def test_shipped_holidays_hold_full_day_closures_only() -> None:
    calendar = load_holidays(SHIPPED_HOLIDAYS)
    raw = json.loads(SHIPPED_HOLIDAYS.read_text())

    assert {"2026-01-15", "2026-01-26", "2026-03-31", "2026-11-24", "2026-12-25"} <= set(raw["NFO"])
    assert len(raw["NFO"]) == 16
    assert sorted(raw["MCX"]) == ["2026-01-26", "2026-04-03", "2026-10-02", "2026-12-25"]
    assert raw["_source"] and date.fromisoformat(raw["_updated"])
    # Holi: MCX's evening session trades, so MCX has a trading day; NFO does not.
    assert calendar.is_trading_day("MCX", date(2026, 3, 3))
    assert not calendar.is_trading_day("NFO", date(2026, 3, 3))


def test_holidays_load_into_a_calendar(tmp_path: Path) -> None:
    path = write_json(tmp_path / "holidays.json", holiday_document(MCX=["2026-04-03"]))

    calendar = load_holidays(path)
    assert calendar.holidays("NFO") == frozenset({date(2026, 1, 26)})
    assert calendar.holidays("MCX") == frozenset({date(2026, 4, 3)})


def test_missing_holiday_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "holidays.json"
    assert error_text(path, load_holidays) == f"{path}: file not found"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"NFO": ["2026-02-30"]}, "NFO.0: 2026-02-30 is not a calendar date"),
        ({"NFO": ["26-01-2026"]}, 'NFO.0: expected a date as "YYYY-MM-DD", got "26-01-2026"'),
        ({"MCX": ["2026-01-26", 20260403]}, 'MCX.1: expected a date as "YYYY-MM-DD", got 20260403'),
        ({"NFO": ["2026-08-15"]}, "NFO.0: 2026-08-15 is a Saturday: list weekday closures only"),
        ({"NFO": ["2026-01-26", "2026-01-26"]}, "NFO.1: 2026-01-26 is listed twice"),
        ({"MCX": "2026-01-26"}, "MCX: expected a list of dates"),
        ({"NSE": []}, "NSE: unknown key (expected _source, _updated, NFO, MCX)"),
        ({"_source": ""}, "_source: expected a non-empty text"),
        ({"_updated": "Dec 2026"}, '_updated: expected a date as "YYYY-MM-DD", got "Dec 2026"'),
    ],
)
def test_bad_holiday_file_names_file_and_key(
    tmp_path: Path, changes: dict[str, object], expected: str
) -> None:
    path = write_json(tmp_path / "holidays.json", holiday_document(**changes))

    message = error_text(path, load_holidays)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_every_exchange_must_be_listed(tmp_path: Path) -> None:
    document = holiday_document()
    del document["MCX"]
    path = write_json(tmp_path / "holidays.json", document)

    assert error_text(path, load_holidays) == (
        f"{path}: MCX: missing (list its holidays, [] if it has none)"
    )


def test_every_bad_holiday_is_reported(tmp_path: Path) -> None:
    path = write_json(tmp_path / "holidays.json", holiday_document(
        NFO=["2026-13-01", "2026-03-03"], MCX=["2026-04-04"],
    ))

    message = error_text(path, load_holidays)
    assert "NFO.0: 2026-13-01 is not a calendar date" in message
    assert "MCX.0: 2026-04-04 is a Saturday" in message
    assert "NFO.1" not in message
