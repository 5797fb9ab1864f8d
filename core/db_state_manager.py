"""DatabaseStateManager: the pool, the unit of work, the write-through cache and the loaders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from core.accounting import money_text
from core.db_pool import TRANSIENT_ERRORS, make_pool
from core.db_rows import columns, row_factory
from core.db_transaction import (
    ADMIT_SQL,
    INTENT_COLUMNS,
    LAYER_COLUMNS,
    PORTFOLIO_COLUMNS,
    PYRAMIDING_COLUMNS,
    RECORD_DECISION_SQL,
    ROLL_COLUMNS,
    Transaction,
    admit_params,
    decision_params,
)
from core.errors import Fenced, SignalAlreadyDecided
from core.models import (
    UNRESOLVED_INTENT_STATUSES,
    AdmissionRequest,
    Layer,
    NewSignal,
    OrderIntent,
    Outcome,
    PortfolioState,
    PyramidingState,
    SignalAdmission,
    SignalRecord,
)
from core.reconciliation import SQUARE_OFF_EVENT, OwnActivity
from core.rollover import Roll
from core.state_cache import PORTFOLIO_KEY, Missing, StateCache, layers_key, pyramiding_key
from core.trading_state import Flatten, StateRecord

T = TypeVar("T")

SIGNAL_COLUMNS = columns(SignalRecord)
# The newest row of a key, from its (key, id) index whatever the statistics say: with
# `key = x` the primary key's backward scan also delivers id order, and the planner picks it
# when the key looks common — a scan of the whole history for one that has been quiet. The
# range form keeps the key in the order, so only the (key, id) index serves it unsorted.
LAST_ALERT_PRICES_SQL = """SELECT i, (SELECT payload->>'price' FROM signal_log
                                      WHERE instrument >= i AND instrument <= i
                                      ORDER BY instrument DESC, id DESC LIMIT 1)
                           FROM unnest(%s::text[]) AS i"""
LATEST_EVENT_SQL = """SELECT details FROM execution_log WHERE event >= %(e)s AND event <= %(e)s
                      ORDER BY event DESC, id DESC LIMIT 1"""
OWN_ACTIVITY_SQL = """
    SELECT 'tag', tag FROM order_intents WHERE tradingsymbol = %(symbol)s
    UNION ALL
    SELECT 'order', unnest(string_to_array(broker_order_id, ',')) FROM order_intents
     WHERE tradingsymbol = %(symbol)s AND broker_order_id IS NOT NULL
    UNION ALL
    SELECT 'trade', f.broker_trade_id FROM fills f JOIN order_intents i ON i.id = f.intent_id
     WHERE i.tradingsymbol = %(symbol)s
    UNION ALL
    SELECT 'trade', jsonb_array_elements_text(details->'trade_ids') FROM execution_log
     WHERE event = %(event)s AND details->>'tradingsymbol' = %(symbol)s"""


class DatabaseStateManager:
    """The daemon's only door to PostgreSQL."""

    def __init__(self, conninfo: str, *, min_size: int = 2, max_size: int = 10,
                 pool_timeout_s: float = 10.0, retry_window_s: float = 15.0,
                 reconnect_timeout_s: float = 5.0, admit_timeout_s: float = 2.0,
                 name: str = "portfolio_manager"):
        self._pool = make_pool(conninfo, name=name, min_size=min_size, max_size=max_size,
                               timeout_s=pool_timeout_s, reconnect_timeout_s=reconnect_timeout_s)
        self._conninfo = conninfo
        self._retry_window_s = retry_window_s
        self._admit_timeout_s = admit_timeout_s
        self._probe: psycopg.AsyncConnection[Any] | None = None  # `ping`'s own connection
        self.cache = StateCache()
        # A pair's leader sets its epoch: every transaction is then fenced by it (DESIGN.md
        # §10). None for a single daemon.
        self.epoch: int | None = None
        # Told when a transaction found a newer leader's epoch: the node steps down.
        self.on_fenced: Callable[[], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self, wait_s: float = 30.0) -> None:
        """Open the pool and wait until it holds `min_size` working connections."""
        await self._pool.open(wait=True, timeout=wait_s)

    async def close(self) -> None:
        await self._drop_probe()
        await self._pool.close()

    async def __aenter__(self) -> DatabaseStateManager:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- unit of work ---------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Run one state transition: COMMIT on success, then publish to the cache.

        On any failure — including a failed COMMIT or a cancellation — the transaction rolls
        back and every cache entry it touched is dropped, to be reloaded from the database.
        """
        async with self._pool.connection() as conn:
            tx = Transaction(conn, self.cache, self.epoch)
            try:
                # Pipeline mode: statements whose results are not read yet travel together,
                # so a transition costs a few round trips, not one per statement.
                async with conn.pipeline(), conn.transaction():
                    if self.epoch is not None:
                        await tx.fence()
                    yield tx
                    await tx.verify()
            except BaseException as exc:
                tx.discarded()
                if isinstance(exc, Fenced) and self.on_fenced is not None:
                    self.on_fenced()
                raise
            tx.published()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection in one read-only transaction (a consistent view over several
        queries): nothing is written, so nothing is fenced."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION READ ONLY")
            yield conn

    async def admit_signal(self, signal: NewSignal, window_s: int,
                           rejection: str | None = None,
                           processed_by: str | None = None) -> SignalAdmission:
        """Store one signal: `admit_signals` of one."""
        [admission] = await self.admit_signals([AdmissionRequest(signal, rejection)],
                                               window_s, processed_by)
        return admission

    async def admit_signals(self, requests: Sequence[AdmissionRequest], window_s: int,
                            processed_by: str | None = None,
                            decided_at: datetime | None = None) -> list[SignalAdmission]:
        """Store each signal unless it repeats one (both DOMAIN.md §3 rules), in arrival
        order, in one statement and one commit (group commit); decided ones with their
        outcome at `decided_at` (a leader's decision only while its term holds).

        Durable when this returns. Never retried: after an ambiguous failure a retry would
        find the signals themselves. Waits at most `admit_timeout_s` for a connection:
        TradingView gives up at 3 s, and a 503 it receives is better than none.
        """
        async with self._pool.connection(timeout=self._admit_timeout_s) as conn:
            cur = await conn.execute(ADMIT_SQL, admit_params(
                requests, window_s, processed_by, self.epoch, decided_at))
            rows = await cur.fetchall()
        return [SignalAdmission(int(signal_id), bool(accepted),
                                None if outcome is None else Outcome(outcome))
                for signal_id, accepted, outcome in rows]

    async def record_decision(self, signal_id: int, outcome: Outcome, reason: str | None,
                              processed_by: str, now: datetime) -> None:
        """Record a no-order outcome and its audit row in one statement (a leader's, in
        one fenced transaction)."""
        if self.epoch is not None:
            async with self.transaction() as tx:
                await tx.record_decision(signal_id, outcome, reason, processed_by, now)
            return
        async with self._pool.connection() as conn:
            cur = await conn.execute(RECORD_DECISION_SQL, decision_params(
                signal_id, outcome, reason, processed_by, now))
            if await cur.fetchone() is None:
                raise SignalAlreadyDecided(f"signal {signal_id} already has an outcome")

    async def _idempotent(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a read (or other repeatable operation), retrying transient faults."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT_ERRORS),
            stop=stop_after_delay(self._retry_window_s),
            wait=wait_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        ):
            with attempt:
                return await operation()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch(self, model: type[T], query: sql.Composed | str,
                     params: Any = None) -> list[T]:
        async def run() -> list[T]:
            async with self._pool.connection() as conn:
                async with conn.cursor(row_factory=row_factory(model)) as cur:
                    await cur.execute(query, params)
                    rows: list[T] = await cur.fetchall()
                    return rows

        return await self._idempotent(run)

    async def _scalar(self, query: str, params: Any = None) -> Any:
        async def run() -> Any:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(query, params)).fetchone()
                return None if row is None else row[0]

        return await self._idempotent(run)

    # -- cached reads ---------------------------------------------------------------------
    async def load_cache(self, attempts: int = 5) -> None:
        """Fill the cache with the whole live book (startup, recovery, after a drop)."""
        for _ in range(attempts):
            epoch = self.cache.epoch
            layers = await self.load_live_layers()
            pyramiding = await self.load_pyramiding_states()
            portfolio = await self.load_portfolio_state()
            if self.cache.replace_all(layers, portfolio, pyramiding, epoch):
                return
        # Commits kept landing during the load; per-key read-through still serves correctly.

    def moved_layers(self) -> set[str] | None:
        return self.cache.moved_layers()

    def cached_live_layers(self, instrument: str) -> list[Layer] | None:
        layers = self.cache.live_layers(instrument)
        if layers is None and self.cache.complete:
            return []  # the whole book is cached: an absent instrument has no live layer
        return layers

    async def live_layers(self, instrument: str) -> list[Layer]:
        """Return the instrument's open and closing layers, oldest first."""
        cached = self.cache.live_layers(instrument)
        if cached is not None:
            return cached
        generation = self.cache.generation(layers_key(instrument))
        query = sql.SQL(
            "SELECT {} FROM portfolio_positions WHERE instrument = %s AND status <> 'closed' "
            "ORDER BY id").format(LAYER_COLUMNS)
        layers = await self._fetch(Layer, query, (instrument,))
        self.cache.fill_layers(instrument, layers, generation)
        return layers

    async def all_live_layers(self) -> list[Layer]:
        """Return every open and closing layer of the book."""
        if not self.cache.complete:
            await self.load_cache()
        result: list[Layer] = []
        for instrument in self.cache.cached_instruments():
            result.extend(await self.live_layers(instrument))
        return sorted(result, key=lambda layer: layer.id)

    async def portfolio_state(self) -> PortfolioState | None:
        cached = self.cache.portfolio()
        if cached is not None:
            return cached
        generation = self.cache.generation(PORTFOLIO_KEY)
        state = await self.load_portfolio_state()
        self.cache.fill_portfolio(state, generation)
        return state

    async def pyramiding_state(self, instrument: str) -> PyramidingState | None:
        cached = self.cache.pyramiding(instrument)
        if not isinstance(cached, Missing):
            return cached
        generation = self.cache.generation(pyramiding_key(instrument))
        query = sql.SQL("SELECT {} FROM pyramiding_state WHERE instrument = %s").format(
            PYRAMIDING_COLUMNS)
        rows = await self._fetch(PyramidingState, query, (instrument,))
        state = rows[0] if rows else None
        self.cache.fill_pyramiding(instrument, state, generation)
        return state

    # -- recovery loaders (always from the database) --------------------------------------
    async def load_live_layers(self) -> list[Layer]:
        query = sql.SQL(
            "SELECT {} FROM portfolio_positions WHERE status <> 'closed' ORDER BY id"
        ).format(LAYER_COLUMNS)
        return await self._fetch(Layer, query)

    async def load_portfolio_state(self) -> PortfolioState | None:
        query = sql.SQL("SELECT {} FROM portfolio_state WHERE id = 1").format(PORTFOLIO_COLUMNS)
        rows = await self._fetch(PortfolioState, query)
        return rows[0] if rows else None

    async def load_pyramiding_states(self) -> list[PyramidingState]:
        query = sql.SQL("SELECT {} FROM pyramiding_state ORDER BY instrument").format(
            PYRAMIDING_COLUMNS)
        return await self._fetch(PyramidingState, query)

    async def load_pending_signals(self) -> list[SignalRecord]:
        """Return signals without an outcome (`received` or `processing`), in arrival order."""
        query = sql.SQL(
            "SELECT {} FROM signal_log WHERE status <> 'processed' ORDER BY id"
        ).format(SIGNAL_COLUMNS)
        return await self._fetch(SignalRecord, query)

    async def load_unresolved_intents(self) -> list[OrderIntent]:
        """Return intents whose broker outcome is not final yet, oldest first."""
        query = sql.SQL(
            "SELECT {} FROM order_intents WHERE status = ANY(%s) ORDER BY id"
        ).format(INTENT_COLUMNS)
        return await self._fetch(OrderIntent, query,
                                 (sorted(UNRESOLVED_INTENT_STATUSES),))

    async def roll(self, roll_id: int) -> Roll | None:
        query = sql.SQL("SELECT {} FROM rolls WHERE id = %s").format(ROLL_COLUMNS)
        found = await self._fetch(Roll, query, (roll_id,))
        return found[0] if found else None

    async def load_rolls(self, since: date) -> list[Roll]:
        """Return every roll under way, and those done whose old contract expires on or
        after `since` (their spread is the basis of alerts still quoting it), oldest first."""
        query = sql.SQL(
            "SELECT {} FROM rolls WHERE status <> 'done' OR old_expiry >= %s ORDER BY id"
        ).format(ROLL_COLUMNS)
        return await self._fetch(Roll, query, (since,))

    async def intents_for_signal(self, signal_id: int) -> list[OrderIntent]:
        query = sql.SQL("SELECT {} FROM order_intents WHERE signal_id = %s ORDER BY id").format(
            INTENT_COLUMNS)
        return await self._fetch(OrderIntent, query, (signal_id,))

    async def last_alert_prices(self, instruments: list[str]) -> dict[str, Decimal]:
        """The price of each instrument's newest alert (what a restart has forgotten)."""
        async def run() -> list[tuple[str, Any]]:
            async with self._pool.connection() as conn:
                cur = await conn.execute(LAST_ALERT_PRICES_SQL, (instruments,))
                rows: list[tuple[str, Any]] = await cur.fetchall()
                return rows

        prices = {}
        for instrument, text in await self._idempotent(run):
            try:
                price = Decimal(text) if text is not None else None
            except ArithmeticError:  # stored from an alert that was refused as invalid
                continue
            if price is not None and price.is_finite() and price > 0:
                prices[instrument] = price
        return prices

    async def trading_state(self) -> StateRecord:
        """The trading state as committed (for reports; decisions read it in their own
        transaction)."""
        rows = await self._fetch(StateRecord, sql.SQL(
            "SELECT {} FROM trading_state WHERE id = 1").format(columns(StateRecord)))
        return rows[0]

    async def running_flatten(self) -> Flatten | None:
        """The flatten under way, if any (a crash mid-flatten leaves it here to resume)."""
        rows = await self._fetch(Flatten, sql.SQL(
            "SELECT {} FROM flattens WHERE status = 'flattening'").format(columns(Flatten)))
        return rows[0] if rows else None

    async def latest_event(self, event: str) -> dict[str, Any] | None:
        """Return the details of the newest audit event of this kind."""
        details: dict[str, Any] | None = await self._scalar(LATEST_EVENT_SQL, {"e": event})
        return details

    async def own_activity(self, tradingsymbol: str) -> OwnActivity:
        """Return what the book knows of a contract at the venue: its intents' tags and
        order ids, and the venue trades it booked (fills and square-offs)."""
        async def run() -> list[tuple[str, str]]:
            async with self._pool.connection() as conn:
                cur = await conn.execute(OWN_ACTIVITY_SQL, {"symbol": tradingsymbol,
                                                            "event": SQUARE_OFF_EVENT})
                return [(str(kind), str(value)) for kind, value in await cur.fetchall()]

        rows = await self._idempotent(run)
        return OwnActivity(tags=frozenset(v for k, v in rows if k == "tag"),
                           order_ids=frozenset(v for k, v in rows if k == "order"),
                           booked_trade_ids=frozenset(v for k, v in rows if k == "trade"))

    async def signal(self, signal_id: int) -> SignalRecord | None:
        query = sql.SQL("SELECT {} FROM signal_log WHERE id = %s").format(SIGNAL_COLUMNS)
        rows = await self._fetch(SignalRecord, query, (signal_id,))
        return rows[0] if rows else None

    # -- read models for the HTTP API -----------------------------------------------------
    async def list_positions(self, status: str, limit: int) -> list[Layer]:
        """Return layers newest first: `open` (open and closing), `closed`, or `all`."""
        where = {"open": "status <> 'closed'", "closed": "status = 'closed'", "all": "true"}
        query = sql.SQL("SELECT {} FROM portfolio_positions WHERE {} ORDER BY id DESC LIMIT %s"
                        ).format(LAYER_COLUMNS, sql.SQL(where[status]))
        return await self._fetch(Layer, query, (limit,))

    async def list_signals(self, limit: int, instrument: str | None) -> list[SignalRecord]:
        query = sql.SQL(
            "SELECT {} FROM signal_log WHERE (%s::text IS NULL OR instrument = %s) "
            "ORDER BY id DESC LIMIT %s").format(SIGNAL_COLUMNS)
        return await self._fetch(SignalRecord, query, (instrument, instrument, limit))

    async def intent(self, intent_id: int) -> OrderIntent | None:
        query = sql.SQL("SELECT {} FROM order_intents WHERE id = %s").format(INTENT_COLUMNS)
        found = await self._fetch(OrderIntent, query, (intent_id,))
        return found[0] if found else None

    async def list_intents(self, limit: int) -> list[OrderIntent]:
        query = sql.SQL("SELECT {} FROM order_intents ORDER BY id DESC LIMIT %s").format(
            INTENT_COLUMNS)
        return await self._fetch(OrderIntent, query, (limit,))

    # -- status ---------------------------------------------------------------------------
    async def notify_inbox(self) -> None:
        """Wake the leader of a pair: a standby stored a signal for it (LISTEN pm_inbox)."""
        async with self._pool.connection(timeout=self._admit_timeout_s) as conn:
            await conn.execute("SELECT pg_notify('pm_inbox', '')")

    async def fence_epoch(self) -> int:
        """The highest epoch that led the book (a new term must start above it)."""
        return int(await self._scalar("SELECT epoch FROM leader_fence"))

    async def ping(self, timeout_s: float = 1.0) -> bool:
        """Return whether the database answers a trivial query within `timeout_s`.

        On a connection of its own, so that a pool busy with a burst of alerts is never
        mistaken for a database that is down.
        """
        try:
            async with asyncio.timeout(timeout_s):
                if self._probe is None or self._probe.closed:
                    self._probe = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True)
                await self._probe.execute("SELECT 1")
            return True
        except (psycopg.Error, TimeoutError, OSError):
            await self._drop_probe()
            return False

    async def _drop_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.close()

    async def status(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """Return connectivity, pool, schema, cache and book figures for `/db/status`."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self._pool.connection(timeout=timeout_s) as conn:
                    cur = await conn.execute(
                        """SELECT (SELECT count(*) FROM portfolio_positions
                                    WHERE status <> 'closed'),
                                  (SELECT closed_equity FROM portfolio_state WHERE id = 1),
                                  (SELECT migration_id FROM _yoyo_migration
                                    ORDER BY applied_at_utc DESC LIMIT 1)""")
                    open_positions, closed_equity, schema_version = await cur.fetchone() or (
                        0, None, None)
        except (*TRANSIENT_ERRORS, TimeoutError) as exc:
            return {"status": "error", "connection": "unhealthy",
                    "error": type(exc).__name__ + ": " + _first_line(exc)}
        return {
            "status": "connected",
            "connection": "healthy",
            "open_positions": open_positions,
            "closed_equity": None if closed_equity is None else money_text(closed_equity),
            "schema_version": schema_version,
            "pool": self._pool.get_stats(),
            "cache": self.cache.stats(),
        }




def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
