"""Migrations apply, roll back and re-apply; the audit log cannot be rewritten."""

from __future__ import annotations

import psycopg
import pytest

from live.schema_migrations import (
    MIGRATIONS_DIR,
    applied_migrations,
    apply_migrations,
    rollback_migrations,
)

TABLES = {"paper_orders", "paper_trades", "portfolio_positions", "portfolio_state",
          "pyramiding_state", "signal_log", "order_intents", "fills", "capital_transactions",
          "execution_log", "instance_metadata"}


def tables(postgresql) -> set[str]:
    rows = postgresql.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


ALL = sorted(p.name.removesuffix(".sql") for p in MIGRATIONS_DIR.glob("*.sql")
             if not p.name.endswith(".rollback.sql"))


def test_rollback_and_reapply(dsn, postgresql):
    assert ALL[0] == "0001_initial_schema" and len(ALL) >= 2
    assert TABLES <= tables(postgresql)
    assert apply_migrations(dsn) == []  # already up to date
    assert rollback_migrations(dsn, 1) == [ALL[-1]]
    assert applied_migrations(dsn) == ALL[:-1]
    assert rollback_migrations(dsn, len(ALL)) == ALL[-2::-1]
    assert not TABLES & tables(postgresql)
    assert applied_migrations(dsn) == []
    assert apply_migrations(dsn) == ALL
    assert TABLES <= tables(postgresql)
    assert applied_migrations(dsn) == ALL


def test_execution_log_is_append_only(postgresql):
    postgresql.execute("INSERT INTO execution_log (event, details) VALUES ('x', '{}')")
    for statement in ("UPDATE execution_log SET event = 'y'", "DELETE FROM execution_log",
                      "TRUNCATE execution_log"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            postgresql.execute(statement)
    assert postgresql.execute("SELECT event FROM execution_log").fetchall() == [("x",)]


def test_one_live_layer_per_instrument_and_layer(postgresql):
    insert = """INSERT INTO portfolio_positions (trade_id, instrument, layer, is_base_position,
                lots, quantity, entry_price, entry_timestamp, initial_stop, current_stop,
                highest_close, atr, limiter) VALUES (1, 'GOLD_MINI', 'Long_1', true, 1, 1, 100,
                now(), 90, 90, 100, 5, 'risk')"""
    postgresql.execute(insert)
    with pytest.raises(psycopg.errors.UniqueViolation):
        postgresql.execute(insert)


def test_secret_can_never_be_stored(postgresql):
    with pytest.raises(psycopg.errors.CheckViolation):
        postgresql.execute(
            """INSERT INTO signal_log (fingerprint, signal_type, instrument, position,
               signal_timestamp, payload) VALUES (repeat('a', 64), 'EXIT', 'GOLD_MINI', 'ALL',
               now(), '{"secret": "s"}')""")
