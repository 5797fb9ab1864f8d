"""An engine on a test database with the paper broker and a clock the test moves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from config.domain_files import DEFAULT_CONFIG_DIR, load_instruments, load_portfolio_config
from core.calendar import TradingCalendar
from core.db_state_manager import DatabaseStateManager
from core.models import SignalOutcome
from core.signals import parse_signal, storable_payload
from core.specs import PortfolioConfig
from live.broker_stops import BrokerStops
from live.brokers.base import Broker
from live.brokers.paper import PaperBroker
from live.daily_limits import DailyLimits
from live.engine import LiveTradingEngine
from live.exit_retries import ExitRetries
from live.flatten import Flattener
from live.inbox import Inbox
from live.metrics import Metrics
from live.order_flow import OrderFlow
from live.readiness import Readiness
from live.reconciler import Reconciler
from live.recovery import recover
from live.rollover import Rollover
from live.snapshots import Snapshots
from live.square_off import SquareOff

INSTRUMENTS = load_instruments(DEFAULT_CONFIG_DIR / "instruments.json")
PORTFOLIO = load_portfolio_config(DEFAULT_CONFIG_DIR / "portfolio.json")
START = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def signal_payload(kind: str, instrument: str = "GOLD_MINI", position: str | None = "Long_1",
                   price: str = "78500", at: datetime = START, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": kind, "instrument": instrument, "price": Decimal(price),
                               "timestamp": at.isoformat(), "atr": Decimal("700"),
                               "supertrend": Decimal("77000")}
    if position is not None:
        payload["position"] = position
    if kind in ("BASE_ENTRY", "PYRAMID", "EXIT"):
        payload.update(stop=Decimal("77800"), lots=1, er=Decimal("1"))
    if kind == "EXIT":
        payload.update(stop=Decimal("0"), reason="trend reversal")
    payload.update(fields)
    return payload


@dataclass
class Trading:
    db: DatabaseStateManager
    dsn: str
    config: PortfolioConfig = PORTFOLIO
    clock: Clock = field(default_factory=Clock)
    metrics: Metrics = field(default_factory=Metrics)
    # Another venue than paper (built by the test), and its entry quote-check limits.
    broker: Broker | None = None
    price_limits: tuple[Decimal, Decimal] | None = None
    readiness: Readiness = field(default_factory=Readiness)
    calendar: TradingCalendar = field(default_factory=lambda: TradingCalendar({}))

    async def start(self) -> Trading:
        async with self.db.transaction() as tx:
            await tx.seed_portfolio(self.config.initial_capital)
        if self.broker is None:
            self.broker = PaperBroker(self.dsn, INSTRUMENTS, self.config, clock=self.clock,
                                      calendar=self.calendar)
        await self.broker.start()
        self.flow = OrderFlow(self.db, self.broker, INSTRUMENTS, processed_by="test",
                              clock=self.clock, metrics=self.metrics, poll_interval_s=0.01,
                              poll_interval_max_s=0.1, settle_s=0.05)
        self.engine = LiveTradingEngine(self.db, self.broker, INSTRUMENTS, self.config,
                                        self.flow, processed_by="test", clock=self.clock,
                                        metrics=self.metrics, readiness=self.readiness,
                                        price_limits_percent=self.price_limits)
        self.inbox = Inbox(self.db, self.engine, INSTRUMENTS, self.config, processed_by="test",
                           clock=self.clock, metrics=self.metrics)
        self.exits = ExitRetries(self.flow, self.broker, INSTRUMENTS, self.calendar,
                                 self.readiness, self.metrics, self.engine.locks,
                                 clock=self.clock, first_delay_s=5, max_delay_s=300)
        # Checks when a test calls `reconciler.check()` (or recovers); after fills only when
        # a test appends `reconciler.after_fill` to `flow.fill_listeners`.
        self.reconciler = Reconciler(self.db, self.broker, INSTRUMENTS, self.readiness,
                                     locks=self.engine.locks, metrics=self.metrics,
                                     clock=self.clock, in_session=self.calendar.in_session,
                                     after_fill_delay_s=0.05)
        self.rollover = Rollover(self.db, self.broker, INSTRUMENTS, self.calendar,
                                 self.readiness, self.engine.locks, self.exits,
                                 clock=self.clock, last_price=self.engine.last_alert_price)
        self.engine.rollover = self.rollover
        self.control = self.engine.control
        self.flattener = Flattener(self.db, self.broker, self.engine, self.control,
                                   clock=self.clock, poll_s=0.01)
        # Snapshots and limit checks when a test calls `take()` / `check()`.
        self.snapshots = Snapshots(self.db, self.engine, INSTRUMENTS, self.config,
                                   clock=self.clock)
        self.limits = DailyLimits(self.db, self.snapshots, self.control, self.config,
                                  clock=self.clock, flattener=self.flattener)
        self.square_off = SquareOff(self.db, self.engine, INSTRUMENTS, self.calendar,
                                    clock=self.clock)
        # Broker stops are cancelled before every sale; they are placed and checked only
        # while a test runs the keeper (`keep_stops`) or calls it.
        self.stops = BrokerStops(self.db, self.broker, INSTRUMENTS, self.config, self.readiness,
                                 self.engine.locks, clock=self.clock,
                                 in_session=self.calendar.in_session, settle_s=0.05,
                                 placing_grace_s=1.0,
                                 retry_first_s=0.01, retry_max_s=0.1)
        self.flow.stops = self.stops
        self.reconciler.stops = self.stops
        self.stops.adopt_listeners.append(self.exits.schedule)
        self.engine.watch_venue(self.stops.reached_locked, self.stops.quiet_at)
        self.engine.watch_venue(self.exits.settle_locked, self.exits.quiet_at)
        await self.stops.load()
        self._keeper: asyncio.Task[None] | None = None
        return self

    def context(self, secret: str = "s3cret", **extra: Any) -> Any:
        """The HTTP layer's Context over these parts, as the daemon wires it (`extra`: the
        access policy, the feed, …)."""
        from live.rate_limit import RateLimiter
        from live.server import Context, WebhookPolicy

        return Context(db=self.db, inbox=self.inbox, engine=self.engine,
                       instruments=INSTRUMENTS, metrics=self.metrics,
                       readiness=self.readiness, broker=self.broker,
                       limiter=RateLimiter(1000), policy=WebhookPolicy(secret, 16384, 2000, 1000),
                       exits=self.exits, rollover=self.rollover, control=self.control,
                       flattener=self.flattener, limits=self.limits, stops=self.stops,
                       reconciler=self.reconciler, clock=self.clock, **extra)

    def keep_stops(self) -> asyncio.Task[None]:
        """Run the broker-stop keeper as the daemon does: poked by decisions and fills."""
        self.engine.decision_listeners.append(self.stops.poke)
        self.flow.fill_listeners.append(self.stops.poke)
        self._keeper = asyncio.get_running_loop().create_task(self.stops.run())
        return self._keeper

    async def recover(self) -> list[str]:
        """Run startup recovery; return the reasons it leaves for not trading."""
        assert self.broker is not None
        await self.engine.restore_prices(await self.db.last_alert_prices(list(INSTRUMENTS)))
        await recover(self.db, self.broker, self.inbox, self.flow, self.config,
                      self.readiness, stage_timeout_s=60, reconciler=self.reconciler,
                      stops=self.stops)
        return self.readiness.reasons(self.broker.unavailable_reason)

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        await self.flattener.close()
        await self.inbox.stop(5)
        await self.reconciler.close()
        await self.broker.close()

    async def send(self, kind: str, wait_s: float = 10, **kwargs: Any) -> SignalOutcome | None:
        """Submit a signal as the webhook does and wait for its outcome (None: still pending)."""
        kwargs.setdefault("at", self.clock.now)
        payload = signal_payload(kind, **kwargs)
        signal = parse_signal(payload, INSTRUMENTS)
        admission, outcome = await self.inbox.submit(signal, storable_payload(payload),
                                                     self.clock.now)
        assert admission.accepted, f"duplicate of {admission.signal_id}"
        self.inbox.start_processing()
        if outcome is None:
            outcome = await self.inbox.wait_for_decision(admission.signal_id, wait_s)
        self.clock.advance(61)  # past the dedup window for the next signal
        return outcome
