"""The broker as a pair's node may call it: only while it leads, within its deadline.

Every call that reaches the venue first asks `may_act()`. A node whose term has lapsed —
paused past its lease, cut off from both Redis and the database — gets `NotLeader`, which
the order flow treats as any unconfirmed call: the intent stays open, to be resolved by
tag by whoever leads next. It is never sent.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from live.brokers.base import BrokerUnavailable

# Calls that wait or let go rather than ask the venue to do anything.
UNGATED = frozenset({"close", "wait_available", "wait_for_update"})


class NotLeader(BrokerUnavailable):
    """This node does not lead (or no longer knows it does): nothing was sent."""


def leader_gate(may_act: Callable[[], bool]) -> Callable[[], None]:
    """The check a venue makes the instant before a request leaves: a node frozen inside a
    call (after the check at its start, while it awaited a quote or a connection) must not
    send when it wakes, its term gone and its order perhaps placed by the next leader."""
    def check() -> None:
        if not may_act():
            raise NotLeader("this node's term ended before the request left")
    return check


class LeaderOnlyBroker:
    def __init__(self, broker: Any, may_act: Callable[[], bool]):
        self._broker = broker
        self._may_act = may_act

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._broker, name)
        if name in UNGATED or not inspect.iscoroutinefunction(attr):
            return attr

        async def gated(*args: Any, **kwargs: Any) -> Any:
            if not self._may_act():
                raise NotLeader(f"{name}: this node does not hold the lease")
            return await attr(*args, **kwargs)

        return gated
