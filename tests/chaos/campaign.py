"""`make chaos`: crash the daemon at every fail point and at random instants while it trades,
restart it, and check after every restart that nothing was lost, doubled or left dangling.

The daemons run on a drill clock (`PM_CLOCK_START`) set a few days before GOLD_MINI's
December 2026 roll day. Once a third of the crashes are done and GOLD_MINI is held, the clock
jumps to the roll day's 10:00 IST: the roll runs (crashing at one of the roll's fail points),
and trading goes on in the next month, alerts converted by the roll's spread.

    python -m tests.chaos.campaign --broker both --crashes 200 [--seed N]

Alerts are sent one at a time (as TradingView does); one that got no answer is sent again
after the restart. At the end the book must equal a run of the same stream without crashes.
A violation prints the seed, the fail point and the differences, so it can be replayed.
"""

from __future__ import annotations

import argparse
import shutil
import signal as signals
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import Any

import psycopg

from live.embedded_db import EmbeddedPostgres
from live.failpoints import ROLL_POINTS, SIGNAL_POINTS, STOP_POINTS
from tests.chaos import flatten_phase
from tests.chaos.flatten_phase import flatten_point
from tests.chaos.roll_phase import (
    SCHEDULES,
    Diverged,
    decisions,
    first_difference,
    holds,
    month_order,
    rolled,
)
from tests.chaos.stream import alerts, chaos_config
from tests.fakes.kite_server import FakeKiteProcess
from tests.support.daemon import TradingDaemon
from tests.support.invariants import (
    book_violations,
    kite_broker,
    paper_broker,
    protection_violations,
)

SECRET = "chaos-secret"
KITE_ENV = {"PM_KITE_API_KEY": "fake_api_key", "PM_KITE_API_SECRET": "fake_api_secret",
            "PM_KITE_ACCESS_TOKEN": "fake_access_token",
            "PM_ADMIN_TOKEN": "chaos-admin-token"}  # required with a live broker
RANDOM = "random instant"
READY_TIMEOUT_S = 90
TAIL = 30  # alerts traded after the last crash: the daemon keeps trading correctly
PROTECT_WITHIN_S = 10  # a new layer's broker stop is placed within this
SETTLE_WITHIN_S = 10  # the broker stops and pending exits catch up with an answer within this


@dataclass(frozen=True)
class Crash:
    point: str | None  # a fail point, or None: SIGKILL at a random instant
    nth: int = 1
    delay_s: float = 0.0

    @property
    def name(self) -> str:
        return self.point or RANDOM


@dataclass
class Report:
    broker: str
    seed: int
    crashes: Counter[str] = field(default_factory=Counter)
    signals: int = 0
    orders: int = 0
    violations: list[str] = field(default_factory=list)
    rolled: bool = False
    flattened: bool = False
    broker_stop_exits: int = 0  # layers the broker's resting stop sold (booked BROKER_STOP)


# `during_recovery` follows `after_intent_commit`: that crash leaves an intent to resolve.
ROTATION = ("after_signal_durable", "after_intent_commit", "during_recovery",
            "after_broker_accept", "after_fill_recorded", "during_exit_allocation", None, None)
# A multi-layer exit needs a pyramid on the book first: give that point a longer stretch.
STRETCH = {"during_exit_allocation": 150}


def plan(rng: Random, crashes: int) -> list[Crash]:
    """Every fail point in turn, and crashes at random instants; every tenth crash is at one
    of the broker stops' points (placed, moved, cancelled before a sale, fired)."""
    assert set(ROTATION) - {None} == SIGNAL_POINTS
    out = []
    for n in range(crashes):
        point = ROTATION[n % len(ROTATION)]
        if n % 10 == 9:
            point = STOP_POINTS[(n // 10) % len(STOP_POINTS)]
        out.append(Crash(point, nth=rng.randint(1, 2)) if point else
                   Crash(None, delay_s=round(rng.uniform(0.0, 0.25), 3)))
    return out


def move_market(fake: FakeKiteProcess, priced: dict[str, str], alert: dict[str, Any]) -> None:
    """At Kite the front month trades at the alert's price when it arrives, each later
    month 0.5 % higher (a contango, so that a roll has a spread). A resend is a copy of an
    old alert: the market does not go back to its price (`priced`: each instrument's
    newest alert so far)."""
    if alert["timestamp"] < priced.get(alert["instrument"], ""):
        return
    priced[alert["instrument"]] = alert["timestamp"]
    series = {"GOLD_MINI": "MCX:GOLDM", "SILVER_MINI": "MCX:SILVERM",
              "COPPER": "MCX:COPPER", "BANK_NIFTY": "NFO:BANKNIFTY"}[alert["instrument"]]
    tick = Decimal("0.05") if "." in alert["price"] else Decimal(1)
    listed = sorted((key for key in fake.state()["prices"] if key.startswith(series)),
                    key=month_order)
    for months, key in enumerate(listed):
        price = Decimal(alert["price"]) * (1 + Decimal("0.005") * months)
        fake.control("price", tradingsymbol=key.split(":")[1],
                     price=str((price / tick).to_integral_value() * tick))


class Campaign:
    def __init__(self, broker: str, seed: int, crashes: int, workdir: Path,
                 log: Any = print, roll_index: int | None = None):
        self.broker, self.seed, self.crashes = broker, seed, crashes
        self.workdir, self.log = workdir, log
        self.config_dir = chaos_config(workdir / "config")
        self.report = Report(broker, seed)
        self.answered: dict[int, dict[str, Any]] = {}
        self.fake: FakeKiteProcess | None = None
        self.schedule = SCHEDULES[broker]
        # The drill clock: a phase's start plus the real time spent in it (restarts included).
        self.phase_start, self.phase_began = self.schedule.before, time.monotonic()
        # Where in the stream the clock jumped to the roll day (the calm run jumps there too).
        self.roll_index = roll_index
        self.decisions: list[tuple] = []
        self.priced: dict[str, str] = {}  # instrument → timestamp of the alert it trades at
        self.unsettled = 0  # answers after which the daemon had not settled in time

    def _clock_start(self) -> str:
        elapsed = timedelta(seconds=time.monotonic() - self.phase_began)
        return (self.phase_start + elapsed).isoformat()

    # -- the venue --------------------------------------------------------------------------
    def _env(self, failpoint: str | None) -> dict[str, str]:
        env = {"PM_CONFIG_DIR": str(self.config_dir), "PM_WEBHOOK_SECRET": SECRET,
               "PM_DECISION_WAIT_MS": "10000", "PM_RATE_LIMIT_PER_MIN": "1000000",
               "PM_CLOCK_START": self._clock_start(), "PM_ROLL_CHECK_INTERVAL_S": "1"}
        if self.broker == "zerodha":
            env.update(KITE_ENV)
        if failpoint:
            env["PM_FAILPOINT"] = failpoint
        return env

    def _daemon(self, state_dir: Path, failpoint: str | None) -> TradingDaemon:
        args = ("--broker", "zerodha", "--kite-root", self.fake.url) if self.fake else ()
        return TradingDaemon(state_dir, *args, env=self._env(failpoint))

    def _start_fake(self) -> FakeKiteProcess:
        fake = FakeKiteProcess(today=self.schedule.kite_today,
                               log_path=self.workdir / f"fake-{time.monotonic_ns()}.log")
        fake.start()
        fake.control("cash", segment="equity", cash="1000000000")
        return fake

    def _venue(self, daemon: TradingDaemon) -> tuple[dict[str, int], list[tuple[str, int]]]:
        if self.fake is None:
            return paper_broker(daemon.book_conninfo())
        return kite_broker(self.fake.state())

    def _price(self, alert: dict[str, Any]) -> None:
        if self.fake is not None:
            move_market(self.fake, self.priced, alert)

    # -- one run ----------------------------------------------------------------------------
    def run(self, stream: list[dict[str, Any]]) -> tuple[tuple, int]:
        """Trade the stream through crashes, then a calm tail; return the book and how many
        alerts of the stream were used."""
        state_dir = self.workdir / "state"
        if self.broker == "zerodha":
            self.fake = self._start_fake()
        try:
            index = 0
            for n, crash in enumerate(plan(Random(self.seed), self.crashes)):
                if index >= len(stream):
                    raise AssertionError(f"the stream ran out after {index} alerts")
                daemon = self._daemon(state_dir, crash.point and f"{crash.point}:{crash.nth}")
                if not self._ready(daemon):
                    self._crashed(crash)  # died during recovery: checked at the next start
                    continue
                self._check(daemon, crash)
                # The roll: only where no fail point is armed, after one more alert — the
                # one the last crash left unanswered may already be in the book, and the
                # calm run must roll with exactly the alerts before `roll_index` traded.
                if self.roll_index is None and n >= self.crashes // 3:
                    armed = crash.point and f"{crash.point}:{crash.nth}"
                    if armed:
                        daemon.stop()
                        daemon = self._unarmed(state_dir)
                    index = self._send_one(daemon, stream, index)
                    if holds(daemon, "GOLD_MINI"):
                        daemon.stop()
                        self.roll_index = index
                        self._roll(state_dir, ROLL_POINTS[self.seed % len(ROLL_POINTS)])
                        daemon = self._unarmed(state_dir)
                    if armed:  # back to this round's fail point
                        daemon.stop()
                        daemon = self._daemon(state_dir, armed)
                        if not self._ready(daemon):
                            self._crashed(crash)
                            continue
                    self._check(daemon, crash)
                start = index
                index, reached = self._send_until_crash(daemon, crash, stream, index)
                self._crashed(crash if reached else Crash(None))
                self.log(f"{self.broker}: {crash.name} (hit {crash.nth}) "
                         f"{'reached' if reached else 'not reached: killed'} after alerts "
                         f"{start}..{index}")
            final = self._daemon(state_dir, None)
            assert self._ready(final), f"daemon did not come back:\n{final.output()}"
            self._check(final, None)
            end = min(len(stream), index + TAIL) if self.crashes else len(stream)
            if not self.crashes and self.roll_index is not None:  # the calm run's roll
                index, _ = self._send_until_crash(final, None, stream[:self.roll_index], index)
                if not holds(final, "GOLD_MINI"):  # the crashed run held it here
                    self.decisions = decisions(final)
                    final.stop()
                    raise Diverged(f"no GOLD_MINI held at alert {index}, where the crashed "
                                   "run rolled it")
                final.stop()
                self._roll(state_dir, None)
                final = self._daemon(state_dir, None)
                assert self._ready(final), f"daemon did not come back:\n{final.output()}"
            self._send_until_crash(final, None, stream[:end], index)
            self._check(final, None)
            book = final_book(final)
            self.decisions = decisions(final)
            self.report.orders = len(self._venue(final)[1])
            with psycopg.connect(final.book_conninfo()) as conn:
                self.report.broker_stop_exits = conn.execute(
                    "SELECT count(*) FROM portfolio_positions "
                    "WHERE exit_reason = 'BROKER_STOP'").fetchone()[0]
            final.stop()
            if self.crashes:  # the kill switch, on what the crashes left
                self._flatten(state_dir)
            return book, end
        finally:
            self._stop_all(state_dir)

    def _flatten(self, state_dir: Path) -> None:
        def start(point: str | None) -> TradingDaemon:
            daemon = self._daemon(state_dir, point)
            assert self._ready(daemon), f"daemon did not come back:\n{daemon.output()}"
            return daemon

        point = flatten_point(self.seed)
        crashed, problems = flatten_phase.drill(start, lambda d: self._venue(d)[0], point)
        if crashed:
            self._crashed(Crash(point))
        self.report.violations += [f"VIOLATION broker={self.broker} seed={self.seed} "
                                   f"after={point}: {problem}" for problem in problems]
        self.report.flattened = not problems
        self.log(f"{self.broker}: flatten with {point} "
                 f"{'crashed' if crashed else 'not reached'}; {len(problems)} problems")

    def _unarmed(self, state_dir: Path) -> TradingDaemon:
        daemon = self._daemon(state_dir, None)
        assert self._ready(daemon), f"daemon did not come back:\n{daemon.output()}"
        return daemon

    def _send_one(self, daemon: TradingDaemon, stream: list[dict[str, Any]], index: int) -> int:
        """Send one alert to a daemon armed with no fail point; return the next index."""
        self._price(stream[index])
        code, body = daemon.send(**stream[index])
        assert code < 500, f"alert {index} answered {code}: {body}"
        self.answered[index] = body
        self.report.signals += 1
        self._settle(daemon)
        return index + 1

    def _settle(self, daemon: TradingDaemon) -> None:
        """Wait until the daemon has done what an answer set going: its broker stops placed
        or moved, exits adopted from fired stops sold. A resting stop fires when the next
        price is set, so whether it rests then must not depend on timing, or the run
        without crashes would trade differently. Raises OSError if the daemon died."""
        deadline = time.monotonic() + SETTLE_WITHIN_S
        while True:
            status = daemon.get("/status")[1]
            stops = status.get("broker_stops") or {}
            if stops.get("in_step", True) and not status.get("exits_pending"):
                return
            if time.monotonic() > deadline:
                self.unsettled += 1
                return
            time.sleep(0.02)

    def _roll(self, state_dir: Path, point: str | None) -> None:
        """Jump the clock to the roll day; restart until GOLD_MINI's roll is done (crashing
        once at `point` on the way), checking the book after every restart."""
        self.phase_start, self.phase_began = self.schedule.roll_day, time.monotonic()
        crashed: list[str] = []
        while True:
            daemon = self._daemon(state_dir, point)
            done = self._ready(daemon) and rolled(daemon)
            if done:
                time.sleep(0.5)  # the last fail point comes just after the last booking
            if daemon.process.poll() is not None:  # it died in the roll: restart
                self._crashed(Crash(point))
                crashed.append(point or RANDOM)
                point = None
                continue
            if not done:
                daemon.kill()
                raise AssertionError(f"the roll did not finish:\n{daemon.output()}")
            self._check(daemon, None)
            daemon.stop()
            self.log(f"{self.broker}: GOLD_MINI rolled, through crashes at "
                     f"{crashed or 'none'}")
            return

    def _ready(self, daemon: TradingDaemon) -> bool:
        """Start the daemon; False if it died before /ready (a crash during recovery)."""
        return daemon.spawn().wait_recovered(READY_TIMEOUT_S)

    def _send_until_crash(self, daemon: TradingDaemon, crash: Crash | None,
                          stream: list[dict[str, Any]], index: int) -> tuple[int, bool]:
        """Send from `index` until the daemon dies; return the first unanswered alert and
        whether the planned crash happened (else the driver killed it: a random instant)."""
        timer = None
        if crash is not None and crash.point is None:
            timer = threading.Timer(crash.delay_s, daemon.kill)
            timer.start()
        budget = STRETCH.get(crash.point, 40) if crash and crash.point else len(stream)
        try:
            for _ in range(budget):
                if index >= len(stream):
                    break
                self._price(stream[index])
                try:
                    code, body = daemon.send(**stream[index])
                except OSError:
                    break
                if code >= 500:
                    break
                self.answered[index] = body
                self.report.signals += 1
                index += 1
                if daemon.process.poll() is not None:
                    break
                try:
                    self._settle(daemon)
                except OSError:
                    break
        finally:
            if timer is not None:
                timer.join()
        try:  # a dropped connection can be seen a moment before the process is reaped
            daemon.process.wait(timeout=2 if crash is not None else 0)
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: still running
            pass
        reached = daemon.process.poll() is not None
        if crash is not None and not reached:
            daemon.kill()  # the point was not reached in this stretch: a random instant
        return index, reached or (crash is not None and crash.point is None)

    def _crashed(self, crash: Crash) -> None:
        self.report.crashes[crash.name] += 1

    def _check(self, daemon: TradingDaemon, crash: Crash | None) -> None:
        positions, orders = self._venue(daemon)
        problems = book_violations(daemon.book_conninfo(), positions, orders)
        problems += self._unprotected(daemon)
        acknowledged = {b["signal_id"]: b["status"] for b in self.answered.values()
                        if b.get("status") not in (None, "duplicate")}
        with psycopg.connect(daemon.book_conninfo()) as conn:
            for signal_id, status in conn.execute(
                    "SELECT id, status FROM signal_log WHERE id = ANY(%s) "
                    "AND status <> 'processed'", (list(acknowledged),)).fetchall():
                problems.append(f"signal {signal_id} answered {acknowledged[signal_id]} "
                                f"is still {status}")
        for problem in problems:
            line = (f"VIOLATION broker={self.broker} seed={self.seed} after="
                    f"{crash.name if crash else 'end'}: {problem}")
            self.report.violations.append(line)
            self.log(line)

    def _unprotected(self, daemon: TradingDaemon) -> list[str]:
        """Open layers with no broker stop and not named: a layer entered by a signal the
        restart resumed gets its stop a moment after its fill, so a few seconds are given."""
        deadline = time.monotonic() + PROTECT_WITHIN_S
        while True:
            found = protection_violations(daemon.book_conninfo(), daemon.get("/status")[1])
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def _stop_all(self, state_dir: Path) -> None:
        if (state_dir / "pg" / "PG_VERSION").exists():
            EmbeddedPostgres(state_dir / "pg").stop()
        if self.fake is not None:
            self.fake.stop()
            self.fake = None


def final_book(daemon: TradingDaemon) -> tuple:
    positions = sorted((p["instrument"], p["layer"], p["status"], p["lots"], p["entry_price"],
                        p["exit_price"], p["realized_pnl"])
                       for p in daemon.get("/positions?status=all&limit=1000")[1]["positions"])
    equity = daemon.get("/status")[1]["equity"]
    return positions, equity["closed"], equity["high"]


def campaign(broker: str, seed: int, crashes: int, log: Any = print) -> Report:
    """Run the crash campaign and the same stream without crashes; compare the books."""
    workdir = Path(tempfile.mkdtemp(prefix=f"pm-chaos-{broker}-"))
    keep = False
    try:
        stream = alerts(seed, crashes * 50 + 200, SECRET, SCHEDULES[broker].before)
        crashing = Campaign(broker, seed, crashes, workdir / "crash", log)
        crashed_book, used = crashing.run(stream)
        calm = Campaign(broker, seed, 0, workdir / "calm", log,
                        roll_index=crashing.roll_index)
        report = crashing.report
        try:
            calm_book, _ = calm.run(stream[:used])
        except Diverged as exc:
            report.violations.append(
                f"VIOLATION broker={broker} seed={seed}: {exc}; "
                f"{first_difference(crashing.decisions, calm.decisions)}")
            log(report.violations[-1])
            keep = True
            return report
        report.rolled = crashing.roll_index is not None
        log(f"{broker}: answers not settled within {SETTLE_WITHIN_S}s: "
            f"{crashing.unsettled} crashing, {calm.unsettled} calm")
        if crashed_book != calm_book:
            report.violations.append(
                f"VIOLATION broker={broker} seed={seed}: the book differs from a run "
                f"without crashes; {first_difference(crashing.decisions, calm.decisions)}"
                f"\n  crashed: {crashed_book}\n  calm:    {calm_book}")
            log(report.violations[-1])
            keep = True
        return report
    finally:
        if keep:  # both runs' databases, for the post-mortem
            log(f"kept {workdir} (crash/state/pg, calm/state/pg) for inspection")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def table(reports: list[Report]) -> str:
    names = sorted({name for r in reports for name in r.crashes})
    lines = [f"{'crashes':<24}" + "".join(f"{r.broker:>12}" for r in reports)]
    lines += [f"  {name:<22}" + "".join(f"{r.crashes[name]:>12}" for r in reports)
              for name in names]
    for label, value in (("total crashes", lambda r: sum(r.crashes.values())),
                         ("signals sent", lambda r: r.signals),
                         ("broker orders", lambda r: r.orders),
                         ("broker stop exits", lambda r: r.broker_stop_exits),
                         ("violations", lambda r: len(r.violations)),
                         ("rolled", lambda r: "yes" if r.rolled else "no"),
                         ("flattened", lambda r: "yes" if r.flattened else "no"),
                         ("seed", lambda r: r.seed)):
        lines.append(f"{label:<24}" + "".join(f"{value(r):>12}" for r in reports))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", choices=["paper", "zerodha", "both"], default="both")
    parser.add_argument("--crashes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else Random().randrange(1_000_000)
    print(f"chaos campaign: seed {seed}, {args.crashes} crashes per broker", flush=True)
    brokers = ["paper", "zerodha"] if args.broker == "both" else [args.broker]
    reports = [campaign(broker, seed, args.crashes,
                        log=lambda line: print(line, flush=True)) for broker in brokers]
    print(table(reports))
    return 1 if any(r.violations for r in reports) else 0


if __name__ == "__main__":
    signals.signal(signals.SIGINT, signals.default_int_handler)
    sys.exit(main())
