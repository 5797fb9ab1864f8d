"""What travels on the wire: the error envelope, Kite's times and numbers, form fields."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

IST = timezone(timedelta(hours=5, minutes=30), "IST")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


class KiteError(Exception):
    """An error answer: HTTP status, Kite `error_type` and message (§2.1)."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def body(self) -> dict[str, Any]:
        """Return the error envelope."""
        return {"status": "error", "message": self.message, "data": None,
                "error_type": self.error_type}


def input_error(message: str) -> KiteError:
    """Return a 400 InputException."""
    return KiteError(400, "InputException", message)


def now_ist() -> datetime:
    """Return the current time in IST."""
    return datetime.now(IST)


def kite_time(moment: datetime) -> str:
    """Return `moment` as Kite prints it: 19-char IST, `YYYY-MM-DD HH:MM:SS`."""
    return moment.astimezone(IST).strftime(TIMESTAMP_FORMAT)


def json_number(value: Decimal) -> int | float:
    """Return `value` as the fixtures print numbers: integral values as ints."""
    return int(value) if value == value.to_integral_value() else float(value)


def to_tick(value: Decimal, tick: Decimal, rounding: str) -> Decimal:
    """Round `value` to a multiple of `tick` in the given direction."""
    return (value / tick).to_integral_value(rounding=rounding) * tick


def money_text(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"


def parse_decimal(text: Any, what: str) -> Decimal:
    """Parse a decimal sent as text, or raise an InputException naming it."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise input_error(f"Invalid `{what}`.") from None
    if not value.is_finite():
        raise input_error(f"Invalid `{what}`.")
    return value


def parse_int(text: Any, what: str) -> int:
    """Parse an integer sent as text, or raise an InputException naming it."""
    try:
        return int(str(text))
    except ValueError:
        raise input_error(f"Invalid `{what}`.") from None


def form_value(form: Mapping[str, Any], name: str) -> str | None:
    """Return a form field; the client never sends None, and an empty value counts as absent."""
    value = form.get(name)
    return None if value is None or value == "" else str(value)


def form_choice(form: Mapping[str, Any], name: str, allowed: frozenset[str],
                default: str | None = None) -> str:
    value = form_value(form, name) or default
    if value not in allowed:
        raise input_error(f"Invalid `{name}`.")
    return value
