"""`make bench-ha`: failover time — the leader SIGKILLed → the standby's `/ready` answers 200.

A pair (two daemon processes, one embedded PostgreSQL, one real Redis server) with a small
book. Each trial: wait for one leader and a standby that has seen its lease, wait a random
fraction of a renewal interval (so the kill lands anywhere in the renewal cycle), SIGKILL the
leader, poll the standby's `/ready` every 10 ms until it is 200, then start the killed node
again as the new standby; the next trial kills the other node.

Each failover is cut into what it waited for, all on this machine's one clock:
- detection: kill → the PostgreSQL lease's `lease_until` (the killed leader's last renewal
  plus the TTL; a standby may not start a term before it) — Redis's key is reported too;
- election: lease expiry → the standby's `leadership_acquired` (its round after the expiry,
  the Redis term, the lease and fence taken);
- promotion: → the standby's `ready` log line (cache, broker, intents, reconciliation);
- and the last poll: → the first `/ready` 200 seen.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from redis import Redis

from bench.harness import STREAM_INSTRUMENTS, loadgen, machine, percentile
from bench.pair import Node, SharedServer, leader_and_standby, wait_until
from bench.stream import write_bench_config
from tests.support.redis_server import RedisServer

POLL_S = 0.010
READ_LEASE_AFTER_S = 0.05  # a renewal the leader had sent just before it died has landed
LEASE = """SELECT epoch, instance_id, extract(epoch FROM lease_until)::float8,
                  extract(epoch FROM now())::float8 FROM leader_lease"""
ACQUIRED = """SELECT extract(epoch FROM logged_at)::float8 FROM execution_log
               WHERE event = 'leadership_acquired' AND (details->>'epoch')::bigint = %s"""


def spread(values: list[float]) -> dict[str, Any]:
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
            "min": min(values), "max": max(values), "all": values}


def first_event(events: list[dict[str, Any]], name: str) -> float | None:
    """Wall-clock time (epoch s) of the first log line `name` among `events`."""
    for event in events:
        if event.get("event") == name and "ts" in event:
            return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()
    return None


def trial(number: int, leader: Node, standby: Node, redis: Redis, ttl_ms: int,
          rng: random.Random) -> dict[str, Any]:
    """Kill `leader`; time until `standby` is ready; bring `leader` back as the standby."""
    before = leader.status()["ha"]
    time.sleep(rng.uniform(0, ttl_ms / 5000))  # anywhere in the renewal cycle
    offset = standby.log_offset()
    with psycopg.connect(standby.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT 1")  # connected before the kill: nothing to open after it
        killed_wall, killed = time.time(), time.perf_counter()
        leader.kill()
        time.sleep(READ_LEASE_AFTER_S)
        row = conn.execute(LEASE).fetchone()
        assert row is not None
        epoch, holder, lease_until, db_now = row
        pttl_read = time.perf_counter()
        pttl = int(redis.pttl("pm:leader"))
        while not standby.ready():
            if time.perf_counter() - killed > 120 or not standby.alive():
                raise RuntimeError(f"trial {number}: the standby did not take over "
                                   f"(log: {standby.log_path})")
            time.sleep(POLL_S)
        ready_ms = (time.perf_counter() - killed) * 1000
        after = standby.status()["ha"]
        acquired = conn.execute(ACQUIRED, (after["epoch"],)).fetchone()
    if holder != before["instance"] or after["epoch"] <= epoch:
        raise RuntimeError(f"trial {number}: lease held by {holder} at epoch {epoch}, "
                           f"killed {before['instance']}, new epoch {after['epoch']}")
    events = standby.events_since(offset)
    logged = {name: first_event(events, name) for name in ("leadership_acquired",
                                                           "promoting", "ready")}

    def since_kill(wall: float | None) -> float | None:
        return None if wall is None else (wall - killed_wall) * 1000

    result: dict[str, Any] = {
        "trial": number, "killed": leader.name, "took_over": standby.name,
        "old_epoch": int(epoch), "new_epoch": int(after["epoch"]),
        "kill_to_ready_ms": ready_ms,
        "kill_to_pg_lease_expiry_ms": since_kill(lease_until),
        "pg_lease_left_at_read_ms": (lease_until - db_now) * 1000,
        "kill_to_redis_expiry_ms": (pttl_read - killed) * 1000 + pttl if pttl >= 0 else None,
        "kill_to_acquired_ms": since_kill(acquired[0]) if acquired else None,
        "kill_to_acquired_log_ms": since_kill(logged["leadership_acquired"]),
        "kill_to_promoting_log_ms": since_kill(logged["promoting"]),
        "kill_to_ready_log_ms": since_kill(logged["ready"]),
    }
    # The killed node comes back as the standby of the next trial.
    spawned = leader.spawn()
    wait_until(lambda: leader.role() == "standby", 120, f"{leader.name} back as standby",
               (leader, standby))
    result["restart_to_standby_s"] = time.perf_counter() - spawned
    return result


def phases(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """p50 / p99 / max of the failover and of each of its parts."""
    def values(key: str) -> list[float]:
        return [t[key] for t in trials if t.get(key) is not None]

    def parts(later: str, earlier: str) -> list[float]:
        return [t[later] - t[earlier] for t in trials
                if t.get(later) is not None and t.get(earlier) is not None]

    return {
        "kill_to_ready_ms": spread(values("kill_to_ready_ms")),
        "detection_kill_to_pg_lease_expiry_ms": spread(values("kill_to_pg_lease_expiry_ms")),
        "kill_to_redis_expiry_ms": spread(values("kill_to_redis_expiry_ms")),
        "election_expiry_to_acquired_ms": spread(parts("kill_to_acquired_ms",
                                                       "kill_to_pg_lease_expiry_ms")),
        "promotion_acquired_to_ready_log_ms": spread(parts("kill_to_ready_log_ms",
                                                           "kill_to_acquired_ms")),
        "ready_log_to_ready_200_ms": spread(parts("kill_to_ready_ms", "kill_to_ready_log_ms")),
        "promotion_expiry_to_ready_ms": spread(parts("kill_to_ready_ms",
                                                     "kill_to_pg_lease_expiry_ms")),
        "restart_to_standby_s": spread(values("restart_to_standby_s")),
    }


def series(work: Path, server: SharedServer, config_dir: Path, ttl_ms: int, trials: int,
           book_alerts: int, rng: random.Random) -> dict[str, Any]:
    """`trials` failovers of one pair at lease TTL `ttl_ms`."""
    name = f"failover_{ttl_ms}"
    db_config = server.database(name)
    redis_server = RedisServer(work / f"redis-{ttl_ms}").start()
    redis = Redis.from_url(redis_server.url)
    nodes = (Node(work, config_dir, f"{name}-a", server, name, db_config, redis_server.url,
                  ttl_ms),
             Node(work, config_dir, f"{name}-b", server, name, db_config, redis_server.url,
                  ttl_ms))
    try:
        nodes[0].spawn()
        wait_until(lambda: nodes[0].ready(), 120, "the first node leads", nodes[:1])
        nodes[1].spawn()
        leader, standby = leader_and_standby(nodes)
        book: dict[str, Any] = {}
        if book_alerts:  # a book to promote: open layers, decided signals, paper orders
            sent = loadgen(leader, "open", "--rate", "100", "--duration",
                           str(book_alerts / 100), "--start", "0")
            book = {"alerts": sent["requests"], "statuses": sent["statuses"],
                    "open_layers": len(leader.get("/positions")[1]["positions"])}
        done = []
        for number in range(1, trials + 1):
            done.append(trial(number, leader, standby, redis, ttl_ms, rng))
            leader, standby = leader_and_standby(nodes)
            print(f"  ttl {ttl_ms} ms, trial {number}/{trials}: "
                  f"{done[-1]['kill_to_ready_ms']:.0f} ms", flush=True)
        return {"lease_ttl_ms": ttl_ms, "machine": machine(nodes[0].conninfo()),
                "renew_interval_ms": ttl_ms / 5, "target_ms": ttl_ms + 1000,
                "poll_interval_ms": POLL_S * 1000,
                "book": book, "trials": len(done), **phases(done), "runs": done}
    finally:
        for node in nodes:
            node.stop()
        redis.close()
        redis_server.kill()


def measure_failover(work: Path, server: SharedServer, ttls: list[int], trials: int,
                     book_alerts: int = 200, seed: int = 1) -> dict[str, Any]:
    config_dir = work / "failover-config"
    write_bench_config(config_dir, STREAM_INSTRUMENTS + 1)
    rng = random.Random(seed)
    return {"seed": seed, "by_ttl": {str(ttl): series(work, server, config_dir, ttl, trials,
                                                       book_alerts, rng) for ttl in ttls}}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Summary-table rows: (metric, value, target)."""
    def fmt(part: dict[str, Any], unit: str = "ms") -> str:
        return f"{part['p50']:.0f} / {part['p99']:.0f} / {part['max']:.0f} {unit}"

    out = []
    for ttl, item in result["by_ttl"].items():
        head = f"failover ttl {ttl} ms ({item['trials']} kills)"
        out += [
            (f"{head}: kill → /ready 200 p50/p99/max", fmt(item["kill_to_ready_ms"]),
             f"≤ TTL + 1 s = {item['target_ms']} ms"),
            ("  detection: kill → PG lease expiry", fmt(
                item["detection_kill_to_pg_lease_expiry_ms"]), ""),
            ("  (kill → Redis key expiry)", fmt(item["kill_to_redis_expiry_ms"]), ""),
            ("  election: expiry → leadership_acquired", fmt(
                item["election_expiry_to_acquired_ms"]), ""),
            ("  promotion: acquired → 'ready' logged", fmt(
                item["promotion_acquired_to_ready_log_ms"]), ""),
            ("  'ready' logged → /ready 200 seen", fmt(item["ready_log_to_ready_200_ms"]), ""),
            ("  all after expiry: expiry → /ready 200", fmt(
                item["promotion_expiry_to_ready_ms"]), ""),
        ]
    return out

