"""The official kiteconnect client, run in worker threads, throttled, with its errors translated.

kiteconnect is blocking (requests); each call runs in a thread so the event loop never waits.
Its exceptions become the broker port's: ambiguous failures (the order may exist) are
BrokerUnavailable and must be resolved by tag; refusals are OrderRejected; a dead session is
BrokerAuthExpired.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import requests

from live.brokers.base import BrokerAuthExpired, BrokerError, BrokerUnavailable, OrderRejected
from live.brokers.throttle import Throttle

# Zerodha's published limits (KITE.md §4.1).
ORDER_LIMITS = ((10, 1.0), (400, 60.0))
QUOTE_LIMITS = ((1, 1.0),)
OTHER_LIMITS = ((10, 1.0),)


def translate(exc: Exception, *, placing: bool) -> BrokerError:
    """Map a kiteconnect or transport exception onto the broker port's errors."""
    from kiteconnect import exceptions as kite

    message = str(exc) or type(exc).__name__
    if isinstance(exc, kite.TokenException):
        return BrokerAuthExpired(message)
    if isinstance(exc, requests.RequestException):
        return BrokerUnavailable(f"{type(exc).__name__}: {message}")
    if isinstance(exc, kite.NetworkException | kite.DataException):
        # 429, 503 and HTML error pages: the request may have been acted on.
        return BrokerUnavailable(f"{type(exc).__name__} {exc.code}: {message}")
    code = getattr(exc, "code", 500)
    if placing and isinstance(exc, kite.KiteException) and 400 <= code < 500:
        # InputException, margin/holding errors (GeneralException 400), permission: refused.
        return OrderRejected(message)
    return BrokerUnavailable(f"{type(exc).__name__} {code}: {message}")


class KiteCalls:
    """Throttled, translated, off-loop calls on one KiteConnect client."""

    def __init__(self, api_key: str, root: str, timeout_s: float,
                 gate: Callable[[], None] = lambda: None):
        from kiteconnect import KiteConnect  # imported here: it pulls in Twisted

        self._gate = gate  # raises when this node may no longer send (a pair's old leader)
        self.client = KiteConnect(api_key, root=root, timeout=timeout_s)
        self._throttles = {"order": Throttle(*ORDER_LIMITS), "quote": Throttle(*QUOTE_LIMITS),
                           "other": Throttle(*OTHER_LIMITS)}

    def set_access_token(self, token: str | None) -> None:
        self.client.set_access_token(token)

    async def call(self, category: str, method: str, *args: Any, placing: bool = False,
                   **kwargs: Any) -> Any:
        """Run `client.<method>(*args, **kwargs)` within its rate limit, in a thread."""
        await self._throttles[category].acquire()
        self._gate()  # after every wait: nothing but the thread's start is left before it goes
        try:
            return await asyncio.to_thread(getattr(self.client, method), *args, **kwargs)
        except Exception as exc:  # the client raises bare requests/kite/parsing errors
            raise translate(exc, placing=placing) from exc
