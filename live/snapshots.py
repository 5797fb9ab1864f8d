"""The book over time: a `portfolio_snapshots` row every `snapshot_interval_s`, and at the
first snapshot of each trading day (IST) that day's `day_start` rows — the daily loss limit's
baseline — and the previous day's `day_end` rows.

Layers are marked at the last price the engine has seen (after a restart, the last alert's:
`LiveTradingEngine.restore_prices`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal

import structlog
from psycopg import AsyncConnection

from core.accounting import layer_pnl, percent, sizing_equity
from core.daily_limits import trading_day
from core.db_state_manager import DatabaseStateManager
from core.exposure import exposure, marked
from core.models import Layer
from core.specs import InstrumentSpec, PortfolioConfig
from live.engine import LiveTradingEngine
from live.every import every
from live.snapshot_store import (
    DAY_END,
    DAY_START,
    INTERVAL,
    PortfolioSnapshot,
    PositionSnapshot,
    end_days_before,
    insert_portfolio,
    insert_positions,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Book:
    """The book at one moment: its snapshot row, and the layers and prices its position rows
    are made of (made for a day's start and end only: an interval snapshot, every minute,
    writes none, and neither does a daily-limit check)."""

    portfolio: PortfolioSnapshot
    layers: tuple[Layer, ...]
    prices: dict[str, Decimal]  # each instrument's last price at that moment

    def mark(self, layer: Layer) -> Decimal:
        return marked(self.prices, layer)  # as the engine's `last_price` was at that moment


class Snapshots:
    def __init__(self, db: DatabaseStateManager, engine: LiveTradingEngine,
                 instruments: dict[str, InstrumentSpec], config: PortfolioConfig, *,
                 clock: Callable[[], datetime]):
        self._db = db
        self._engine = engine
        self._instruments = instruments
        self._config = config
        self._clock = clock
        self._day: date | None = None  # the trading day whose start this run has written
        self._last: Book | None = None  # the last snapshot this run took
        self.listeners: list[Callable[[], None]] = []  # told after each snapshot

    async def run(self) -> None:
        await every(self._config.snapshot_interval_s, self.take, "snapshot_failed")

    async def take(self, now: datetime | None = None) -> Book:
        """Write an interval snapshot — and, at a trading day's first, the day's start and
        the previous day's end. Return the book as written."""
        now = now or self._clock()
        day = trading_day(now)
        book = await self.book(now)
        async with self._db.transaction() as tx:
            if day != self._day:
                await self._start_day(tx.conn, book)
            await insert_portfolio(tx.conn, book.portfolio)
        self._day, self._last = day, book
        for listener in self.listeners:
            listener()
        return book

    async def _start_day(self, conn: AsyncConnection[object], book: Book) -> None:
        day, now = book.portfolio.trading_day, book.portfolio.taken_at
        ended = await end_days_before(conn, day)
        for ended_day in ended:
            last = self._last
            if last is not None and last.portfolio.trading_day == ended_day:
                await insert_positions(conn, ended_day, DAY_END, last.portfolio.taken_at,
                                       self._positions(last))
            elif ended_day == ended[-1]:
                # Started since that day ended: nothing trades while the daemon is down,
                # so the layers live now are the ones it ended with.
                await insert_positions(conn, ended_day, DAY_END, now, self._positions(book))
            log.info("trading_day_ended", day=ended_day.isoformat())
        # A restart later in the day finds the day started: its first baseline stands.
        if await insert_portfolio(conn, replace(book.portfolio, kind=DAY_START)):
            await insert_positions(conn, day, DAY_START, now, self._positions(book))
            log.info("trading_day_started", day=day.isoformat(),
                     sizing_equity=str(book.portfolio.sizing_equity),
                     unrealized=str(book.portfolio.unrealized))

    async def book(self, now: datetime) -> Book:
        """Return the book at `now`, marked at the last prices known."""
        layers = await self._db.all_live_layers()
        state = await self._db.portfolio_state()
        prices = self._engine.last_prices()
        book = exposure(state, layers, self._instruments, prices.get)
        eq = book.equity
        portfolio = PortfolioSnapshot(
            taken_at=now, trading_day=trading_day(now), kind=INTERVAL,
            closed_equity=eq.closed, open_equity=eq.open, blended_equity=eq.blended,
            unrealized=eq.unrealised,
            sizing_equity=sizing_equity(self._config, eq.closed, eq.blended, eq.high),
            risk_percent=percent(book.risk, eq.blended),
            margin_percent=percent(book.margin_used, eq.blended), open_layers=book.layers)
        return Book(portfolio, tuple(layers), prices)

    def _positions(self, book: Book) -> tuple[PositionSnapshot, ...]:
        """The book's position rows, each layer at its price at that moment."""
        return tuple(self._position(x, book.mark(x)) for x in book.layers)

    def _position(self, layer: Layer, mark: Decimal) -> PositionSnapshot:
        pv = self._instruments[layer.instrument].point_value
        return PositionSnapshot(
            position_id=layer.id, instrument=layer.instrument, layer=layer.layer,
            tradingsymbol=layer.tradingsymbol, lots=layer.lots, quantity=layer.quantity,
            entry_price=layer.entry_price, last_price=mark, current_stop=layer.current_stop,
            unrealized=layer_pnl(layer.entry_price, mark, layer.lots, pv))
