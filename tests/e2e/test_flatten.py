"""The kill switch on the daemon as a process: 20 open layers over 4 instruments, a flatten
by the admin API, a SIGKILL in the middle of it, and a restart that finishes it — one set of
exit orders, a flat broker, the book HALTED."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.support.alerts import alert, ist
from tests.support.daemon import TradingDaemon, write_config
from tests.support.invariants import book_violations, paper_broker

REPO = Path(__file__).resolve().parents[2]
D = Decimal
BASES = {"GOLD_MINI": D(78500), "SILVER_MINI": D(90000), "COPPER": D(900),
         "BANK_NIFTY": D(52000)}
LAYERS = {"GOLD_MINI": 4, "COPPER": 4, "SILVER_MINI": 6, "BANK_NIFTY": 6}  # 20
ROOMY = {"max_margin_utilization_percent": "100", "paper_margin_fraction": "1",
         "max_portfolio_risk_percent": "100", "max_portfolio_vol_percent": "100",
         "pyramid_risk_block": "100", "pyramid_vol_block": "100", "use_1r_gate": False,
         "initial_capital": "100000000"}


@pytest.fixture
def roomy_config(tmp_path) -> Path:
    return write_config(tmp_path / "config", **ROOMY)


def fill_book(daemon: TradingDaemon) -> None:
    """Open 20 layers: per instrument a base entry, then pyramids 2.5 ATR apart."""
    sent = 0
    for instrument, layers in LAYERS.items():
        atr = BASES[instrument] / 100
        for n in range(layers):
            price = BASES[instrument] + atr * D("2.5") * n
            answer = daemon.send_settled(**alert(
                "BASE_ENTRY" if n == 0 else "PYRAMID", instrument, f"Long_{n + 1}",
                str(price), ist(40 - sent), stop=str(price - 2 * atr), atr=str(atr),
                supertrend=str(price - atr)))
            assert answer["status"] == "executed", answer
            sent += 1


def sells(conninfo: str) -> list[tuple[str, str]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT instrument, tradingsymbol FROM order_intents "
                            "WHERE side = 'SELL' ORDER BY id").fetchall()


def test_flatten_killed_midway_is_finished_by_the_restart(state_dir, roomy_config):
    env = {"PM_CONFIG_DIR": str(roomy_config)}
    first = TradingDaemon(state_dir, env={**env, "PM_FAILPOINT": "after_flatten_exit"}).start()
    try:
        fill_book(first)
        assert len(first.get("/positions")[1]["positions"]) == 20
        try:
            first.admin("/admin/flatten", reason="drill")
        except OSError:
            pass  # the daemon died under the request: that is the drill
        assert first.process.wait(timeout=30) != 0
    finally:
        first.ensure_stopped()
    with psycopg.connect(first.book_conninfo()) as conn:  # killed with the flatten under way
        assert conn.execute("SELECT status FROM flattens").fetchall() == [("flattening",)]
    assert 1 <= len(sells(first.book_conninfo())) <= 4

    second = TradingDaemon(state_dir, env=env).start()
    try:
        assert second.wait_ready()
        status: dict = {}
        for _ in range(300):
            status = second.get("/status")[1]
            if (status.get("flatten") or {}).get("status") == "flat":
                break
            time.sleep(0.1)
        assert status["flatten"]["status"] == "flat", status["flatten"]
        assert status["trading_state"]["state"] == "HALTED"
        assert second.get("/positions")[1]["positions"] == []
        # One exit order per instrument, whatever the crash: never a second set.
        assert sorted(i for i, _ in sells(second.book_conninfo())) == sorted(LAYERS)
        positions, tags = paper_broker(second.book_conninfo())
        assert set(positions.values()) <= {0}
        assert book_violations(second.book_conninfo(), positions, tags) == []

        # Flattening a flat book again is a no-op flatten that answers flat at once.
        code, answer = second.admin("/admin/flatten", reason="again")
        assert (code, answer["status"], answer["layers_closed"]) == (200, "flat", 0)
        code, answer = second.admin("/admin/resume", reason="drill over")
        assert (code, answer["trading_state"]["state"]) == (200, "ACTIVE")
    finally:
        second.stop()
