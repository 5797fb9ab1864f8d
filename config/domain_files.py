"""Load the instrument table and portfolio defaults shipped in `config/`."""

import json
import re
from datetime import date
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, get_args

from pydantic import ValidationError

from config.errors import ConfigError, Loc, describe_validation_error, dotted
from core.calendar import TradingCalendar
from core.specs import InstrumentSpec, PortfolioConfig

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent

# Every exchange an instrument can name must have its holidays listed, even if none.
HOLIDAY_EXCHANGES: tuple[str, ...] = get_args(InstrumentSpec.model_fields["exchange"].annotation)
_HOLIDAY_METADATA = ("_source", "_updated")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def read_json(path: Path) -> Any:
    """Return the JSON document at `path`, parsing numbers with a fraction as Decimal.

    Raises ConfigError naming the file when it is missing, unreadable or not valid JSON.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        # parse_float=Decimal: "0.05" written as a bare number must not pass through a float.
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ConfigError(f"{path}: invalid JSON at {where}: {exc.msg}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """Return the JSON object at `path`; raise ConfigError if the document is not an object."""
    document = read_json(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return document


def load_instruments(path: Path) -> dict[str, InstrumentSpec]:
    """Return the instrument table at `path`, keyed by instrument name.

    The file is an object `{"GOLD_MINI": {...fields...}, ...}`; the key is the name.
    """
    document = read_json_object(path)
    if not document:
        raise ConfigError(f"{path}: no instruments defined")
    instruments: dict[str, InstrumentSpec] = {}
    problems: list[str] = []
    for name, fields in document.items():
        try:
            instruments[name] = _parse_instrument(name, fields)
        except ValidationError as exc:
            problems.append(describe_validation_error(exc, partial(_in_instrument, name)))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return instruments


def load_portfolio_config(path: Path) -> PortfolioConfig:
    """Return the portfolio configuration at `path`; absent fields take their defaults."""
    document = read_json_object(path)
    try:
        return PortfolioConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc, _field_name)}") from exc


def load_holidays(path: Path) -> TradingCalendar:
    """Return the trading calendar at `path`: the full-day trading holidays of each exchange.

    The file is an object `{"_source": "...", "_updated": "YYYY-MM-DD", "NFO": [...],
    "MCX": [...]}`. Every exchange is listed (`[]` if it has no holiday); each holiday is an ISO
    date `YYYY-MM-DD` on a weekday, listed once. All problems are reported together.
    """
    document = read_json_object(path)
    problems = [
        f"{key}: unknown key (expected {', '.join(_HOLIDAY_METADATA + HOLIDAY_EXCHANGES)})"
        for key in document
        if key not in _HOLIDAY_METADATA and key not in HOLIDAY_EXCHANGES
    ]
    problems += _holiday_metadata_problems(document)
    holidays: dict[str, list[date]] = {}
    for exchange in HOLIDAY_EXCHANGES:
        if exchange not in document:
            problems.append(f"{exchange}: missing (list its holidays, [] if it has none)")
            continue
        days, found = _parse_holidays(exchange, document[exchange])
        holidays[exchange] = days
        problems += found
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return TradingCalendar(holidays)


def _holiday_metadata_problems(document: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    source = document.get("_source")
    if not isinstance(source, str) or not source.strip():
        problems.append("_source: expected a non-empty text saying where the dates come from")
    try:
        _parse_iso_date(document.get("_updated"))
    except ValueError as exc:
        problems.append(f"_updated: {exc}")
    return problems


def _parse_holidays(exchange: str, value: object) -> tuple[list[date], list[str]]:
    if not isinstance(value, list):
        return [], [f"{exchange}: expected a list of dates"]
    days: list[date] = []
    problems: list[str] = []
    for index, item in enumerate(value):
        try:
            day = _parse_holiday(item, days)
        except ValueError as exc:
            problems.append(f"{dotted(exchange, index)}: {exc}")
        else:
            days.append(day)
    return days, problems


def _parse_holiday(item: object, earlier: list[date]) -> date:
    day = _parse_iso_date(item)
    if day.weekday() >= 5:
        raise ValueError(f"{day} is a {day:%A}: list weekday closures only")
    if day in earlier:
        raise ValueError(f"{day} is listed twice")
    return day


def _parse_iso_date(value: object) -> date:
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError(f"expected a date as \"YYYY-MM-DD\", got {_as_json(value)}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value} is not a calendar date") from None


def _as_json(value: object) -> str:
    # Bare numbers were parsed as Decimal (read_json); show them as the file spells them.
    return str(value) if isinstance(value, Decimal) else json.dumps(value)


def _parse_instrument(name: str, fields: object) -> InstrumentSpec:
    if not isinstance(fields, dict):
        raise ValueError("expected a JSON object of instrument fields")
    spec = InstrumentSpec.model_validate({"name": name, **fields})
    if spec.name != name:
        raise ValueError(f"name {spec.name!r} does not match its key")
    return spec


def _in_instrument(name: str, loc: Loc) -> str:
    return dotted(name, *loc)


def _field_name(loc: Loc) -> str:
    return dotted(*loc) or "(model)"


def _reject_constant(token: str) -> NoReturn:
    raise ValueError(f"{token} is not allowed")
