"""Signal identity: timestamps read as India time when naive, and the dedup fingerprint."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

INDIA = ZoneInfo("Asia/Kolkata")


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
