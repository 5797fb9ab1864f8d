"""One state transition: a unit of work's writes, and the cache changes it publishes on commit."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.types.json import Jsonb

from core.db_rows import assignments, columns, json_param, row_factory
from core.errors import (
    Fenced,
    InsufficientEquity,
    PortfolioNotSeeded,
    SignalAlreadyDecided,
    VersionConflict,
)
from core.intents import purpose_to_json
from core.models import (
    AdmissionRequest,
    Layer,
    LedgerEntry,
    LedgerType,
    NewIntent,
    NewLayer,
    OrderIntent,
    Outcome,
    PortfolioState,
    PyramidingState,
)
from core.rollover import NewRoll, Roll
from core.state_cache import StateCache
from core.trading_state import Flatten, StateChange, StateRecord

T = TypeVar("T")

LAYER_COLUMNS = columns(Layer)
INTENT_COLUMNS = columns(OrderIntent)
LEDGER_COLUMNS = columns(LedgerEntry)
PORTFOLIO_COLUMNS = columns(PortfolioState)
PYRAMIDING_COLUMNS = columns(PyramidingState)

# Columns a caller may change on an existing row; everything else is fixed at insert.
LAYER_MUTABLE = frozenset({
    "status", "lots", "quantity", "current_stop", "highest_close", "tradingsymbol",
    "exit_price", "exit_timestamp", "exit_reason", "realized_pnl",
    # a roll carries the layer into the next contract, its prices shifted by the spread
    "entry_price", "initial_stop", "exchange", "expiry",
})
STATE_COLUMNS = columns(StateRecord)
FLATTEN_COLUMNS = columns(Flatten)
ROLL_COLUMNS = columns(Roll)
ROLL_MUTABLE = frozenset({
    "status", "closed_quantity", "close_notional", "opened_quantity", "open_notional",
    "close_price", "open_price", "spread", "pnl", "exit_reason", "exit_position_ids",
    "closed_at", "completed_at",
})
INTENT_MUTABLE = frozenset({
    "status", "broker_order_id", "filled_quantity", "average_price", "reason",
    "tradingsymbol", "position_ids",
})

def jsonb(value: Any) -> Jsonb:
    # Decimals (money parsed at the edge) are kept as their exact text.
    return Jsonb(value, dumps=partial(json.dumps, default=str))


ADMIT_SQL = """SELECT o_signal_id, o_accepted, o_outcome
               FROM admit_signals(%s::jsonb, %s, %s, %s, %s)"""
# A signal decided `error` may still have an intent in flight (the failure came after it was
# committed); when that intent is resolved, what the broker did becomes the outcome.
DECIDE_SQL = """UPDATE signal_log SET status = 'processed', outcome = %(outcome)s,
                reason = %(reason)s, processed_at = %(now)s, processed_by = %(by)s
                WHERE id = %(id)s AND (status <> 'processed' OR outcome = 'error')
                RETURNING id, instrument"""
RECORD_DECISION_SQL = f"""WITH decided AS ({DECIDE_SQL})
    INSERT INTO execution_log (event, signal_id, instrument, details)
    SELECT 'signal_decided', id, instrument,
           jsonb_build_object('outcome', %(outcome)s::text, 'reason', %(reason)s::text)
    FROM decided RETURNING signal_id"""


def admit_params(requests: Sequence[AdmissionRequest], window_s: int,
                 processed_by: str | None, epoch: int | None,
                 decided_at: datetime | None) -> tuple[Any, ...]:
    """The batch as one JSON array (`json_param`): one parameter whatever its size."""
    batch = [{"f": r.signal.fingerprint, "t": r.signal.signal_type, "i": r.signal.instrument,
              "p": r.signal.position, "ts": r.signal.signal_timestamp.isoformat(),
              "pl": r.signal.payload, "r": r.signal.received_at.isoformat(),
              "rej": r.rejection, "o": r.outcome, "why": r.reason} for r in requests]
    return json_param(batch), window_s, processed_by, epoch, decided_at


def decision_params(signal_id: int, outcome: Outcome, reason: str | None, processed_by: str,
                    now: datetime) -> dict[str, Any]:
    return {"id": signal_id, "outcome": outcome, "reason": reason, "now": now,
            "by": processed_by}


class Transaction:
    """Writes of one unit of work. Cache changes wait in `_publish` until the commit succeeds."""

    def __init__(self, conn: AsyncConnection[Any], cache: StateCache, epoch: int | None = None):
        self.conn = conn
        self._cache = cache
        self._epoch = epoch
        self._publish: list[Callable[[], None]] = []
        self._drop: list[Callable[[], None]] = []
        self._expected: list[tuple[AsyncCursor[Any], Callable[[Any], object] | None,
                                   Callable[[], Exception]]] = []

    async def verify(self) -> None:
        """Check every deferred expectation (one pipeline sync), before COMMIT.

        A statement whose result is only a check — the version matched, the signal was still
        undecided — is not waited for when sent; all are read here, and a missing row raises
        inside the transaction, which then rolls back as if it had failed when sent.
        """
        expected, self._expected = self._expected, []
        for cursor, on_row, on_missing in expected:
            row = await cursor.fetchone()
            await cursor.close()
            if row is None:
                raise on_missing()
            if on_row is not None:
                on_row(row)

    async def _later(self, model: type | None, query: sql.Composed | str, params: Any,
                     on_missing: Callable[[], Exception],
                     on_row: Callable[[Any], object] | None = None) -> None:
        cursor = (self.conn.cursor(row_factory=row_factory(model)) if model is not None
                  else self.conn.cursor())
        await cursor.execute(query, params)
        self._expected.append((cursor, on_row, on_missing))

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

    async def _one(self, model: type[T], query: sql.Composed, params: Any) -> T | None:
        async with self.conn.cursor(row_factory=row_factory(model)) as cur:
            await cur.execute(query, params)
            row: T | None = await cur.fetchone()
            return row

    # -- layers ---------------------------------------------------------------------------
    async def insert_layer(self, new: NewLayer) -> Layer:
        """Insert an open layer; its stop and highest close start at entry."""
        query = sql.SQL(
            """INSERT INTO portfolio_positions
               (trade_id, instrument, layer, is_base_position, lots, quantity, entry_price,
                entry_timestamp, initial_stop, current_stop, highest_close, atr, limiter,
                tradingsymbol, signal_id, exchange, expiry)
               VALUES (%(trade_id)s, %(instrument)s, %(layer)s, %(layer)s = 'Long_1', %(lots)s,
                       %(quantity)s, %(entry_price)s, %(entry_timestamp)s, %(initial_stop)s,
                       %(initial_stop)s, %(entry_price)s, %(atr)s, %(limiter)s,
                       %(tradingsymbol)s, %(signal_id)s, %(exchange)s, %(expiry)s)
               RETURNING {}"""
        ).format(LAYER_COLUMNS)
        params = {f.name: getattr(new, f.name) for f in fields(NewLayer)}
        layer = await self._one(Layer, query, params)
        assert layer is not None  # an INSERT … RETURNING always returns its row
        return self._stage_layer(layer)

    async def update_layer(self, layer: Layer, **changes: Any) -> Layer:
        """Change a layer if it is still at `layer.version`, else raise VersionConflict."""
        row = await self._update("portfolio_positions", Layer, LAYER_COLUMNS, LAYER_MUTABLE,
                                 layer.id, layer.version, changes)
        if row is None:
            self._drop.append(lambda: self._cache.drop_layers(layer.instrument))
            raise VersionConflict("portfolio_positions", layer.id, layer.version)
        return self._stage_layer(row)

    async def update_layer_later(self, layer: Layer, **changes: Any) -> None:
        """Like update_layer, checked at commit: for writes whose result nothing else needs."""
        self._drop.append(lambda: self._cache.drop_layers(layer.instrument))
        query, params = self._update_query("portfolio_positions", LAYER_COLUMNS, LAYER_MUTABLE,
                                           layer.id, layer.version, changes)
        await self._later(Layer, query, params,
                          lambda: VersionConflict("portfolio_positions", layer.id, layer.version),
                          self._stage_layer)

    async def _update(self, table: str, model: type[T], returning: sql.Composable,
                      allowed: frozenset[str], row_id: int, version: int,
                      changes: dict[str, Any]) -> T | None:
        query, params = self._update_query(table, returning, allowed, row_id, version, changes)
        return await self._one(model, query, params)

    def _update_query(self, table: str, returning: sql.Composable, allowed: frozenset[str],
                      row_id: int, version: int,
                      changes: dict[str, Any]) -> tuple[sql.Composed, dict[str, Any]]:
        unknown = set(changes) - allowed
        if unknown or not changes:
            raise ValueError(f"{table}: cannot update {sorted(unknown) or 'nothing'}")
        query = sql.SQL(
            """UPDATE {} SET {}, version = version + 1, updated_at = now()
               WHERE id = %(_id)s AND version = %(_version)s RETURNING {}"""
        ).format(sql.Identifier(table), assignments(tuple(changes)), returning)
        return query, {**changes, "_id": row_id, "_version": version}

    async def insert_closed_part(self, layer: Layer, lots: int, quantity: int,
                                 **exit_fields: Any) -> int:
        """Record `lots` of a layer as closed in a row of their own (a partial exit)."""
        query = sql.SQL(
            """INSERT INTO portfolio_positions
               (trade_id, instrument, layer, is_base_position, status, lots, quantity,
                entry_price, entry_timestamp, initial_stop, current_stop, highest_close, atr,
                limiter, tradingsymbol, signal_id, exit_price, exit_timestamp, exit_reason,
                realized_pnl, exchange, expiry)
               SELECT trade_id, instrument, layer, is_base_position, 'closed', %(lots)s,
                      %(quantity)s, entry_price, entry_timestamp, initial_stop, current_stop,
                      highest_close, atr, limiter, tradingsymbol, signal_id, %(exit_price)s,
                      %(exit_timestamp)s, %(exit_reason)s, %(realized_pnl)s, exchange, expiry
               FROM portfolio_positions WHERE id = %(id)s RETURNING id""")
        cur = await self.conn.execute(query, {"id": layer.id, "lots": lots,
                                              "quantity": quantity, **exit_fields})
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    # -- rolls ----------------------------------------------------------------------------
    async def insert_roll(self, new: NewRoll) -> Roll:
        """Start a roll (status closing); one live roll per instrument, by unique index."""
        query = sql.SQL(
            """INSERT INTO rolls (instrument, old_tradingsymbol, old_exchange, old_expiry,
                 new_tradingsymbol, new_exchange, new_expiry, position_ids, lots, quantity,
                 new_quantity, quoted_spread, started_at)
               VALUES (%(instrument)s, %(old_tradingsymbol)s, %(old_exchange)s,
                 %(old_expiry)s, %(new_tradingsymbol)s, %(new_exchange)s, %(new_expiry)s,
                 %(position_ids)s, %(lots)s, %(quantity)s, %(new_quantity)s, %(quoted_spread)s,
                 %(started_at)s)
               RETURNING {}""").format(ROLL_COLUMNS)
        roll = await self._one(Roll, query, {f.name: getattr(new, f.name)
                                             for f in fields(NewRoll)})
        assert roll is not None
        return roll

    async def update_roll(self, roll: Roll, **changes: Any) -> Roll:
        """Move a roll on if it is still at `roll.version`, else raise VersionConflict."""
        row = await self._update("rolls", Roll, ROLL_COLUMNS, ROLL_MUTABLE, roll.id,
                                 roll.version, changes)
        if row is None:
            raise VersionConflict("rolls", roll.id, roll.version)
        return row

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
        # One statement: the balance moves and its ledger row is written together.
        query = sql.SQL(
            """WITH state AS (
                 UPDATE portfolio_state SET
                   closed_equity = closed_equity + %(d)s,
                   equity_high = GREATEST(closed_equity + %(d)s,
                                          equity_high + CASE WHEN %(flow)s THEN %(d)s ELSE 0 END),
                   version = version + 1, updated_at = now()
                 WHERE id = 1 AND (closed_equity + %(d)s >= 0 OR NOT %(flow)s)
                 RETURNING {portfolio}),
               entry AS (
                 INSERT INTO capital_transactions (txn_type, amount, equity_before,
                                                   equity_after, position_id, note)
                 SELECT %(type)s, %(amount)s, closed_equity - %(d)s, closed_equity,
                        %(position)s, %(note)s FROM state
                 RETURNING {ledger})
               SELECT state.*, entry.* FROM state, entry"""
        ).format(portfolio=PORTFOLIO_COLUMNS, ledger=LEDGER_COLUMNS)
        self._drop.append(self._cache.drop_portfolio)
        cur = await self.conn.execute(query, {"d": delta, "flow": flow, "type": txn_type.value,
                                              "amount": amount, "position": position_id,
                                              "note": note})
        row = await cur.fetchone()
        if row is None:
            exists = await (await self.conn.execute("SELECT 1 FROM portfolio_state")).fetchone()
            if exists is None:
                raise PortfolioNotSeeded("the ledger has no opening balance")
            raise InsufficientEquity(f"withdrawal of {amount} exceeds closed equity")
        split = len(fields(PortfolioState))
        state, entry = PortfolioState(*row[:split]), LedgerEntry(*row[split:])
        self._publish.append(lambda: self._cache.publish_portfolio(state))
        return entry

    # -- fencing --------------------------------------------------------------------------
    async def fence(self) -> None:
        """Check the book is still this epoch's, first of all the transaction's statements.

        A share lock, not an update: the leader's instruments commit side by side, while a
        successor's fence UPDATE (`live.fence_lease`) waits for every one of them to end,
        and every one begun after it finds the epoch gone and rolls back whole."""
        epoch = self._epoch
        assert epoch is not None
        await self._later(
            None, "SELECT epoch FROM leader_fence WHERE epoch = %s FOR SHARE", (epoch,),
            lambda: Fenced(epoch))

    # -- signal inbox ---------------------------------------------------------------------
    async def mark_signal_processing(self, signal_id: int) -> None:
        """Move a received signal to processing; any other state raises SignalAlreadyDecided."""
        await self._later(
            None, "UPDATE signal_log SET status = 'processing' "
                  "WHERE id = %s AND status = 'received' RETURNING id", (signal_id,),
            lambda: SignalAlreadyDecided(f"signal {signal_id} is no longer waiting"))

    async def record_decision(self, signal_id: int, outcome: Outcome, reason: str | None,
                              processed_by: str, now: datetime) -> None:
        """Record a no-order outcome and its audit row, checked at commit."""
        await self._later(
            None, RECORD_DECISION_SQL,
            decision_params(signal_id, outcome, reason, processed_by, now),
            lambda: SignalAlreadyDecided(f"signal {signal_id} already has an outcome"))

    async def decide_signal(self, signal_id: int, outcome: Outcome, reason: str | None,
                            processed_by: str, now: datetime) -> None:
        """Record the signal's one outcome; a second outcome raises SignalAlreadyDecided."""
        await self._later(
            None, DECIDE_SQL, decision_params(signal_id, outcome, reason, processed_by, now),
            lambda: SignalAlreadyDecided(f"signal {signal_id} already has an outcome"))

    # -- order intents and fills ----------------------------------------------------------
    async def insert_intent(self, new: NewIntent, tag_prefix: str = "PM") -> OrderIntent:
        """Insert a pending intent whose broker tag is derived from its id and, in a pair,
        its leader's epoch (PM12E3): the order at the broker says which term sent it."""
        query = sql.SQL(
            """INSERT INTO order_intents (id, tag, signal_id, instrument, tradingsymbol,
               position_ids, side, lots, quantity, order_type, price, fencing_epoch, purpose,
               exchange, expiry)
               SELECT n.id, %(prefix)s || n.id || CASE WHEN %(fencing_epoch)s::bigint > 0
                          THEN 'E' || %(fencing_epoch)s::bigint ELSE '' END,
                      %(signal_id)s, %(instrument)s, %(tradingsymbol)s,
                      %(position_ids)s, %(side)s, %(lots)s, %(quantity)s, %(order_type)s,
                      %(price)s, %(fencing_epoch)s, %(purpose)s, %(exchange)s, %(expiry)s
               FROM (SELECT nextval('order_intents_id_seq') AS id) n RETURNING {}"""
        ).format(INTENT_COLUMNS)
        params = {f.name: getattr(new, f.name) for f in fields(NewIntent)}
        if self._epoch is not None:  # a leader's intent carries its term
            params["fencing_epoch"] = self._epoch
        params["position_ids"] = list(new.position_ids)
        params["purpose"] = jsonb(purpose_to_json(new.purpose))
        intent = await self._one(OrderIntent, query, {**params, "prefix": tag_prefix})
        assert intent is not None  # an INSERT … RETURNING always returns its row
        return intent

    async def update_intent_later(self, intent: OrderIntent, **changes: Any) -> None:
        """Like update_intent, checked at commit."""
        query, params = self._update_query("order_intents", INTENT_COLUMNS, INTENT_MUTABLE,
                                           intent.id, intent.version, changes)
        await self._later(OrderIntent, query, params,
                          lambda: VersionConflict("order_intents", intent.id, intent.version))

    async def update_intent(self, intent: OrderIntent, **changes: Any) -> OrderIntent:
        row = await self._update("order_intents", OrderIntent, INTENT_COLUMNS, INTENT_MUTABLE,
                                 intent.id, intent.version, changes)
        if row is None:
            raise VersionConflict("order_intents", intent.id, intent.version)
        return row

    async def insert_fill(self, intent_id: int, broker_trade_id: str, quantity: int,
                          price: Decimal, filled_at: datetime) -> None:
        """Record a broker trade once (a repeat is ignored: the intent's version guards it)."""
        await self.conn.execute(
            """INSERT INTO fills (intent_id, broker_trade_id, quantity, price, filled_at)
               VALUES (%s, %s, %s, %s, %s) ON CONFLICT (broker_trade_id) DO NOTHING""",
            (intent_id, broker_trade_id, quantity, price, filled_at),
        )

    # -- trading state --------------------------------------------------------------------
    async def trading_state(self, *, for_entry: bool = False) -> StateRecord:
        """Read the trading state and hold it until commit: a change waits for this
        transaction (and this one sees a change committed before it). An entry takes the
        row exclusively, as it also counts against the day's entry cap."""
        lock = sql.SQL("FOR UPDATE" if for_entry else "FOR SHARE")
        row = await self._one(StateRecord, sql.SQL(
            "SELECT {} FROM trading_state WHERE id = 1 {}").format(STATE_COLUMNS, lock), None)
        assert row is not None  # the migration inserts the one row
        return row

    async def count_entry(self, day: date) -> StateRecord:
        """Count an entry sent in trading day `day` (the count restarts each day); return
        the state as it was before it, held until commit. Every entry of the book waits for
        this row: take it last in the transaction, so it is held only through the commit."""
        row = await self._one(StateRecord, sql.SQL(
            """WITH old AS (SELECT {} FROM trading_state WHERE id = 1 FOR UPDATE)
               UPDATE trading_state t SET entries_day = %(d)s,
                      entries_count = CASE WHEN t.entries_day = %(d)s
                                      THEN t.entries_count + 1 ELSE 1 END
               FROM old WHERE t.id = 1 RETURNING old.*""").format(STATE_COLUMNS), {"d": day})
        assert row is not None  # the migration inserts the one row
        return row

    async def change_trading_state(self, change: StateChange, at: datetime) -> StateRecord:
        """Write a state change (a resume also clears a latched breach); return the row."""
        row = await self._one(StateRecord, sql.SQL(
            """UPDATE trading_state SET state = %(state)s, reason = %(reason)s,
               actor = %(actor)s, since = %(at)s, version = version + 1,
               resumed_breach_day = CASE WHEN %(clear)s THEN breach_day
                                         ELSE resumed_breach_day END,
               breach_day = CASE WHEN %(clear)s THEN NULL ELSE breach_day END,
               breach_pnl = CASE WHEN %(clear)s THEN NULL ELSE breach_pnl END,
               breach_at = CASE WHEN %(clear)s THEN NULL ELSE breach_at END
               WHERE id = 1 RETURNING {}""").format(STATE_COLUMNS),
            {"state": change.state, "reason": change.reason, "actor": change.actor, "at": at,
             "clear": change.clears_breach})
        assert row is not None
        return row

    async def latch_breach(self, day: date, pnl: Decimal, at: datetime) -> StateRecord | None:
        """Latch a daily-loss breach unless one is latched already, or an operator resumed
        from one this day; None if so."""
        return await self._one(StateRecord, sql.SQL(
            """UPDATE trading_state SET breach_day = %(d)s, breach_pnl = %(p)s,
               breach_at = %(at)s, version = version + 1
               WHERE id = 1 AND breach_day IS NULL
                 AND resumed_breach_day IS DISTINCT FROM %(d)s
               RETURNING {}""").format(STATE_COLUMNS), {"d": day, "p": pnl, "at": at})

    # -- flatten --------------------------------------------------------------------------
    async def start_flatten(self, reason: str, actor: str, at: datetime) -> Flatten | None:
        """Record a new flatten; None if one is under way (the caller joins it)."""
        return await self._one(Flatten, sql.SQL(
            """INSERT INTO flattens (reason, actor, requested_at) VALUES (%s, %s, %s)
               ON CONFLICT DO NOTHING RETURNING {}""").format(FLATTEN_COLUMNS),
            (reason, actor, at))

    async def finish_flatten(self, flatten_id: int, layers_closed: int, orders_cancelled: int,
                             at: datetime) -> Flatten | None:
        return await self._one(Flatten, sql.SQL(
            """UPDATE flattens SET status = 'flat', finished_at = %s, layers_closed = %s,
               orders_cancelled = %s WHERE id = %s AND status = 'flattening'
               RETURNING {}""").format(FLATTEN_COLUMNS),
            (at, layers_closed, orders_cancelled, flatten_id))

    # -- instances ------------------------------------------------------------------------
    async def store_configuration(self, sha256: str, body: dict[str, Any]) -> bool:
        """Store a configuration under its hash unless it is stored; return whether it was
        new (the first start under it)."""
        # Looked up first: a restart under a stored one (nearly every start) sends no body,
        # which the server would parse only to find the hash taken.
        found = await self.conn.execute("SELECT 1 FROM configurations WHERE sha256 = %s",
                                        (sha256,))
        if await found.fetchone() is not None:
            return False
        cursor = await self.conn.execute(
            """INSERT INTO configurations (sha256, body) VALUES (%s, %s)
               ON CONFLICT (sha256) DO NOTHING""", (sha256, jsonb(body)))
        return cursor.rowcount == 1

    async def register_instance(self, instance_id: str, hostname: str, port: int, role: str,
                                version: str, config_sha256: str) -> None:
        """Record this instance and the configuration it decides under (a stored one): every
        signal it decides from now on is stamped with that hash."""
        await self.conn.execute(
            """INSERT INTO instance_metadata (instance_id, hostname, port, role, version,
               config_sha256) VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (instance_id) DO UPDATE SET hostname = EXCLUDED.hostname,
               port = EXCLUDED.port, role = EXCLUDED.role, version = EXCLUDED.version,
               config_sha256 = EXCLUDED.config_sha256,
               started_at = now(), last_heartbeat = now()""",
            (instance_id, hostname, port, role, version, config_sha256),
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
