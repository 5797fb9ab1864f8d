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
