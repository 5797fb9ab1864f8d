"""`make bench-ha`: a pair's failover time and the fence's cost, in one run, on this machine.

One embedded PostgreSQL server (durable defaults, as `make bench`) holds a database per
measured setup; each pair gets its own real Redis server. Runs `bench.failover` (leader
SIGKILL → standby `/ready` 200, at lease TTL 5000 ms and 2000 ms) and `bench.fence_cost`
(the same alert load on a single daemon and on a pair's leader). Prints one table and writes
a JSON file to bench/results/ (`bench-ha-<time>.json`), with the git revision and the
machine, as `make bench` does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import failover, fence_cost
from bench.harness import REPO, RESULTS, git_revision
from bench.pair import SharedServer


def write_report(parts: dict[str, Any], kind: str, quick: bool = False) -> Path:
    timestamp = datetime.now(UTC).isoformat()
    report = {"timestamp": timestamp, "git_revision": git_revision(), "quick": quick, **parts}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{kind}-{timestamp[:19].replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path.relative_to(REPO)


def print_table(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'metric'.ljust(width)}  value  [target]")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value}" + (f"  [{target}]" if target else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="5 failovers at TTL 2000 ms only; one round of 5 s loads")
    parser.add_argument("--trials", type=int, default=None, help="failovers per TTL (20)")
    parser.add_argument("--ttl", type=int, action="append", help="lease TTL ms (repeatable)")
    parser.add_argument("--rounds", type=int, default=None, help="fence-cost rounds (2)")
    parser.add_argument("--duration", type=float, default=None,
                        help="fence-cost measured phase, s (20)")
    parser.add_argument("--rate", type=int, default=200, help="fence-cost alerts/s (200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip", choices=["failover", "fence"], action="append", default=[])
    args = parser.parse_args()
    ttls = args.ttl or ([2000] if args.quick else [5000, 2000])
    trials = args.trials or (5 if args.quick else 20)
    rounds = args.rounds or (1 if args.quick else 2)
    duration = args.duration or (5.0 if args.quick else 20.0)
    work = Path(tempfile.mkdtemp(prefix="pm-bench-ha-"))
    server = SharedServer(work).start()
    parts: dict[str, Any] = {}
    try:
        if "fence" not in args.skip:
            print("fence cost:", flush=True)
            parts["fence_cost"] = fence_cost.measure_fence_cost(work, server, rounds,
                                                                duration, args.rate)
        if "failover" not in args.skip:
            print("failover:", flush=True)
            parts["failover"] = failover.measure_failover(work, server, ttls, trials,
                                                          seed=args.seed)
    finally:
        server.stop()
    path = write_report(parts, "ha", args.quick)
    rows = []
    if "fence_cost" in parts:
        rows += fence_cost.rows(parts["fence_cost"])
    if "failover" in parts:
        rows += failover.rows(parts["failover"])
    print()
    print_table(rows)
    shutil.rmtree(work / "pg", ignore_errors=True)
    print(f"\nresults: {path}\ndaemon logs: {work}")


if __name__ == "__main__":
    main()
