"""A pair as operators run it: two daemon processes, one PostgreSQL, one real Redis server.

Whatever happens to a node or to Redis, at most one node trades, no acknowledged signal is
lost and no order is sent twice.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest
from redis import Redis

from tests.fakes.kite_server import FakeKiteProcess
from tests.support.alerts import alert, ist, trading_morning
from tests.support.daemon import TradingDaemon
from tests.support.tcp_proxy import TcpProxy

TTL_MS = 2000
SECRET = "pair-webhook-secret"
ADMIN = "pair-admin-token-0123456789"
KITE_ENV = {"PM_KITE_API_KEY": "fake_api_key", "PM_KITE_API_SECRET": "fake_api_secret",
            "PM_KITE_ACCESS_TOKEN": "fake_access_token", "PM_DECISION_WAIT_MS": "10000"}


@pytest.fixture
def node(on_the_server, tmp_path, redis_server) -> Callable[..., TradingDaemon]:
    """Build a node of the pair (its own state dir), on the shared book and Redis; with
    `kite`, both trade at that fake Kite server from `morning` on a drill clock."""
    def build(name: str, redis_url: str | None = None, kite: FakeKiteProcess | None = None,
              morning: datetime | None = None) -> TradingDaemon:
        env = {"PM_WEBHOOK_SECRET": SECRET, "PM_ADMIN_TOKEN": ADMIN,
               "PM_LEASE_TTL_MS": str(TTL_MS)}
        args: tuple[str, ...] = ()
        if kite is not None:
            assert morning is not None
            args = ("--broker", "zerodha", "--kite-root", kite.url)
            env.update(KITE_ENV, PM_CLOCK_START=morning.isoformat())
        return on_the_server(tmp_path / name / "state", "--redis-url",
                             redis_url or redis_server.url, *args, kind=TradingDaemon, env=env)
    return build


def wait_for(check: Callable[[], Any], timeout_s: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
        except (OSError, ValueError):  # restarting, or a non-JSON answer
            found = None
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def role(daemon: TradingDaemon) -> str | None:
    code, status = daemon.get("/status")
    return status.get("role") if code == 200 else None


def leader_and_standby(first: TradingDaemon, second: TradingDaemon
                       ) -> tuple[TradingDaemon, TradingDaemon]:
    wait_for(lambda: {role(first), role(second)} == {"leader", "standby"}, 60,
             "one leader, one standby")
    return (first, second) if role(first) == "leader" else (second, first)


def rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def orders(dsn: str) -> list[tuple[str, str]]:
    """Every order the paper venue holds: (tag, side)."""
    return rows(dsn, "SELECT tag, side FROM paper_orders ORDER BY id")


def gold(kind: str, layer: str | None, price: int, seconds_ago: int,
         at: datetime | None = None, **extra: Any) -> dict[str, Any]:
    return alert(kind, "GOLD_MINI", layer, price, ist(seconds_ago, at), **extra)


def test_a_standby_takes_over_a_killed_leader_with_the_signals_it_stored(node, dsn,
                                                                         redis_server):
    first, second = node("a").start(), node("b").start()
    leader, standby = leader_and_standby(first, second)
    assert leader.wait_ready() and standby.get("/ready")[0] == 503
    assert standby.get("/health")[0] == 200
    status = standby.get("/status")[1]
    assert status["ha"]["leader"] == (leader.state_dir / "instance_id").read_text().strip()

    # The standby stores an alert and hands it to the leader, which decides it.
    code, answer = standby.send(**gold("BASE_ENTRY", "Long_1", 78500, 240, stop=77800,
                                       atr=700))
    assert (code, answer["status"]) == (202, "accepted")
    decided = wait_for(lambda: leader.get(f"/signals/{answer['signal_id']}")[1]
                       .get("outcome"), 30, "the leader decides the handed-over signal")
    assert decided == "executed"
    epoch = leader.get("/status")[1]["ha"]["epoch"]
    # Operator actions are the leader's: the standby refuses them, names the leader and
    # changes nothing.
    code, refused = standby.admin("/admin/pause", reason="lunch")
    assert (code, refused["error"]) == (503, "standby")
    assert status["ha"]["leader"] in refused["detail"]
    assert leader.get("/status")[1]["trading_state"]["state"] == "ACTIVE"

    leader.kill()
    # While no one leads, the standby keeps accepting alerts: stored, not lost.
    code, exit_answer = standby.send(**gold("EXIT", "Long_1", 80500, 200))
    assert (code, exit_answer["status"]) == (202, "accepted")
    killed_at = time.monotonic()
    assert standby.wait_ready(30)
    took_s = time.monotonic() - killed_at
    status = standby.get("/status")[1]
    assert status["role"] == "leader" and status["ha"]["epoch"] > epoch
    # The stored exit is taken by the new leader: the layer is closed once, by one order.
    wait_for(lambda: standby.get(f"/signals/{exit_answer['signal_id']}")[1]
             .get("outcome") == "executed", 30, "the stored exit is executed")
    assert [side for _, side in orders(dsn)] == ["BUY", "SELL"]
    epochs = rows(dsn, "SELECT fencing_epoch FROM order_intents ORDER BY id")
    assert [e for (e,) in epochs] == [epoch, status["ha"]["epoch"]]
    # Each order at the broker says which term sent it.
    assert [tag for tag, _ in orders(dsn)] == [f"PM1E{epoch}", f"PM2E{status['ha']['epoch']}"]
    events = rows(dsn, "SELECT details->>'epoch' FROM execution_log "
                       "WHERE event = 'leadership_acquired' ORDER BY id")
    assert [int(e) for (e,) in events] == [epoch, status["ha"]["epoch"]]
    print(f"failover took {took_s:.2f} s")  # measured properly by bench/failover.py

    # A consumer outside the daemons followed the book on Redis across the failover: both
    # terms, both signals' decisions, the layer opened by one leader and closed by the next.
    def published() -> list[tuple[str, dict[str, Any]]]:
        client = Redis.from_url(redis_server.url)
        try:  # at least once: a consumer skips an event id it has seen
            seen = {int(f[b"id"]): (f[b"type"].decode(), json.loads(f[b"data"]))
                    for _, f in reversed(client.xrange("pm:events"))}
            return [seen[event_id] for event_id in sorted(seen)]
        finally:
            client.close()

    events = wait_for(lambda: (lambda found: found if [d["outcome"] for t, d in found
                                                        if t == "signal.decided"] ==
                               ["executed", "executed"] else None)(published()),
                      30, "both decisions on pm:events")
    types = [t for t, _ in events]
    assert [d["epoch"] for t, d in events if t == "leadership.changed"] == [
        epoch, status["ha"]["epoch"]]
    assert types.index("layer.opened") < types.index("leadership.changed", 1) < \
        types.index("layer.closed")


def test_a_paused_leader_is_fenced_and_comes_back_as_standby(node, dsn):
    first, second = node("a").start(), node("b").start()
    leader, standby = leader_and_standby(first, second)
    assert leader.wait_ready()
    paused = leader.get("/status")[1]["ha"]
    leader.process.send_signal(signal.SIGSTOP)
    try:
        assert standby.wait_ready(30)
        code, answer = standby.send(**gold("BASE_ENTRY", "Long_1", 78500, 240, stop=77800,
                                           atr=700))
        assert code == 200 and answer["status"] == "executed"
    finally:
        leader.process.send_signal(signal.SIGCONT)
    # The old leader finds its term gone and starts again as a standby, in the same process.
    wait_for(lambda: "restarting_as_standby" in leader.output() and role(leader) == "standby",
             60, "the paused leader starts again as standby")
    assert leader.process.poll() is None
    assert [side for _, side in orders(dsn)] == ["BUY"]
    assert standby.get("/status")[1]["role"] == "leader"
    # The audit log says who lost which term, and why.
    [(instance, epoch, why)] = rows(dsn, "SELECT details->>'instance', details->>'epoch', "
                                         "details->>'why' FROM execution_log "
                                         "WHERE event = 'leadership_lost'")
    assert (instance, int(epoch)) == (paused["instance"], paused["epoch"])
    assert "newer leader" in why or "lease ran out" in why


def stopped(daemon: TradingDaemon) -> bool:
    """Whether the process is frozen (SIGSTOP): state T in /proc."""
    assert daemon.process is not None
    with open(f"/proc/{daemon.process.pid}/stat") as handle:
        stat = handle.read()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.parametrize("point, broker", [("after_intent_commit", "paper"),
                                           ("after_broker_accept", "paper"),
                                           ("after_broker_accept", "zerodha")])
def test_an_order_in_flight_when_the_leader_froze_is_sent_once(node, dsn, point, broker):
    """The leader freezes with an entry's intent committed (not sent / sent, unrecorded).
    The standby takes over and resolves it by its tag; the old leader, thawed, sends
    nothing: its term has passed, and the broker is called only within it."""
    kite = morning = None
    if broker == "zerodha":
        kite = FakeKiteProcess().start()
        kite.control("cash", segment="equity", cash="50000000")
        morning = trading_morning()
        for key in kite.state()["prices"]:
            if key.startswith("MCX:GOLDM"):
                kite.control("price", tradingsymbol=key.split(":")[1], price="78500")
    try:
        in_flight(node, dsn, point, kite, morning)
    finally:
        if kite is not None:
            kite.stop()


def in_flight(node, dsn: str, point: str, kite: FakeKiteProcess | None,
              morning: datetime | None) -> None:
    frozen = node("a", kite=kite, morning=morning)
    frozen.env["PM_FAILPOINT"] = f"{point}:1:pause"
    frozen.start()
    wait_for(lambda: role(frozen) == "leader", 30, "the first node leads")
    taker = node("b", kite=kite, morning=morning).start()
    assert frozen.wait_ready()
    epoch = frozen.get("/status")[1]["ha"]["epoch"]

    def send() -> None:
        try:
            frozen.send(**gold("BASE_ENTRY", "Long_1", 78500, 240, morning, stop=77800,
                               atr=700))
        except OSError:  # frozen past the sender's timeout: TradingView would give up too
            pass

    sending = threading.Thread(target=send, daemon=True)
    sending.start()
    wait_for(lambda: stopped(frozen), 30, "the leader freezes at the fail point")
    try:
        assert taker.wait_ready(30)
        wait_for(lambda: taker.get("/signals/1")[1].get("outcome") == "executed", 30,
                 "the new leader completes the frozen leader's entry")
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    wait_for(lambda: role(frozen) == "standby", 60, "the thawed leader becomes standby")
    time.sleep(TTL_MS / 1000)  # whatever it still had queued would have gone by now
    if kite is None:
        assert orders(dsn) == [(f"PM1E{epoch}", "BUY")]
    else:  # at Kite: one entry, tagged with the frozen term that created its intent
        placed = [(o["tag"], o["transaction_type"]) for o in kite.state()["orders"]
                  if (o.get("tag") or "").startswith("PM")]
        assert placed == [(f"PM1E{epoch}", "BUY")], placed
    [layer] = taker.get("/positions")[1]["positions"]
    assert layer["lots"] == 7
    assert taker.get("/status")[1]["role"] == "leader"


def test_redis_lost_and_back_the_leader_trades_throughout(node, dsn, redis_server):
    first, second = node("a").start(), node("b").start()
    leader, standby = leader_and_standby(first, second)
    assert leader.wait_ready()
    redis_server.kill()
    # No Redis: the leader keeps trading on its database lease; the standby says it
    # could not take over.
    code, entry = leader.send(**gold("BASE_ENTRY", "Long_1", 78500, 240, stop=77800, atr=700))
    assert (code, entry["status"]) == (200, "executed")
    ha = wait_for(lambda: (lambda h: h if not h["failover_possible"] else None)(
        standby.get("/status")[1]["ha"]), 30, "the standby reports failover impossible")
    assert ha["redis_available"] is False and ha["leader"] == leader.get("/status")[1][
        "ha"]["instance"]
    time.sleep(3 * TTL_MS / 1000)  # several terms' worth: the leader still leads
    assert leader.get("/ready")[0] == 200 and role(standby) == "standby"
    code, exit_ = leader.send(**gold("EXIT", "Long_1", 80500, 200))
    assert (code, exit_["status"]) == (200, "executed")
    seen = {i for (i,) in rows(dsn, "SELECT details->>'instance' FROM execution_log "
                                    "WHERE event = 'redis_unavailable'")}
    assert standby.get("/status")[1]["ha"]["instance"] in seen

    # Redis back (empty): no restart needed; the leader holds the key again, and a
    # failover works once more.
    redis_server.start()
    wait_for(lambda: standby.get("/status")[1]["ha"]["failover_possible"], 30,
             "the standby sees Redis again")
    wait_for(lambda: rows(dsn, "SELECT 1 FROM execution_log WHERE event = 'redis_available'"),
             10, "Redis's return is in the audit log")
    leader.kill()
    assert standby.wait_ready(30)
    assert [side for _, side in orders(dsn)] == ["BUY", "SELL"]
    epochs = [e for (e,) in rows(dsn, "SELECT fencing_epoch FROM order_intents ORDER BY id")]
    assert epochs == sorted(epochs) and epochs[-1] < standby.get("/status")[1]["ha"]["epoch"]


def test_a_leader_cut_off_from_redis_alone_is_not_joined_by_a_second(node, dsn, redis_server):
    proxy = TcpProxy(redis_server.port).start()
    try:
        first = node("a", redis_url=proxy.url).start()
        wait_for(lambda: role(first) == "leader", 30, "the proxied node leads")
        second = node("b").start()
        assert first.wait_ready() and role(second) == "standby"
        proxy.hold()  # the leader's Redis traffic goes nowhere; the standby's flows
        time.sleep(3 * TTL_MS / 1000)
        # The lease in Redis ran out, but the database's still holds: one leader.
        assert (role(first), role(second)) == ("leader", "standby")
        code, entry = second.send(**gold("BASE_ENTRY", "Long_1", 78500, 240, stop=77800,
                                         atr=700))
        assert (code, entry["status"]) == (202, "accepted")
        wait_for(lambda: first.get(f"/signals/{entry['signal_id']}")[1].get("outcome")
                 == "executed", 30, "the cut-off leader decides the handed-over entry")
        # It dies while cut off: the standby, which can reach Redis, takes over.
        first.kill()
        assert second.wait_ready(30)
        code, exit_ = second.send(**gold("EXIT", "Long_1", 80500, 200))
        assert (code, exit_["status"]) == (200, "executed")
        epochs = [e for (e,) in rows(dsn, "SELECT DISTINCT fencing_epoch FROM order_intents")]
        assert len(epochs) == 2
        assert [side for _, side in orders(dsn)] == ["BUY", "SELL"]
    finally:
        proxy.stop()
