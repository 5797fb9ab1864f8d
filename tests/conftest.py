"""Real PostgreSQL for the tests: one embedded server per session, a fresh database per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor

from core.db_state_manager import DatabaseStateManager
from live.embedded_db import EmbeddedPostgres
from live.schema_migrations import apply_migrations
from tests.support.redis_server import RedisServer

# Test databases are thrown away: skip the fsyncs (commits stay synchronous).
TEST_SERVER_SETTINGS = {"fsync": "off", "full_page_writes": "off"}


class EmbeddedServerExecutor(NoopExecutor):
    """pytest-postgresql's view of the session's embedded server."""

    @property
    def template_dbname(self) -> str:
        # postgresql_noproc clones its template from the base's template: the server's own.
        return "template1"


@contextmanager
def temporary_server(prefix: str = "pm-test-") -> Iterator[EmbeddedPostgres]:
    """Start an embedded server in a new temporary dir; stop and remove it afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(root / "pg", settings=TEST_SERVER_SETTINGS)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[EmbeddedPostgres]:
    with temporary_server() as server:
        yield server


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A daemon state dir; whatever embedded server a test left running there is stopped."""
    path = tmp_path / "state"
    yield path
    if (path / "pg" / "PG_VERSION").exists():
        EmbeddedPostgres(path / "pg").stop()


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A server of the test's own, for tests that stop and start it."""
    with temporary_server("pm-own-") as server:
        yield server


@pytest.fixture(scope="session")
def embedded_pg(embedded_server: EmbeddedPostgres) -> NoopExecutor:
    address = embedded_server.address()
    return EmbeddedServerExecutor(host=str(address.socket_dir), port=address.port,
                                  user="postgres", options="", dbname="pm_base")


def load_schema(host: str, port: int, user: str, dbname: str, password: str | None,
                **_: Any) -> None:
    """Apply the migrations to the template every test database is cloned from."""
    apply_migrations(psycopg.conninfo.make_conninfo(host=host, port=port, user=user,
                                                    dbname=dbname, password=password))


pm_template = factories.postgresql_noproc(dbname="pm", load=[load_schema],
                                          depends_on="embedded_pg")
pm_database = factories.postgresql("pm_template")


@pytest.fixture
def postgresql(pm_database: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A direct connection to this test's own migrated database, to check what is stored."""
    pm_database.autocommit = True
    return pm_database


@pytest.fixture
def dsn(postgresql: psycopg.Connection[Any]) -> str:
    """Connection string of this test's own migrated database."""
    return postgresql.info.dsn


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[DatabaseStateManager]:
    manager = DatabaseStateManager(dsn, min_size=2, max_size=20, retry_window_s=5)
    await manager.open()
    try:
        yield manager
    finally:
        await manager.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real Redis-protocol server process of this test's own (never a fake)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()
