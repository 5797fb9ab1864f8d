"""`make chaos-ha`: a pair trading a seeded stream while its nodes and Redis fail at random.

Two daemon nodes (own state dirs) share one PostgreSQL server and one Redis server, and trade
at the fake Kite (or on paper). The driver sends a few alerts of the seeded stream to either
live node (a standby answers `202 accepted`: the alert is durable, the leader decides it; an
alert that got no answer is sent again later, to either node: the dedup makes that safe),
and meanwhile one random event strikes: SIGKILL of the leader or the standby, SIGSTOP of the
leader for longer than a term or for less, SIGSTOP of the standby, Redis killed (restarted
empty on its port a moment later) or frozen, or a leader frozen at a fail point in the money
path while it had an order in flight. Killed nodes are started again on their state dirs.

After each event, once exactly one node is ready and every acknowledged alert is decided:
the crash campaign's invariants (the book agrees with the venue, nothing decided twice,
nothing left dangling, every open layer protected) and the pair's own:

- every order at the broker carries, in its tag `PM<id>E<epoch>`, the epoch of the intent
  that tag names, and no two orders share a tag (unless they are slices of one order);
- the epochs of committed intents never decrease in id order;
- the fence is at the ready leader's epoch, and exactly one node leads and is ready;
- the epochs of `leadership_acquired` rows strictly increase.

    python -m tests.chaos.ha_campaign --events 100 [--seed N] [--broker zerodha|paper]

A violation prints the seed and the event, so the event sequence can be replayed (timings,
and so the instants the signals land at, differ between runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal as signals
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from random import Random
from typing import Any

import psycopg

from live.embedded_db import EmbeddedPostgres
from live.schema_migrations import apply_migrations
from tests.chaos.campaign import move_market
from tests.chaos.roll_phase import SCHEDULES
from tests.chaos.stream import alerts, chaos_config
from tests.fakes.kite_server import FakeKiteProcess
from tests.support.daemon import TradingDaemon
from tests.support.invariants import book_violations, kite_broker, paper_broker
from tests.support.pair_invariants import pair_violations, protection_problems
from tests.support.redis_server import RedisServer

SECRET = "chaos-ha-secret"
ADMIN = "chaos-ha-admin-token-0123456789"
KITE_ENV = {"PM_KITE_API_KEY": "fake_api_key", "PM_KITE_API_SECRET": "fake_api_secret",
            "PM_KITE_ACCESS_TOKEN": "fake_access_token"}
TTL_MS = 2000
DATABASE = "portfolio_manager"
SETTLE_TIMEOUT_S = 90  # one leader ready and every acknowledged alert decided, within this
START_TIMEOUT_S = 90
FREEZE_POINTS = ("after_intent_commit", "after_broker_accept", "after_fill_recorded")
FREEZE_WITHIN = 60  # alerts: about one in ten sends an order, so most freezes are reached
# Each event kind and its weight in the draw.
KINDS = {"kill leader": 3, "kill standby": 2, "stop leader > ttl": 3, "stop leader < ttl": 2,
         "stop standby": 1, "kill redis": 2, "stop redis": 1, "leader frozen at fail point": 2}
TEST_SERVER_SETTINGS = {"fsync": "off", "full_page_writes": "off"}


@dataclass
class Report:
    broker: str
    seed: int
    events: Counter[str] = field(default_factory=Counter)
    signals: int = 0  # alerts acknowledged (200 or 202)
    accepted: int = 0  # of which a standby took (202)
    resends: int = 0
    orders: int = 0
    failovers: int = 0
    frozen_at_point: int = 0  # fail-point events where the leader did freeze
    violations: list[str] = field(default_factory=list)


class Node:
    """One node of the pair: its state dir, and the process now running on it."""

    def __init__(self, name: str, state_dir: Path, build: Callable[[Path, str | None],
                                                                   TradingDaemon]):
        self.name, self.state_dir, self._build = name, state_dir, build
        self.daemon: TradingDaemon | None = None
        self.up = False  # running and not frozen: the driver may send to it

    def start(self, failpoint: str | None = None) -> Node:
        self.daemon = self._build(self.state_dir, failpoint)
        self.daemon.spawn()
        self.up = True
        return self

    def kill(self) -> None:
        self.up = False
        if self.daemon is not None:
            self.daemon.ensure_stopped()

    def pause(self) -> None:
        self.up = False
        assert self.daemon is not None and self.daemon.process is not None
        self.daemon.process.send_signal(signals.SIGSTOP)

    def resume(self) -> None:
        assert self.daemon is not None and self.daemon.process is not None
        self.daemon.process.send_signal(signals.SIGCONT)
        self.up = True

    def alive(self) -> bool:
        return (self.daemon is not None and self.daemon.process is not None
                and self.daemon.process.poll() is None)

    def frozen(self) -> bool:
        """Whether the process is stopped (state T in /proc): a pause fail point fired."""
        if not self.alive():
            return False
        assert self.daemon is not None and self.daemon.process is not None
        try:
            with open(f"/proc/{self.daemon.process.pid}/stat") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] == "T"
        except OSError:
            return False

    def status(self) -> dict[str, Any] | None:
        if self.daemon is None or not self.alive():
            return None
        try:
            code, body = self.daemon.get("/status")
        except (OSError, ValueError):
            return None
        return body if code == 200 and isinstance(body, dict) else None

    def ready(self) -> bool:
        """/ready 200, or not ready only because a layer's broker stop is missing."""
        if self.daemon is None or not self.alive():
            return False
        try:
            code, body = self.daemon.get("/ready")
        except (OSError, ValueError):
            return False
        return code == 200 or bool(isinstance(body, dict) and body.get("reasons") and all(
            str(r).startswith("unprotected:") for r in body["reasons"]))


class NotSettled(AssertionError):
    pass


class HaCampaign:
    def __init__(self, broker: str, seed: int, events: int, workdir: Path,
                 log: Callable[[str], None] = print):
        self.broker, self.seed, self.events = broker, seed, events
        self.workdir, self.log = workdir, log
        self.rng = Random(seed)
        self.report = Report(broker, seed)
        self.schedule = SCHEDULES["zerodha" if broker == "zerodha" else "paper"]
        self.began = time.monotonic()
        self.config_dir = chaos_config(workdir / "config")
        self.stream = alerts(seed, events * 8 + 200, SECRET, self.schedule.before)
        self.next_alert = 0
        self.unanswered: list[int] = []  # stream indices sent without an answer: resend
        self.acked: dict[int, str] = {}  # signal id → the answer's status
        self.priced: dict[str, str] = {}
        self.lock = threading.Lock()
        self.seen: set[str] = set()  # problems reported already
        self.pg: EmbeddedPostgres | None = None
        self.conninfo = ""
        self.db_config = workdir / "database_config.json"
        self.redis = RedisServer(workdir / "redis")
        self.fake: FakeKiteProcess | None = None
        self.nodes = [Node(name, workdir / name / "state", self._daemon) for name in "ab"]

    # -- the pair and its surroundings ------------------------------------------------------
    def _setup(self) -> None:
        self.pg = EmbeddedPostgres(self.workdir / "pg", settings=TEST_SERVER_SETTINGS)
        address = self.pg.start()
        with psycopg.connect(address.conninfo(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        self.conninfo = address.conninfo(DATABASE)
        apply_migrations(self.conninfo)
        self.db_config.write_text(json.dumps({"local": {
            "host": str(address.socket_dir), "port": address.port, "user": "postgres",
            "database": DATABASE, "sslmode": "disable"}}))
        self.redis.start()
        if self.broker == "zerodha":
            self.fake = FakeKiteProcess(today=self.schedule.kite_today,
                                        log_path=self.workdir / "fake-kite.log").start()
            self.fake.control("cash", segment="equity", cash="1000000000")
        self.nodes[0].start()
        self._wait(lambda: self.nodes[0].ready(), START_TIMEOUT_S, "the first node leads")
        self.nodes[1].start()
        self._wait(lambda: self._role(self.nodes[1]) == "standby", START_TIMEOUT_S,
                   "the second node stands by")

    def _teardown(self) -> None:
        for node in self.nodes:
            if node.alive():
                node.resume()  # a stopped process does not die of SIGKILL until resumed
            node.kill()
        self.redis.kill()
        if self.fake is not None:
            self.fake.stop()
        if self.pg is not None:
            self.pg.stop()

    def _daemon(self, state_dir: Path, failpoint: str | None) -> TradingDaemon:
        elapsed = timedelta(seconds=time.monotonic() - self.began)
        env = {"PM_CONFIG_DIR": str(self.config_dir), "PM_WEBHOOK_SECRET": SECRET,
               "PM_ADMIN_TOKEN": ADMIN, "PM_LEASE_TTL_MS": str(TTL_MS),
               "PM_DECISION_WAIT_MS": "5000", "PM_RATE_LIMIT_PER_MIN": "1000000",
               "PM_CLOCK_START": (self.schedule.before + elapsed).isoformat(),
               "PM_ROLL_CHECK_INTERVAL_S": "1"}
        args = ["--db-config", str(self.db_config), "--db-env", "local",
                "--redis-url", self.redis.url]
        if self.fake is not None:
            env.update(KITE_ENV)
            args += ["--broker", "zerodha", "--kite-root", self.fake.url]
        if failpoint:
            env["PM_FAILPOINT"] = failpoint
        return TradingDaemon(state_dir, *args, env=env)

    def _role(self, node: Node) -> str | None:
        status = node.status()
        return status.get("role") if status else None

    def _leaders(self) -> list[Node]:
        return [n for n in self.nodes if n.up and self._role(n) == "leader" and n.ready()]

    def _wait(self, check: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.1)
        raise NotSettled(f"not within {timeout_s} s: {what}")

    # -- the venue and the stream -----------------------------------------------------------
    def _venue(self) -> tuple[dict[str, int], list[tuple[str, int]], list[dict[str, Any]]]:
        if self.fake is None:
            positions, orders = paper_broker(self.conninfo)
            with psycopg.connect(self.conninfo) as conn:
                raw = [{"tag": t, "quantity": q} for t, q in conn.execute(
                    "SELECT tag, quantity FROM paper_orders").fetchall()]
            return positions, orders, raw
        state = self.fake.state()
        positions, orders = kite_broker(state)
        return positions, orders, list(state["orders"])

    def _price(self, alert: dict[str, Any]) -> None:
        with self.lock:  # the strike's thread and the sender's
            if self.fake is not None:
                move_market(self.fake, self.priced, alert)

    def _send(self, index: int, nodes: list[Node] | None = None) -> bool:
        """Send one alert to a random live node; True if it was acknowledged (or is a
        duplicate of one stored), else it is kept to send again."""
        candidates = [n for n in (nodes or self.nodes) if n.up and n.alive()]
        if not candidates:
            self.unanswered.append(index)
            return False
        node = self.rng.choice(candidates)
        alert = self.stream[index]
        self._price(alert)
        assert node.daemon is not None
        try:
            code, body = node.daemon.send(**alert)
        except (OSError, ValueError):
            code, body = 0, None
        if code >= 500 or code == 0 or not isinstance(body, dict):
            self.unanswered.append(index)
            return False
        if code in (200, 202) and body.get("status") not in (None, "duplicate"):
            self.acked[int(body["signal_id"])] = body["status"]
            self.report.signals += 1
            self.report.accepted += code == 202
        return True

    def _send_batch(self, count: int, nodes: list[Node] | None = None) -> None:
        resend, self.unanswered = self.unanswered, []
        for index in resend:
            self.report.resends += 1
            self._send(index, nodes)
        for _ in range(count):
            if self.next_alert >= len(self.stream):
                raise AssertionError(f"the stream ran out after {self.next_alert} alerts")
            self.next_alert += 1
            self._send(self.next_alert - 1, nodes)

    # -- the events -------------------------------------------------------------------------
    def _node_of_role(self, role: str) -> Node:
        found = [n for n in self.nodes if self._role(n) == role]
        assert len(found) == 1, f"{len(found)} nodes are {role}"
        return found[0]

    def _restart(self, node: Node) -> None:
        node.kill()
        node.start()

    def _event(self, kind: str, leader: Node, standby: Node) -> Callable[[], None]:
        """What strikes while a batch is sent: a function run on its own thread."""
        ttl_s = TTL_MS / 1000
        delay = round(self.rng.uniform(0.0, 0.6), 3)
        hold = round(self.rng.uniform(1.5 * ttl_s, 3 * ttl_s), 3)
        short = round(self.rng.uniform(0.1 * ttl_s, 0.4 * ttl_s), 3)
        back_after = round(self.rng.uniform(0.0, 2.0), 3)

        def run() -> None:
            time.sleep(delay)
            if kind == "kill leader":
                leader.kill()
                time.sleep(back_after)
                leader.start()
            elif kind == "kill standby":
                standby.kill()
                time.sleep(back_after)
                standby.start()
            elif kind in ("stop leader > ttl", "stop leader < ttl"):
                leader.pause()
                time.sleep(hold if kind == "stop leader > ttl" else short)
                leader.resume()
            elif kind == "stop standby":
                standby.pause()
                time.sleep(hold)
                standby.resume()
            elif kind == "kill redis":
                self.redis.kill()
                time.sleep(hold)
                self.redis.start()
            elif kind == "stop redis":
                self.redis.pause()
                time.sleep(hold)
                self.redis.resume()
            else:
                raise AssertionError(kind)
        return run

    def _frozen_at_point(self, leader: Node, standby: Node) -> str:
        """The standby is started again with a pause fail point armed and made leader (the
        leader killed); alerts go to it until it freezes at the point, with an order in
        flight; the other node takes over; then the frozen one is thawed: it must find its
        term gone and come back as a standby, having sent nothing more."""
        point = f"{self.rng.choice(FREEZE_POINTS)}:{self.rng.randint(1, 2)}:pause"
        self._restart_standby_armed(standby, point)
        leader.kill()
        self._wait(lambda: standby.ready() and self._role(standby) == "leader",
                   SETTLE_TIMEOUT_S, "the armed standby takes over")
        leader.start()
        self._wait(lambda: self._role(leader) == "standby", START_TIMEOUT_S,
                   "the killed leader comes back as standby")
        sent = 0
        while sent < FREEZE_WITHIN and not standby.frozen():
            sender = threading.Thread(target=self._send_batch, args=(1, [standby]), daemon=True)
            sender.start()
            sender.join(timeout=12)
            sent += 1
        if not standby.frozen():
            self._restart(standby)  # not reached: no armed point may fire later unseen
            return f"{point} not reached"
        standby.up = False
        self.report.frozen_at_point += 1
        self._wait(lambda: leader.ready() and self._role(leader) == "leader",
                   SETTLE_TIMEOUT_S, "the other node takes over from the frozen leader")
        standby.resume()
        return f"{point} reached"

    def _restart_standby_armed(self, standby: Node, point: str) -> None:
        standby.kill()
        standby.start(point)
        self._wait(lambda: self._role(standby) == "standby", START_TIMEOUT_S,
                   "the armed standby stands by")

    # -- settling and checking --------------------------------------------------------------
    def _settle(self) -> Node:
        """Wait until both nodes run, exactly one leads and is ready, the other stands by
        and could take over, every acknowledged alert is decided and the leader's broker
        stops are in step; return the leader."""
        for node in self.nodes:
            if not node.alive():
                process = node.daemon.process if node.daemon else None
                code = process.returncode if process else "?"
                self._record(None, f"node {node.name} exited {code} on its own; started again")
                node.start()
            elif node.frozen():
                self._record(None, f"node {node.name} is frozen (SIGSTOP) unexpectedly")
                node.resume()
            node.up = True

        def one_leader() -> Node | None:
            leaders = self._leaders()
            if len(leaders) != 1:
                return None
            others = [n for n in self.nodes if n is not leaders[0]]
            if not all((s := n.status()) and s.get("role") == "standby"
                       and s["ha"]["failover_possible"] for n in others):
                return None
            return leaders[0]

        leader = self._wait(one_leader, SETTLE_TIMEOUT_S,
                            "one leader ready, one standby that could take over")
        self._wait(self._all_decided, SETTLE_TIMEOUT_S, "every acknowledged alert decided")

        def in_step() -> bool:
            status = leader.status() or {}
            stops = status.get("broker_stops") or {}
            return bool(status) and stops.get("in_step", True) and not status.get(
                "exits_pending")
        try:
            self._wait(in_step, 10, "")
        except NotSettled:
            pass  # the protection check below says what is missing
        return leader

    def _all_decided(self) -> bool:
        with psycopg.connect(self.conninfo) as conn:
            (left,) = conn.execute(
                "SELECT count(*) FROM signal_log WHERE id = ANY(%s) AND status <> 'processed'",
                (list(self.acked),)).fetchone() or (0,)
        return left == 0

    def _check(self, leader: Node) -> list[str]:
        positions, orders, raw = self._venue()
        problems = book_violations(self.conninfo, positions, orders)
        with psycopg.connect(self.conninfo) as conn:
            for signal_id, status in conn.execute(
                    "SELECT id, status FROM signal_log WHERE id = ANY(%s) "
                    "AND status <> 'processed'", (list(self.acked),)).fetchall():
                problems.append(f"signal {signal_id} answered {self.acked[signal_id]} "
                                f"is still {status}")
        assert leader.daemon is not None
        problems += protection_problems(self.conninfo, leader.status)
        statuses = {n.name: (n.status() or {}, n.ready()) for n in self.nodes}
        problems += pair_violations(self.conninfo, raw, statuses)
        return problems

    def _record(self, event: str | None, problem: str) -> None:
        line = (f"VIOLATION broker={self.broker} seed={self.seed} event={event or '-'}: "
                f"{problem}")
        self.report.violations.append(line)
        self.log(line)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> Report:
        self._setup()
        try:
            leader = self._settle()
            kinds, weights = zip(*KINDS.items(), strict=True)
            for n in range(self.events):
                kind = self.rng.choices(kinds, weights)[0]
                batch = self.rng.randint(2, 5)
                name = f"#{n + 1} {kind}"
                leader_before = leader
                standby = next(x for x in self.nodes if x is not leader)
                started = time.monotonic()
                outcome = ""
                try:
                    if kind == "leader frozen at fail point":
                        outcome = self._frozen_at_point(leader, standby)
                        self._send_batch(batch)
                    else:
                        strike = threading.Thread(target=self._event(kind, leader, standby),
                                                  daemon=True)
                        strike.start()
                        self._send_batch(batch)
                        strike.join()
                    self.report.events[kind] += 1
                    leader = self._settle()
                except NotSettled as exc:
                    self._record(name, f"{exc}; {self._describe()}")
                    raise
                for problem in self._check(leader):
                    if problem not in self.seen:  # a broken promise stays broken: once
                        self.seen.add(problem)
                        self._record(name, problem)
                self.log(f"{name}{' (' + outcome + ')' if outcome else ''}: "
                         f"{'failover' if leader is not leader_before else 'same leader'} "
                         f"{leader.name}, {len(self.acked)} acked, "
                         f"{time.monotonic() - started:.1f} s")
            _, orders, _ = self._venue()
            self.report.orders = len(orders)
            with psycopg.connect(self.conninfo) as conn:
                (self.report.failovers,) = conn.execute(
                    """SELECT count(*) FROM execution_log WHERE event = 'leadership_acquired'
                       AND details->>'previous' IS NOT NULL
                       AND details->>'previous' <> details->>'instance'""").fetchone() or (0,)
            return self.report
        finally:
            self._teardown()

    def _describe(self) -> str:
        parts = []
        for node in self.nodes:
            status = node.status() or {}
            parts.append(f"{node.name}: alive={node.alive()} up={node.up} "
                         f"role={status.get('role')} ha={status.get('ha')} "
                         f"ready={node.ready()}")
        return "; ".join(parts)


def ha_campaign(broker: str, seed: int, events: int,
                log: Callable[[str], None] = print) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix=f"pm-chaos-ha-{broker}-"))
    campaign = HaCampaign(broker, seed, events, workdir, log)
    report = campaign.report
    try:
        campaign.run()
    except NotSettled:
        pass  # recorded as a violation
    finally:
        if report.violations:
            log(f"kept {workdir} (pg, a/, b/, daemon logs) for inspection")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def table(report: Report) -> str:
    lines = [f"{'events':<30}{report.broker:>12}"]
    lines += [f"  {kind:<28}{report.events[kind]:>12}" for kind in KINDS]
    for label, value in (("total events", sum(report.events.values())),
                         ("leader froze at a point", report.frozen_at_point),
                         ("signals acknowledged", report.signals),
                         ("  of which by a standby", report.accepted),
                         ("resends", report.resends),
                         ("broker orders", report.orders),
                         ("failovers", report.failovers),
                         ("violations", len(report.violations)),
                         ("seed", report.seed)):
        lines.append(f"{label:<30}{value:>12}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", choices=["paper", "zerodha"], default="zerodha")
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else Random().randrange(1_000_000)
    print(f"HA chaos campaign: seed {seed}, {args.events} events, {args.broker}", flush=True)
    report = ha_campaign(args.broker, seed, args.events,
                         log=lambda line: print(line, flush=True))
    print(table(report))
    return 1 if report.violations else 0


if __name__ == "__main__":
    signals.signal(signals.SIGINT, signals.default_int_handler)
    sys.exit(main())
