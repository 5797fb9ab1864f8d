"""Load the instrument table and portfolio defaults shipped in `config/`."""

import json
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from config.errors import ConfigError, Loc, describe_validation_error, dotted
from core.specs import InstrumentSpec, PortfolioConfig

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent


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
