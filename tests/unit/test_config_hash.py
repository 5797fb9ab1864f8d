"""The configuration hash a decision records: one hash per configuration, another on any change."""

import json
from datetime import date, time
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel, ValidationError

from config.config_hash import canonical_json, config_sha256, effective_config
from config.domain_files import (
    DEFAULT_CONFIG_DIR,
    load_holidays,
    load_instruments,
    load_portfolio_config,
)
from core.calendar import TradingCalendar
from core.specs import InstrumentSpec, PortfolioConfig


def shipped() -> tuple[dict[str, InstrumentSpec], PortfolioConfig, TradingCalendar]:
    return (load_instruments(DEFAULT_CONFIG_DIR / "instruments.json"),
            load_portfolio_config(DEFAULT_CONFIG_DIR / "portfolio.json"),
            load_holidays(DEFAULT_CONFIG_DIR / "holidays.json"))


INSTRUMENTS, PORTFOLIO, CALENDAR = shipped()
SHIPPED_HASH = config_sha256(effective_config(INSTRUMENTS, PORTFOLIO, CALENDAR))
M = TypeVar("M", bound=BaseModel)


def hash_of(instruments: dict[str, InstrumentSpec] = INSTRUMENTS,
            portfolio: PortfolioConfig = PORTFOLIO, calendar: TradingCalendar = CALENDAR) -> str:
    return config_sha256(effective_config(instruments, portfolio, calendar))


def changed(value: Any) -> Any:
    """Another value of the same kind (model_copy does not validate: any change will do)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | Decimal):
        return value + 1
    if isinstance(value, time):
        return time((value.hour + 1) % 24, value.minute)
    assert isinstance(value, str), f"no change defined for {value!r}"
    return value + "_OTHER"


def with_changed(model: M, field: str) -> M:
    """`model` with `field` set to another value; a field that is off (None) is turned on."""
    value = getattr(model, field)
    if value is not None:
        return model.model_copy(update={field: changed(value)})
    for candidate in ("12:00", "1"):  # a time of day, else a number
        try:
            return type(model).model_validate({**model.model_dump(), field: candidate})
        except ValidationError:
            continue
    raise AssertionError(f"cannot turn on {field}")


def test_the_same_configuration_always_gives_the_same_hash() -> None:
    assert hash_of(*shipped()) == SHIPPED_HASH  # loaded again from the files
    reordered = dict(reversed(list(INSTRUMENTS.items())))
    assert hash_of(reordered) == SHIPPED_HASH
    assert len(SHIPPED_HASH) == 64 and int(SHIPPED_HASH, 16) >= 0


def test_equal_numbers_written_differently_are_the_same_configuration() -> None:
    spacing = PORTFOLIO.atr_pyramid_spacing
    padded = PORTFOLIO.model_copy(update={"atr_pyramid_spacing": Decimal(f"{spacing}00")})
    assert hash_of(portfolio=padded) == SHIPPED_HASH


def test_an_exchange_without_holidays_is_the_same_listed_or_left_out() -> None:
    assert hash_of(calendar=TradingCalendar({})) == hash_of(
        calendar=TradingCalendar({"NFO": [], "MCX": []}))


@pytest.mark.parametrize("field", sorted(InstrumentSpec.model_fields))
def test_a_change_of_any_instrument_field_changes_the_hash(field: str) -> None:
    other = with_changed(INSTRUMENTS["GOLD_MINI"], field)
    assert hash_of({**INSTRUMENTS, "GOLD_MINI": other}) != SHIPPED_HASH


def test_adding_or_removing_an_instrument_changes_the_hash() -> None:
    fewer = {name: spec for name, spec in INSTRUMENTS.items() if name != "GOLD_MINI"}
    assert hash_of(fewer) != SHIPPED_HASH
    more = {**INSTRUMENTS, "SILVER_MINI": INSTRUMENTS["GOLD_MINI"].model_copy(
        update={"name": "SILVER_MINI"})}
    assert hash_of(more) != SHIPPED_HASH


@pytest.mark.parametrize("field", sorted(PortfolioConfig.model_fields))
def test_a_change_of_any_portfolio_field_changes_the_hash(field: str) -> None:
    assert hash_of(portfolio=with_changed(PORTFOLIO, field)) != SHIPPED_HASH


def test_a_holiday_added_removed_or_moved_changes_the_hash() -> None:
    nfo, mcx = sorted(CALENDAR.holidays("NFO")), sorted(CALENDAR.holidays("MCX"))
    variants = [
        {"NFO": [*nfo, date(2026, 12, 30)], "MCX": mcx},  # added
        {"NFO": nfo[1:], "MCX": mcx},  # removed
        {"NFO": nfo, "MCX": [*mcx, nfo[0]]},  # the same day closing another exchange
    ]
    hashes = {hash_of(calendar=TradingCalendar(holidays)) for holidays in variants}
    assert len(hashes) == len(variants) and SHIPPED_HASH not in hashes


def test_the_document_is_plain_json_and_reproduces_its_hash() -> None:
    body = effective_config(INSTRUMENTS, PORTFOLIO, CALENDAR)
    gold = body["instruments"]["GOLD_MINI"]
    assert (gold["session_open"], gold["point_value"], gold["lot_size"]) == ("09:00:00", "10", 100)
    assert body["portfolio"]["initial_capital"] == "5000000"
    assert body["holidays"]["MCX"] == ["2026-01-26", "2026-04-03", "2026-10-02", "2026-12-25"]
    # What a JSON store gives back (keys in any order) hashes the same.
    assert config_sha256(json.loads(canonical_json(body))) == SHIPPED_HASH
