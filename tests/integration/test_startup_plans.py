"""The startup reads cost what the open book costs, not what the history holds: on a long
log, each is answered from an index that goes straight to its rows."""

from __future__ import annotations

import json

import pytest

from core.db_state_manager import LAST_ALERT_PRICES_SQL, LATEST_EVENT_SQL

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
