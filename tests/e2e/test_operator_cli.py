"""The operator's verbs against the daemon as users run both: two processes, HTTP between."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from config.config_hash import config_sha256, effective_config
from config.domain_files import (
    DEFAULT_CONFIG_DIR,
    load_holidays,
    load_instruments,
    load_portfolio_config,
)
from tests.support.alerts import alert, ist
from tests.support.daemon import REPO, TradingDaemon


def pm(daemon: TradingDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `portfolio_manager.py` as the operator does, with the paper daemon's own token."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PM_")}
    return subprocess.run(
        [sys.executable, "portfolio_manager.py", *args, "--state-dir", str(daemon.state_dir),
         "--url", daemon.url], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def gold_entry(seconds_ago: float) -> dict:
    return alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(seconds_ago), stop=77800,
                 atr=700)


def bank_nifty_entry(seconds_ago: float) -> dict:
    # Another instrument: the same entry again inside the dedup window would be a duplicate.
    return alert("BASE_ENTRY", "BANK_NIFTY", "Long_1", 52000, ist(seconds_ago), stop=51650,
                 atr=350)


def test_pause_blocks_entries_until_resumed(daemon):
    paused = pm(daemon, "pause", "--reason", "lunch")
    assert (paused.returncode, paused.stdout) == (
        0, 'trading state REDUCING (was ACTIVE): reason "lunch" by operator\n'), paused.stderr
    blocked = daemon.send_settled(**gold_entry(240))
    assert (blocked["status"], blocked["reason"]) == ("blocked", "trading paused")

    resumed = pm(daemon, "resume", "--reason", "back")
    assert (resumed.returncode, resumed.stdout) == (
        0, 'trading state ACTIVE (was REDUCING): reason "back" by operator\n'), resumed.stderr
    assert daemon.send_settled(**bank_nifty_entry(200))["status"] == "executed"

    again = pm(daemon, "resume")
    assert again.returncode == 0 and "(unchanged)" in again.stdout
    token = (daemon.state_dir / "admin_token").read_text().strip()
    assert all(token not in run.stdout + run.stderr for run in (paused, resumed, again))

    status = pm(daemon, "status")
    assert status.returncode == 0
    assert status.stdout.startswith("status: ACTIVE, 1 open layer, closed equity 5000000.00")


def test_every_decision_names_the_configuration_the_daemon_started_with(daemon):
    shipped = effective_config(load_instruments(DEFAULT_CONFIG_DIR / "instruments.json"),
                               load_portfolio_config(DEFAULT_CONFIG_DIR / "portfolio.json"),
                               load_holidays(DEFAULT_CONFIG_DIR / "holidays.json"))
    expected = config_sha256(shipped)
    assert daemon.get("/status")[1]["config_sha256"] == expected
    daemon.send_settled(**gold_entry(240))
    daemon.send_settled(**bank_nifty_entry(230))
    pm(daemon, "pause", "--reason", "lunch")
    daemon.send_settled(**alert("PYRAMID", "GOLD_MINI", "Long_2", 80000, ist(170),
                                stop=79500, atr=700))  # blocked: paused
    with psycopg.connect(daemon.book_conninfo()) as conn:
        stamped = conn.execute("SELECT outcome, config_sha256 FROM signal_log ORDER BY id")
        assert stamped.fetchall() == [("executed", expected), ("executed", expected),
                                      ("blocked", expected)]
        [(body,)] = conn.execute("SELECT body FROM configurations").fetchall()
    assert config_sha256(body) == expected


def test_import_positions_dry_run_then_refused_then_imported(daemon, tmp_path):
    book = REPO / "tests" / "fixtures" / "legacy_book.csv"
    dry = pm(daemon, "import-positions", str(book), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == "dry run of legacy_book.csv: 6 layers in 3 trades; nothing written"
    assert "open risk 0.00 -> 77655.00 (imported 77655.00)" in dry.stdout
    assert daemon.get("/status")[1]["open_positions"] == 0

    bad = tmp_path / "book.csv"
    bad.write_text(book.read_text().replace("COPPER,Long_1,1,", "COPPER,Long_1,0,"))
    refused = pm(daemon, "import-positions", str(bad))
    assert refused.returncode == 1 and refused.stdout.splitlines() == [
        "import-positions refused: 1 rejection: nothing imported",
        "  row 6, lots: 0 is not a positive whole number of lots (1 to 1000000)"]
    unreadable = tmp_path / "broken.csv"
    unreadable.write_text("instrument,layer,lots\nGOLD_MINI,Long_1\n")
    not_asked = pm(daemon, "import-positions", str(unreadable))
    assert not_asked.returncode == 2 and "row 1 (line 2) has 2 cells" in not_asked.stderr

    done = pm(daemon, "import-positions", str(book), "--reason", "legacy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("imported 6 layers from legacy_book.csv")
    # The paper venue never bought them: reconciliation says so, and blocks their entries.
    assert "reconciliation: MISMATCH" in done.stdout
    assert pm(daemon, "status").stdout.startswith("status: ACTIVE, 6 open layers")
    token = (daemon.state_dir / "admin_token").read_text().strip()
    assert all(token not in run.stdout + run.stderr for run in (dry, refused, done))
