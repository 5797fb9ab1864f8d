"""Apply and roll back the versioned SQL in `migrations/` with yoyo, under yoyo's lock."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict
from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
LOCK_TIMEOUT_S = 60


def yoyo_uri(conninfo: str) -> str:
    """Return the yoyo URI (psycopg 3 driver) for a libpq connection string."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    dbname = params.pop("dbname", "postgres")
    # Everything but the database goes in the query string: yoyo hands it to psycopg.connect,
    # which is the only way to express a unix-socket host in a URI.
    return f"postgresql+psycopg:///{quote(dbname)}?{urlencode(params)}"


def _backend_and_migrations(conninfo: str):  # type: ignore[no-untyped-def]
    return get_backend(yoyo_uri(conninfo)), read_migrations(str(MIGRATIONS_DIR))


def apply_migrations(conninfo: str) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date)."""
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
