"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import json

import pytest

from tests.support.daemon import Daemon, TradingDaemon


@pytest.fixture
def daemons():
    """Daemons a test started: whatever happens, none outlives it."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.ensure_stopped()


@pytest.fixture
def on_the_server(daemons, tmp_path, embedded_server, postgresql):
    """Build daemons on this test's database of the session's server (`--db-config`)."""
    address = embedded_server.address()
    config = tmp_path / "database_config.json"
    config.write_text(json.dumps({"local": {
        "host": str(address.socket_dir), "port": address.port, "user": "postgres",
        "database": "${PM_TEST_DATABASE}", "sslmode": "disable"}}))

    def build(state_dir, *args: str, kind: type[Daemon] = Daemon,
              env: dict[str, str] | None = None) -> Daemon:
        daemon = kind(state_dir, "--db-config", str(config), "--db-env", "local", *args,
                      env={"PM_TEST_DATABASE": postgresql.info.dbname, **(env or {})})
        daemons.append(daemon)
        return daemon
    return build


@pytest.fixture
def daemon(state_dir):
    """A paper daemon on its embedded defaults, ready."""
    running = TradingDaemon(state_dir).start()
    running.wait_ready()
    yield running
    running.ensure_stopped()


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium driven by Playwright: the system's, or installed (root). Module
    scope: Playwright's sync API keeps an event loop of its own while it runs."""
    import os

    from playwright.sync_api import sync_playwright

    from tests.support.chromium import find_chromium, install_chromium, launch_args

    path = find_chromium() or install_chromium()
    if path is None:
        message = ("no Chromium: install Debian's `chromium` package (or set PM_CHROMIUM); "
                   "Playwright cannot download one here")
        if os.environ.get("CI"):
            pytest.fail(message)  # CI runs the browser tests, never skips them
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=launch_args())
        yield browser
        browser.close()
