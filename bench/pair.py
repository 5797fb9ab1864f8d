"""`make bench-ha`'s machinery: one embedded PostgreSQL, one real Redis, daemons on both.

Every daemon here is `portfolio_manager.py live` as a separate process, as operators run a
pair: `--db-config` on a database of the bench's own embedded server (durable defaults, as
`make bench`), plus `--redis-url` for a node of a pair. A `Node` is a `bench.harness.BenchDaemon`
that can also be spawned without waiting for `/ready` (a standby never is), killed, and
asked for its role.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.harness import REPO, BenchDaemon
from live.embedded_db import EmbeddedPostgres, ServerAddress

SECRET = "bench-ha-webhook-secret"
ADMIN_TOKEN = "bench-ha-admin-token-0123456789"
# The same pool as the daemon's embedded database (live/database_server.py): a single daemon
# on --db-config and the bench's `make bench` daemon size their pools alike.
POOL = {"pool_min_size": 2, "pool_max_size": 24}


class SharedServer:
    """The bench's PostgreSQL server; each measured setup gets a database of its own."""

    def __init__(self, work: Path):
        self.work = work
        self.server = EmbeddedPostgres(work / "pg")
        self.address: ServerAddress | None = None

    def start(self) -> SharedServer:
        self.address = self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def conninfo(self, dbname: str = "postgres") -> str:
        assert self.address is not None
        return self.address.conninfo(dbname)

    def database(self, name: str) -> Path:
        """Create database `name`; return a --db-config file that points at it."""
        assert self.address is not None
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        path = self.work / f"db-{name}.json"
        path.write_text(json.dumps({"local": {
            "host": str(self.address.socket_dir), "port": self.address.port,
            "user": "postgres", "database": name, "sslmode": "disable", **POOL}}))
        return path


class Node(BenchDaemon):
    """A daemon on a database of the shared server: single, or one node of a pair."""

    def __init__(self, work: Path, config_dir: Path, name: str, server: SharedServer,
                 database: str, db_config: Path, redis_url: str | None = None,
                 ttl_ms: int | None = None):
        env = {"PM_WEBHOOK_SECRET": SECRET, "PM_ADMIN_TOKEN": ADMIN_TOKEN}
        if ttl_ms is not None:
            env["PM_LEASE_TTL_MS"] = str(ttl_ms)
        args: tuple[str, ...] = ("--db-config", str(db_config), "--db-env", "local")
        if redis_url is not None:
            args += ("--redis-url", redis_url)
        super().__init__(work, config_dir, name, env=env, args=args)
        self.name = name
        self.server = server
        self.database = database
        self.log_path = work / f"{name}-daemon.log"

    @property
    def secret(self) -> str:
        return SECRET

    def conninfo(self, dbname: str | None = None) -> str:
        return self.server.conninfo(dbname or self.database)

    def spawn(self, capital: str = "100000000000") -> float:
        """Start the process without waiting for /ready; return perf_counter at the start."""
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "portfolio_manager.py"), "live", "--state-dir",
             str(self.state_dir), "--port", str(self.port), "--capital", capital, *self.args],
            cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        return started

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease released."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get(self, path: str, timeout_s: float = 2.0) -> tuple[int, Any]:
        """GET `path`: (status, decoded answer); (0, None) while it does not answer."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout_s) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")
        except (OSError, ValueError):
            return 0, None

    def ready(self) -> bool:
        return self.get("/ready", 1.0)[0] == 200

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        return body if code == 200 and isinstance(body, dict) else {}

    def role(self) -> str | None:
        return self.status().get("role")

    def log_offset(self) -> int:
        self.log.flush()
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def events_since(self, offset: int) -> list[dict[str, Any]]:
        """The daemon's JSON log lines written after `offset`."""
        with open(self.log_path, "rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace").splitlines()
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # the announcement on stderr, a traceback
            if isinstance(event, dict):
                events.append(event)
        return events


def wait_until(check: Callable[[], Any], timeout_s: float, what: str,
               nodes: tuple[Node, ...] = (), every_s: float = 0.02) -> Any:
    """Poll `check` until it is truthy; fail if it is not in time or a node died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        for node in nodes:
            if not node.alive():
                raise RuntimeError(f"{node.name} exited while waiting for {what} "
                                   f"(log: {node.log_path})")
        time.sleep(every_s)
    raise RuntimeError(f"not within {timeout_s} s: {what}")


def leader_and_standby(nodes: tuple[Node, Node], timeout_s: float = 120) -> tuple[Node, Node]:
    """Wait for one leader whose /ready is 200 and one standby that has seen its lease."""
    def settled() -> tuple[Node, Node] | None:
        first, second = nodes
        roles = (first.status(), second.status())
        by_role = {s.get("role"): (node, s) for node, s in zip(nodes, roles, strict=True)}
        if set(by_role) != {"leader", "standby"}:
            return None
        (leader, led), (standby, stood) = by_role["leader"], by_role["standby"]
        ha = stood.get("ha") or {}
        if not led.get("ready") or ha.get("leader") != led["ha"]["instance"]:
            return None
        if not ha.get("lease_ms_left"):
            return None
        return leader, standby
    found: tuple[Node, Node] = wait_until(settled, timeout_s, "one leader, one standby", nodes)
    return found
