"""The effective domain configuration as one JSON document, and its SHA-256 (DESIGN.md §9).

Every decision names the hash of the configuration it was made under; the document itself is
stored once per hash, so a past decision can be replayed under exactly its configuration.
"""

import hashlib
import json
from datetime import date, time
from decimal import Decimal
from typing import Any

from config.domain_files import HOLIDAY_EXCHANGES
from core.calendar import TradingCalendar
from core.specs import InstrumentSpec, PortfolioConfig


def effective_config(instruments: dict[str, InstrumentSpec], portfolio: PortfolioConfig,
                     calendar: TradingCalendar) -> dict[str, Any]:
    """Return the configuration decisions are made under, JSON-ready (Decimals and times as
    text): the instruments by name, the portfolio, and each exchange's holidays."""
    # Every exchange an instrument can name, listed even without holidays: a calendar that
    # omits one behaves as one listing none, so both must give one document.
    exchanges = sorted({*HOLIDAY_EXCHANGES, *(spec.exchange for spec in instruments.values())})
    return {
        "instruments": {name: _json_ready(spec.model_dump()) for name, spec in instruments.items()},
        "portfolio": _json_ready(portfolio.model_dump()),
        "holidays": {exchange: sorted(day.isoformat() for day in calendar.holidays(exchange))
                     for exchange in exchanges},
    }


def canonical_json(body: dict[str, Any]) -> str:
    """Return `body` as the one text its hash is taken over (keys sorted, no spaces)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_sha256(body: dict[str, Any]) -> str:
    """Return the hex SHA-256 of `body`'s canonical JSON."""
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, Decimal):
        # One text per number: "0.50" in a file is the same rule as "0.5", and no exponent.
        return format(value.normalize(), "f")
    if isinstance(value, date | time):
        return value.isoformat()
    return value
