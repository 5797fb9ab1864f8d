"""The daemon's lifecycle: ordered startup, serve until SIGINT/SIGTERM, reverse shutdown."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import structlog
from aiohttp import web

from config.config_hash import config_sha256, effective_config
from config.domain_files import load_holidays
from config.kite import load_kite_config
from config.settings import Settings, load_domain
from core.db_pool import TRANSIENT_ERRORS
from core.db_state_manager import DatabaseStateManager
from live import failpoints
from live.access import access_policy, admin_token, webhook_secret
from live.assembly import assemble, build_broker, daemon_clock
from live.book_claim import AlreadyRunning, BookClaim
from live.brokers.base import Broker
from live.database_server import DatabaseTarget, database_target
from live.event_feed import EventFeed
from live.event_outbox import EventPublisher
from live.inbox import report_crash
from live.inbox_wake import follow_standby
from live.leader_broker import LeaderOnlyBroker, leader_gate
from live.metrics import Metrics
from live.pair_lifecycle import (
    LISTEN_FD,
    join_pair,
    restart_as_standby,
    stand_by,
    step_down_when_lost,
)
from live.readiness import Readiness
from live.recovery import recover
from live.schema_migrations import apply_migrations
from live.server import Context, build_app
from live.telegram import build_telegram, telegram_configured

VERSION = "0.1.0"
log = structlog.get_logger(__name__)
# A deep accept queue: alerts arrive in bursts (one per instrument at a bar close).
ACCEPT_BACKLOG = 1024


@contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the state dir for the life of the process."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "daemon.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(f"another daemon is running on {state_dir}") from None
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def stop_requested() -> asyncio.Event:
    """Return an event set by the first SIGINT or SIGTERM."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, event.set)
    return event


class StartupStalled(RuntimeError):
    """A startup stage before serving did not finish in time (named in the message)."""


@asynccontextmanager
async def stage(name: str, timeout_s: float) -> AsyncIterator[None]:
    """Time-box a startup stage that runs before the daemon serves: past it, stop starting."""
    log.info("startup_stage", stage=name)
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except (TimeoutError, *TRANSIENT_ERRORS) as exc:
        raise StartupStalled(f"startup stage {name} did not finish in {timeout_s:g} s "
                             f"({type(exc).__name__})") from None


async def watch_database(db: DatabaseStateManager, readiness: Readiness, metrics: Metrics,
                         interval_s: float) -> None:
    """Keep `/ready` honest about the database, whether or not signals are arriving."""
    while True:
        available = await db.ping(timeout_s=interval_s)
        if available != readiness.database_available:
            log.warning("database_available" if available else "database_unavailable")
        readiness.database_available = available
        metrics.paused.set(int(not available))
        await asyncio.sleep(interval_s)


async def run_live(settings: Settings) -> None:
    """Run the daemon until asked to stop; every resource is released in reverse order."""
    instruments, portfolio = load_domain(settings)  # a bad config file stops startup here
    calendar = load_holidays(settings.config_dir / "holidays.json")
    config_body = effective_config(instruments, portfolio, calendar)
    config_hash = config_sha256(config_body)
    failpoints.arm(settings.failpoint)
    telegram_configured(settings)  # a half-configured bot stops startup here
    if settings.broker == "zerodha":
        load_kite_config(settings.config_dir / "kite.json")
    stop = stop_requested()
    async with AsyncExitStack() as stack:
        stack.enter_context(state_dir_lock(settings.state_dir))
        secret, generated = webhook_secret(settings)
        admin, admin_generated = admin_token(settings)
        access = access_policy(settings, admin)  # a bad network list stops startup here
        target, db = await open_book(settings, stack)
        instance = instance_id(settings.state_dir)
        claim = BookClaim(target.conninfo, instance, shared=settings.redis_url is not None)
        await claim.take()  # before the book is written: a second daemon changes nothing in it
        stack.push_async_callback(claim.release)
        node = await join_pair(settings, stack, target.conninfo, instance)
        async with db.transaction() as tx:
            if await tx.seed_portfolio(portfolio.initial_capital):
                log.info("ledger_seeded", capital=str(portfolio.initial_capital))
            if await tx.store_configuration(config_hash, config_body):
                log.info("configuration_stored", config_sha256=config_hash)
            await tx.register_instance(instance, socket.gethostname(), settings.port,
                                       node.role if node else "single", VERSION, config_hash)
        metrics = Metrics()
        clock = daemon_clock(settings)
        venue = build_broker(settings, instruments, portfolio, target.conninfo, metrics,
                             calendar, clock, leader_gate(node.may_act) if node else lambda: None)
        if node is not None:  # a node calls the broker only while it leads
            venue = replace(venue, broker=cast(Broker, LeaderOnlyBroker(venue.broker,
                                                                        node.may_act)))
            db.on_fenced = node.fenced
        parts = assemble(settings, db, venue, instruments, portfolio, calendar, instance,
                         metrics, clock)
        stack.push_async_callback(parts.reconciler.close)  # after the inbox has stopped
        stack.push_async_callback(parts.inbox.stop, settings.shutdown_timeout_s)
        context = parts.context(settings, secret, instruments, access, config_hash)
        context.ha = node
        # The dashboard's stream and the book's log lines; logged only by the node that acts.
        context.feed = EventFeed(target.conninfo, lambda: node is None or node.may_act())
        # Alerts and commands, on the node that acts (started with the other workers).
        telegram = build_telegram(settings, context, target.conninfo,
                                  node.may_act if node else lambda: True)
        if telegram is not None:
            stack.push_async_callback(telegram.close)
        listener = await serve(settings, stack, context)
        start_task(stack, context.feed.run(), "event-feed")
        stack.callback(context.feed.close_subscriptions)  # before the server waits on them
        announce(f"http://{settings.host}:{settings.port}", secret if generated else None,
                 admin if admin_generated else None)
        start_task(stack, watch_database(db, parts.readiness, metrics,
                                         settings.db_watch_interval_s), "database-watch")
        start_task(stack, claim.keep(stop.set), "book-claim")
        start_task(stack, parts.inbox.lag.run(), "loop-lag")

        if node is not None:
            parts.inbox.hand_over = db.notify_inbox  # until elected: the leader decides
            start_task(stack, node.run(), "ha-node")
            start_task(stack, step_down_when_lost(node, stop, listener,
                                                  3 * settings.shutdown_timeout_s), "ha-lost")

        async def recover_then_work() -> None:
            if node is not None:
                await stand_by(node, db)
                db.epoch, parts.inbox.hand_over = node.epoch, None
            with collector_paused(settings.startup_stage_timeout_s):
                # The last alert prices are read while the venue starts: over a long history
                # the read is the database's work, the start ours.
                prices = asyncio.ensure_future(db.last_alert_prices(list(instruments)))
                try:
                    await venue.broker.start()
                    stack.push_async_callback(venue.broker.close)
                    await parts.engine.control.load()
                    await parts.engine.restore_prices(await prices)
                finally:
                    await _cancel(prices)  # done by now, unless the start failed
                await recover(db, venue.broker, parts.inbox, parts.flow, portfolio,
                              parts.readiness, settings.startup_stage_timeout_s,
                              reconciler=parts.reconciler, stops=parts.stops)
            workers = parts.workers()  # what runs beside the signals, once recovered
            if node is not None:
                workers.append(("inbox-wake", follow_standby(target.conninfo, parts.inbox)))
                workers.append(("events", EventPublisher(target.conninfo, node.redis).run()))
            if telegram is not None:
                workers += telegram.workers()
            for name, work in workers:
                start_task(stack, work, name)
            stack.push_async_callback(parts.flattener.close)
            await parts.flattener.resume()  # a flatten a crash interrupted carries on

        await until_stopped(stop, recover_then_work(), parts.readiness, venue.broker)
        log.info("stopping")
    log.info("stopped")
    if claim.lost:
        raise AlreadyRunning("another daemon took this book while the database was away")
    if node is not None and node.lost.is_set():
        restart_as_standby(listener)


@contextmanager
def collector_paused(limit_s: float) -> Iterator[None]:
    """Keep the cyclic garbage collector out of recovery, for at most `limit_s`.

    Recovery builds the whole book, hundreds of thousands of objects that are all kept: the
    collector, run every few hundred allocations, walked the growing heap again and again (a
    fifth of a 100k-layer start). The cycles made meanwhile (few: refcounting frees the rest)
    wait for one collection at the end, or for the collector's return after `limit_s`,
    should a stage stall.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    resume = asyncio.get_running_loop().call_later(limit_s, gc.enable)
    try:
        yield
    finally:
        resume.cancel()
        gc.enable()
        gc.collect()


def start_task(stack: AsyncExitStack, work: Coroutine[Any, Any, None], name: str) -> None:
    """Run `work` beside the daemon until the stack unwinds; a crash is logged."""
    task = asyncio.create_task(work, name=name)
    task.add_done_callback(report_crash)
    stack.push_async_callback(_cancel, task)


async def open_book(settings: Settings, stack: AsyncExitStack
                    ) -> tuple[DatabaseTarget, DatabaseStateManager]:
    """Open the database (embedded or configured) and migrate it: the first two stages."""
    timeout_s = settings.startup_stage_timeout_s
    async with stage("open_database", timeout_s):
        target = await stack.enter_async_context(database_target(settings))
        log.info("database_selected", database=target.description)
        db = DatabaseStateManager(target.conninfo, min_size=target.pool_min_size,
                                  max_size=target.pool_max_size)
        await db.open(wait_s=timeout_s)
        stack.push_async_callback(db.close)
    async with stage("migrate", timeout_s):
        applied = await asyncio.to_thread(apply_migrations, target.conninfo)
        log.info("migrations_applied", applied=applied)
    return target, db


async def serve(settings: Settings, stack: AsyncExitStack, context: Context
                ) -> socket.socket:
    """Start the HTTP server (stopped first on the way out); return its listening socket."""
    runner = web.AppRunner(build_app(context), access_log=None, handle_signals=False,
                           shutdown_timeout=settings.shutdown_timeout_s)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    inherited = os.environ.pop(LISTEN_FD, None)  # a node restarting as standby kept it
    if inherited is not None:
        listener = socket.socket(fileno=int(inherited))
    else:
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        listener = socket.create_server((settings.host, settings.port), family=family,
                                        backlog=ACCEPT_BACKLOG)
    # Kept open by a duplicate: the site closes its own when the server stops. The site
    # listens again with its own backlog (aiohttp's default is 128): past it a connection's
    # SYN is dropped and the sender retries a second later, a third of TradingView's wait.
    await web.SockSite(runner, socket.socket(fileno=os.dup(listener.fileno())),
                       backlog=ACCEPT_BACKLOG).start()
    url = f"http://{settings.host}:{settings.port}"
    log.info("serving", url=url, webhook_url=f"{url}/webhook", broker=context.broker.name)
    return listener


async def until_stopped(stop: asyncio.Event, recovery: Coroutine[Any, Any, None],
                        readiness: Readiness, broker: Broker) -> None:
    """Recover, then serve until asked to stop (a stop during recovery cancels it)."""
    recovering = asyncio.create_task(recovery, name="recovery")
    waiting = asyncio.create_task(stop.wait(), name="stop-signal")
    done, _ = await asyncio.wait({recovering, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if recovering in done:
        recovering.result()  # a failure here is a bug: let it stop the daemon, loudly
        reasons = readiness.reasons(broker.unavailable_reason)
        log.info("ready" if not reasons else "not_ready", reasons=reasons)
        await waiting
    else:
        await _cancel(recovering)
    await _cancel(waiting)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def announce(url: str, generated_secret: str | None,
             generated_admin_token: str | None = None) -> None:
    """Tell the operator where to point TradingView (stderr: kept out of the JSON log)."""
    print(f"Dashboard: {url}/  (read only; log in with the admin token for the controls)",
          file=sys.stderr, flush=True)
    print(f"Webhook URL: {url}/webhook", file=sys.stderr, flush=True)
    if generated_secret is not None:
        print(f"Paper-mode webhook secret (put it in the alert's JSON as \"secret\"): "
              f"{generated_secret}", file=sys.stderr, flush=True)
    if generated_admin_token is not None:
        print(f"Paper-mode admin token (send \"Authorization: Bearer <token>\"; kept in the "
              f"state dir as admin_token): {generated_admin_token}", file=sys.stderr, flush=True)


def instance_id(state_dir: Path) -> str:
    """Return this installation's stable id, created on first start."""
    path = state_dir / "instance_id"
    if not path.exists():
        path.write_text(uuid.uuid4().hex[:16])
    return path.read_text().strip()
