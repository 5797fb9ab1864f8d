"""Trading through the daemon as users run it: HTTP in, paper broker, PostgreSQL underneath."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.support.alerts import alert, ist
from tests.support.daemon import TradingDaemon


def test_a_full_gold_mini_trade(daemon):
    gold = "GOLD_MINI"
    code, base = daemon.send(**alert("BASE_ENTRY", gold, "Long_1", 78500, ist(240),
                                     stop=77800, atr=700))
    assert code == 200
    assert (base["status"], base["result"]["lots"], base["result"]["limiter"]) == (
        "executed", 7, "risk")
    code, gated = daemon.send(**alert("PYRAMID", gold, "Long_2", 79000, ist(235),
                                      stop=78500, atr=700))
    assert (gated["status"], gated["reason"]) == (
        "blocked", "Price not > 1R (moved 500, need 700)")
    code, pyramid = daemon.send(**alert("PYRAMID", gold, "Long_2", 80000, ist(170),
                                        stop=79500, atr=700))
    assert (pyramid["status"], pyramid["result"]["lots"]) == ("executed", 3)
    code, exit_base = daemon.send(**alert("EXIT", gold, "Long_1", 80500, ist(160)))
    assert (exit_base["status"], exit_base["result"]["pnl"]) == ("executed", "140000.00")

    code, ratchet = daemon.send(**alert("MARKET_DATA", gold, None, 81000, ist(150), atr=500))
    assert ratchet["status"] == "executed"
    [open_layer] = daemon.get("/positions")[1]["positions"]
    assert (open_layer["layer"], open_layer["lots"]) == ("Long_2", 3)
    assert (open_layer["highest_close"], open_layer["current_stop"]) == (
        "81000.0000", "80000.0000")  # 81,000 − 2.0 × 500

    # The paper venue sees the bar first: Long_2's stop resting there sells it at 79,900,
    # and the daemon, reading the stop the price reached before it decides, books that
    # sale: its own stop exit for the bar has nothing left to sell.
    code, hit = daemon.send(**alert("MARKET_DATA", gold, None, 79900, ist(149), atr=500))
    assert (hit["status"], hit["reason"]) == ("ignored", "no open layers")
    deadline = time.monotonic() + 10
    while daemon.get("/positions")[1]["positions"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.get("/positions")[1]["positions"] == []
    closed = daemon.get("/positions?status=closed")[1]["positions"]
    assert [(p["layer"], p["exit_reason"], p["exit_price"], p["realized_pnl"])
            for p in closed] == [("Long_2", "BROKER_STOP", "79900.0000", "-3000.00"),
                                 ("Long_1", "trend reversal", "80500.0000", "140000.00")]
    status = daemon.get("/status")[1]
    assert status["equity"]["closed"] == "5137000.00"
    assert status["equity"]["high"] == "5140000.00"
    assert status["open_positions"] == 0
    detail = daemon.get(f"/signals/{exit_base['signal_id']}")[1]
    assert detail["outcome"] == "executed" and detail["orders"][0]["side"] == "SELL"
    assert "secret" not in json.dumps(detail)


def test_two_identical_webhooks_at_once(daemon):
    body = alert("BASE_ENTRY", "SILVER_MINI", "Long_1", 90000, ist(30), stop=88000, atr=1500)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: daemon.send(**body), range(2)))
    assert sorted(a[1]["status"] for a in answers) == ["duplicate", "executed"]
    assert {a[0] for a in answers} == {200}
    assert len({a[1]["signal_id"] for a in answers}) == 1
    assert len(daemon.get("/positions")[1]["positions"]) == 1


def book_rows(daemon) -> tuple:
    with psycopg.connect(daemon.book_conninfo()) as conn:
        return tuple(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                     for table in ("portfolio_positions", "order_intents",
                                   "capital_transactions", "paper_orders"))


BAD_INPUTS = [
    ("oversize", lambda d: d.send_raw(b'{"x": "' + b"a" * 20000 + b'"}'), 413,
     "payload_too_large"),
    ("not json", lambda d: d.send_raw(b"{not json"), 400, "Invalid JSON"),
    ("no secret", lambda d: d.send_raw(json.dumps(alert(
        "BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(10), stop=77800)).encode()), 401,
     "Unauthorized"),
    ("wrong secret", lambda d: d.send_raw(json.dumps({"secret": "nope", **alert(
        "BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(10), stop=77800)}).encode()), 401,
     "Unauthorized"),
    ("missing fields", lambda d: d.send(type="BASE_ENTRY", instrument="GOLD_MINI",
                                        position="Long_1", timestamp=ist(10)), 400,
     "Missing required fields: price, stop, lots, atr, er, supertrend"),
    ("type", lambda d: d.send(**alert("BUY", "GOLD_MINI", "Long_1", 1, ist(10))), 400,
     "Invalid signal type"),
    ("instrument", lambda d: d.send(**alert("BASE_ENTRY", "NIFTY_IT", "Long_1", 1, ist(10),
                                            stop=1)), 400, "Invalid instrument"),
    ("position", lambda d: d.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_9", 78500,
                                          ist(10), stop=77800)), 400, "Invalid position"),
    ("timestamp", lambda d: d.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500,
                                           "yesterday", stop=77800)), 400,
     "Invalid timestamp format"),
    ("price", lambda d: d.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", -5, ist(10),
                                       stop=77800)), 400, "Invalid price"),
    ("stop", lambda d: d.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(10),
                                      stop=0)), 400, "Invalid stop"),
    ("atr", lambda d: d.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(10),
                                     stop=77800, atr=-1)), 400, "Invalid ATR"),
    ("reason", lambda d: d.send(**{k: v for k, v in alert(
        "EXIT", "GOLD_MINI", "Long_1", 78500, ist(10)).items() if k != "reason"}), 400,
     "EXIT signals require a 'reason' field"),
    ("numeric", lambda d: d.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(10),
                                         stop=77800, supertrend="high")), 400,
     "Invalid numeric field"),
    ("er", lambda d: d.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(10),
                                    stop=77800, er=500)), 400, "Invalid ER"),
    ("stale", lambda d: d.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(400),
                                       stop=77800)), 200, "stale"),
    ("future", lambda d: d.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(-120),
                                        stop=77800)), 200, "future"),
]


@pytest.mark.parametrize(("case", "send", "status", "detail"), BAD_INPUTS,
                         ids=[case for case, *_ in BAD_INPUTS])
def test_bad_input_changes_nothing(daemon, case, send, status, detail):
    before = book_rows(daemon)
    code, body = send(daemon)
    assert code == status
    if status == 200:
        assert (body["status"], body["reason"]) == ("rejected", detail)
    elif status == 413:
        assert body["error"] == detail
    else:
        assert body["detail"] == detail
    assert book_rows(daemon) == before


def test_rate_limit_answers_429(state_dir):
    limited = TradingDaemon(state_dir, env={"PM_RATE_LIMIT_PER_MIN": "5"}).start()
    try:
        codes = [limited.send_raw(b"{}")[0] for _ in range(7)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    finally:
        limited.ensure_stopped()


def burst_alerts() -> list[dict]:
    """Alerts across three instruments: entries, pyramids, trailing stops, exits."""
    out: list[dict] = []
    plans = [("GOLD_MINI", 78500, 700, 77800), ("BANK_NIFTY", 52000, 350, 51650),
             ("COPPER", 800, 8, 790)]
    for step in range(6):
        for instrument, price, atr, stop in plans:
            age = 250 - step * 20
            if step == 0:
                out.append(alert("BASE_ENTRY", instrument, "Long_1", price, ist(age),
                                 stop=stop, atr=atr))
            elif step in (1, 3):
                out.append(alert("MARKET_DATA", instrument, None, price + step * atr,
                                 ist(age), atr=atr))
            elif step == 2:
                out.append(alert("PYRAMID", instrument, "Long_2", price + 3 * atr, ist(age),
                                 stop=price + 2 * atr, atr=atr))
            elif step == 4:
                out.append(alert("EXIT", instrument, "Long_1", price + 4 * atr, ist(age)))
            else:
                out.append(alert("MARKET_DATA", instrument, None, price, ist(age), atr=atr))
    return out


def final_book(daemon) -> tuple:
    positions = [(p["instrument"], p["layer"], p["status"], p["lots"], p["entry_price"],
                  p["current_stop"], p["exit_price"], p["realized_pnl"])
                 for p in daemon.get("/positions?status=all")[1]["positions"]]
    signals = sorted((s["type"], s["instrument"], s["position"], s["signal_timestamp"],
                      s["outcome"]) for s in daemon.get("/signals?limit=1000")[1]["signals"])
    return sorted(positions), daemon.get("/status")[1]["equity"], signals


def test_sigkill_during_a_burst_loses_and_repeats_nothing(tmp_path):
    alerts = burst_alerts()
    clean = TradingDaemon(tmp_path / "clean" / "state").start()
    try:
        clean.wait_ready()
        for body in alerts:
            assert clean.send(**body)[0] == 200
        expected = final_book(clean)
        outcomes = [s[-1] for s in expected[2]]
        # The stream really trades: entries, pyramids, exits and stop hits all execute.
        assert outcomes.count("executed") >= 12 and len(expected[0]) >= 5
    finally:
        clean.stop()

    crashing = TradingDaemon(tmp_path / "crash" / "state").start()
    crashing.wait_ready()
    acked: list[int] = []
    killed = threading.Event()

    def sender() -> None:
        for index, body in enumerate(alerts):
            if killed.is_set():
                return
            try:
                if crashing.send(**body)[0] == 200:
                    acked.append(index)
            except OSError:
                return

    thread = threading.Thread(target=sender)
    thread.start()
    while len(acked) < len(alerts) // 2:
        time.sleep(0.001)
    crashing.kill()
    killed.set()
    thread.join()

    restarted = TradingDaemon(crashing.state_dir).start()
    try:
        restarted.wait_ready()
        first_unacked = max(acked) + 1
        for body in alerts[first_unacked:]:
            code, answer = restarted.send(**body)
            assert code == 200, answer
        assert final_book(restarted) == expected
        code, again = restarted.send(**alerts[0])
        assert (code, again["status"]) == (200, "duplicate")
        with psycopg.connect(restarted.book_conninfo()) as conn:
            # Exits of fired broker stops have no signal: their intents are counted instead.
            decided_twice = conn.execute(
                """SELECT signal_id FROM execution_log
                   WHERE event IN ('signal_decided', 'order_filled', 'order_rejected')
                     AND signal_id IS NOT NULL
                   GROUP BY signal_id HAVING count(*) > 1""").fetchall()
            decided_twice += conn.execute(
                """SELECT intent_id FROM execution_log
                   WHERE event IN ('order_filled', 'order_rejected')
                   GROUP BY intent_id HAVING count(*) > 1""").fetchall()
            orders_per_intent = conn.execute(
                "SELECT max(n) FROM (SELECT count(*) n FROM paper_orders WHERE tag <> '' "
                "GROUP BY tag) t"  # untagged: the orders the venue's stops placed
            ).fetchone()[0]
        assert decided_twice == []
        assert orders_per_intent == 1
    finally:
        restarted.stop()


def test_reconcile_command_reports_and_accepts(tmp_path):
    import subprocess
    import sys

    from tests.support.daemon import REPO

    state = tmp_path / "state"
    daemon = TradingDaemon(state).start()
    daemon.wait_ready()
    daemon.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(30), stop=77800))
    with psycopg.connect(daemon.book_conninfo(), autocommit=True) as conn:
        conn.execute("DELETE FROM paper_trades")  # the venue lost the position
    daemon.stop()

    def reconcile(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "portfolio_manager.py", "reconcile",
                               "--state-dir", str(state), *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    shown = reconcile()
    assert shown.returncode == 1 and "GOLD_MINI: book 7, broker 0" in shown.stdout
    accepted = reconcile("--accept", "book")
    assert accepted.returncode == 0 and "accepted the book's side" in accepted.stdout
    restarted = TradingDaemon(state).start()
    try:
        restarted.wait_ready()  # the accepted difference no longer blocks trading
        assert restarted.get("/ready")[0] == 200
    finally:
        restarted.stop()


def test_an_undecided_signal_is_acknowledged_202_and_decided_later(state_dir):
    daemon = TradingDaemon(state_dir, env={"PM_DECISION_WAIT_MS": "0"}).start()
    try:
        daemon.wait_ready()
        code, answer = daemon.send(**alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(20),
                                           stop=77800))
        assert (code, answer["status"]) == (202, "accepted")
        deadline = time.monotonic() + 30
        while daemon.get(f"/signals/{answer['signal_id']}")[1]["status"] != "processed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert daemon.get(f"/signals/{answer['signal_id']}")[1]["outcome"] == "executed"
    finally:
        daemon.stop()
