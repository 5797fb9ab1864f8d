"""Injected faults and Kite's rate limits (§4.1), counted per endpoint category."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

FAULTS = frozenset({"rate_limited", "html_502", "html_429", "network_503", "timeout", "drop",
                    "token_expired"})
FAULT_ENDPOINTS = frozenset({"place", "modify", "cancel", "orders", "order_history",
                             "order_trades", "trades", "positions", "quote", "margins",
                             "profile", "instruments", "session", "gtt_place", "gtt_modify",
                             "gtt_delete", "gtt", "gtts", "any"})
ANSWERING_FAULTS = frozenset({"rate_limited", "html_502", "html_429", "network_503",
                              "token_expired"})
ORDER_ENDPOINTS = frozenset({"place", "modify", "cancel", "gtt_place", "gtt_modify",
                             "gtt_delete"})
# §4.1, as token buckets (capacity, period): a burst of `capacity`, refilled over `period`.
RATE_LIMITS: Mapping[str, tuple[tuple[int, float], ...]] = {
    "orders": ((10, 1.0), (400, 60.0), (5000, 86_400.0)),
    "quote": ((1, 1.0),),
    "other": ((10, 1.0),),
}


class TokenBucket:
    def __init__(self, capacity: int, period_s: float, clock: Callable[[], float]):
        self._capacity = capacity
        self._rate = capacity / period_s
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()

    def available(self) -> bool:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        return self._tokens >= 1

    def take(self) -> None:
        self._tokens -= 1


class RateLimiter:
    """Per-category token buckets (§4.1); a refused call counts as a violation."""

    def __init__(self, enforced: bool, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.violations: Counter[str] = Counter()
        self.set_enforced(enforced)

    def set_enforced(self, enforced: bool) -> None:
        """Switch limiting on or off; buckets start full so earlier traffic does not count."""
        self.enforced = enforced
        self._buckets = {category: [TokenBucket(capacity, period, self._clock)
                                    for capacity, period in limits]
                         for category, limits in RATE_LIMITS.items()}

    def admit(self, category: str) -> bool:
        if not self.enforced:
            return True
        buckets = self._buckets[category]
        if all([bucket.available() for bucket in buckets]):  # refill every bucket first
            for bucket in buckets:
                bucket.take()
            return True
        self.violations[category] += 1
        return False


def rate_category(endpoint: str) -> str:
    if endpoint in ORDER_ENDPOINTS:
        return "orders"
    return "quote" if endpoint == "quote" else "other"


@dataclass(slots=True)
class PendingFault:
    endpoint: str
    fault: str
    remaining: int
