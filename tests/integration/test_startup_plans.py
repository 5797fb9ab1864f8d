"""The startup reads cost what the open book costs, not what the history holds: on a long
log, each is answered from an index that goes straight to its rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest

from core.broker_stops import WORKING
from core.db_state_manager import LAST_ALERT_PRICES_SQL, LATEST_EVENT_SQL
from live.broker_stop_store import LATEST_STOPS_SQL, latest_stops

# An instrument that alerted only at the start of a long history: without an index on
# (instrument, id) its newest alert is found by reading the whole log backwards.
HISTORY = """
    INSERT INTO signal_log (fingerprint, signal_type, instrument, signal_timestamp, payload,
                            received_at, status, outcome, processed_at)
    SELECT md5(n::text) || md5(n::text), 'MARKET_DATA',
           CASE WHEN n <= 10 THEN 'QUIET' ELSE 'BUSY_' || (n % 50) END, now(),
           jsonb_build_object('price', n), now(), 'processed', 'ignored', now()
    FROM generate_series(1, 20000) AS n;
    INSERT INTO execution_log (event, details)
    SELECT 'signal_decided', '{}' FROM generate_series(1, 20000);
    ANALYZE signal_log; ANALYZE execution_log"""


def plan(postgresql, query: str, params: object) -> str:
    row = postgresql.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()
    return json.dumps(row[0])


@pytest.fixture
def history(postgresql):
    postgresql.execute(HISTORY)
    return postgresql


def test_the_last_alert_of_each_instrument_is_read_from_its_index(history):
    found = plan(history, LAST_ALERT_PRICES_SQL, (["QUIET", "BUSY_1"],))
    assert "signal_log_instrument_latest_idx" in found


def test_the_newest_audit_event_of_a_kind_is_read_from_its_index(history):
    # An accepted reconciliation: usually none.
    found = plan(history, LATEST_EVENT_SQL, {"e": "reconciliation_accepted"})
    assert "execution_log_event_idx" in found


# A year of stops: closed layers, each with the stops its history placed (a DAY order is placed
# again every session), and the live layers a restart must find the newest stop of.
STOP_HISTORY = """
    INSERT INTO portfolio_positions (trade_id, instrument, layer, is_base_position, lots,
        quantity, entry_price, entry_timestamp, initial_stop, current_stop, highest_close, atr,
        limiter, tradingsymbol, status, exit_price, exit_timestamp, realized_pnl)
    SELECT n, 'OLD_' || n, 'Long_1', true, 1, 1, 100, now(), 90, 90, 100, 5, 'risk',
           'OLD_' || n, 'closed', 95, now(), -5
    FROM generate_series(1, 4000) AS n;
    INSERT INTO broker_stops (tag, position_id, instrument, kind, tradingsymbol, quantity,
        trigger_price, limit_price, status, broker_ref)
    SELECT 'H' || p.id || 'N' || k, p.id, p.instrument, 'sl', p.tradingsymbol, 1, 90, 89,
           'lapsed', 'X' || k
    FROM portfolio_positions p, generate_series(1, 5) AS k;
    ANALYZE portfolio_positions; ANALYZE broker_stops"""


def layer(conn, instrument: str, closed: bool = False) -> int:
    row = conn.execute(
        """INSERT INTO portfolio_positions (trade_id, instrument, layer, is_base_position, lots,
               quantity, entry_price, entry_timestamp, initial_stop, current_stop,
               highest_close, atr, limiter, tradingsymbol, status, exit_price, exit_timestamp,
               realized_pnl)
           VALUES (1, %(i)s, 'Long_1', true, 1, 1, 100, now(), 90, 90, 100, 5, 'risk', %(i)s,
                   %(s)s, %(p)s, %(t)s, %(pnl)s) RETURNING id""",
        {"i": instrument, "s": "closed" if closed else "open", "p": 95 if closed else None,
         "t": datetime.now(UTC) if closed else None, "pnl": -5 if closed else None}).fetchone()
    return int(row[0])


def stop(conn, position_id: int, status: str) -> int:
    row = conn.execute(
        """INSERT INTO broker_stops (tag, position_id, instrument, kind, tradingsymbol,
               quantity, trigger_price, limit_price, status, broker_ref)
           SELECT 'T' || nextval('broker_stops_id_seq'), id, instrument, 'gtt', tradingsymbol,
                  1, 90, 89, %s, 'REF' FROM portfolio_positions WHERE id = %s
           RETURNING id""", (status, position_id)).fetchone()
    return int(row[0])


async def test_a_restart_finds_each_layers_newest_broker_stop_from_the_layer(postgresql):
    conn = postgresql
    conn.execute(STOP_HISTORY)
    live = layer(conn, "LIVE")
    for status in ("lapsed", "cancelled"):
        stop(conn, live, status)
    newest = stop(conn, live, "active")
    refused = layer(conn, "REFUSED")  # its newest stop works no more: still the one shown
    stop(conn, refused, "cancelled")
    last_refused = stop(conn, refused, "rejected")
    orphan = layer(conn, "ORPHAN", closed=True)  # closed with its stop still working
    stop(conn, orphan, "cancelled")
    working = stop(conn, orphan, "active")
    gone = layer(conn, "GONE", closed=True)
    stop(conn, gone, "cancelled")
    async with await psycopg.AsyncConnection.connect(conn.info.dsn) as reader:
        found = await latest_stops(reader)
    assert [(r.position_id, r.id) for r in found] == sorted(
        [(live, newest), (refused, last_refused), (orphan, working)], key=lambda x: x[1])
    # Read from the layers' index, never by a scan of every stop ever placed.
    read = scans(json.loads(plan(conn, LATEST_STOPS_SQL.as_string(conn),
                                 ([s.value for s in WORKING],))))
    assert ("Index Scan", "broker_stops_position_idx") in read
    assert not [scan for scan in read if scan[0] == "Seq Scan"]


def scans(node: object) -> list[tuple[str, str | None]]:
    """Every scan of a JSON plan: its type and its index (None for a table scan)."""
    found = []
    if isinstance(node, list):
        for item in node:
            found += scans(item)
    elif isinstance(node, dict):
        if "Scan" in node.get("Node Type", "") and "Relation Name" in node:
            found.append((node["Node Type"], node.get("Index Name")))
        for value in node.values():
            found += scans(value)
    return found
