"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import pytest

from tests.support.daemon import TradingDaemon


@pytest.fixture
def daemon(state_dir):
    """A paper daemon on its embedded defaults, ready."""
    running = TradingDaemon(state_dir).start()
    running.wait_ready()
    yield running
    running.ensure_stopped()
