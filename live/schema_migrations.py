"""Apply and roll back the versioned SQL in `migrations/` with yoyo, under yoyo's lock."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
LOCK_TIMEOUT_S = 60
# What yoyo records of each migration it applied, in the same transaction as the migration.
APPLIED_IDS = "SELECT migration_id FROM _yoyo_migration"


def yoyo_uri(conninfo: str) -> str:
    """Return the yoyo URI (psycopg 3 driver) for a libpq connection string."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    dbname = params.pop("dbname", "postgres")
    # Everything but the database goes in the query string: yoyo hands it to psycopg.connect,
    # which is the only way to express a unix-socket host in a URI.
    return f"postgresql+psycopg:///{quote(dbname)}?{urlencode(params)}"


def _backend_and_migrations(conninfo: str):  # type: ignore[no-untyped-def]
    # Imported when used: a start whose schema is up to date never needs yoyo.
    from yoyo import get_backend, read_migrations

    return get_backend(yoyo_uri(conninfo)), read_migrations(str(MIGRATIONS_DIR))


def migration_ids() -> set[str]:
    """The ids yoyo gives the migrations here: their file names, without the extension."""
    return {path.name.removesuffix(".sql") for path in MIGRATIONS_DIR.glob("*.sql")
            if not path.name.endswith(".rollback.sql")}


def up_to_date(conninfo: str) -> bool:
    """Whether every migration here is recorded as applied: a daemon's start then has nothing
    to take yoyo's lock for (and skips the tens of ms yoyo takes to find that out). A
    migration yoyo applied is recorded in its own transaction, so recorded means applied."""
    if any(MIGRATIONS_DIR.glob("post-apply*")):  # yoyo's hooks: leave them to yoyo
        return False
    with psycopg.connect(conninfo, autocommit=True) as conn:
        try:
            applied = {str(row[0]) for row in conn.execute(APPLIED_IDS)}
        # A new database (or an older yoyo's table): yoyo makes its own.
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
            return False
    return migration_ids() <= applied


def apply_migrations(conninfo: str) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date)."""
    if up_to_date(conninfo):
        return []
    backend, migrations = _backend_and_migrations(conninfo)
    try:
        with backend.lock(timeout=LOCK_TIMEOUT_S):
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
            return [m.id for m in pending]
    finally:
        backend.connection.close()


def rollback_migrations(conninfo: str, count: int) -> list[str]:
    """Roll back the newest `count` applied migrations; return their ids, newest first."""
    backend, migrations = _backend_and_migrations(conninfo)
    try:
        with backend.lock(timeout=LOCK_TIMEOUT_S):
            chosen = backend.to_rollback(migrations)[:count]
            backend.rollback_migrations(chosen)
            return [m.id for m in chosen]
    finally:
        backend.connection.close()


def applied_migrations(conninfo: str) -> list[str]:
    """Return the ids of applied migrations, oldest first."""
    backend, migrations = _backend_and_migrations(conninfo)
    try:
        return [m.id for m in migrations if backend.is_applied(m)]
    finally:
        backend.connection.close()
