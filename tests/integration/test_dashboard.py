"""The dashboard through the real application on real PostgreSQL: what the page shows, who
may see and use it (tokens, the session cookie, CSRF), the live stream of the outbox, and
the log line each event of the book leaves."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal

import psycopg
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from core.trading_state import Actor, TradingState
from live.access import AccessPolicy
from live.dashboard import WEB
from live.event_feed import EventFeed
from live.server import build_app
from tests.integration.test_operator_controls import enter

TOKEN = "admin-token-for-the-dashboard"
VIEW = "view-token-for-the-dashboard"
SECRET = "webhook-secret-for-the-dashboard"
PAGE_ASSETS_LIMIT = 300 * 1024


@pytest.fixture
def trading(trading_in_operation):
    return trading_in_operation


@pytest.fixture
async def served(trading, dsn):
    """Build a client of the app under an access policy (views open: a loopback daemon)."""
    started: list[tuple[TestClient, asyncio.Task, EventFeed]] = []

    async def build(views_open: bool = True) -> TestClient:
        feed = EventFeed(dsn, lambda: True, poll_s=0.2)
        ctx = trading.context(SECRET, feed=feed, access=AccessPolicy(
            TOKEN, view_token=VIEW, views_open=views_open))
        task = asyncio.create_task(feed.run())
        client = TestClient(TestServer(build_app(ctx)))
        await client.start_server()
        started.append((client, task, feed))
        return client

    yield build
    for client, task, feed in started:
        feed.close_subscriptions()
        await client.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def logged_in(client: TestClient, token: str = TOKEN) -> str:
    """Log in through the form; return the page's CSRF token (empty for a view session)."""
    response = await client.post("/login", data={"token": token}, allow_redirects=False)
    assert response.status == 303, await response.text()
    page = await (await client.get("/")).text()
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    return found.group(1) if found else ""


def trading_state(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT state FROM trading_state").fetchone()[0]


async def test_the_page_shows_the_open_layer_in_rupees_and_india_time(served, trading):
    await enter(trading, layers=2)
    client = await served()
    response = await client.get("/")
    assert response.status == 200
    page = await response.text()
    rows = re.findall(r'data-testid="layer-row" data-instrument="(\w+)" data-layer="(\w+)"',
                      page)
    assert rows == [("GOLD_MINI", "Long_1"), ("GOLD_MINI", "Long_2")]
    layer = (await trading.db.all_live_layers())[0]
    stop = f"{layer.current_stop:,.2f}"  # below a lakh Indian and Western grouping agree
    assert stop in page
    assert "₹10,00,00,000.00" in page  # the opening capital of ten crore, lakh-grouped
    assert "PAPER" in page and "ACTIVE" in page and " IST" in page
    assert "Log in</a> with the admin token" in page  # no controls without a session
    assert 'hx-post="/admin/' not in page
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")


async def test_the_page_loads_nothing_from_elsewhere_and_its_assets_are_small(served):
    client = await served()
    page = await (await client.get("/")).text()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith(("/", "data:", "#")) for a in assets), assets
    total = 0
    for asset in (a for a in assets if a.startswith("/static/")):
        response = await client.get(asset)
        assert response.status == 200, asset
        total += len(await response.read())
    assert total + len(page.encode()) < PAGE_ASSETS_LIMIT
    assert (WEB / "static" / "LICENSES.txt").exists()


async def test_a_signal_expands_to_its_intents_orders_and_fills(served, trading):
    await enter(trading)
    client = await served()
    [signal] = await trading.db.list_signals(1, None)
    detail = await (await client.get(f"/ui/signals/{signal.id}")).text()
    [intent] = await trading.db.intents_for_signal(signal.id)
    assert f"Intent {intent.id}" in detail and intent.tag in detail
    assert intent.broker_order_id in detail and "filled" in detail
    with psycopg.connect(trading.dsn) as conn:
        [trade_id] = conn.execute("SELECT broker_trade_id FROM fills WHERE intent_id = %s",
                                  (intent.id,)).fetchone()
    assert trade_id in detail
    assert (await client.get("/ui/signals/999999")).status == 404
    for bad in ("x", "99999999999999999999", "-1"):
        assert (await client.get(f"/ui/signals/{bad}")).status == 400, bad
        assert (await client.get(f"/signals/{bad}")).status == 400, bad
    assert (await client.get("/ui/nonsense")).status == 404
    assert (await client.get("/ui/health")).status == 200


async def test_off_loopback_the_page_needs_a_login_and_controls_need_an_admin_one(
        served, dsn):
    client = await served(views_open=False)
    response = await client.get("/", allow_redirects=False, headers={"Accept": "text/html"})
    assert (response.status, response.headers["Location"]) == (303, "/login")  # a browser
    for path in ("/ui/positions", "/ui/equity.json", "/events", "/positions"):
        assert (await client.get(path)).status == 401, path
    assert (await client.get("/login")).status == 200
    assert (await client.get("/static/htmx.min.js")).status == 200

    refused = await client.post("/login", data={"token": "guess"}, allow_redirects=False)
    assert refused.status == 401 and "pm_session" not in refused.cookies

    csrf = await logged_in(client, VIEW)  # read only: the views, no controls
    page = await (await client.get("/")).text()
    assert 'hx-post="/admin/' not in page and "Log in</a> with the admin token" in page
    for path in ("/admin/pause", "/admin/flatten"):
        refused = await client.post(path, json={"confirm": "FLATTEN"},
                                    headers={"X-CSRF-Token": csrf})
        assert refused.status == 401, path
    assert trading_state(dsn) == "ACTIVE"
    assert (await client.get("/ui/positions")).status == 200
    assert (await client.post("/logout", headers={"X-CSRF-Token": csrf})).status == 200
    assert (await client.get("/ui/positions")).status == 401


async def test_the_session_cookie_is_httponly_strict_and_never_the_token(served):
    client = await served(views_open=False)
    response = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie


async def test_a_control_with_the_cookie_alone_is_refused_as_cross_site(served, dsn):
    client = await served(views_open=False)
    csrf = await logged_in(client)
    assert csrf
    forged = await client.post("/admin/pause", json={"reason": "from another site"})
    assert forged.status == 403 and trading_state(dsn) == "ACTIVE"
    wrong = await client.post("/admin/pause", json={}, headers={"X-CSRF-Token": "0" * 32})
    assert wrong.status == 403 and trading_state(dsn) == "ACTIVE"
    paused = await client.post("/admin/pause", json={"reason": "dashboard"},
                               headers={"X-CSRF-Token": csrf})
    assert paused.status == 200 and trading_state(dsn) == "REDUCING"


async def test_flatten_from_a_session_needs_the_typed_word(served, trading, dsn):
    await enter(trading)
    client = await served()
    csrf = await logged_in(client)
    headers = {"X-CSRF-Token": csrf}
    for confirm in (None, "", "flatten", "YES"):
        body = {"reason": "oops"} if confirm is None else {"reason": "oops", "confirm": confirm}
        response = await client.post("/admin/flatten", json=body, headers=headers)
        assert response.status == 400, confirm
        assert "type FLATTEN" in (await response.json())["detail"]
    assert len(await trading.db.all_live_layers()) == 1 and trading_state(dsn) == "ACTIVE"
    done = await client.post("/admin/flatten", json={"confirm": "FLATTEN"}, headers=headers)
    assert (done.status, (await done.json())["status"]) == (200, "flat")
    assert await trading.db.all_live_layers() == [] and trading_state(dsn) == "HALTED"


async def test_logging_out_ends_the_session(served):
    client = await served(views_open=False)
    csrf = await logged_in(client)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["pm_session"].value
    assert (await client.post("/logout", headers={"X-CSRF-Token": csrf})).status == 200
    client.session.cookie_jar.update_cookies({"pm_session": cookie})  # a copy kept elsewhere
    assert (await client.get("/ui/positions")).status == 401


async def read_events(response, count: int, timeout_s: float = 10) -> list[dict]:
    """The next `count` events of an SSE response, parsed."""
    events: list[dict] = []
    async with asyncio.timeout(timeout_s):
        while len(events) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


async def test_the_stream_sends_each_commit_and_replays_what_a_reconnect_missed(
        served, trading, monkeypatch):
    monkeypatch.setattr("live.dashboard.REPLAY_PAGE", 2)  # a replay of several pages
    client = await served()
    stream = await client.get("/events")
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    await asyncio.sleep(0.3)  # the feed has read where the outbox stands
    await enter(trading)
    seen = await read_events(stream, 5)
    kinds = [e["type"] for e in seen]
    assert "signal.decided" in kinds and "intent.created" in kinds, kinds
    assert [e["id"] for e in seen] == sorted(e["id"] for e in seen)
    stream.close()

    first = seen[0]["id"]
    await trading.control.set(TradingState.REDUCING, "lunch", Actor.OPERATOR)
    again = await client.get("/events", headers={"Last-Event-ID": str(first)})
    replayed = await read_events(again, len(seen))  # what came after `first`, and the pause
    assert [e["id"] for e in replayed][:len(seen) - 1] == [e["id"] for e in seen[1:]]
    assert replayed[-1]["type"] == "trading_state.changed"
    assert replayed[-1]["data"]["state"] == "REDUCING"
    again.close()
    assert (await client.get("/events", headers={"Last-Event-ID": "x"})).status == 400

    # An id the outbox never reached (a restored database): the stream goes on from where
    # the feed stands rather than waiting for ids to pass it.
    ahead = await client.get("/events", headers={"Last-Event-ID": "999999"})
    await trading.control.set(TradingState.ACTIVE, "back", Actor.OPERATOR)
    [resumed] = await read_events(ahead, 1)
    assert resumed["type"] == "trading_state.changed" and resumed["data"]["state"] == "ACTIVE"
    ahead.close()


async def test_every_event_of_a_trade_leaves_one_log_line_with_its_ids(dsn, trading):
    feed = EventFeed(dsn, lambda: True)
    await feed.follow_committed()
    with structlog.testing.capture_logs() as lines:
        await enter(trading)
        await feed.follow_committed()
    await feed.close()
    by_event = {}
    for line in lines:
        by_event.setdefault(line["event"], []).append(line)
    [decided] = by_event["signal_decided"]
    [created] = by_event["intent_created"]
    [filled] = by_event["fill_booked"]
    [opened] = by_event["layer_opened"]
    assert decided["outcome"] == "executed" and decided["instrument"] == "GOLD_MINI"
    assert created["signal_id"] == decided["signal_id"] == opened["signal_id"]
    assert created["tag"].startswith("PM") and created["instrument"] == "GOLD_MINI"
    assert filled["intent_id"] == created["intent_id"] and Decimal(filled["price"]) > 0
    assert (filled["tag"], filled["instrument"], filled["signal_id"]) == (
        created["tag"], "GOLD_MINI", decided["signal_id"])
    assert "intent_filled" in by_event
    text = json.dumps(lines, default=str)
    assert SECRET not in text and TOKEN not in text


async def test_a_standby_logs_nothing_of_the_leaders_events(dsn, trading):
    feed = EventFeed(dsn, lambda: False)
    await feed.follow_committed()
    with structlog.testing.capture_logs() as lines:
        await enter(trading)
        assert await feed.follow_committed() > 0
    await feed.close()
    assert not [x for x in lines if x["event"] in ("signal_decided", "fill_booked")]
