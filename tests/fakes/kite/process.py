"""The fake as its own process, driven from a synchronous end-to-end test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import suppress
from datetime import date
from pathlib import Path
from typing import Any

from tests.fakes.kite.config import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scratch_log() -> Path:
    handle, name = tempfile.mkstemp(prefix="fake-kite-", suffix=".log")
    os.close(handle)
    return Path(name)


class FakeKiteProcess:
    """The fake as its own process, for end-to-end tests; `start()` waits until it answers."""

    START_TIMEOUT_S = 30.0

    def __init__(self, *, api_key: str = "fake_api_key", api_secret: str = "fake_api_secret",
                 access_token: str | None = "fake_access_token", today: date | None = None,
                 state_file: Path | None = None, port: int | None = None,
                 extra_args: tuple[str, ...] = (), log_path: Path | None = None):
        self.port = port or free_port()
        self.args = [sys.executable, "-m", "tests.fakes.kite_server", "--host", "127.0.0.1",
                     "--port", str(self.port), "--api-key", api_key, "--api-secret", api_secret,
                     *(["--access-token", access_token] if access_token else []),
                     *(["--today", today.isoformat()] if today else []),
                     *(["--state-file", str(state_file)] if state_file else []), *extra_args]
        self.log_path = log_path or scratch_log()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKiteProcess:
        """Start the process and wait until its control API answers."""
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(self.args, cwd=REPO, stdout=log_file,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake kite exited {self.process.returncode}:\n{self.output()}")
            with suppress(OSError):
                self.state()
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake kite did not start:\n{self.output()}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> FakeKiteProcess:
        self.stop()
        return self.start()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> FakeKiteProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """Call a control endpoint; return its `data`."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())["data"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: {error.code} {error.read()!r}") from None

    def control(self, name: str, **body: Any) -> Any:
        """POST /_test/<name> with `body`, e.g. control("price", tradingsymbol=..., price=...)."""
        return self.call("POST", f"/_test/{name}", body)

    def state(self) -> dict[str, Any]:
        return self.call("GET", "/_test/state")

    def gtts(self) -> list[dict[str, Any]]:
        """Every GTT, newest first, without a Kite call counted."""
        return self.call("GET", "/_test/gtts")
