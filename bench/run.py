"""`make bench`: the money path's speed against the durable-ack floor measured in the same run.

The daemon runs as a separate process on its embedded PostgreSQL with the paper broker, as
users run it; load comes from a separate load-generator process; the floor (`bench.floor`)
is a process of its own on the daemon's PostgreSQL. All three share this machine, as in the
targets. Phases: the ack at 200/s (daemon, then floor), the throughput ladder (both), the
overload step at twice the held rate, the dashboard; then books of 1k/10k/100k open layers
with 100k and 1M logged signals (recovery, and the stream on that book); the kill switch;
a replay; a pair's failover. Prints one table and writes the whole report as JSON to
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import failover, intake
from bench.dashboard import measure_dashboard
from bench.flatten import measure_flatten
from bench.floor import FloorServer
from bench.harness import (
    REPO,
    RESULTS,
    STREAM_INSTRUMENTS,
    BenchDaemon,
    commit_floor,
    decision_buckets,
    decision_latency,
    free_port,
    git_revision,
    loadgen,
    machine,
)
from bench.intake import Stream
from bench.pair import SharedServer
from bench.replay import measure_replay
from bench.report import table
from bench.scaling import measure_scaling
from bench.stream import bench_instruments, write_bench_config

STORM_INSTRUMENT = STREAM_INSTRUMENTS  # a flat instrument outside the stream
WARM_UP = 2000  # alerts 0..1999 of the stream


def storm(daemon: BenchDaemon, count: int) -> dict[str, Any]:
    """`count` copies of one base entry at once: exactly one executes."""
    instrument = bench_instruments(STORM_INSTRUMENT + 1)[STORM_INSTRUMENT]
    now = datetime.now().astimezone()
    body = {"secret": daemon.secret, "type": "BASE_ENTRY", "instrument": instrument.name,
            "position": "Long_1", "price": str(instrument.price),
            "stop": str(instrument.price - instrument.atr), "lots": 1,
            "atr": str(instrument.atr), "er": "0.9", "supertrend": "1",
            "timestamp": now.isoformat(timespec="seconds")}
    result = loadgen(daemon, "storm", "--count", str(count), f"--body={json.dumps(body)}")
    return {"requests": result["requests"], "statuses": result["statuses"],
            "answered_all_s": result["elapsed_s"],
            "exactly_one_executed": result["statuses"].get("200:executed") == 1
            and result["statuses"].get("200:duplicate") == count - 1}


def intake_phases(daemon: BenchDaemon, floor: FloorServer, quick: bool) -> dict[str, Any]:
    """Ack at 200/s, the ladder and the overload step, daemon beside floor."""
    ack_s, step_s = (3.0, 2.5) if quick else (10.0, 5.0)
    rates = ([300, 600, 1200, 2400] if quick else
             [300, 500, 700, 900, 1100, 1300, 1600, 2000, 2500, 3000])
    # Warm-up, not measured: each new pooled backend first compiles the admission function,
    # prepares its statements and fills its catalog caches.
    intake.step(daemon, Stream(0), 400, WARM_UP / 400)
    daemon.settle()
    stream = Stream(WARM_UP)
    intake.step(floor, stream, 400, 2.0)
    before = decision_buckets(daemon.metrics())
    ack = intake.daemon_step(daemon, stream, 200, ack_s)
    committed = decision_latency(before, decision_buckets(daemon.metrics()))
    floor_ack = intake.floor_step(floor, stream, 200, ack_s)
    part: dict[str, Any] = {"ack_200": {
        "daemon": ack, "floor": floor_ack, "ratios": intake.ratios(ack, floor_ack),
        "daemon_no_order": ack["by_kind"]["no_order"]}}
    orders = ack["order_decisions"]
    part["decisions"] = {"executed": orders["n"], "p50_ms": orders["p50_ms"],
                         "p99_ms": orders["p99_ms"], "max_ms": orders["max_ms"],
                         "client_p50_ms": ack["by_kind"]["order"]["p50_ms"],
                         "client_p99_ms": ack["by_kind"]["order"]["p99_ms"],
                         "histogram_all_executed": committed}
    part["sustained"] = intake.ladder(daemon, floor, stream, rates, step_s)
    held = max(part["sustained"]["daemon_per_s"], 200)
    part["overload"] = intake.overload(daemon, stream, 2 * held, step_s)
    return part


@contextmanager
def phase(report: dict[str, Any], name: str) -> Iterator[None]:
    """Record how long a phase took (the bench must stay within its time budget)."""
    started = time.monotonic()
    try:
        yield
    finally:
        report.setdefault("phase_s", {})[name] = round(time.monotonic() - started, 1)


def run(quick: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="pm-bench-"))
    config_dir = work / "config"
    write_bench_config(config_dir, STREAM_INSTRUMENTS + 1)
    daemon = BenchDaemon(work, config_dir)
    report: dict[str, Any] = {"timestamp": datetime.now(UTC).isoformat(),
                              "git_revision": git_revision(), "quick": quick}
    try:
        with phase(report, "intake"):
            daemon.start()
            report["machine"] = machine(daemon.conninfo())
            report["commit_floor"] = commit_floor(daemon.conninfo(), 500 if quick else 2000)
            report["duplicate_storm"] = storm(daemon, 1000)  # on a flat book: it must execute
            with FloorServer(daemon.conninfo(), free_port(), work / "floor.log",
                             daemon.pgdata) as floor:
                report.update(intake_phases(daemon, floor, quick))
        with phase(report, "dashboard"):
            report["dashboard"] = measure_dashboard(daemon.url, 5 if quick else 15)
    finally:
        daemon.stop()
    held = max(report["sustained"]["daemon_per_s"], 200)
    books = ([(1000, [10_000]), (10_000, [100_000])] if quick else
             [(1000, [100_000]), (10_000, [100_000, 1_000_000]), (100_000, [100_000])])
    print("books:", flush=True)
    with phase(report, "books"):
        report["scaling"] = measure_scaling(work, books, held, 3.0 if quick else 4.0)
    tenk = {item["logged_signals"]: item["process_start_to_ready_s"]
            for item in report["scaling"] if item["open_layers"] == 10_000}
    if 100_000 in tenk and 1_000_000 in tenk:
        report["history_growth"] = tenk[1_000_000] / tenk[100_000]
    with phase(report, "flatten"):
        report["flatten"] = measure_flatten(work, quick)
    with phase(report, "replay"):
        report["replay"] = measure_replay(work, 2000 if quick else 10_000)
    with phase(report, "failover"):
        server = SharedServer(work).start()
        try:
            report["failover"] = failover.measure_failover(work, server, [2000],
                                                           2 if quick else 3, book_alerts=100)
        finally:
            server.stop()
    shutil.rmtree(work, ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short phases (< 2 minutes)")
    args = parser.parse_args()
    report = run(args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{report['timestamp'][:19].replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(table(report))
    print(f"\nresults: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
