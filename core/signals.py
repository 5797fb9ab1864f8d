"""Signal intake rules (DOMAIN.md §3): field validation, identity and freshness.

Pure: standard library, `decimal` and `core.models` only. Naive timestamps are India time
(TradingView's); everything leaves this module in UTC, whole seconds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from core.models import TRADE_SIGNAL_TYPES, SignalType

INDIA = ZoneInfo("Asia/Kolkata")

ALL_LAYERS = "ALL"
STALE = "stale"
FUTURE = "future"

_TRADE_FIELDS = ("type", "instrument", "position", "price", "stop", "lots", "atr", "er",
                 "supertrend", "timestamp")
# In the order of the DOMAIN.md §3 table, which is the order the 400 detail lists them in.
_REQUIRED_FIELDS: dict[SignalType, tuple[str, ...]] = {
    SignalType.BASE_ENTRY: _TRADE_FIELDS,
    SignalType.PYRAMID: _TRADE_FIELDS,
    SignalType.EXIT: _TRADE_FIELDS,
    SignalType.MARKET_DATA: ("type", "instrument", "price", "atr", "supertrend", "timestamp"),
    SignalType.EOD_MONITOR: ("type", "instrument", "price", "timestamp"),
}

_POSITION = re.compile(r"long_([1-6])", re.IGNORECASE)
# Plain decimal notation only: Decimal() alone would also take "NaN", "Infinity" and "1_000".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Beyond this magnitude a value is garbage, and int() or arithmetic on it could hang or
# overflow the decimal context; no price, stop or lot count comes near it.
_MAX_ADJUSTED_EXPONENT = 15
# Prices are stored as numeric(18, 4): a value that does not fit, or that a positive price
# would round to zero in, is refused here rather than failing when the book stores it.
_PRICE_TICK = Decimal("0.0001")
_PRICE_CEILING = Decimal(10) ** 14

_SECRET = "secret"


class InvalidSignal(ValueError):
    """A payload that breaks a field rule; `phrase` is the exact 400 detail."""

    def __init__(self, phrase: str) -> None:
        super().__init__(phrase)
        self.phrase = phrase


@dataclass(frozen=True, slots=True)
class Signal:
    signal_type: SignalType
    instrument: str
    position: str | None
    price: Decimal
    stop: Decimal | None
    lots: int | None
    atr: Decimal | None
    er: Decimal | None
    supertrend: Decimal | None
    timestamp: datetime
    reason: str | None
    roc: Decimal | None
    entry_price: Decimal | None

    @property
    def fingerprint(self) -> str:
        """Return the exact-duplicate fingerprint of this signal."""
        return fingerprint(self.instrument, self.signal_type.value, self.position,
                           self.timestamp)


def normalise_timestamp(moment: datetime) -> datetime:
    """Return `moment` in UTC, whole seconds; a naive time is India time (TradingView's)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=INDIA)
    return moment.astimezone(UTC).replace(microsecond=0)


def fingerprint(instrument: str, signal_type: str, position: str | None,
                timestamp: datetime) -> str:
    """Return SHA-256 of `instrument|type|position|timestamp` (UTC, whole seconds)."""
    moment = normalise_timestamp(timestamp).strftime("%Y-%m-%dT%H:%M:%SZ")
    key = f"{instrument}|{signal_type}|{position or ''}|{moment}"
    return hashlib.sha256(key.encode()).hexdigest()


def parse_signal(payload: Mapping[str, Any], instruments: Collection[str]) -> Signal:
    """Return the validated signal in `payload`; raise InvalidSignal with the 400 detail.

    A field that is absent or null counts as missing. `secret` and unknown keys are ignored.
    """
    signal_type = _signal_type(payload.get("type"))
    _require_fields(payload, signal_type)
    instrument = _instrument(payload["instrument"], instruments)
    position = _position(payload.get("position"), signal_type)
    timestamp = _timestamp(payload["timestamp"])
    price = _positive(payload["price"], "Invalid price")
    stop = _stop(payload.get("stop"), signal_type)
    atr = _atr(payload.get("atr"))
    reason = _reason(payload.get("reason"), signal_type)
    lots = _lots(payload.get("lots"))
    er = _er(payload.get("er"))
    supertrend, roc, entry_price = (
        _optional_number(payload.get(name)) for name in ("supertrend", "roc", "entry_price"))
    return Signal(signal_type=signal_type, instrument=instrument, position=position,
                  price=price, stop=stop, lots=lots, atr=atr, er=er, supertrend=supertrend,
                  timestamp=timestamp, reason=reason, roc=roc, entry_price=entry_price)


def storable_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Return a shallow copy of `payload` without the webhook secret, which is never stored."""
    return {key: value for key, value in payload.items()
            if not (isinstance(key, str) and key.lower() == _SECRET)}


def freshness(signal: Signal, received_at: datetime, max_age_s: int,
              max_future_s: int) -> str | None:
    """Return "stale" or "future" if the signal is too old or too early on arrival, else None.

    EXIT signals are always acted on, so they are never stale or future.
    """
    _require_aware(received_at, "received_at")
    if signal.signal_type == SignalType.EXIT:
        return None
    age = received_at - signal.timestamp
    if age > timedelta(seconds=max_age_s):
        return STALE
    if -age > timedelta(seconds=max_future_s):
        return FUTURE
    return None


def entry_deadline(received_at: datetime, max_entry_delay_s: int) -> datetime:
    """Return the moment after which an entry received at `received_at` is no longer placed."""
    _require_aware(received_at, "received_at")
    return received_at + timedelta(seconds=max_entry_delay_s)


def entry_waited_too_long(received_at: datetime, now: datetime, max_entry_delay_s: int) -> bool:
    """Return True if an entry waited in the inbox more than `max_entry_delay_s` seconds."""
    _require_aware(now, "now")
    return now > entry_deadline(received_at, max_entry_delay_s)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")


def _signal_type(raw: object) -> SignalType:
    if raw is None:
        # Without a type the other required fields are unknown, so only `type` is reported.
        raise InvalidSignal("Missing required fields: type")
    name = raw.strip().upper() if isinstance(raw, str) else ""
    if name not in SignalType.__members__:
        raise InvalidSignal("Invalid signal type")
    return SignalType(name)


def _require_fields(payload: Mapping[str, Any], signal_type: SignalType) -> None:
    missing = [name for name in _REQUIRED_FIELDS[signal_type] if payload.get(name) is None]
    if missing:
        raise InvalidSignal(f"Missing required fields: {', '.join(missing)}")


def _instrument(raw: object, instruments: Collection[str]) -> str:
    name = raw.strip().upper() if isinstance(raw, str) else ""
    if name not in instruments:
        raise InvalidSignal("Invalid instrument")
    return name


def _position(raw: object, signal_type: SignalType) -> str | None:
    # Positions mean nothing on market data; dropping them keeps its fingerprint stable.
    if signal_type not in TRADE_SIGNAL_TYPES:
        return None
    text = raw.strip() if isinstance(raw, str) else ""
    if text.upper() == ALL_LAYERS and signal_type == SignalType.EXIT:
        return ALL_LAYERS
    match = _POSITION.fullmatch(text)
    if match is None:
        raise InvalidSignal("Invalid position")
    return f"Long_{match.group(1)}"


def _timestamp(raw: object) -> datetime:
    text = raw.strip() if isinstance(raw, str) else ""
    # A bare date parses too, but it names a day, not the moment a bar closed.
    if not any(separator in text for separator in "Tt "):
        raise InvalidSignal("Invalid timestamp format")
    try:
        return normalise_timestamp(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        raise InvalidSignal("Invalid timestamp format") from None


def _number(raw: object, phrase: str) -> Decimal:
    value = _to_decimal(raw)
    if value is None or not value.is_finite():
        raise InvalidSignal(phrase)
    if value.is_zero():
        return Decimal(0)
    if abs(value.adjusted()) > _MAX_ADJUSTED_EXPONENT:
        raise InvalidSignal(phrase)
    if abs(value.quantize(_PRICE_TICK)) >= _PRICE_CEILING:
        raise InvalidSignal(phrase)
    return value


def _to_decimal(raw: object) -> Decimal | None:
    # bool is an int subclass: `true` must not become 1.
    if isinstance(raw, bool):
        return None
    if isinstance(raw, Decimal):
        return raw
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        # Only if a caller parsed JSON without parse_float=Decimal: the shortest repr is the
        # number as written in the JSON text.
        return Decimal(repr(raw))
    if isinstance(raw, str) and _NUMBER.fullmatch(raw.strip()):
        return Decimal(raw.strip())
    return None


def _positive(raw: object, phrase: str) -> Decimal:
    value = _number(raw, phrase)
    if value.quantize(_PRICE_TICK) <= 0:
        raise InvalidSignal(phrase)
    return value


def _stop(raw: object, signal_type: SignalType) -> Decimal | None:
    if raw is None:
        return None
    value = _number(raw, "Invalid stop")
    # An exit needs no protective stop, and TradingView sends 0 for it.
    if value < 0 or (value.quantize(_PRICE_TICK) == 0 and signal_type != SignalType.EXIT):
        raise InvalidSignal("Invalid stop")
    return value


def _atr(raw: object) -> Decimal | None:
    if raw is None:
        return None
    value = _number(raw, "Invalid ATR")
    if value < 0:
        raise InvalidSignal("Invalid ATR")
    return value


def _reason(raw: object, signal_type: SignalType) -> str | None:
    text = raw.strip() if isinstance(raw, str) else ""
    if signal_type == SignalType.EXIT and not text:
        raise InvalidSignal("EXIT signals require a 'reason' field")
    return text or None


def _lots(raw: object) -> int | None:
    if raw is None:
        return None
    value = _number(raw, "Invalid numeric field")
    if value != value.to_integral_value():
        raise InvalidSignal("Invalid numeric field")
    return int(value)


def _er(raw: object) -> Decimal | None:
    # Kaufman's efficiency ratio is in [0, 1]; it multiplies Lot-R, so 500 would size 500×.
    if raw is None:
        return None
    value = _number(raw, "Invalid ER")
    if not 0 <= value <= 1:
        raise InvalidSignal("Invalid ER")
    return value


def _optional_number(raw: object) -> Decimal | None:
    return None if raw is None else _number(raw, "Invalid numeric field")
