"""`portfolio_manager.py replay`: a file of webhook payloads through the daemon's own signal
path (DESIGN.md §13), on a book of its own.

Each payload goes where the webhook sends one once it has parsed it — the inbox's
admission, then the engine, the order flow, the paper broker and the fill booking, all wired
by `live.assembly.assemble` — on a fresh embedded PostgreSQL in a temporary directory. The
clock is virtual: it stands at each signal's own timestamp while that signal is admitted
and decided, and the replay waits for every consequence (fills, broker stops, exit retries,
limits) before the next, so the same file always gives the same book.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import uvloop

from config.config_hash import config_sha256, effective_config
from config.domain_files import load_holidays
from config.errors import ConfigError
from config.settings import Settings, load_domain
from core.calendar import TradingCalendar
from core.db_state_manager import DatabaseStateManager
from core.signals import InvalidSignal, parse_signal, storable_payload
from core.specs import InstrumentSpec, PortfolioConfig
from live.assembly import Parts, Venue, assemble, now_utc
from live.brokers.paper import PaperBroker
from live.daemon import start_task
from live.embedded_db import EmbeddedPostgres
from live.logging_setup import configure_logging
from live.metrics import Metrics
from live.recovery import recover
from live.replay_config import with_overrides
from live.replay_report import ReplayRun, build_report, write_report
from live.schema_migrations import apply_migrations
from live.webhook_body import BadBody, parse_body

INSTANCE = "replay"
# A throwaway book: durability buys nothing, and every commit would wait for the disk.
SERVER_SETTINGS = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off",
                   "max_connections": "50"}
DECISION_TIMEOUT_S = 120.0
# Outcomes the webhook gives without the engine deciding anything.
INVALID, DUPLICATE = "invalid", "duplicate"


class ReplayStalled(RuntimeError):
    """A signal got no decision in time: the engine is stuck (named in the message)."""


@dataclass(frozen=True)
class ReplayRequest:
    signals: Path
    out: Path
    overrides: tuple[str, ...] = ()
    capital: Decimal | None = None


@dataclass(frozen=True)
class ReplayConfig:
    instruments: dict[str, InstrumentSpec]
    portfolio: PortfolioConfig
    calendar: TradingCalendar
    sha256: str
    body: dict[str, Any]


class VirtualClock:
    """The replay's time: a signal's timestamp while it is decided. It never runs back: a
    signal older than one already seen arrives, as it would at a daemon, late."""

    def __init__(self, start: datetime):
        self._now = start

    def __call__(self) -> datetime:
        return self._now

    def advance_to(self, moment: datetime) -> None:
        if moment > self._now:
            self._now = moment


def replay_config(settings: Settings, request: ReplayRequest) -> ReplayConfig:
    """Return the configuration the replay decides under: the daemon's files and PM_*
    overrides, then `--set`, then `--capital`. Raise ConfigError before anything is written."""
    instruments, portfolio = load_domain(settings)
    portfolio = with_overrides(portfolio, request.overrides)
    if request.capital is not None:
        portfolio = portfolio.model_copy(update={"initial_capital": request.capital})
    calendar = load_holidays(settings.config_dir / "holidays.json")
    body = effective_config(instruments, portfolio, calendar)
    return ReplayConfig(instruments, portfolio, calendar, config_sha256(body), body)


def read_stream(path: Path) -> list[bytes]:
    """Return the file's payload lines (blank lines skipped)."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return [line for line in lines if line.strip()]


class Progress:
    """A one-line progress bar (a `\\r`-redrawn line), redrawn at most every `every_s`."""

    def __init__(self, stream: TextIO = sys.stderr, every_s: float = 0.2):
        self._stream = stream
        self._every_s = every_s
        self._started = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._drawn < self._every_s:
            return
        self._drawn = now
        elapsed = max(now - self._started, 1e-9)
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        self._stream.write(f"\rreplay [{bar:<30}] {done}/{total} {share:4.0%} "
                           f"{done / elapsed:,.0f} signals/s")
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()


@asynccontextmanager
async def isolated_database() -> AsyncIterator[str]:
    """Yield the conninfo of a new embedded PostgreSQL in a temporary directory; stop it and
    remove the directory afterwards. Never the state dir's server: a replay's book is its own."""
    root = Path(tempfile.mkdtemp(prefix="pm-replay-"))
    server = EmbeddedPostgres(root / "pg", settings=SERVER_SETTINGS)
    try:
        address = await asyncio.to_thread(server.start)
        yield address.conninfo()
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(root, ignore_errors=True)


class Intake:
    """The webhook's path after its HTTP checks, one signal at a time, at its own time."""

    def __init__(self, parts: Parts, config: ReplayConfig, clock: VirtualClock):
        self._parts = parts
        self._instruments = config.instruments
        self._clock = clock
        self._limits = config.portfolio.daily_loss_limit_percent is not None
        self._square_off = any(s.square_off_at for s in config.instruments.values())
        self._rolls = config.portfolio.paper_contracts == "monthly"
        self.invalid: list[dict[str, Any]] = []
        self.reasons: Counter[str] = Counter()  # why signals did not execute

    async def feed(self, line_number: int, body: bytes) -> str:
        """Admit one payload and wait for its decision and all that follows from it; return
        its outcome as the webhook would name it."""
        try:
            payload = parse_body(body)
            signal = parse_signal(payload, self._instruments)
        except (BadBody, InvalidSignal) as exc:
            detail = exc.detail if isinstance(exc, BadBody) else exc.phrase
            self.invalid.append({"line": line_number, "detail": detail})
            return INVALID
        self._clock.advance_to(signal.timestamp)
        inbox = self._parts.inbox
        admission, outcome = await inbox.submit(signal, storable_payload(payload),
                                                self._clock())
        if not admission.accepted:
            return DUPLICATE
        if outcome is None:
            outcome = await inbox.wait_for_decision(admission.signal_id, DECISION_TIMEOUT_S)
        if outcome is None:
            raise ReplayStalled(f"line {line_number}: signal {admission.signal_id} had no "
                                f"decision in {DECISION_TIMEOUT_S:g} s")
        await self.settle()
        if outcome.reason and outcome.outcome != "executed":
            self.reasons[f"{outcome.outcome}: {outcome.reason}"] += 1
        return str(outcome.outcome)

    async def settle(self) -> None:
        """Let everything a decision set going finish at this moment, as the daemon's loops
        would before the next alert: broker stops placed or moved, exits due carried out,
        the day's limits and square-off, rolls."""
        parts = self._parts
        while True:
            await self._stops_in_step()
            acted = await parts.exits.attempt_due()
            if self._rolls:
                acted += len(await parts.rollover.check())
            if self._square_off:
                acted += len(await parts.square_off.check())
            if self._limits:
                await parts.limits.check()
                flatten = await parts.flattener.resume()
                if flatten is not None:
                    await flatten
                    acted += 1
            if not acted:
                return

    async def _stops_in_step(self) -> None:
        stops = self._parts.stops
        deadline = time.monotonic() + DECISION_TIMEOUT_S
        while not stops.in_step:
            if time.monotonic() > deadline:
                raise ReplayStalled(f"broker stops not in step in {DECISION_TIMEOUT_S:g} s")
            await asyncio.sleep(0)


def first_moment(lines: list[bytes], instruments: dict[str, InstrumentSpec]) -> datetime:
    """The replay's clock before its first signal: that signal's time (now, if none parses)."""
    for line in lines:
        try:
            return parse_signal(parse_body(line), instruments).timestamp
        except (BadBody, InvalidSignal):
            continue
    return now_utc()


async def run_replay(settings: Settings, request: ReplayRequest,
                     progress: Callable[[int, int], None] | None = None) -> ReplayRun:
    """Replay `request.signals` on an isolated paper book; write and return its report."""
    config = replay_config(settings, request)
    lines = read_stream(request.signals)
    started = time.monotonic()
    opened_at = first_moment(lines, config.instruments)
    clock = VirtualClock(opened_at)
    async with isolated_database() as conninfo, AsyncExitStack() as stack:
        parts = await _start(settings, stack, conninfo, config, clock)
        intake = Intake(parts, config, clock)
        outcomes: Counter[str] = Counter()
        for number, line in enumerate(lines, start=1):
            outcomes[await intake.feed(number, line)] += 1
            if progress is not None:
                progress(number, len(lines))
        await parts.inbox.drain()
        run = await build_report(parts.db, config.sha256, outcomes, intake.reasons,
                                 intake.invalid,
                                 opened_at=opened_at, elapsed_s=time.monotonic() - started)
    write_report(run, request.out)
    return run


async def _start(settings: Settings, stack: AsyncExitStack, conninfo: str,
                 config: ReplayConfig, clock: VirtualClock) -> Parts:
    """Open, migrate and seed the book, wire the daemon's parts on it and recover them, as
    the daemon starts (without its HTTP intake, its claim on the book, or its pair)."""
    await asyncio.to_thread(apply_migrations, conninfo)
    db = DatabaseStateManager(conninfo, min_size=2, max_size=8)
    await db.open()
    stack.push_async_callback(db.close)
    async with db.transaction() as tx:
        await tx.seed_portfolio(config.portfolio.initial_capital)
        await tx.store_configuration(config.sha256, config.body)
    broker = PaperBroker(conninfo, config.instruments, config.portfolio, clock=clock,
                         calendar=config.calendar)
    # The periodic stop check would only read back what the signal path already settles,
    # at wall-clock moments that have nothing to do with the stream's.
    quiet = settings.model_copy(update={"broker_stop_check_s": 86_400.0})
    parts = assemble(quiet, db, Venue(broker), config.instruments, config.portfolio,
                     config.calendar, INSTANCE, Metrics(), clock)
    # The book is its own venue's only client: a reconciliation timed by the wall clock
    # would add nothing but machine-speed-dependent work.
    parts.flow.fill_listeners.remove(parts.reconciler.after_fill)
    stack.push_async_callback(parts.reconciler.close)
    stack.push_async_callback(parts.inbox.stop, settings.shutdown_timeout_s)
    await broker.start()
    stack.push_async_callback(broker.close)
    await parts.engine.control.load()
    await recover(db, broker, parts.inbox, parts.flow, config.portfolio, parts.readiness,
                  settings.startup_stage_timeout_s, reconciler=parts.reconciler,
                  stops=parts.stops)
    start_task(stack, parts.stops.run(), "broker-stops")
    stack.push_async_callback(parts.flattener.close)
    return parts


def replay_command(settings: Settings, request: ReplayRequest) -> int:
    """Run a replay for the CLI: progress on stderr, a summary on stdout. Return 0; 2 (and
    write nothing) when the request or the configuration is refused; 1 if the engine stalls."""
    # A replay's own output is its report; the engine's log lines are opt-in (PM_LOG_LEVEL).
    configure_logging(settings.log_level if "log_level" in settings.model_fields_set
                      else "ERROR")
    try:
        run = uvloop.run(run_replay(settings, request, Progress().update))
    except ConfigError as exc:
        print(f"replay refused: {exc}", file=sys.stderr)
        return 2
    except ReplayStalled as exc:
        print(f"replay failed: {exc}", file=sys.stderr)
        return 1
    report = run.to_json()
    print(f"replayed {run.signals} signals in {report['elapsed_s']} s "
          f"({report['signals_per_s']} signals/s): closed equity {report['closed_equity']}, "
          f"{len(run.trades)} layers; report: {request.out / 'report.json'}, "
          f"{request.out / 'report.html'}")
    return 0
