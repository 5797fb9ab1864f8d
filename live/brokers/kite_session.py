"""The Kite access token: from the state file `kite-login` writes, or the environment.

Tokens die around 06:00 IST every day. An expired token is remembered as such, and the next
one is found by re-reading the state file, so a new login takes effect without a restart.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path

from core.signals import INDIA

SESSION_FILE = "kite_session.json"
DAILY_EXPIRY_IST = time(6, 0)


@dataclass
class KiteSession:
    state_dir: Path
    configured_token: str | None = None
    _expired: set[str] = field(default_factory=set)

    @property
    def path(self) -> Path:
        return self.state_dir / SESSION_FILE

    def token(self) -> str | None:
        """Return the freshest token not known to be dead: the logged-in one, else configured."""
        for candidate in (self._file_token(), self.configured_token):
            if candidate and candidate not in self._expired:
                return candidate
        return None

    def mark_expired(self, token: str | None) -> None:
        if token:
            self._expired.add(token)

    def _file_token(self) -> str | None:
        try:
            return str(json.loads(self.path.read_text())["access_token"])
        except (OSError, ValueError, KeyError):
            return None


def save_session(state_dir: Path, access_token: str, user_id: str | None,
                 login_time: str | None) -> Path:
    """Store a new session for the daemon to pick up, readable by its owner only."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SESSION_FILE
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"access_token": access_token, "user_id": user_id,
                   "login_time": login_time}, handle)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def next_expiry(now: datetime) -> datetime:
    """Return the next 06:00 IST after `now` (when Zerodha flushes access tokens)."""
    local = now.astimezone(INDIA)
    expiry = local.replace(hour=DAILY_EXPIRY_IST.hour, minute=0, second=0, microsecond=0)
    if expiry <= local:
        expiry += timedelta(days=1)
    return expiry
