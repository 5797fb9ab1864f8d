"""What every bench shares: a daemon as users run it, the load generator, percentiles, the
decision-latency histogram, the machine and the revision."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Protocol

import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
STREAM_INSTRUMENTS = 40
CAPITAL = "100000000000"


class Target(Protocol):
    """Something the load generator can send alerts to."""

    url: str

    @property
    def secret(self) -> str: ...


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout_s: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


class BenchDaemon:
    def __init__(self, work: Path, config_dir: Path, name: str = "state",
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
        self.state_dir = work / name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PM_CONFIG_DIR": str(config_dir),
                    "PM_RATE_LIMIT_PER_MIN": "1000000000", **(env or {})}
        self.args = args  # e.g. --broker zerodha --kite-root URL
        self.log = open(work / f"{name}-daemon.log", "ab")  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, capital: str = CAPITAL) -> float:
        """Start the daemon; return seconds from process start to /ready 200."""
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "portfolio_manager.py"), "live", "--state-dir",
             str(self.state_dir), "--port", str(self.port), "--capital", capital, *self.args],
            cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        while time.perf_counter() - started < 120:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError("daemon not ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)

    @property
    def secret(self) -> str:
        return (self.state_dir / "webhook_secret").read_text().strip()

    @property
    def pgdata(self) -> Path:
        return self.state_dir / "pg"

    def conninfo(self, dbname: str = "portfolio_manager") -> str:
        return f"host={self.pgdata} port=5432 user=postgres dbname={dbname}"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return str(response.read().decode())

    def settle(self) -> float:
        return settle(self.url)


def settle(url: str, timeout_s: float = 120) -> float:
    """Wait until the daemon at `url` has decided every signal it took (a load phase's
    backlog); return the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        latest = get_json(url + "/signals?limit=1")["signals"]
        if not latest or latest[0]["status"] == "processed":
            break
        time.sleep(0.1)
    return time.perf_counter() - started


class CpuMeter:
    """CPU seconds spent by a server process (the daemon, the floor), the PostgreSQL server
    in `pgdata` and this bench's finished children (the load generator): what a phase cost
    each, on the shared cores."""

    def __init__(self, server_pid: int, pgdata: Path):
        self._server = psutil.Process(server_pid)
        self._postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))

    def read(self) -> dict[str, float]:
        postgres = 0.0
        for process in [self._postmaster, *self._postmaster.children()]:
            try:
                times = process.cpu_times()
            except psutil.Error:  # a backend that just ended
                continue
            postgres += times.user + times.system
        server = self._server.cpu_times()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"server": server.user + server.system, "postgres": postgres,
                "load_generator": children.ru_utime + children.ru_stime}

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float], seconds: float,
              signals: int) -> dict[str, Any]:
        """Cores busy over `seconds`, and CPU µs a signal, of each."""
        used = {k: after[k] - before[k] for k in before}
        return {"cores": {k: round(v / seconds, 2) for k, v in used.items()},
                "us_per_signal": {k: round(1e6 * v / max(signals, 1)) for k, v in used.items()}}


def loadgen(target: Target, *args: str) -> dict[str, Any]:
    """Run the load generator as its own process against `target`; its JSON report."""
    done = subprocess.run(
        # --opt=value: a generated secret may begin with "-".
        [sys.executable, "-m", "bench.loadgen", *args, f"--url={target.url}/webhook",
         f"--secret={target.secret}", f"--instruments={STREAM_INSTRUMENTS}"],
        cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({' '.join(args)}):\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def latency_summary(result: dict[str, Any]) -> dict[str, Any]:
    latencies = result["latencies_ms"]
    by_status: dict[str, list[float]] = {}
    for latency, status in zip(latencies, result["status_of"], strict=True):
        by_status.setdefault(status, []).append(latency)
    return {"p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "max_ms": max(latencies), "requests": result["requests"],
            "errors": result["errors"], "statuses": result["statuses"],
            "p50_ms_by_status": {k: percentile(v, 0.5) for k, v in by_status.items()},
            "p99_ms_by_status": {k: percentile(v, 0.99) for k, v in by_status.items()}}


BUCKET = re.compile(r'pm_decision_latency_seconds_bucket\{(?P<labels>[^}]*)\} (?P<n>\S+)')


def decision_buckets(text: str) -> dict[float, float]:
    """Return the cumulative bucket counts of executed decisions."""
    buckets: dict[float, float] = {}
    for match in BUCKET.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("outcome") == "executed":
            buckets[float(labels["le"])] = float(match["n"])
    return buckets


def decision_latency(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """Percentiles (bucket upper bounds) of the decisions made between two scrapes."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts.get(float("inf"), 0.0)

    def bound(q: float) -> float:
        for le, cumulative in counts.items():
            if cumulative >= q * total:
                return le * 1000
        return float("inf")

    return {"executed": int(total), "p50_ms_at_most": bound(0.5),
            "p99_ms_at_most": bound(0.99)}


def commit_floor(conninfo: str, samples: int) -> dict[str, float]:
    """Time a single-row INSERT … RETURNING, synchronous commit, one round trip."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_floor "
                     "(id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
        timings = []
        for _ in range(samples):
            started = time.perf_counter()
            conn.execute("INSERT INTO bench_commit_floor DEFAULT VALUES RETURNING id").fetchone()
            timings.append((time.perf_counter() - started) * 1000)
        conn.execute("DROP TABLE bench_commit_floor")
    return {"p50_ms": percentile(timings, 0.5), "p99_ms": percentile(timings, 0.99)}


def machine(conninfo: str) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        pg_version = row[0] if row else "unknown"
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "postgresql": pg_version, "platform": platform.platform()}


def git_revision() -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return rev + ("-dirty" if dirty else "") if rev else "unknown"
