"""The daemon trading on Zerodha, as users run it: `--broker zerodha --kite-root` at a fake
Kite server running as its own process, driven through the real kiteconnect client."""

from __future__ import annotations

import pytest

from tests.fakes.kite_server import FakeKiteProcess
from tests.support.alerts import alert, ist
from tests.support.daemon import TradingDaemon
from tests.support.invariants import book_violations, kite_broker

KITE_ENV = {"PM_KITE_API_KEY": "fake_api_key", "PM_KITE_API_SECRET": "fake_api_secret",
            "PM_KITE_ACCESS_TOKEN": "fake_access_token", "PM_WEBHOOK_SECRET": "tv-secret",
            "PM_ADMIN_TOKEN": "zerodha-admin-token",  # required with a live broker
            # A real venue answers slower than paper; wait for the outcome rather than a 202.
            "PM_DECISION_WAIT_MS": "10000"}


@pytest.fixture
def fake():
    with FakeKiteProcess() as running:
        running.control("cash", segment="equity", cash="50000000")
        yield running


def move_gold(fake, price: int) -> None:
    """The market trades at the alert's price when the alert arrives."""
    for key in fake.state()["prices"]:
        if key.startswith("MCX:GOLDM"):
            fake.control("price", tradingsymbol=key.split(":")[1], price=str(price))


def kite_book(fake) -> tuple[dict[str, int], list[tuple[str, int]]]:
    return kite_broker(fake.state())


def test_a_full_gold_mini_trade_on_zerodha(fake, state_dir):
    daemon = TradingDaemon(state_dir, "--broker", "zerodha", "--kite-root", fake.url,
                           env=KITE_ENV).start()
    try:
        daemon.wait_ready()
        assert daemon.get("/status")[1]["broker"] == "zerodha"
        gold = "GOLD_MINI"
        steps = [
            (78500, alert("BASE_ENTRY", gold, "Long_1", 78500, ist(240), stop=77800)),
            (79000, alert("PYRAMID", gold, "Long_2", 79000, ist(235), stop=78500)),
            (80000, alert("PYRAMID", gold, "Long_2", 80000, ist(170), stop=79500)),
            (80500, alert("EXIT", gold, "Long_1", 80500, ist(160))),
            (81000, alert("MARKET_DATA", gold, None, 81000, ist(150), atr=500)),
            (79900, alert("MARKET_DATA", gold, None, 79900, ist(149), atr=500)),
        ]
        answers = []
        for price, body in steps:
            move_gold(fake, price)
            code, answer = daemon.send(**body)
            assert code == 200, answer
            answers.append(answer)
        assert [a["status"] for a in answers] == ["executed", "blocked", "executed",
                                                  "executed", "executed", "executed"], answers
        assert (answers[0]["result"]["lots"], answers[2]["result"]["lots"]) == (7, 3)
        assert answers[3]["result"]["pnl"] == "140000.00"
        assert answers[5]["result"]["pnl"] == "-3000.00"
        status = daemon.get("/status")[1]
        assert (status["equity"]["closed"], status["equity"]["high"]) == ("5137000.00",
                                                                        "5140000.00")
        orders = fake.state()["orders"]
        assert len(orders) == 4 and all(o["status"] == "COMPLETE" for o in orders)
        assert all(o["product"] == "NRML" and o["tradingsymbol"].startswith("GOLDM")
                   for o in orders)
        positions, tags = kite_book(fake)
        assert positions == {}
        assert book_violations(daemon.book_conninfo(), positions, tags) == []
    finally:
        daemon.stop()


def test_restart_reconciles_with_the_broker_and_keeps_trading(fake, state_dir):
    first = TradingDaemon(state_dir, "--broker", "zerodha", "--kite-root", fake.url,
                          env=KITE_ENV).start()
    first.wait_ready()
    move_gold(fake, 78500)
    assert first.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(100),
                              stop=77800))[1]["status"] == "executed"
    first.kill()  # the broker keeps its book across the daemon's crash
    second = TradingDaemon(state_dir, "--broker", "zerodha", "--kite-root", fake.url,
                           env=KITE_ENV).start()
    try:
        second.wait_ready()
        positions, tags = kite_book(fake)
        assert sum(positions.values()) == 7
        assert book_violations(second.book_conninfo(), positions, tags) == []
        move_gold(fake, 79000)
        code, answer = second.send(**alert("EXIT", "GOLD_MINI", "ALL", 79000, ist(50)))
        assert (code, answer["status"], answer["result"]["pnl"]) == (200, "executed",
                                                                    "35000.00")
    finally:
        second.stop()


def test_postback_endpoint_verifies_the_checksum(fake, state_dir):
    import hashlib
    import json

    from tests.support.daemon import post

    daemon = TradingDaemon(state_dir, "--broker", "zerodha", "--kite-root", fake.url,
                           env=KITE_ENV).start()
    try:
        daemon.wait_ready()
        body = {"order_id": "1953341975595868160", "order_timestamp": "2026-11-20 10:15:00",
                "status": "COMPLETE"}
        body["checksum"] = hashlib.sha256((body["order_id"] + body["order_timestamp"]
                                           + "fake_api_secret").encode()).hexdigest()
        url = daemon.url + "/kite/postback"
        assert post(url, json.dumps(body).encode())[0] == 200
        assert post(url, json.dumps(body).encode())[0] == 200  # repeats are harmless
        forged = {**body, "checksum": "f" * 64}
        assert post(url, json.dumps(forged).encode())[0] == 403
    finally:
        daemon.stop()


def test_kite_login_stores_a_private_session_the_daemon_uses(fake, state_dir):
    import stat
    import subprocess
    import sys

    from tests.support.daemon import REPO

    token = fake.control("request_token")["request_token"]
    env = {**KITE_ENV, "PATH": "/usr/bin:/bin"}
    del env["PM_KITE_ACCESS_TOKEN"]
    result = subprocess.run(
        [sys.executable, "portfolio_manager.py", "kite-login", "--state-dir", str(state_dir),
         "--kite-root", fake.url, "--request-token", token],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    session_file = state_dir / "kite_session.json"
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert "fake_access_token" not in session_file.read_text()
    # With no token in the environment, the daemon trades on the stored session.
    daemon = TradingDaemon(state_dir, "--broker", "zerodha", "--kite-root", fake.url,
                           env={k: v for k, v in KITE_ENV.items()
                                if k != "PM_KITE_ACCESS_TOKEN"}).start()
    try:
        daemon.wait_ready()
        move_gold(fake, 78500)
        assert daemon.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(30),
                                   stop=77800))[1]["status"] == "executed"
    finally:
        daemon.stop()
