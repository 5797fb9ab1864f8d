"""News that is no event of the book (DESIGN.md §11): a layer left without its broker stop,
a roll overdue, the broker's session about to expire or expired. The daemon's parts know
these as states (`/ready` reasons, the session's clock); this watcher notes each one's start
and end as a notification.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import TYPE_CHECKING

from live.brokers.kite_session import next_expiry
from live.notification_store import NotificationStore
from live.notification_text import ROLL, SESSION, UNPROTECTED, Texts
from live.rollover import ROLL_OVERDUE

if TYPE_CHECKING:
    from live.server import Context

SESSION_EXPIRED = "token_expired"  # the live broker's /ready reason


class Conditions:
    def __init__(self, ctx: Context, store: NotificationStore, texts: Texts,
                 kinds: Collection[str], *, wake: Callable[[], None] = lambda: None,
                 expiry_warning_min: int = 30,
                 may_act: Callable[[], bool] = lambda: True) -> None:
        self._ctx = ctx
        self._store = store
        self._texts = texts
        self._kinds = set(kinds)
        self._wake = wake
        self._warning_s = expiry_warning_min * 60
        self._may_act = may_act
        self._unprotected: dict[str, str] = {}
        self._overdue: set[str] = set()
        self._expired = False
        self._warned_for: datetime | None = None

    async def check(self) -> int:
        """Note what started or ended since the last look; return how many messages."""
        if not self._may_act():
            return 0
        seen = (self._unprotected, self._overdue, self._expired, self._warned_for)
        news = self._stops() + self._rolls() + self._session()
        wanted = [(kind, text) for kind, text in news if kind in self._kinds]
        try:
            for kind, text in wanted:
                await self._store.add(kind, text)
        except BaseException:
            # Not kept: look again next round, so the news is told once it can be.
            self._unprotected, self._overdue, self._expired, self._warned_for = seen
            raise
        if wanted:
            self._wake()
        return len(wanted)

    def _stops(self) -> list[tuple[str, str]]:
        now = dict((self._ctx.stops.report().get("unprotected") or {}) if self._ctx.stops
                   else {})
        news = [(UNPROTECTED, self._texts.unprotected(layer, why))
                for layer, why in sorted(now.items()) if self._unprotected.get(layer) != why]
        news += [(UNPROTECTED, self._texts.unprotected(layer, None))
                 for layer in sorted(set(self._unprotected) - set(now))]
        self._unprotected = now
        return news

    def _rolls(self) -> list[tuple[str, str]]:
        now = {key.removeprefix(ROLL_OVERDUE)
               for key in self._ctx.readiness.blocks(ROLL_OVERDUE)}
        news = [(ROLL, self._texts.roll_overdue(i, False)) for i in sorted(now - self._overdue)]
        news += [(ROLL, self._texts.roll_overdue(i, True)) for i in sorted(self._overdue - now)]
        self._overdue = now
        return news

    def _session(self) -> list[tuple[str, str]]:
        broker = self._ctx.broker
        if broker.name == "paper":
            return []
        news: list[tuple[str, str]] = []
        expired = SESSION_EXPIRED in (broker.unavailable_reason or "")
        if expired != self._expired:
            news.append((SESSION, self._texts.session_expired(resolved=not expired)))
            self._expired = expired
        now = self._ctx.clock()
        expiry = next_expiry(now)
        left_s = (expiry - now).total_seconds()
        if not expired and left_s <= self._warning_s and self._warned_for != expiry:
            self._warned_for = expiry
            news.append((SESSION, self._texts.session_expiring(expiry, round(left_s / 60))))
        return news
