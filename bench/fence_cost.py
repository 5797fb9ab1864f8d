"""`make bench-ha`: what being a pair's leader costs the signal path — the fence.

The same alert load (`bench.loadgen`, the stream of `make bench`: a warm-up of 400/s for
5 s, then 200/s open loop) on, back to back, in one run, on one PostgreSQL server:
- `single`: a single daemon (no Redis);
- `pair_leader`: the leader of a pair, its standby running beside it, as operators run one;
- `pair_leader_alone`: the leader of a pair whose standby was then stopped — the fence and the
  lease renewals without the standby's own work (it reloads the book every renewal interval)
  on the same two cores.
Every setup gets a fresh database, so each decides the same alerts on the same book. Rounds
alternate the order (ABC, CBA, …) so that neither drift nor a warm server favours one.

Reported: ack latency (webhook → HTTP answer, which waits for the decision) p50/p99 per setup
and pooled over rounds, and decision latency (signal received → outcome committed, from the
daemon's own histogram, as `make bench`), for executed signals and for all of them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import (
    BUCKET,
    STREAM_INSTRUMENTS,
    commit_floor,
    decision_latency,
    latency_summary,
    loadgen,
    machine,
)
from bench.pair import Node, SharedServer, leader_and_standby, wait_until
from bench.stream import write_bench_config
from tests.support.redis_server import RedisServer

MODES = ("single", "pair_leader", "pair_leader_alone")
LABELS = {"single": "single daemon", "pair_leader": "pair leader (standby up)",
          "pair_leader_alone": "pair leader (standby stopped)"}
OUTCOMES = re.compile(r"^pm_signal_outcomes_total\{[^}]*\} (\S+)$", re.M)
MEASURED_START = 2000  # the warm-up sends alerts 0..1999, as in `make bench`
Buckets = dict[str, dict[float, float]]  # outcome → cumulative counts by upper bound (s)


def buckets_by_outcome(text: str) -> Buckets:
    found: Buckets = {}
    for match in BUCKET.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        found.setdefault(labels["outcome"], {})[float(labels["le"])] = float(match["n"])
    return found


def difference(before: Buckets, after: Buckets) -> Buckets:
    """The decisions made between two scrapes, by outcome, and `all` of them."""
    diff = {o: {le: n - before.get(o, {}).get(le, 0.0) for le, n in b.items()}
            for o, b in after.items()}
    bounds = sorted({le for b in diff.values() for le in b})
    diff["all"] = {le: sum(b.get(le, 0.0) for b in diff.values()) for le in bounds}
    return diff


def add(total: Buckets, more: Buckets) -> Buckets:
    return {o: {le: total.get(o, {}).get(le, 0.0) + more.get(o, {}).get(le, 0.0)
                for le in set(total.get(o, {})) | set(more.get(o, {}))}
            for o in set(total) | set(more)}


def decisions(diff: Buckets) -> dict[str, Any]:
    return {outcome: decision_latency({}, counts) for outcome, counts in sorted(diff.items())}


def measure(node: Node, duration_s: float, rate: int) -> dict[str, Any]:
    """Warm up, then the measured open-loop phase; the raw answers and the decisions."""
    warm = latency_summary(loadgen(node, "open", "--rate", "400", "--duration", "5",
                                   "--start", "0"))
    before = buckets_by_outcome(node.metrics())
    ack = loadgen(node, "open", "--rate", str(rate), "--duration", str(duration_s),
                  "--start", str(MEASURED_START))
    diff = difference(before, buckets_by_outcome(node.metrics()))
    return {"warmup": {k: warm[k] for k in ("p50_ms", "p99_ms", "max_ms", "errors",
                                             "statuses")},
            "ack_raw": ack, "decision_buckets": diff, "counted": counted_vs_stored(node)}


def counted_vs_stored(node: Node) -> dict[str, int]:
    """Once every stored signal is decided: the decisions the daemon's metrics counted
    against the signals the book holds as processed (they must be equal)."""
    def settled() -> int | None:
        with psycopg.connect(node.conninfo()) as conn:
            row = conn.execute("SELECT count(*) FILTER (WHERE status = 'processed'), "
                               "count(*) FROM signal_log").fetchone()
        assert row is not None
        return int(row[0]) if row[0] == row[1] else None

    stored = wait_until(settled, 60, "every stored signal decided", (node,), every_s=0.2)
    time.sleep(0.5)  # an outcome is counted just after its commit
    text = node.metrics()
    counted = sum(float(n) for n in OUTCOMES.findall(text))
    return {"metrics_decisions": int(counted), "signals_processed": stored,
            "counted_twice": int(counted) - stored}


class Setups:
    """Start each measured setup on a fresh database of the shared server."""

    def __init__(self, work: Path, server: SharedServer, config_dir: Path):
        self.work, self.server, self.config_dir = work, server, config_dir
        self.last: Node | None = None

    def run(self, mode: str, round_: int, duration_s: float, rate: int) -> dict[str, Any]:
        name = f"fence_r{round_}_{mode}"
        db_config = self.server.database(name)
        if mode == "single":
            node = Node(self.work, self.config_dir, name, self.server, name, db_config)
            self.last = node
            try:
                node.start()
                return {**measure(node, duration_s, rate), "role": node.role()}
            finally:
                node.stop()
        redis_server = RedisServer(self.work / f"redis-{name}").start()
        nodes = tuple(Node(self.work, self.config_dir, f"{name}-{x}", self.server, name,
                           db_config, redis_server.url) for x in "ab")
        pair: tuple[Node, Node] = (nodes[0], nodes[1])
        try:
            pair[0].spawn()
            wait_until(lambda: pair[0].ready(), 120, "the first node leads", pair[:1])
            pair[1].spawn()
            leader, standby = leader_and_standby(pair)
            self.last = leader
            if mode == "pair_leader_alone":
                standby.stop()
            result = measure(leader, duration_s, rate)
            status = leader.status()
            if status.get("role") != "leader" or not leader.ready():
                raise RuntimeError(f"{leader.name} stopped leading during the load")
            return {**result, "role": status["role"], "epoch": status["ha"]["epoch"],
                    "standby_running": standby.alive()}
        finally:
            for node in pair:
                node.stop()
            redis_server.kill()


def order(round_: int) -> tuple[str, ...]:
    return MODES if round_ % 2 == 0 else tuple(reversed(MODES))


def merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One load generator report out of several (pooled percentiles)."""
    statuses: dict[str, int] = {}
    for run in runs:
        for key, n in run["statuses"].items():
            statuses[key] = statuses.get(key, 0) + n
    return {"latencies_ms": [x for r in runs for x in r["latencies_ms"]],
            "status_of": [x for r in runs for x in r["status_of"]],
            "requests": sum(r["requests"] for r in runs),
            "errors": sum(r["errors"] for r in runs), "statuses": statuses}


def measure_fence_cost(work: Path, server: SharedServer, rounds: int, duration_s: float,
                       rate: int = 200,
                       progress: Callable[[str], None] = print) -> dict[str, Any]:
    config_dir = work / "fence-config"
    write_bench_config(config_dir, STREAM_INSTRUMENTS + 1)
    setups = Setups(work, server, config_dir)
    raw: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    per_round = []
    for round_ in range(rounds):
        for mode in order(round_):
            result = setups.run(mode, round_, duration_s, rate)
            raw[mode].append(result)
            ack = latency_summary(result["ack_raw"])
            progress(f"  round {round_ + 1}/{rounds} {mode}: ack p50 {ack['p50_ms']:.2f} / "
                     f"p99 {ack['p99_ms']:.2f} ms, {ack['errors']} errors")
            per_round.append({
                "round": round_ + 1, "mode": mode, "role": result["role"],
                "warmup_400_per_s_5s": result["warmup"], "counted": result["counted"],
                "ack": {k: v for k, v in ack.items()},
                "decision_latency": decisions(result["decision_buckets"])})
    assert setups.last is not None
    pooled: dict[str, Any] = {}
    for mode, results in raw.items():
        total: Buckets = {}
        for result in results:
            total = add(total, result["decision_buckets"])
        pooled[mode] = {"ack": latency_summary(merged([r["ack_raw"] for r in results])),
                        "decision_latency": decisions(total)}
    return {"rate_per_s": rate, "duration_s": duration_s, "rounds": rounds,
            "orders": [list(order(r)) for r in range(rounds)],
            "machine": machine(setups.last.conninfo()),
            "commit_floor": commit_floor(setups.last.conninfo(), 1000),
            "pooled": pooled, "differences": differences(pooled), "per_round": per_round}


def differences(pooled: dict[str, Any]) -> dict[str, Any]:
    """Each pair setup minus the single daemon, pooled over rounds (ms)."""
    base = pooled["single"]
    out = {}
    for mode in MODES[1:]:
        item = pooled[mode]
        out[f"{mode}_minus_single"] = {
            "ack_p50_ms": item["ack"]["p50_ms"] - base["ack"]["p50_ms"],
            "ack_p99_ms": item["ack"]["p99_ms"] - base["ack"]["p99_ms"],
            **{f"decision_{outcome}_{q}_ms_at_most": (
                item["decision_latency"][outcome][f"{q}_ms_at_most"]
                - base["decision_latency"][outcome][f"{q}_ms_at_most"])
               for outcome in ("executed", "all") for q in ("p50", "p99")}}
    return out


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    pooled = result["pooled"]
    head = f"@{result['rate_per_s']}/s, {result['rounds']}×{result['duration_s']:g} s"
    for mode in MODES:
        ack, dec = pooled[mode]["ack"], pooled[mode]["decision_latency"]
        out.append((f"{LABELS[mode]}: ack p50 / p99 {head}",
                    f"{ack['p50_ms']:.2f} / {ack['p99_ms']:.2f} ms ({ack['errors']} errors, "
                    f"n={ack['requests']})", ""))
        out.append(("  ack p50 / p99 by answer", ", ".join(
            f"{status} {ack['p50_ms_by_status'][status]:.1f} / {p99:.1f} ms "
            f"(n={ack['statuses'][status]})"
            for status, p99 in sorted(ack["p99_ms_by_status"].items())), ""))
        for outcome in ("executed", "all"):
            d = dec[outcome]
            out.append((f"  decision p50 / p99 ({outcome})",
                        f"≤ {d['p50_ms_at_most']:.1f} / ≤ {d['p99_ms_at_most']:.1f} ms "
                        f"(n={d['executed']})", ""))
    for name, diff in result["differences"].items():
        out.append((f"{name.replace('_minus_', ' − ')}: ack p50 / p99",
                    f"{diff['ack_p50_ms']:+.2f} / {diff['ack_p99_ms']:+.2f} ms", ""))
        out.append(("  decision p50 / p99 (executed; all)",
                    f"{diff['decision_executed_p50_ms_at_most']:+.1f} / "
                    f"{diff['decision_executed_p99_ms_at_most']:+.1f} ms; "
                    f"{diff['decision_all_p50_ms_at_most']:+.1f} / "
                    f"{diff['decision_all_p99_ms_at_most']:+.1f} ms", ""))
    for item in result["per_round"]:
        ack = item["ack"]
        out.append((f"  round {item['round']} {item['mode']}",
                    f"ack {ack['p50_ms']:.2f} / {ack['p99_ms']:.2f} ms, decision (all) "
                    f"≤ {item['decision_latency']['all']['p50_ms_at_most']:.1f} / "
                    f"≤ {item['decision_latency']['all']['p99_ms_at_most']:.1f} ms; "
                    f"counted twice {item['counted']['counted_twice']}", ""))
    floor = result["commit_floor"]
    out.append(("commit floor p50 / p99 (same server)",
                f"{floor['p50_ms']:.3f} / {floor['p99_ms']:.3f} ms", ""))
    return out

