"""Run `portfolio_manager.py live` as a separate process, as users do, and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def write_config(directory: Path, **portfolio: Any) -> Path:
    """Write the shipped configuration into `directory`, with portfolio fields overridden."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("instruments.json", "kite.json", "holidays.json"):
        (directory / name).write_text((REPO / "config" / name).read_text())
    shipped = json.loads((REPO / "config" / "portfolio.json").read_text())
    (directory / "portfolio.json").write_text(json.dumps({**shipped, **portfolio}))
    return directory
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    def __init__(self, state_dir: Path, *extra_args: str, env: dict[str, str] | None = None):
        self.state_dir = state_dir
        self.port = free_port()
        self.args = [sys.executable, str(REPO / "portfolio_manager.py"), "live",
                     "--state-dir", str(state_dir), "--port", str(self.port), *extra_args]
        # A loaded CI machine must not turn an expected outcome into a 202: tests that want
        # the 202 path set PM_DECISION_WAIT_MS themselves.
        self.env = {**os.environ, "PM_DECISION_WAIT_MS": "10000", **(env or {})}
        self.log_path = state_dir.parent / f"daemon-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> Daemon:
        """Start the process without waiting for it (it may die at once: a crash test)."""
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        return self

    def start(self) -> Daemon:
        """Start the process and wait until it serves."""
        self.spawn()
        if not self.answers_200("/health", START_TIMEOUT_S):
            raise AssertionError(f"daemon exited {self.process.returncode}:\n{self.output()}")
        return self

    def answers_200(self, path: str, timeout_s: float,
                    accept: Callable[[Any], bool] | None = None) -> bool:
        """Poll `path` until it answers 200 (True), or an answer `accept` takes, or the
        process dies (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            try:
                code, body = self.get(path)
                if code == 200 or (accept is not None and accept(body)):
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{path} did not answer 200 in {timeout_s}s:\n{self.output()}")

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        """GET `path`, with `Authorization: Bearer <token>` when a token is given."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def post(url: str, body: bytes, timeout_s: float = 10,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class TradingDaemon(Daemon):
    """A trading daemon and the alerts a TradingView user would send it."""

    @property
    def secret(self) -> str:
        configured = self.env.get("PM_WEBHOOK_SECRET")
        return configured or (self.state_dir / "webhook_secret").read_text().strip()

    def send(self, **fields: Any) -> tuple[int, Any]:
        return post(self.url + "/webhook", json.dumps({"secret": self.secret, **fields}).encode())

    def send_settled(self, timeout_s: float = 60, **fields: Any) -> dict[str, Any]:
        """Send an alert and return its outcome, waiting past a 202 until it is decided."""
        code, answer = self.send(**fields)
        assert code in (200, 202), answer
        deadline = time.monotonic() + timeout_s
        while answer["status"] == "accepted" and time.monotonic() < deadline:
            time.sleep(0.1)
            detail = self.get(f"/signals/{answer['signal_id']}")[1]
            if detail["status"] == "processed":
                answer = {**answer, "status": detail["outcome"], "reason": detail["reason"]}
        return answer

    @property
    def admin_token(self) -> str:
        configured = self.env.get("PM_ADMIN_TOKEN")
        return configured or (self.state_dir / "admin_token").read_text().strip()

    def admin(self, path: str, timeout_s: float = 30, **body: Any) -> tuple[int, Any]:
        """POST an operator action (`/admin/...`) with the admin token."""
        return post(self.url + path, json.dumps(body).encode(), timeout_s,
                    {"Authorization": f"Bearer {self.admin_token}"})

    def send_raw(self, body: bytes) -> tuple[int, Any]:
        return post(self.url + "/webhook", body)

    def book_conninfo(self) -> str:
        return f"host={self.state_dir / 'pg'} port=5432 user=postgres dbname=portfolio_manager"

    def wait_ready(self, timeout_s: float = 90) -> bool:
        """Wait for /ready 200; return False if the process died first (a crash test)."""
        return self.answers_200("/ready", timeout_s)

    def wait_recovered(self, timeout_s: float = 90) -> bool:
        """Wait until the daemon has recovered and trades: /ready 200, or not ready only
        because a layer's broker stop is missing (the venue refused it: it is named, and
        the daemon's own stop still guards the layer)."""
        return self.answers_200("/ready", timeout_s, accept=lambda body: bool(
            isinstance(body, dict) and body.get("reasons") and all(
                str(r).startswith("unprotected:") for r in body["reasons"])))
