"""Telegram's Bot API in plain aiohttp calls (DESIGN.md §11): `sendMessage`, `getUpdates`,
`getMe`, and what each failure means for the caller.

The bot token is part of every URL (`/bot<token>/<method>`), so no URL, and no library
exception that could carry one, ever leaves this module: failures are raised as
`TelegramError`s whose text names the method and the reason only.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

DEFAULT_API_URL = "https://api.telegram.org"
PARSE_ERROR_MARK = "can't parse entities"  # Telegram's 400 text for bad Markdown/HTML


class TelegramError(Exception):
    """A call did not succeed; the text never contains the token."""


class RetryAfter(TelegramError):
    """429: flood control; this chat may be written to again after `seconds`."""

    def __init__(self, method: str, seconds: float) -> None:
        super().__init__(f"{method}: 429 too many requests, retry after {seconds:g} s")
        self.seconds = seconds


class ParseError(TelegramError):
    """400: the message's formatting did not parse (sent again as plain text)."""


class Unavailable(TelegramError):
    """5xx, a timeout or no connection: worth trying again later."""


class ChannelDown(Unavailable):
    """401, 403, 404 or an unknown chat: no message can go until an operator fixes the bot
    or the chat (kept and retried meanwhile, never dropped one by one)."""


class Refused(TelegramError):
    """Another 4xx: this message will not go, however often it is tried."""


class BotApi:
    """One bot's calls; `close()` releases the connection pool."""

    def __init__(self, token: str, api_url: str = DEFAULT_API_URL, *,
                 timeout_s: float = 10.0) -> None:
        self._base = f"{api_url.rstrip('/')}/bot{token}/"
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def get_me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("getMe", {})
        return result

    async def send_message(self, chat_id: str, text: str, *, html: bool = True) -> int:
        """Send `text`; return Telegram's message id."""
        payload: dict[str, Any] = {"chat_id": chat_id, "text": text,
                                   "disable_web_page_preview": True}
        if html:
            payload["parse_mode"] = "HTML"
        result = await self.call("sendMessage", payload)
        return int(result.get("message_id", 0)) if isinstance(result, dict) else 0

    async def get_updates(self, offset: int | None, wait_s: int) -> list[dict[str, Any]]:
        """Long poll: the updates after `offset` (held up to `wait_s` for one to come)."""
        payload: dict[str, Any] = {"timeout": wait_s, "allowed_updates": ["message"]}
        if offset is not None:
            payload["offset"] = offset
        result = await self.call("getUpdates", payload, timeout_s=wait_s + self._timeout_s)
        return [u for u in result if isinstance(u, dict)] if isinstance(result, list) else []

    async def call(self, method: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> Any:
        """POST one method; return its `result` or raise a TelegramError."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        limit = aiohttp.ClientTimeout(total=timeout_s or self._timeout_s)
        try:
            async with self._session.post(self._base + method, json=payload,
                                          timeout=limit) as response:
                status = response.status
                raw = await response.read()
        except TimeoutError:
            raise Unavailable(f"{method}: no answer in {timeout_s or self._timeout_s:g} s")\
                from None
        except aiohttp.ClientError as exc:
            # Not the exception's text: aiohttp puts the request URL (the token) in it.
            raise Unavailable(f"{method}: {type(exc).__name__}") from None
        return answer_of(method, status, raw)


def answer_of(method: str, status: int, raw: bytes) -> Any:
    """The `result` of a Bot API answer, or the TelegramError it stands for."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        if status >= 500 or status == 429:
            raise Unavailable(f"{method}: HTTP {status}")
        raise Refused(f"{method}: HTTP {status}, not a Bot API answer")
    if body.get("ok") is True:
        return body.get("result")
    description = str(body.get("description") or "")[:200]
    code = body.get("error_code", status)
    if code == 429:
        parameters = body.get("parameters") or {}
        retry = parameters.get("retry_after") if isinstance(parameters, dict) else None
        raise RetryAfter(method, float(retry) if isinstance(retry, int | float) else 1.0)
    if code == 400 and PARSE_ERROR_MARK in description.lower():
        raise ParseError(f"{method}: {description}")
    if isinstance(code, int) and (code >= 500 or status >= 500):
        raise Unavailable(f"{method}: {code} {description}")
    if code in (401, 403, 404) or "chat not found" in description.lower():
        raise ChannelDown(f"{method}: {code} {description}")
    raise Refused(f"{method}: {code} {description}")
