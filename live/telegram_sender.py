"""Deliver the kept notifications to one Telegram chat, oldest first (DESIGN.md §11).

One message at a time and at most one a second (Telegram's per-chat pace). A 429 waits what
Telegram says; HTML it cannot parse goes again as plain text; a 5xx, a timeout or no
connection is tried again later, backing off; a refusal that retrying cannot fix (a wrong
chat id, the bot blocked) gives that message up. A message not delivered before its expiry
is given up too, so a long outage ends with the news that still matters, not a flood.
While a message waits, the ones after it wait too: the chat reads in the order things
happened. Nothing here is awaited by a trade.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from live.notification_store import NotificationStore, Pending
from live.notification_text import plain
from live.telegram_api import (
    BotApi,
    ChannelDown,
    ParseError,
    Refused,
    RetryAfter,
    TelegramError,
)
from live.waiting import woken

log = structlog.get_logger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
MAX_ATTEMPTS = 20  # with the back-off, about a quarter of an hour of trying


class TelegramSender:
    def __init__(self, api: BotApi, store: NotificationStore, chat_id: str, *,
                 pace_s: float = 1.0, poll_s: float = 1.0,
                 max_attempts: int = MAX_ATTEMPTS,
                 may_act: Callable[[], bool] = lambda: True,
                 sleep: Callable[[float], Any] = asyncio.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._store = store
        self._chat_id = chat_id
        self._pace_s = pace_s
        self._poll_s = poll_s
        self._max_attempts = max_attempts
        self._may_act = may_act
        self._sleep = sleep
        self._monotonic = monotonic
        self._woken = asyncio.Event()
        self._last_sent = float("-inf")
        self.sent = 0
        self._down: str | None = None

    async def close(self) -> None:
        await self._store.close()

    def wake(self) -> None:
        """Something was added: look now rather than at the next poll."""
        self._woken.set()

    async def run(self) -> None:
        try:
            while True:
                self._woken.clear()
                try:
                    # A node whose term ended sends nothing: its successor sends the rest.
                    wait_s = await self.send_due() if self._may_act() else self._poll_s
                except (psycopg.Error, OSError) as exc:
                    self._unreachable("database", str(exc))
                    await self._store.close()
                    wait_s = self._poll_s
                except Exception:  # the sender outlives any one failure, loudly
                    log.exception("notification_sender_failed")
                    wait_s = RETRY_MAX_S
                await woken(self._woken, min(wait_s, self._poll_s))
        finally:
            await self._store.close()

    async def send_due(self) -> float:
        """Send what is due now, in order; return how long until the next one is due."""
        while True:
            for message_id, kind, attempts in await self._store.expire():
                log.warning("notification_expired", channel=self._store.channel,
                            notification_id=message_id, kind=kind, attempts=attempts)
            head = await self._store.head()
            if head is None:
                return self._poll_s
            if head.due_in_s > 0:
                return head.due_in_s
            await self._send(head)  # a failure sets when it is due again

    async def _send(self, head: Pending) -> None:
        """One attempt at `head`: delivered, given up, or due again later."""
        await self._pace()
        try:
            try:
                await self._api.send_message(self._chat_id, head.body)
            except ParseError as exc:
                log.warning("telegram_parse_error", notification_id=head.id, error=str(exc))
                await self._api.send_message(self._chat_id, plain(head.body), html=False)
        except RetryAfter as exc:
            await self._store.retry(head.id, str(exc), exc.seconds)
            self._unreachable("telegram", str(exc))
            return
        except Refused as exc:
            await self._store.give_up(head.id, str(exc))
            log.error("notification_refused", notification_id=head.id, kind=head.kind,
                      error=str(exc))
            return
        except ChannelDown as exc:  # every message would fail: keep them all until fixed
            await self._store.retry(head.id, str(exc), RETRY_MAX_S)
            if self._down != "channel":
                log.error("telegram_channel_down", error=str(exc),
                          detail="check PM_TELEGRAM_BOT_TOKEN and PM_TELEGRAM_CHAT_ID")
            self._down = "channel"
            return
        except TelegramError as exc:
            attempts = await self._store.retry(head.id, str(exc), backoff_s(head.attempts))
            self._unreachable("telegram", str(exc))
            if attempts >= self._max_attempts:
                await self._store.give_up(head.id, f"{attempts} attempts: {exc}")
                log.error("notification_given_up", notification_id=head.id, kind=head.kind,
                          attempts=attempts, error=str(exc))
            return
        await self._store.delivered(head.id)
        self.sent += 1
        if self._down is not None:
            log.info("telegram_delivering_again", after=self._down)
            self._down = None

    async def _pace(self) -> None:
        wait_s = self._last_sent + self._pace_s - self._monotonic()
        if wait_s > 0:
            await self._sleep(wait_s)
        self._last_sent = self._monotonic()

    def _unreachable(self, what: str, error: str) -> None:
        if self._down != what:
            log.warning("notifications_undelivered", channel=self._store.channel,
                        unreachable=what, error=error)
        self._down = what


def backoff_s(attempts: int) -> float:
    """Seconds before attempt `attempts + 2`: 1, 2, 4, … up to a minute."""
    return float(min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** min(attempts, 16)))
