"""The SQL of `broker_stops`; each function runs on the caller's transaction's connection, so
a stop's change commits with whatever else its transition writes (an adopted exit intent)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql

from core.broker_stops import WORKING, StopLevels, StopRecord
from core.db_rows import assignments, columns, row_factory
from core.errors import VersionConflict
from core.models import Layer

_COLUMNS = columns(StopRecord)
_MUTABLE = frozenset({"status", "broker_ref", "trigger_price", "limit_price", "pending_trigger",
                      "pending_limit", "exit_intent_id", "reason"})
# Rows built by position, as every other record (a startup load reads the whole book's).
_ROWS = row_factory(StopRecord)
# The newest stop of each live layer, from the layer (its index on position and id), and the
# stops still working, from theirs: what a restart reads grows with the open book, not with
# the stops placed over its history. Of each layer's, the newest: for a live layer, its
# newest of all; for a closed one, its working stop.
LATEST_STOPS_SQL = sql.SQL(
    """SELECT {} FROM (
         SELECT DISTINCT ON (found.position_id) found.* FROM (
           SELECT s.* FROM portfolio_positions p
           CROSS JOIN LATERAL (SELECT * FROM broker_stops s WHERE s.position_id = p.id
                               ORDER BY s.id DESC LIMIT 1) s
           WHERE p.status <> 'closed'
           UNION ALL
           SELECT * FROM broker_stops WHERE status = ANY(%s)) found
         ORDER BY found.position_id, found.id DESC) latest ORDER BY id""").format(_COLUMNS)


async def insert_stop(conn: AsyncConnection[Any], layer: Layer, kind: str,
                      levels: StopLevels) -> StopRecord:
    """Write a placement about to be sent (status placing), tagged BS<id>."""
    async with conn.cursor(row_factory=_ROWS) as cur:
        await cur.execute(sql.SQL(
            """INSERT INTO broker_stops (id, tag, position_id, instrument, kind, tradingsymbol,
                 exchange, quantity, trigger_price, limit_price, status)
               SELECT n.id, 'BS' || n.id, %s, %s, %s, %s, %s, %s, %s, %s, 'placing'
               FROM (SELECT nextval('broker_stops_id_seq') AS id) n RETURNING {}"""
        ).format(_COLUMNS), (layer.id, layer.instrument, kind, layer.tradingsymbol,
                             layer.exchange, layer.quantity, levels.trigger, levels.limit))
        record: StopRecord | None = await cur.fetchone()
    assert record is not None
    return record


async def update_stop(conn: AsyncConnection[Any], record: StopRecord,
                      **changes: Any) -> StopRecord:
    """Change a stop whose version is still `record`'s; VersionConflict otherwise."""
    unknown = set(changes) - _MUTABLE
    if unknown:
        raise ValueError(f"broker_stops columns not updatable: {sorted(unknown)}")
    async with conn.cursor(row_factory=_ROWS) as cur:
        await cur.execute(sql.SQL(
            """UPDATE broker_stops SET {}, version = version + 1, updated_at = now()
               WHERE id = %(id)s AND version = %(version)s RETURNING {}"""
        ).format(assignments(tuple(changes)), _COLUMNS), {**changes, "id": record.id,
                                          "version": record.version})
        updated: StopRecord | None = await cur.fetchone()
    if updated is None:
        raise VersionConflict("broker_stops", record.id, record.version)
    return updated


async def latest_stops(conn: AsyncConnection[Any]) -> list[StopRecord]:
    """The newest stop of every live layer (what /positions shows and the keeper starts
    from), plus any stop still working whatever its layer (one to cancel)."""
    async with conn.cursor(row_factory=_ROWS) as cur:
        await cur.execute(LATEST_STOPS_SQL, ([s.value for s in WORKING],))
        return await cur.fetchall()


async def known_refs(conn: AsyncConnection[Any], tradingsymbol: str) -> frozenset[str]:
    """Every venue reference a stop on this contract ever had: none of them is a stranger."""
    cur = await conn.execute("SELECT broker_ref FROM broker_stops WHERE tradingsymbol = %s "
                             "AND broker_ref IS NOT NULL", (tradingsymbol,))
    return frozenset(str(ref) for (ref,) in await cur.fetchall())


async def age_s(conn: AsyncConnection[Any], stop_id: int) -> float:
    """Seconds since the stop's row last changed, by the database's clock (the one that
    wrote it, whichever process did)."""
    cur = await conn.execute("SELECT extract(epoch FROM now() - updated_at) FROM broker_stops "
                             "WHERE id = %s", (stop_id,))
    row = await cur.fetchone()
    return float(row[0]) if row else 0.0
