"""Logins and access tokens (§1.1), and the user fields the profile and the login show."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from tests.fakes.kite.config import FakeKiteConfig
from tests.fakes.kite.wire import KiteError, form_value


class Sessions:
    """Access tokens (valid and ever issued) and the request tokens a login may exchange."""

    def __init__(self, config: FakeKiteConfig):
        self._config = config
        self.valid: set[str] = set()
        self.known: set[str] = set()
        self.request_tokens: set[str] = set()
        if config.access_token:
            self.admit(config.access_token)

    def admit(self, token: str) -> None:
        self.valid.add(token)
        self.known.add(token)

    def authorized(self, header: str | None) -> bool:
        """Return whether `Authorization: token <api_key>:<access_token>` names a valid token."""
        prefix = f"token {self._config.api_key}:"
        return bool(header and header.startswith(prefix) and header[len(prefix):] in self.valid)

    def exchange(self, form: Mapping[str, Any]) -> str:
        """Check a login (§1.1) and return the new access token."""
        api_key = form_value(form, "api_key") or ""
        request_token = form_value(form, "request_token") or ""
        if api_key != self._config.api_key:
            raise KiteError(403, "TokenException", "Invalid `api_key`.")
        if not self._request_token_usable(request_token):
            raise KiteError(403, "TokenException", "Token is invalid or has expired.")
        expected = hashlib.sha256(
            (api_key + request_token + self._config.api_secret).encode()).hexdigest()
        if not hmac.compare_digest(expected, form_value(form, "checksum") or ""):
            raise KiteError(403, "TokenException", "Invalid `checksum`.")
        self.request_tokens.discard(request_token)  # request tokens are single-use
        if self._config.single_session:
            self.valid.clear()
        token = secrets.token_hex(16)
        self.admit(token)
        return token

    def _request_token_usable(self, request_token: str) -> bool:
        if request_token in self.request_tokens:
            return True
        return self._config.accept_any_request_token and bool(request_token)


def user_fields(config: FakeKiteConfig) -> dict[str, Any]:
    """Return the user part shared by profile.json and generate_session.json."""
    return {"user_id": config.user_id, "user_type": "individual", "email": "fake@example.com",
            "user_name": config.user_name, "user_shortname": config.user_name.split()[0],
            "broker": "ZERODHA",
            "exchanges": ["BFO", "MCX", "NSE", "CDS", "BSE", "BCD", "MF", "NFO"],
            "products": ["CNC", "NRML", "MIS", "BO", "CO"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"], "avatar_url": None,
            "meta": {"demat_consent": "physical"}}
