"""The intake under load: the daemon beside the durable-ack floor, at the same rates, with the
same load generator, in the same run — then past capacity.

A step sends the stream open loop at one rate. It is held when every request was answered
2xx, its p99 is under 100 ms, nothing acknowledged is missing from the book, and the
decisions kept up: the backlog is decided within a second of the step's end (a daemon that
stores faster than it decides answers `accepted` quickly while its decisions fall further
behind — not a rate it can sustain). Between steps the daemon settles, so no step inherits
the last one's work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.floor import FloorServer
from bench.harness import BenchDaemon, CpuMeter, Target, latency_summary, loadgen, percentile

HELD_P99_MS = 100.0
HELD_SETTLE_S = 1.0
FLOOR_ALONE_S = 3.0
TRADINGVIEW_WAIT_MS = 3000.0


@dataclass
class Stream:
    """Where the next step starts in the bench stream (alerts are never sent twice)."""

    next: int = 0

    def take(self, rate: int, duration_s: float) -> int:
        start, self.next = self.next, self.next + int(rate * duration_s)
        return start


def step(target: Target, stream: Stream, rate: int, duration_s: float,
         timeout_s: float | None = None) -> dict[str, Any]:
    args = ["open", "--rate", str(rate), "--duration", str(duration_s), "--start",
            str(stream.take(rate, duration_s))]
    if timeout_s is not None:
        args += ["--timeout", str(timeout_s)]
    return loadgen(target, *args)


def lost(daemon: BenchDaemon, result: dict[str, Any], wait_s: float = 30) -> dict[str, int]:
    """Of the signals the daemon acknowledged (2xx with an id), how many the book does not
    hold, and how many it still holds undecided after `wait_s`."""
    ids = sorted(set(result["signal_ids"]))
    deadline = time.monotonic() + wait_s
    with psycopg.connect(daemon.conninfo(), autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*), count(*) FILTER (WHERE status <> 'processed')"
                               " FROM signal_log WHERE id = ANY(%s)", (ids,)).fetchone()
            assert row is not None
            if not row[1] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return {"acknowledged": len(ids), "missing": len(ids) - int(row[0]),
            "undecided": int(row[1])}


def by_kind(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The answers' latencies split: decided with no order, and those that report a fill."""
    split: dict[str, list[float]] = {"no_order": [], "order": []}
    for latency, key, order in zip(result["latencies_ms"], result["status_of"],
                                   result["orders"], strict=True):
        if key[0] == "2":
            split["order" if order == "1" else "no_order"].append(latency)
    return {kind: {"p50_ms": percentile(values, 0.5), "p99_ms": percentile(values, 0.99),
                   "n": len(values)} for kind, values in split.items()}


def order_decisions(daemon: BenchDaemon, result: dict[str, Any]) -> dict[str, Any]:
    """Received → outcome committed, from the book, for the acknowledged signals that
    placed an order."""
    ids = sorted(set(result["signal_ids"]))
    with psycopg.connect(daemon.conninfo()) as conn:
        rows = conn.execute(
            """SELECT extract(epoch FROM s.processed_at - s.received_at) * 1000
               FROM signal_log s WHERE s.id = ANY(%s) AND s.status = 'processed'
                 AND EXISTS (SELECT 1 FROM order_intents i WHERE i.signal_id = s.id)""",
            (ids,)).fetchall()
    values = [float(row[0]) for row in rows]
    return {"p50_ms": percentile(values, 0.5), "p99_ms": percentile(values, 0.99),
            "max_ms": max(values, default=float("nan")), "n": len(values)}


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    summary = latency_summary(result)
    return {k: summary[k] for k in ("p50_ms", "p99_ms", "max_ms", "requests", "errors",
                                     "statuses", "p50_ms_by_status", "p99_ms_by_status")}


def metered_step(target: Target, meter: CpuMeter, stream: Stream, rate: int,
                 duration_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """One step, with what it cost the server, PostgreSQL and the load generator; the raw
    result and its figures."""
    before, started = meter.read(), time.monotonic()
    result = step(target, stream, rate, duration_s)
    figures = _figures(result)
    figures["cpu"] = CpuMeter.spent(before, meter.read(), time.monotonic() - started,
                                    result["requests"])
    return result, figures


def daemon_step(daemon: BenchDaemon, stream: Stream, rate: int,
                duration_s: float) -> dict[str, Any]:
    assert daemon.process is not None
    result, figures = metered_step(daemon, CpuMeter(daemon.process.pid, daemon.pgdata),
                                   stream, rate, duration_s)
    figures["by_kind"] = by_kind(result)
    figures["settled_s"] = daemon.settle()
    figures["lost"] = lost(daemon, result)
    figures["order_decisions"] = order_decisions(daemon, result)
    figures["held"] = held(figures)
    return figures


def floor_step(floor: FloorServer, stream: Stream, rate: int,
               duration_s: float) -> dict[str, Any]:
    _, figures = metered_step(floor, CpuMeter(floor.pid, floor.pgdata), stream, rate,
                              duration_s)
    figures["held"] = held(figures)
    return figures


def held(figures: dict[str, Any]) -> bool:
    lost_ = figures.get("lost", {"missing": 0, "undecided": 0})
    return bool(figures["errors"] == 0 and figures["p99_ms"] < HELD_P99_MS
                and lost_["missing"] == 0 and lost_["undecided"] == 0
                and figures.get("settled_s", 0.0) <= HELD_SETTLE_S)


def ratios(daemon: dict[str, Any], floor: dict[str, Any]) -> dict[str, float]:
    return {"p50": daemon["p50_ms"] / floor["p50_ms"], "p99": daemon["p99_ms"] / floor["p99_ms"]}


def ladder(daemon: BenchDaemon, floor: FloorServer, stream: Stream, rates: list[int],
           duration_s: float) -> dict[str, Any]:
    """Step both up: the daemon until a step is not held, the floor until its own limit
    (at least as far as the daemon went)."""
    steps: list[dict[str, Any]] = []
    daemon_held = floor_held = 0
    daemon_on = floor_on = True
    for rate in rates:
        if not (daemon_on or floor_on):
            break
        row: dict[str, Any] = {"rate_per_s": rate}
        if daemon_on:
            row["daemon"] = daemon_step(daemon, stream, rate, duration_s)
            daemon_on = row["daemon"]["held"]
            daemon_held = rate if daemon_on else daemon_held
        if floor_on:  # past the daemon's rates, shorter steps: the floor is steadier
            row["floor"] = floor_step(floor, stream, rate,
                                      duration_s if daemon_on or "daemon" in row
                                      else FLOOR_ALONE_S)
            floor_on = row["floor"]["held"]
            floor_held = rate if floor_on else floor_held
        steps.append(row)
    return {"daemon_per_s": daemon_held, "floor_per_s": floor_held,
            "duration_s": duration_s, "steps": steps}


def overload(daemon: BenchDaemon, stream: Stream, rate: int,
             duration_s: float) -> dict[str, Any]:
    """Past capacity: how many answers came within TradingView's 3 s, how many were 503
    (with Retry-After), and whether anything acknowledged was lost."""
    result = step(daemon, stream, rate, duration_s, timeout_s=10.0)
    latencies, keys = result["latencies_ms"], result["status_of"]
    flags = result["retry_after"]
    shed = [i for i, key in enumerate(keys) if key.startswith("503:")]
    answered = [i for i, key in enumerate(keys) if not key.startswith("0:")]
    in_time = [i for i in answered if latencies[i] <= TRADINGVIEW_WAIT_MS]
    requests = len(keys)
    figures = {
        "rate_per_s": rate, "duration_s": duration_s, "requests": requests,
        "statuses": result["statuses"],
        "answered_within_3s": len(in_time) / requests,
        "no_answer_within_3s": requests - len(in_time),
        "shed_503_share": len(shed) / requests,
        "shed_with_retry_after": sum(1 for i in shed if flags[i] == "1"),
        "shed_p50_ms": percentile([latencies[i] for i in shed], 0.5),
        "shed_p99_ms": percentile([latencies[i] for i in shed], 0.99),
        "acknowledged_p50_ms": percentile(
            [latencies[i] for i, key in enumerate(keys) if key[0] == "2"], 0.5),
        "acknowledged_p99_ms": percentile(
            [latencies[i] for i, key in enumerate(keys) if key[0] == "2"], 0.99),
    }
    figures["settled_s"] = daemon.settle()
    figures["lost"] = lost(daemon, result)
    return figures
