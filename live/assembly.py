"""The daemon's parts, wired: the venue chosen for a run and the signal path around it —
order flow, engine, inbox and what runs beside them. Shared by the live daemon, replay and
the operator commands that need a venue."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from config.errors import ConfigError
from config.kite import load_kite_config
from config.settings import Settings
from core.calendar import TradingCalendar
from core.db_state_manager import DatabaseStateManager
from core.specs import InstrumentSpec, PortfolioConfig
from live.access import AccessPolicy
from live.broker_stops import BrokerStops
from live.brokers.base import Broker
from live.brokers.kite_session import KiteSession
from live.brokers.paper import PaperBroker
from live.daily_limits import DailyLimits
from live.engine import LiveTradingEngine
from live.event_outbox import trim as trim_events
from live.every import every
from live.exit_retries import ExitRetries
from live.flatten import Flattener
from live.inbox import Inbox
from live.metrics import Metrics
from live.order_flow import OrderFlow
from live.rate_limit import RateLimiter
from live.readiness import Readiness
from live.reconciler import Reconciler
from live.rollover import Rollover
from live.server import Context, WebhookPolicy
from live.snapshots import Snapshots
from live.square_off import SquareOff


def now_utc() -> datetime:
    return datetime.now(UTC)


def daemon_clock(settings: Settings) -> Callable[[], datetime]:
    """The daemon's time: the wall clock, or — for drills and crash campaigns that must meet
    a roll day or a closed session — one that starts at `clock_start` and runs at real speed."""
    start = settings.clock_start
    if start is None:
        return now_utc
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)


@dataclass(frozen=True)
class Venue:
    broker: Broker
    price_limits: tuple[Decimal, Decimal] | None = None  # entry quote check (base, pyramid)
    poll_interval_max_s: float = 1.0
    # Told of the venue's news of an order the daemon did not place (a broker stop fired).
    foreign_orders: list[Callable[[], None]] = field(default_factory=list)


def build_broker(settings: Settings, instruments: dict[str, InstrumentSpec],
                 portfolio: PortfolioConfig, conninfo: str, metrics: Metrics,
                 calendar: TradingCalendar | None = None,
                 clock: Callable[[], datetime] = now_utc,
                 gate: Callable[[], None] = lambda: None) -> Venue:
    """Return the venue chosen for this run, with how the engine should work with it;
    `gate` is asked the instant before each request leaves for the venue."""
    if settings.broker == "paper":
        return Venue(PaperBroker(conninfo, instruments, portfolio, clock=clock,
                                 calendar=calendar, gate=gate))
    from live.brokers.kite import KiteBroker
    from live.brokers.kite_client import KiteCalls

    if not settings.kite_api_key or settings.kite_api_secret is None:
        raise ConfigError("PM_KITE_API_KEY and PM_KITE_API_SECRET must be set for zerodha")
    config = load_kite_config(settings.config_dir / "kite.json")
    configured = settings.kite_access_token
    session = KiteSession(settings.state_dir,
                          configured.get_secret_value() if configured else None)
    calls = KiteCalls(settings.kite_api_key, settings.kite_root, config.request_timeout_s,
                      gate)
    broker = KiteBroker(calls, session, config, instruments,
                        api_secret=settings.kite_api_secret.get_secret_value(), clock=clock,
                        metrics=metrics, calendar=calendar)
    return Venue(broker, (config.max_entry_divergence_percent,
                          config.max_pyramid_divergence_percent), config.poll_interval_max_s,
                 broker.foreign_order_listeners)


@dataclass(frozen=True)
class Parts:
    """The signal path, wired: readiness, order flow, engine (the handler) and inbox."""

    db: DatabaseStateManager
    broker: Broker
    metrics: Metrics
    readiness: Readiness
    flow: OrderFlow
    engine: LiveTradingEngine
    inbox: Inbox
    exits: ExitRetries
    reconciler: Reconciler
    rollover: Rollover
    clock: Callable[[], datetime]
    flattener: Flattener
    snapshots: Snapshots
    limits: DailyLimits
    square_off: SquareOff
    stops: BrokerStops

    def workers(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The loops that run beside the signal path once recovery is done."""
        return [("exit-retries", self.exits.run()), ("reconciler", self.reconciler.run()),
                ("rollover", self.rollover.run()), ("snapshots", self.snapshots.run()),
                ("daily-limits", self.limits.run()), ("square-off", self.square_off.run()),
                ("broker-stops", self.stops.run()),
                ("events-trim", every(3600, lambda: trim_events(self.db), "events_trim_failed"))]

    def context(self, settings: Settings, secret: str,
                instruments: dict[str, InstrumentSpec], access: AccessPolicy,
                config_sha256: str | None = None) -> Context:
        return Context(
            access=access, config_sha256=config_sha256,
            db=self.db, inbox=self.inbox, engine=self.engine, instruments=instruments,
            metrics=self.metrics, readiness=self.readiness, broker=self.broker, clock=self.clock,
            limiter=RateLimiter(settings.rate_limit_per_min), exits=self.exits,
            rollover=self.rollover, control=self.engine.control, flattener=self.flattener,
            limits=self.limits, stops=self.stops, reconciler=self.reconciler,
            policy=WebhookPolicy(secret=secret, max_bytes=settings.webhook_max_bytes,
                                 decision_wait_ms=settings.decision_wait_ms,
                                 rate_limit_per_min=settings.rate_limit_per_min))


def assemble(settings: Settings, db: DatabaseStateManager, venue: Venue,
             instruments: dict[str, InstrumentSpec], portfolio: PortfolioConfig,
             calendar: TradingCalendar, instance: str, metrics: Metrics,
             clock: Callable[[], datetime] = now_utc) -> Parts:
    readiness = Readiness()
    flow = OrderFlow(db, venue.broker, instruments, processed_by=instance, clock=clock,
                     metrics=metrics, poll_interval_max_s=venue.poll_interval_max_s)
    engine = LiveTradingEngine(db, venue.broker, instruments, portfolio, flow,
                               processed_by=instance, clock=clock, metrics=metrics,
                               readiness=readiness, price_limits_percent=venue.price_limits)
    inbox = Inbox(db, engine, instruments, portfolio, processed_by=instance, clock=clock,
                  metrics=metrics)
    exits = ExitRetries(flow, venue.broker, instruments, calendar, readiness, metrics,
                        engine.locks, clock=clock, first_delay_s=settings.exit_retry_first_s,
                        max_delay_s=settings.exit_retry_max_s)
    reconciler = Reconciler(db, venue.broker, instruments, readiness, locks=engine.locks,
                            metrics=metrics, clock=clock, in_session=calendar.in_session,
                            interval_s=settings.reconcile_interval_s)
    flow.fill_listeners.append(reconciler.after_fill)
    rollover = Rollover(db, venue.broker, instruments, calendar, readiness, engine.locks, exits,
                        clock=clock, last_price=engine.last_alert_price,
                        interval_s=settings.roll_check_interval_s)
    engine.rollover = rollover
    flattener = Flattener(db, venue.broker, engine, engine.control, clock=clock)
    snapshots = Snapshots(db, engine, instruments, portfolio, clock=clock)
    limits = DailyLimits(db, snapshots, engine.control, portfolio, clock=clock,
                         flattener=flattener)
    snapshots.listeners.append(limits.wake)
    engine.decision_listeners.append(limits.wake)
    square_off = SquareOff(db, engine, instruments, calendar, clock=clock)
    stops = BrokerStops(db, venue.broker, instruments, portfolio, readiness, engine.locks,
                        clock=clock, in_session=calendar.in_session,
                        check_interval_s=settings.broker_stop_check_s)
    flow.stops = stops
    reconciler.stops = stops
    stops.adopt_listeners.append(exits.schedule)
    engine.decision_listeners.append(stops.poke)
    engine.watch_venue(stops.reached_locked, stops.quiet_at)
    engine.watch_venue(exits.settle_locked, exits.quiet_at)
    flow.fill_listeners.append(stops.poke)
    venue.foreign_orders.append(stops.check_soon)
    return Parts(db, venue.broker, metrics, readiness, flow, engine, inbox, exits, reconciler,
                 rollover, clock, flattener, snapshots, limits, square_off, stops)
