"""The loops beside the signal path: work done every so often, outliving any one failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def every(interval_s: float, work: Callable[[], Awaitable[Any]], failure: str) -> None:
    """Run `work`, then wait `interval_s`, until cancelled; a failure is logged as
    `failure` (with its traceback) and the next round tries again."""
    while True:
        try:
            await work()
        except Exception:  # the loop outlives any one failure, loudly
            log.exception(failure)
        await asyncio.sleep(interval_s)
