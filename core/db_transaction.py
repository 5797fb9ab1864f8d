"""One state transition: a unit of work's writes, and the cache changes it publishes on commit."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from core.errors import (
    InsufficientEquity,
    PortfolioNotSeeded,
    SignalAlreadyDecided,
    VersionConflict,
)
from core.models import (
    TRADE_SIGNAL_TYPES,
    Layer,
    LedgerEntry,
    LedgerType,
    NewIntent,
    NewLayer,
    NewSignal,
    OrderIntent,
    PortfolioState,
    PyramidingState,
    SignalAdmission,
)
from core.state_cache import StateCache


def columns(model: type) -> sql.Composed:
    """Return the column list that maps a table's rows onto `model`."""
    return sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(model))


LAYER_COLUMNS = columns(Layer)
INTENT_COLUMNS = columns(OrderIntent)
LEDGER_COLUMNS = columns(LedgerEntry)
PORTFOLIO_COLUMNS = columns(PortfolioState)
PYRAMIDING_COLUMNS = columns(PyramidingState)

# Columns a caller may change on an existing row; everything else is fixed at insert.
LAYER_MUTABLE = frozenset({
    "status", "lots", "quantity", "current_stop", "highest_close", "tradingsymbol",
    "exit_price", "exit_timestamp", "exit_reason", "realized_pnl",
})
INTENT_MUTABLE = frozenset({
    "status", "broker_order_id", "filled_quantity", "average_price", "reason",
    "tradingsymbol", "position_ids",
})

def jsonb(value: Any) -> Jsonb:
    # Decimals (money parsed at the edge) are kept as their exact text.
    return Jsonb(value, dumps=partial(json.dumps, default=str))


# Namespace of transaction-level advisory locks that serialise the dedup window per instrument.
SIGNAL_LOCK_NAMESPACE = 7301


class Transaction:
    """Writes of one unit of work. Cache changes wait in `_publish` until the commit succeeds."""

    def __init__(self, conn: AsyncConnection[Any], cache: StateCache):
        self.conn = conn
        self._cache = cache
        self._publish: list[Callable[[], None]] = []
        self._drop: list[Callable[[], None]] = []

    def published(self) -> None:
        """Apply the staged cache changes (called only after COMMIT)."""
        for apply in self._publish:
            apply()

    def discarded(self) -> None:
        """Forget every cache entry this transaction touched (called after a failure)."""
        for drop in self._drop:
            drop()

    def _stage_layer(self, layer: Layer) -> Layer:
        self._publish.append(lambda: self._cache.publish_layer(layer))
        self._drop.append(lambda: self._cache.drop_layers(layer.instrument))
        return layer

    async def _one(self, model: type, query: sql.Composable, params: Any) -> Any:
        async with self.conn.cursor(row_factory=class_row(model)) as cur:
            await cur.execute(query, params)
            return await cur.fetchone()

    # -- layers ---------------------------------------------------------------------------
    async def insert_layer(self, new: NewLayer) -> Layer:
        """Insert an open layer; its stop and highest close start at entry."""
        query = sql.SQL(
            """INSERT INTO portfolio_positions
               (trade_id, instrument, layer, is_base_position, lots, quantity, entry_price,
                entry_timestamp, initial_stop, current_stop, highest_close, atr, limiter,
                tradingsymbol, signal_id)
               VALUES (%(trade_id)s, %(instrument)s, %(layer)s, %(layer)s = 'Long_1', %(lots)s,
                       %(quantity)s, %(entry_price)s, %(entry_timestamp)s, %(initial_stop)s,
                       %(initial_stop)s, %(entry_price)s, %(atr)s, %(limiter)s,
                       %(tradingsymbol)s, %(signal_id)s)
               RETURNING {}"""
        ).format(LAYER_COLUMNS)
        params = {f.name: getattr(new, f.name) for f in fields(NewLayer)}
        return self._stage_layer(await self._one(Layer, query, params))

    async def update_layer(self, layer: Layer, **changes: Any) -> Layer:
        """Change a layer if it is still at `layer.version`, else raise VersionConflict."""
        row = await self._update("portfolio_positions", Layer, LAYER_COLUMNS, LAYER_MUTABLE,
                                 layer.id, layer.version, changes)
        if row is None:
            self._drop.append(lambda: self._cache.drop_layers(layer.instrument))
            raise VersionConflict("portfolio_positions", layer.id, layer.version)
        return self._stage_layer(row)

    async def _update(self, table: str, model: type, returning: sql.Composed,
                      allowed: frozenset[str], row_id: int, version: int,
                      changes: dict[str, Any]) -> Any:
        unknown = set(changes) - allowed
        if unknown or not changes:
            raise ValueError(f"{table}: cannot update {sorted(unknown) or 'nothing'}")
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
            for name in changes
        )
        query = sql.SQL(
            """UPDATE {} SET {}, version = version + 1, updated_at = now()
               WHERE id = %(_id)s AND version = %(_version)s RETURNING {}"""
        ).format(sql.Identifier(table), assignments, returning)
        return await self._one(model, query, {**changes, "_id": row_id, "_version": version})

    async def next_trade_id(self) -> int:
        cur = await self.conn.execute("SELECT nextval('trade_id_seq')")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    # -- pyramiding state -----------------------------------------------------------------
    async def save_pyramiding(self, state: PyramidingState) -> PyramidingState:
        """Insert (version 0) or update (version N) an instrument's pyramiding state."""
        if state.version == 0:
            query = sql.SQL(
                """INSERT INTO pyramiding_state
                   (instrument, trade_id, base_position_id, last_pyramid_price, pyramid_count)
                   VALUES (%(instrument)s, %(trade_id)s, %(base_position_id)s,
                           %(last_pyramid_price)s, %(pyramid_count)s)
                   ON CONFLICT (instrument) DO NOTHING RETURNING {}"""
            ).format(PYRAMIDING_COLUMNS)
        else:
            query = sql.SQL(
                """UPDATE pyramiding_state SET trade_id = %(trade_id)s,
                   base_position_id = %(base_position_id)s,
                   last_pyramid_price = %(last_pyramid_price)s,
                   pyramid_count = %(pyramid_count)s, version = version + 1, updated_at = now()
                   WHERE instrument = %(instrument)s AND version = %(version)s RETURNING {}"""
            ).format(PYRAMIDING_COLUMNS)
        params = {f.name: getattr(state, f.name) for f in fields(PyramidingState)}
        saved = await self._one(PyramidingState, query, params)
        self._drop.append(lambda: self._cache.drop_pyramiding(state.instrument))
        if saved is None:
            raise VersionConflict("pyramiding_state", state.instrument, state.version)
        self._publish.append(lambda: self._cache.publish_pyramiding(state.instrument, saved))
        return saved

    async def delete_pyramiding(self, instrument: str) -> None:
        await self.conn.execute("DELETE FROM pyramiding_state WHERE instrument = %s", (instrument,))
        self._drop.append(lambda: self._cache.drop_pyramiding(instrument))
        self._publish.append(lambda: self._cache.publish_pyramiding(instrument, None))

    # -- capital ledger -------------------------------------------------------------------
    async def seed_portfolio(self, capital: Decimal) -> bool:
        """Open the ledger with `capital` if it has no opening balance; return whether it did."""
        query = sql.SQL(
            """INSERT INTO portfolio_state (id, initial_capital, closed_equity, equity_high)
               VALUES (1, %(c)s, %(c)s, %(c)s) ON CONFLICT (id) DO NOTHING RETURNING {}"""
        ).format(PORTFOLIO_COLUMNS)
        state = await self._one(PortfolioState, query, {"c": capital})
        if state is None:
            return False
        if capital > 0:
            await self.conn.execute(
                """INSERT INTO capital_transactions (txn_type, amount, equity_before, equity_after,
                   note) VALUES ('DEPOSIT', %s, 0, %s, 'opening balance')""",
                (capital, capital),
            )
        self._drop.append(self._cache.drop_portfolio)
        self._publish.append(lambda: self._cache.publish_portfolio(state))
        return True

    async def append_ledger(self, txn_type: LedgerType, amount: Decimal, *,
                            position_id: int | None = None, note: str | None = None) -> LedgerEntry:
        """Append a ledger row and move closed equity and its high-water mark with it.

        Deposits and withdrawals shift the high-water mark by the same amount, so sizing on
        `equity_high` follows the capital actually in the account; trading P&L only raises it.
        """
        txn_type = LedgerType(txn_type)
        if txn_type is not LedgerType.TRADING_PNL and amount <= 0:
            raise ValueError(f"{txn_type} amount must be positive, got {amount}")
        delta = -amount if txn_type is LedgerType.WITHDRAW else amount
        flow = txn_type is not LedgerType.TRADING_PNL
        query = sql.SQL(
            """UPDATE portfolio_state SET
                 closed_equity = closed_equity + %(d)s,
                 equity_high = GREATEST(closed_equity + %(d)s,
                                        equity_high + CASE WHEN %(flow)s THEN %(d)s ELSE 0 END),
                 version = version + 1, updated_at = now()
               WHERE id = 1 AND (closed_equity + %(d)s >= 0 OR NOT %(flow)s)
               RETURNING {}"""
        ).format(PORTFOLIO_COLUMNS)
        state = await self._one(PortfolioState, query, {"d": delta, "flow": flow})
        self._drop.append(self._cache.drop_portfolio)
        if state is None:
            exists = await (await self.conn.execute("SELECT 1 FROM portfolio_state")).fetchone()
            if exists is None:
                raise PortfolioNotSeeded("the ledger has no opening balance")
            raise InsufficientEquity(f"withdrawal of {amount} exceeds closed equity")
        entry = await self._one(LedgerEntry, sql.SQL(
            """INSERT INTO capital_transactions (txn_type, amount, equity_before, equity_after,
               position_id, note) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {}"""
        ).format(LEDGER_COLUMNS), (txn_type.value, amount, state.closed_equity - delta,
                                   state.closed_equity, position_id, note))
        self._publish.append(lambda: self._cache.publish_portfolio(state))
        return entry

    # -- signal inbox ---------------------------------------------------------------------
    async def admit_signal(self, signal: NewSignal, window_s: int) -> SignalAdmission:
        """Store a signal unless it repeats one already stored (DOMAIN.md §3, both rules)."""
        if signal.signal_type in TRADE_SIGNAL_TYPES:
            # Serialise the window check per instrument: two near-identical signals arriving
            # together must not both see "no earlier signal".
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                                    (SIGNAL_LOCK_NAMESPACE, signal.instrument))
            window = timedelta(seconds=window_s)
            cur = await self.conn.execute(
                """SELECT id FROM signal_log WHERE instrument = %s AND signal_type = %s
                   AND position IS NOT DISTINCT FROM %s
                   AND signal_timestamp BETWEEN %s AND %s ORDER BY id LIMIT 1""",
                (signal.instrument, signal.signal_type, signal.position,
                 signal.signal_timestamp - window, signal.signal_timestamp + window),
            )
            earlier = await cur.fetchone()
            if earlier is not None:
                return SignalAdmission(signal_id=int(earlier[0]), accepted=False)
        cur = await self.conn.execute(
            """INSERT INTO signal_log (fingerprint, signal_type, instrument, position,
               signal_timestamp, payload, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (fingerprint) DO NOTHING RETURNING id""",
            (signal.fingerprint, signal.signal_type, signal.instrument, signal.position,
             signal.signal_timestamp, jsonb(signal.payload), signal.received_at),
        )
        inserted = await cur.fetchone()
        if inserted is not None:
            return SignalAdmission(signal_id=int(inserted[0]), accepted=True)
        cur = await self.conn.execute("SELECT id FROM signal_log WHERE fingerprint = %s",
                                      (signal.fingerprint,))
        existing = await cur.fetchone()
        assert existing is not None
        return SignalAdmission(signal_id=int(existing[0]), accepted=False)

    async def mark_signal_processing(self, signal_id: int) -> None:
        """Move a received signal to processing; any other state raises SignalAlreadyDecided."""
        cur = await self.conn.execute(
            "UPDATE signal_log SET status = 'processing' WHERE id = %s AND status = 'received'",
            (signal_id,),
        )
        if cur.rowcount != 1:
            raise SignalAlreadyDecided(f"signal {signal_id} is no longer waiting for a decision")

    async def decide_signal(self, signal_id: int, outcome: str, reason: str | None,
                            processed_by: str, now: datetime) -> None:
        """Record the signal's one outcome; a second outcome raises SignalAlreadyDecided."""
        cur = await self.conn.execute(
            """UPDATE signal_log SET status = 'processed', outcome = %s, reason = %s,
               processed_at = %s, processed_by = %s WHERE id = %s AND status <> 'processed'""",
            (outcome, reason, now, processed_by, signal_id),
        )
        if cur.rowcount != 1:
            raise SignalAlreadyDecided(f"signal {signal_id} already has an outcome")

    # -- order intents and fills ----------------------------------------------------------
    async def insert_intent(self, new: NewIntent, tag_prefix: str = "PM") -> OrderIntent:
        """Insert a pending intent whose broker tag is derived from its id."""
        query = sql.SQL(
            """INSERT INTO order_intents (id, tag, signal_id, instrument, tradingsymbol,
               position_ids, side, lots, quantity, order_type, price, fencing_epoch, purpose)
               SELECT n.id, %(prefix)s || n.id, %(signal_id)s, %(instrument)s, %(tradingsymbol)s,
                      %(position_ids)s, %(side)s, %(lots)s, %(quantity)s, %(order_type)s,
                      %(price)s, %(fencing_epoch)s, %(purpose)s
               FROM (SELECT nextval('order_intents_id_seq') AS id) n RETURNING {}"""
        ).format(INTENT_COLUMNS)
        params = {f.name: getattr(new, f.name) for f in fields(NewIntent)}
        params["position_ids"] = list(new.position_ids)
        params["purpose"] = jsonb(new.purpose)
        return await self._one(OrderIntent, query, {**params, "prefix": tag_prefix})

    async def update_intent(self, intent: OrderIntent, **changes: Any) -> OrderIntent:
        row = await self._update("order_intents", OrderIntent, INTENT_COLUMNS, INTENT_MUTABLE,
                                 intent.id, intent.version, changes)
        if row is None:
            raise VersionConflict("order_intents", intent.id, intent.version)
        return row

    async def insert_fill(self, intent_id: int, broker_trade_id: str, quantity: int,
                          price: Decimal, filled_at: datetime) -> bool:
        """Record a broker trade once; return False when it was already recorded."""
        cur = await self.conn.execute(
            """INSERT INTO fills (intent_id, broker_trade_id, quantity, price, filled_at)
               VALUES (%s, %s, %s, %s, %s) ON CONFLICT (broker_trade_id) DO NOTHING""",
            (intent_id, broker_trade_id, quantity, price, filled_at),
        )
        return cur.rowcount == 1

    # -- instances ------------------------------------------------------------------------
    async def register_instance(self, instance_id: str, hostname: str, port: int, role: str,
                                version: str) -> None:
        await self.conn.execute(
            """INSERT INTO instance_metadata (instance_id, hostname, port, role, version)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (instance_id) DO UPDATE SET hostname = EXCLUDED.hostname,
               port = EXCLUDED.port, role = EXCLUDED.role, version = EXCLUDED.version,
               started_at = now(), last_heartbeat = now()""",
            (instance_id, hostname, port, role, version),
        )

    # -- audit ----------------------------------------------------------------------------
    async def log_event(self, event: str, *, signal_id: int | None = None,
                        intent_id: int | None = None, position_id: int | None = None,
                        instrument: str | None = None, **details: Any) -> None:
        await self.conn.execute(
            """INSERT INTO execution_log (event, signal_id, intent_id, position_id, instrument,
               details) VALUES (%s, %s, %s, %s, %s, %s)""",
            (event, signal_id, intent_id, position_id, instrument, jsonb(details)),
        )
