"""The dashboard's login (DESIGN.md §12): a session cookie that proves the admin (or view)
token was given, without holding it.

The cookie is `v1.<grant>.<expires>.<nonce>.<mac>`, signed with a key derived from the tokens:
both nodes of a pair accept it (they share them), a restart keeps it, and changing a token
ends every session. Nothing is stored, so no token or session reaches a log or the database.
A logout revokes its session in this process only (until the cookie expires): the browser
drops the cookie, but a copy taken earlier still works on the other node or after a
restart.

State-changing calls made with the cookie must also carry `X-CSRF-Token`, derived from the
session: another site can make a browser send the cookie's requests (SameSite=Strict
already stops most), but it cannot read the page to learn the header's value.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

COOKIE = "pm_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_S = 12 * 3600  # a trading day and its evening


class Grant(StrEnum):
    ADMIN = "admin"  # views and controls
    VIEW = "view"  # views only


@dataclass(frozen=True)
class Session:
    grant: Grant
    expires: int
    nonce: str
    csrf: str = field(repr=False)


class SessionKeys:
    def __init__(self, admin_token: str, view_token: str | None = None,
                 clock: Callable[[], float] = time.time):
        # Both tokens make the key: changing either ends the sessions it opened.
        salt = b"pm dashboard session\0" + (view_token or "").encode()
        self._key = hmac.new(admin_token.encode(), salt, hashlib.sha256).digest()
        self._clock = clock
        self._revoked: dict[str, int] = {}

    def issue(self, grant: Grant) -> tuple[str, Session]:
        """A new session's cookie value and the session it proves."""
        expires = int(self._clock()) + SESSION_S
        nonce = secrets.token_urlsafe(18)
        body = f"v1.{grant}.{expires}.{nonce}"
        return f"{body}.{self._mac(body)}", self._session(grant, expires, nonce)

    def verify(self, cookie: str | None) -> Session | None:
        """The session a cookie proves, or None (forged, expired, logged out, malformed)."""
        if not cookie or len(cookie) > 256:
            return None
        parts = cookie.split(".")
        if len(parts) != 5 or parts[0] != "v1":
            return None
        _, grant, expires_text, nonce, mac = parts
        body = ".".join(parts[:4])
        if not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return None
        try:
            expires, granted = int(expires_text), Grant(grant)
        except ValueError:
            return None
        if expires <= self._clock() or nonce in self._revoked:
            return None
        return self._session(granted, expires, nonce)

    def revoke(self, session: Session) -> None:
        now = self._clock()
        self._revoked = {n: e for n, e in self._revoked.items() if e > now}
        self._revoked[session.nonce] = session.expires

    def _session(self, grant: Grant, expires: int, nonce: str) -> Session:
        return Session(grant, expires, nonce, self._mac(f"csrf.{nonce}")[:32])

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()
