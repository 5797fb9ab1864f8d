"""The daemon's lifecycle: ordered startup, serve until SIGINT/SIGTERM, reverse shutdown."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import structlog
from aiohttp import web

from config.settings import Settings, load_domain
from core.db_state_manager import DatabaseStateManager
from live.database_server import database_target
from live.schema_migrations import apply_migrations
from live.server import build_app

VERSION = "0.1.0"
log = structlog.get_logger(__name__)


class AlreadyRunning(RuntimeError):
    """Another daemon holds this state dir (and its embedded database)."""


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


async def run_live(settings: Settings) -> None:
    """Run the daemon until asked to stop; every resource is released in reverse order."""
    _, portfolio = load_domain(settings)  # a bad config file stops startup here
    stop = stop_requested()
    async with AsyncExitStack() as stack:
        stack.enter_context(state_dir_lock(settings.state_dir))
        target = await stack.enter_async_context(database_target(settings))
        log.info("database_selected", database=target.description)
        applied = await asyncio.to_thread(apply_migrations, target.conninfo)
        log.info("migrations_applied", applied=applied)
        db = DatabaseStateManager(target.conninfo, min_size=target.pool_min_size,
                                  max_size=target.pool_max_size)
        await db.open()
        stack.push_async_callback(db.close)
        async with db.transaction() as tx:
            if await tx.seed_portfolio(portfolio.initial_capital):
                log.info("ledger_seeded", capital=str(portfolio.initial_capital))
            await tx.register_instance(instance_id(settings.state_dir), socket.gethostname(),
                                       settings.port, "single", VERSION)
        await db.load_cache()
        runner = web.AppRunner(build_app(db), access_log=None, handle_signals=False,
                               shutdown_timeout=settings.shutdown_timeout_s)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.host, settings.port).start()
        url = f"http://{settings.host}:{settings.port}"
        log.info("serving", url=url, webhook_url=f"{url}/webhook", broker=settings.broker)
        await stop.wait()
        log.info("stopping")
    log.info("stopped")


def instance_id(state_dir: Path) -> str:
    """Return this installation's stable id, created on first start."""
    path = state_dir / "instance_id"
    if not path.exists():
        path.write_text(uuid.uuid4().hex)
    return path.read_text().strip()
