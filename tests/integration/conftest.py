"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from core.db_state_manager import DatabaseStateManager
from core.specs import PortfolioConfig
from tests.support.trading import PORTFOLIO, Trading


@pytest.fixture
def runs_config() -> PortfolioConfig:
    """The portfolio configuration every daemon run of `runs` uses (a module may override)."""
    return PORTFOLIO


@pytest.fixture
async def runs(dsn, runs_config):
    """Start 'daemon runs' on one database; each has its own manager, cache and engine."""
    started: list[tuple[DatabaseStateManager, Trading]] = []

    async def start() -> Trading:
        db = DatabaseStateManager(dsn, retry_window_s=5)
        await db.open()
        trading = await Trading(db, dsn, config=runs_config).start()
        if started:
            trading.clock.now = started[-1][1].clock.now
        started.append((db, trading))
        return trading

    yield start
    for db, trading in started:
        await trading.close()
        await db.close()


@pytest.fixture
async def trading_in_operation(db, dsn):
    """A system with room for every entry, as the daemon runs it once recovered: its inbox
    processes, its trading state is loaded and it is ready."""
    from tests.integration.test_operator_controls import ROOMY

    trading = await Trading(db, dsn, config=ROOMY).start()
    trading.inbox.start_processing()
    await trading.control.load()
    trading.readiness.started()
    yield trading
    await trading.close()
