"""The daemon trading on Zerodha, as users run it: `--broker zerodha --kite-root` at a fake
Kite server running as its own process, driven through the real kiteconnect client."""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.fakes.kite_server import FakeKiteProcess
from tests.support.alerts import alert, ist, trading_morning
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
    # A morning when MCX trades (its SL orders rest only in session), whatever the hour.
    start = trading_morning()
    daemon = TradingDaemon(state_dir, "--broker", "zerodha", "--kite-root", fake.url,
                           env={**KITE_ENV, "PM_CLOCK_START": start.isoformat()}).start()
    try:
        daemon.wait_ready()
        assert daemon.get("/status")[1]["broker"] == "zerodha"
        gold = "GOLD_MINI"
        steps = [
            (78500, alert("BASE_ENTRY", gold, "Long_1", 78500, ist(240, start), stop=77800)),
            (79000, alert("PYRAMID", gold, "Long_2", 79000, ist(235, start), stop=78500)),
            (80000, alert("PYRAMID", gold, "Long_2", 80000, ist(170, start), stop=79500)),
            (80500, alert("EXIT", gold, "Long_1", 80500, ist(160, start))),
            (81000, alert("MARKET_DATA", gold, None, 81000, ist(150, start), atr=500)),
            (79900, alert("MARKET_DATA", gold, None, 79900, ist(149, start), atr=500)),
        ]
        answers = []
        for price, body in steps:
            if price == 79900:  # Long_2's stop at the broker follows the trail to 80,000 first
                _wait(lambda: _stops(daemon)["GOLD_MINI"]["trigger"] == "80000.0000")
            move_gold(fake, price)
            code, answer = daemon.send(**body)
            assert code == 200, answer
            answers.append(answer)
        # The last bar fell through Long_2's stop: its SL order at the broker sold it first
        # (at that bar's 79900). The daemon read that stop before deciding on the bar, so
        # its own stop exit had nothing left to do.
        assert [a["status"] for a in answers] == ["executed", "blocked", "executed",
                                                  "executed", "executed", "ignored"], answers
        assert answers[5]["reason"] == "no open layers"
        assert (answers[0]["result"]["lots"], answers[2]["result"]["lots"]) == (7, 3)
        assert answers[3]["result"]["pnl"] == "140000.00"
        long_2 = _wait(lambda: [p for p in daemon.get("/positions?status=closed")[1][
            "positions"] if p["layer"] == "Long_2"])[0]
        assert (long_2["exit_reason"], long_2["realized_pnl"]) == ("BROKER_STOP", "-3000.00")
        status = daemon.get("/status")[1]
        assert (status["equity"]["closed"], status["equity"]["high"]) == ("5137000.00",
                                                                        "5140000.00")
        orders = [o for o in fake.state()["orders"] if o["tag"].startswith("PM")]
        assert len(orders) == 3 and all(o["status"] == "COMPLETE" for o in orders)
        # Each layer's stop rested at the broker as an SL order: Long_1's was cancelled
        # before its EXIT sold it; Long_2's own (moved up with the trail) sold Long_2.
        stops = [o["status"] for o in fake.state()["orders"] if o["tag"].startswith("BS")]
        assert sorted(stops) == ["CANCELLED", "COMPLETE"]
        assert all(o["product"] == "NRML" and o["tradingsymbol"].startswith("GOLDM")
                   for o in orders)
        positions, tags = kite_book(fake)
        assert positions == {}
        assert book_violations(daemon.book_conninfo(), positions, tags) == []
        # The dashboard says the money is real, and when Kite's session ends.
        with urllib.request.urlopen(daemon.url + "/", timeout=10) as response:
            page = response.read().decode()
        assert 'class="banner mode-live"' in page and ">LIVE<" in page
        assert "session ok · expires" in page and "06:00:00 IST" in page
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


def _stops(daemon: TradingDaemon) -> dict[str, dict]:
    return {p["instrument"]: p["broker_stop"]
            for p in daemon.get("/positions")[1]["positions"] if p.get("broker_stop")}


def _wait(check, timeout_s: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_broker_stops_follow_the_trail_and_fire_while_the_daemon_is_down(fake, state_dir):
    # A morning when NFO and MCX both trade, whatever the hour the test runs at.
    start = trading_morning()
    env = {**KITE_ENV, "PM_CLOCK_START": start.isoformat(), "PM_BROKER_STOP_CHECK_S": "1"}
    bank = next(k.split(":")[1] for k in sorted(fake.state()["prices"])
                if k.startswith("NFO:BANKNIFTY"))
    first = TradingDaemon(state_dir, "--broker", "zerodha", "--kite-root", fake.url,
                          env=env).start()
    try:
        first.wait_ready()
        move_gold(fake, 78500)
        fake.control("price", tradingsymbol=bank, price="52000")
        for body in (alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(5, start),
                           stop=77800),
                     alert("BASE_ENTRY", "BANK_NIFTY", "Long_1", 52000, ist(5, start),
                           stop=51650, atr=350)):
            assert first.send(**body)[1]["status"] == "executed"
        placed = _wait(lambda: (s := _stops(first)) and len(s) == 2
                       and all(v["status"] == "active" for v in s.values()) and s)
        assert (placed["GOLD_MINI"]["kind"], placed["BANK_NIFTY"]["kind"]) == ("sl", "gtt")
        assert (placed["GOLD_MINI"]["trigger"], placed["BANK_NIFTY"]["trigger"]) == (
            "77800.0000", "51650.0000")
        # The trail rises; each broker stop follows it.
        move_gold(fake, 80000)
        fake.control("price", tradingsymbol=bank, price="53000")
        first.send(**alert("MARKET_DATA", "GOLD_MINI", None, 80000, ist(4, start), atr=500))
        first.send(**alert("MARKET_DATA", "BANK_NIFTY", None, 53000, ist(4, start), atr=350))
        moved = _wait(lambda: (s := _stops(first))["GOLD_MINI"]["trigger"] == "79000.0000"
                      and s["BANK_NIFTY"]["trigger"] == "52125.0000" and s)
        assert all(v["status"] == "active" for v in moved.values())
        gtt = next(g for g in fake.state()["gtts"] if g["status"] == "active")
        assert gtt["condition"]["trigger_values"] == [52125]
    finally:
        first.kill()  # SIGKILL: nothing watches the market now but the broker
    move_gold(fake, 78900)  # through the SL order's 79000 trigger: it sells at 78900
    fake.control("price", tradingsymbol=bank, price="52100")  # through the GTT's 52125
    second = TradingDaemon(state_dir, "--broker", "zerodha", "--kite-root", fake.url,
                           env=env).start()
    try:
        second.wait_ready()
        closed = {p["instrument"]: p for p in
                  second.get("/positions?status=closed")[1]["positions"]}
        assert {name: (p["exit_reason"], p["exit_price"]) for name, p in closed.items()} == {
            "GOLD_MINI": ("BROKER_STOP", "78900.0000"),
            "BANK_NIFTY": ("BROKER_STOP", "52100.0000")}
        positions, tags = kite_book(fake)
        assert positions == {}
        assert book_violations(second.book_conninfo(), positions, tags) == []
        sells = [o for o in fake.state()["orders"] if o["transaction_type"] == "SELL"
                 and o["status"] == "COMPLETE"]
        assert len(sells) == 2  # one sale per layer: the broker's
    finally:
        second.stop()
