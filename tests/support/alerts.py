"""TradingView alert bodies, timestamped relative to now in India time (as TradingView sends)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

INDIA = ZoneInfo("Asia/Kolkata")


def ist(seconds_ago: float, base: datetime | None = None) -> str:
    """Return a naive IST timestamp `seconds_ago` before `base` (default: now)."""
    moment = (base or datetime.now(INDIA)) - timedelta(seconds=seconds_ago)
    return moment.astimezone(INDIA).replace(tzinfo=None).isoformat(timespec="seconds")


def alert(kind: str, instrument: str, position: str | None, price: float | str,
          timestamp: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind, "instrument": instrument, "price": price,
                            "timestamp": timestamp, "atr": fields.pop("atr", 700),
                            "supertrend": fields.pop("supertrend", 1)}
    if position is not None:
        body["position"] = position
    if kind in ("BASE_ENTRY", "PYRAMID", "EXIT"):
        body.update(stop=fields.pop("stop", 0), lots=fields.pop("lots", 1),
                    er=fields.pop("er", 1))
    if kind == "EXIT":
        body["reason"] = fields.pop("reason", "trend reversal")
    body.update(fields)
    return body


def trading_morning() -> datetime:
    """10:30 IST on the latest day up to today when both NFO and MCX trade (by the shipped
    holidays): drill clocks start there, so tests meet open sessions at any hour or day."""
    from config.domain_files import DEFAULT_CONFIG_DIR, load_holidays, load_instruments

    calendar = load_holidays(DEFAULT_CONFIG_DIR / "holidays.json")
    specs = load_instruments(DEFAULT_CONFIG_DIR / "instruments.json")
    moment = datetime.now(INDIA).replace(hour=10, minute=30, second=0, microsecond=0)
    while not all(calendar.in_session(specs[name], moment) for name in ("GOLD_MINI",
                                                                        "BANK_NIFTY")):
        moment -= timedelta(days=1)
    return moment
