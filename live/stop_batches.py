"""Broker stops many at a time: the SQL that writes a round's rows in one statement, and the
venue calls that place and read a round's stops in one request.

A startup round covers the whole book (thousands of layers): one transaction and one venue
call per stop would cost a commit and a round trip each. The rows keep the order the keeper
follows one stop at a time: every placement is committed `placing` before the venue is
asked, and what the venue answered is committed after. A round's rows go to the database as
one JSON parameter (`json_param`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, Protocol, runtime_checkable

from psycopg import AsyncConnection, sql

from core.broker_stops import StopLevels, StopRecord, StopStatus
from core.db_rows import columns, json_param, row_factory
from core.errors import VersionConflict
from core.models import Layer
from live.brokers.base import StopOrder, VenueStop

_COLUMNS = columns(StopRecord)
# Qualified: the UPDATE's FROM list has columns of the same names.
_S_COLUMNS = sql.SQL(", ").join(sql.Identifier("s", f.name) for f in fields(StopRecord))


@runtime_checkable
class BatchStopVenue(Protocol):
    """A venue that places and reads many stops per request (the paper venue)."""

    async def place_stops(self, stops: Sequence[StopOrder]) -> list[str]:
        """Rest every stop, all or none; return their references in order."""
        ...

    async def stop_states(self, refs: Sequence[str]) -> dict[str, VenueStop]:
        """What the venue says of each stop it knows, by reference."""
        ...

    async def find_stops(self, stops: Sequence[StopOrder],
                         known: frozenset[str]) -> dict[str, VenueStop]:
        """`find_stop` for each stop, by tag; a stop not found is left out."""
        ...


@runtime_checkable
class StopBookVenue(Protocol):
    """A venue that reads every stop of one kind in one request (Zerodha: its order book
    holds the day's SL orders, its GTT list every GTT), where one read per stop would spend
    its ten reads a second."""

    async def stop_states_of(self, kind: str, refs: Sequence[str]) -> dict[str, VenueStop]:
        """What the venue says of each of these stops of `kind`, by reference (one it does
        not list is left out)."""
        ...


async def insert_stops(conn: AsyncConnection[Any],
                       wanted: Sequence[tuple[Layer, str, StopLevels]]) -> list[StopRecord]:
    """Write placements about to be sent (status placing, tagged BS<id>), in `wanted`'s
    order."""
    layers = [layer for layer, _, _ in wanted]
    rows = [{"position_id": x.id, "instrument": x.instrument, "kind": kind,
             "tradingsymbol": x.tradingsymbol, "exchange": x.exchange, "quantity": x.quantity,
             "trigger_price": levels.trigger, "limit_price": levels.limit}
            for x, kind, levels in wanted]
    async with conn.cursor(row_factory=row_factory(StopRecord)) as cur:
        await cur.execute(sql.SQL(
            """WITH n AS (
                 SELECT nextval('broker_stops_id_seq') AS id, w.*
                 FROM json_to_recordset(%s::json)
                      AS w(position_id bigint, instrument text, kind text, tradingsymbol text,
                           exchange text, quantity int, trigger_price numeric,
                           limit_price numeric))
               INSERT INTO broker_stops (id, tag, position_id, instrument, kind, tradingsymbol,
                 exchange, quantity, trigger_price, limit_price, status)
               SELECT id, 'BS' || id, position_id, instrument, kind, tradingsymbol, exchange,
                      quantity, trigger_price, limit_price, 'placing' FROM n
               RETURNING {}""").format(_COLUMNS), (json_param(rows),))
        inserted: list[StopRecord] = await cur.fetchall()
    by_layer = {record.position_id: record for record in inserted}
    return [by_layer[layer.id] for layer in layers]


Settled = tuple[StopRecord, StopStatus, str | None, str | None]  # record, status, ref, reason


async def settle_stops(conn: AsyncConnection[Any], changes: Sequence[Settled]
                       ) -> list[StopRecord]:
    """Record each stop's new status — with its venue reference and why, where given (the
    others keep theirs) — if its version is still the record's; VersionConflict otherwise.
    Return the rows as written, in `changes`' order."""
    rows = [{"id": record.id, "version": record.version, "status": status.value,
             "broker_ref": ref, "reason": reason} for record, status, ref, reason in changes]
    async with conn.cursor(row_factory=row_factory(StopRecord)) as cur:
        await cur.execute(sql.SQL(
            """UPDATE broker_stops s SET status = c.status,
                      broker_ref = coalesce(c.broker_ref, s.broker_ref),
                      reason = coalesce(c.reason, s.reason),
                      version = s.version + 1, updated_at = now()
               FROM json_to_recordset(%s::json)
                    AS c(id bigint, version int, status text, broker_ref text, reason text)
               WHERE s.id = c.id AND s.version = c.version RETURNING {}"""
        ).format(_S_COLUMNS), (json_param(rows),))
        updated = {record.id: record for record in await cur.fetchall()}
    for record, _, _, _ in changes:
        if record.id not in updated:
            raise VersionConflict("broker_stops", record.id, record.version)
    return [updated[record.id] for record, _, _, _ in changes]


async def known_refs_of(conn: AsyncConnection[Any], symbols: Sequence[str]) -> frozenset[str]:
    """Every venue reference a stop on these contracts ever had."""
    cur = await conn.execute("SELECT broker_ref FROM broker_stops WHERE tradingsymbol = ANY(%s) "
                             "AND broker_ref IS NOT NULL", (list(symbols),))
    return frozenset(str(ref) for (ref,) in await cur.fetchall())


async def ages_s(conn: AsyncConnection[Any], stop_ids: Sequence[int]) -> dict[int, float]:
    """Seconds since each stop's row last changed, by the database's clock."""
    cur = await conn.execute("SELECT id, extract(epoch FROM now() - updated_at) "
                             "FROM broker_stops WHERE id = ANY(%s)", (list(stop_ids),))
    return {int(stop_id): float(age) for stop_id, age in await cur.fetchall()}

