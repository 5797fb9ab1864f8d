"""Group commit: the requests that arrive while one commit runs share the next one.

An alert's ack costs one synchronous commit; paid once per alert, commits, not the CPU, cap
the intake. Here one flusher takes whatever queued while the previous commit ran — no
waiting window, so at a low rate a batch is one alert and costs what it always did — and
answers each request only after the commit that holds it: durability before the ack is
unchanged.

Past capacity it sheds instead of queueing: a request that waited longer than its budget
before its batch began is refused `Overloaded` and never stored, so the sender hears a 503
while it is still listening (TradingView gives up at 3 s) and may send it again, and
nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

T = TypeVar("T")
R = TypeVar("R")


log = structlog.get_logger(__name__)


class Overloaded(Exception):
    """Refused unstored: the intake could not make it durable within its budget."""


@dataclass(slots=True)
class _Queued(Generic[T, R]):
    item: T
    answer: asyncio.Future[R]
    since: float = field(default_factory=time.monotonic)


class GroupCommit(Generic[T, R]):
    def __init__(self, commit: Callable[[list[T]], Awaitable[list[R]]], *, budget_s: float,
                 max_batch: int = 500, max_queued: int = 5000):
        self._commit = commit  # one result per item, in order
        self._budget_s = budget_s
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._queue: deque[_Queued[T, R]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Return `item`'s result once the commit that holds it has ended."""
        if len(self._queue) >= self._max_queued:
            raise Overloaded(f"{len(self._queue)} admissions waiting")
        queued: _Queued[T, R] = _Queued(item, asyncio.get_running_loop().create_future())
        self._queue.append(queued)
        if self._flusher is None or self._flusher.done():
            # A context of its own: not the first sender's (its request id, its instrument).
            self._flusher = asyncio.create_task(self._flush(), name="group-commit",
                                                context=contextvars.Context())
            self._flusher.add_done_callback(_report_crash)
        return await queued.answer

    @property
    def oldest_wait_s(self) -> float:
        """How long the oldest request not yet in a commit has waited."""
        return time.monotonic() - self._queue[0].since if self._queue else 0.0

    @property
    def overloaded(self) -> bool:
        """Whether a request arriving now would wait past its budget."""
        return self.oldest_wait_s > self._budget_s

    async def _flush(self) -> None:
        batch: list[_Queued[T, R]] = []
        try:
            while self._queue:
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    results = await self._commit([queued.item for queued in batch])
                except Exception as exc:  # each sender hears it (a 503 for a database fault)
                    for queued in batch:
                        if not queued.answer.done():
                            queued.answer.set_exception(exc)
                    continue
                for queued, result in zip(batch, results, strict=True):
                    if not queued.answer.done():
                        queued.answer.set_result(result)
        finally:
            # Cancelled (shutdown) or broken: no sender is left waiting. A batch cut off in
            # its commit may be stored or not: a 503 is true of both.
            for queued in [*batch, *self._queue]:
                if not queued.answer.done():
                    queued.answer.set_exception(Overloaded("intake stopped"))
            self._queue.clear()

    def _next_batch(self) -> list[_Queued[T, R]]:
        now = time.monotonic()
        batch: list[_Queued[T, R]] = []
        while self._queue and len(batch) < self._max_batch:
            queued = self._queue.popleft()
            if queued.answer.done():
                continue  # its sender went away before it was stored: nothing to keep
            if now - queued.since > self._budget_s:
                queued.answer.set_exception(Overloaded(
                    f"not stored within {self._budget_s:.1f} s"))
                continue
            batch.append(queued)
        return batch


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("group_commit_crashed", error=repr(task.exception()))
