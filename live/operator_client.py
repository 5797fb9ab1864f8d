"""An HTTP client for a running daemon's operator API (DESIGN.md §9): JSON in and out.

Standard library only, so an operator command starts in milliseconds and needs neither the
database nor the domain configuration. The token is sent as a bearer header and nowhere else:
no message this module builds contains it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKEN_FILE = "admin_token"  # the paper daemon writes its generated token here (mode 0600)


class CannotAsk(Exception):
    """The question never got a usable answer: no token, no daemon, or no JSON back."""


@dataclass(frozen=True)
class Answer:
    status: int  # the HTTP status
    body: dict[str, Any]

    @property
    def detail(self) -> str:
        """The daemon's explanation of a refusal."""
        detail = self.body.get("detail") or self.body.get("reason") or self.body.get("error")
        return str(detail) if detail else f"HTTP {self.status}"


def admin_token(configured: str | None, state_dir: Path) -> str:
    """Return the operator token: the configured one (PM_ADMIN_TOKEN), else the paper
    daemon's file in `state_dir`; raise CannotAsk if there is neither."""
    if configured and configured.strip():
        return configured.strip()
    path = state_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    except OSError as exc:
        raise CannotAsk(f"cannot read {path} ({exc.strerror})") from None
    if not token:
        raise CannotAsk(f"no admin token: set PM_ADMIN_TOKEN or start the paper daemon with "
                        f"--state-dir {state_dir} (it writes {path})")
    return token


class OperatorClient:
    """Requests to one daemon, authorised by `token` when there is one."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    def post(self, path: str, body: dict[str, Any]) -> Answer:
        return self._ask(path, "POST", json.dumps(body).encode())

    def get(self, path: str) -> Answer:
        return self._ask(path, "GET", None)

    def _ask(self, path: str, method: str, data: bytes | None) -> Answer:
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return Answer(response.status, self._json(path, response.read()))
        except urllib.error.HTTPError as refusal:  # a 4xx/5xx is still the daemon's answer
            with refusal:
                return Answer(refusal.code, self._json(path, refusal.read()))
        except TimeoutError:
            # The request may have been carried out: say so rather than guess.
            raise CannotAsk(f"{self.url} did not answer {method} {path} within "
                            f"{self._timeout_s:g} s (it may still have acted: check status)"
                            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CannotAsk(f"cannot reach the daemon at {self.url} ({reason})") from None

    def _json(self, path: str, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # Not this daemon's API (an older daemon without the route, or another server).
            raise CannotAsk(f"{self.url}{path} did not answer with a JSON object")
        return body
