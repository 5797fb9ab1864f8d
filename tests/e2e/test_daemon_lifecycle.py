"""The daemon as users run it: start on embedded PostgreSQL, stop cleanly, keep its data."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from live.embedded_db import EmbeddedPostgres
from live.schema_migrations import MIGRATIONS_DIR
from tests.support.daemon import REPO, Daemon

LATEST_MIGRATION = max(p.name.removesuffix(".sql") for p in MIGRATIONS_DIR.glob("*.sql")
                       if not p.name.endswith(".rollback.sql"))


def launch(daemons, state_dir, *args: str) -> Daemon:
    daemon = Daemon(state_dir, *args)
    daemons.append(daemon)
    return daemon.start()


def embedded_server_running(state_dir) -> bool:
    return EmbeddedPostgres(state_dir / "pg").is_running()


def test_serves_db_status_and_stops_on_ctrl_c_keeping_data(daemons, state_dir):
    first = launch(daemons, state_dir)
    code, status = first.get("/db/status")
    assert code == 200
    assert status["status"] == "connected" and status["connection"] == "healthy"
    assert status["closed_equity"] == "5000000.00"
    assert status["schema_version"] == LATEST_MIGRATION
    assert first.stop(signal.SIGINT) == 0
    assert not embedded_server_running(state_dir)

    # The opening balance is seeded once: a second run with another --capital keeps the data.
    second = launch(daemons, state_dir, "--capital", "1000000")
    assert second.get("/db/status")[1]["closed_equity"] == "5000000.00"
    assert second.stop(signal.SIGTERM) == 0


def test_restart_after_sigkill_adopts_and_then_stops_the_server(daemons, state_dir):
    crashed = launch(daemons, state_dir)
    crashed.kill()
    assert embedded_server_running(state_dir)  # SIGKILL leaves the server behind

    restarted = launch(daemons, state_dir)
    lines = [json.loads(line) for line in restarted.output().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "embedded_database_started" and line["adopted"]
               for line in lines)
    assert restarted.get("/db/status")[0] == 200
    assert restarted.stop(signal.SIGTERM) == 0
    assert not embedded_server_running(state_dir)


def test_a_second_daemon_on_the_same_state_dir_is_refused(daemons, state_dir):
    launch(daemons, state_dir)
    second = Daemon(state_dir)
    result = subprocess.run(second.args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "another daemon is running" in result.stdout


def test_bad_instrument_file_stops_startup_naming_file_and_field(tmp_path, state_dir):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    instruments = json.loads((REPO / "config" / "instruments.json").read_text())
    instruments["GOLD_MINI"]["lot_size"] = 0
    (config_dir / "instruments.json").write_text(json.dumps(instruments))
    (config_dir / "portfolio.json").write_text((REPO / "config" / "portfolio.json").read_text())
    result = subprocess.run(
        [sys.executable, "portfolio_manager.py", "live", "--state-dir", str(state_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PM_CONFIG_DIR": str(config_dir), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert f"{config_dir / 'instruments.json'}: GOLD_MINI.lot_size" in result.stdout
    assert not (state_dir / "pg").exists()  # nothing was started


def test_missing_database_environment_is_reported(tmp_path, state_dir):
    config = tmp_path / "database_config.json"
    config.write_text(json.dumps({"local": {"host": "localhost", "database": "pm",
                                            "user": "pm", "password": "${PM_DB_PASSWORD}"}}))
    result = subprocess.run(
        [sys.executable, "portfolio_manager.py", "live", "--db-config", str(config),
         "--db-env", "staging", "--state-dir", str(state_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert str(config) in result.stdout and "staging" in result.stdout
    assert "local" in result.stdout  # the environments that do exist


def test_migrate_command_rolls_back_and_reapplies(state_dir):
    def migrate(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "portfolio_manager.py", "migrate", "--state-dir", str(state_dir),
             *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert f"applied {LATEST_MIGRATION}" in migrate()
    assert "schema is up to date" in migrate()
    assert f"rolled back {LATEST_MIGRATION}" in migrate("--rollback", "1")
    assert f"applied {LATEST_MIGRATION}" in migrate()
    assert not embedded_server_running(state_dir)


def test_runs_against_a_configured_server(on_the_server, state_dir, postgresql):
    daemon = on_the_server(state_dir).start()
    code, status = daemon.get("/db/status")
    assert code == 200 and status["closed_equity"] == "5000000.00"
    assert daemon.stop() == 0
    # The daemon wrote to the configured database and left its server running.
    assert postgresql.execute("SELECT closed_equity FROM portfolio_state").fetchone()[0] == 5000000
    assert not (state_dir / "pg").exists()


def test_a_second_daemon_on_the_same_book_refuses_to_start(on_the_server, tmp_path,
                                                            postgresql):
    def on_the_book(name: str) -> Daemon:
        return on_the_server(tmp_path / name / "state")

    first = on_the_book("first").start()
    first_id = (first.state_dir / "instance_id").read_text().strip()
    second = on_the_book("second").spawn()
    assert second.process.wait(timeout=60) == 1
    # It names the daemon that holds the book, and wrote nothing.
    assert f"instance {first_id} on " in second.output()
    assert f":{first.port}, last heartbeat 20" in second.output()
    assert postgresql.execute("SELECT count(*) FROM instance_metadata").fetchone()[0] == 1

    # A daemon that dies lets go of the book with its connection: the next one starts.
    first.kill()
    third = on_the_book("third").start()
    assert third.get("/db/status")[0] == 200
    assert third.stop() == 0
