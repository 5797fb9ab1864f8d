"""A paper daemon listening beyond loopback, as users expose it: its generated admin token is
announced once at start, kept private in the state dir, never logged, and guards the views."""

from __future__ import annotations

import stat
import time

from tests.support.daemon import TradingDaemon

ANNOUNCE = "Paper-mode admin token"


def announced_token(daemon: TradingDaemon, timeout_s: float = 10) -> str:
    """The token printed at start (it follows the first /health by a moment)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in daemon.output().splitlines():
            if line.startswith(ANNOUNCE):
                return line.rsplit(" ", 1)[1]
        time.sleep(0.05)
    raise AssertionError(f"no admin token announced:\n{daemon.output()}")


def test_an_exposed_paper_daemon_requires_its_generated_admin_token(state_dir):
    daemon = TradingDaemon(state_dir, "--host", "0.0.0.0").start()
    try:
        token = announced_token(daemon)
        path = state_dir / "admin_token"
        assert path.read_text() == token and len(token) >= 43
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

        assert daemon.get("/health")[0] == 200
        assert daemon.wait_ready()
        code, answer = daemon.get("/positions")
        assert code == 401 and answer["detail"] == "view token required"
        assert daemon.get("/positions", "not-the-admin-token")[0] == 401
        assert daemon.get("/positions", token) == (200, {"positions": []})
    finally:
        assert daemon.stop() == 0

    lines = daemon.output().splitlines()
    assert [line for line in lines if token in line] == [
        line for line in lines if line.startswith(ANNOUNCE)]
    assert len([line for line in lines if token in line]) == 1
    assert not any("not-the-admin-token" in line for line in lines)  # refusals name no token
    assert any('"access_refused"' in line for line in lines)
