"""Access control on the real application (DESIGN.md §9): every route the app has, listed from
its router so that a route added later is covered too; the webhook's allow-list and the rate
limiter behind a trusted proxy. Real PostgreSQL, real engine, paper broker."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from config.settings import Settings
from live.access import OPEN_PATHS, AccessPolicy, access_policy, networks
from live.event_feed import EventFeed
from live.rate_limit import RateLimiter
from live.server import Context, WebhookPolicy, build_app
from tests.support.alerts import alert, ist
from tests.support.trading import INSTRUMENTS, Trading

SECRET = "s3cret"
ADMIN = "admin-token-for-tests"
VIEW = "view-token-for-tests"
CLOSED = AccessPolicy(ADMIN, view_token=VIEW, views_open=False)
PROXY = networks("127.0.0.1", "PM_TRUSTED_PROXIES")  # the test client's own address
# The operator actions DESIGN.md §9 names: refused without the token whether or not built yet.
ADMIN_ACTIONS = ("pause", "resume", "halt", "flatten", "exit", "capital")

Serve = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def serve(db, dsn) -> AsyncIterator[Serve]:
    """Start the real app with an access policy (and rate limit) of the test's choosing."""
    trading = await Trading(db, dsn).start()
    trading.inbox.start_processing()
    clients: list[TestClient] = []

    async def start(access: AccessPolicy, rate_limit_per_min: int = 10**9) -> TestClient:
        feed = EventFeed(dsn, lambda: False)  # read once, so /events knows where it stands
        await feed.follow_committed()
        await feed.close()
        ctx = Context(db=db, inbox=trading.inbox, engine=trading.engine,
                      instruments=INSTRUMENTS, metrics=trading.metrics,
                      readiness=trading.readiness, broker=trading.broker,
                      limiter=RateLimiter(rate_limit_per_min), access=access,
                      policy=WebhookPolicy(SECRET, 16384, 5000, rate_limit_per_min),
                      feed=feed)
        client = TestClient(TestServer(build_app(ctx)))
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            await client.close()
        await trading.close()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


async def refused(response: ClientResponse, detail: str) -> bool:
    """Whether the access check (not the handler) answered: 401 with a Bearer challenge."""
    if response.status != 401 or response.headers.get("WWW-Authenticate") != "Bearer":
        return False
    assert await response.json() == {"status": "error", "error": "unauthorized",
                                     "detail": detail}
    return True


def routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, a dynamic segment filled with signal 1."""
    found = set()
    for route in client.app.router.routes():
        canonical = route.resource.canonical if route.resource else ""
        if route.method in ("HEAD", "*") or not canonical:
            continue
        found.add((route.method, re.sub(r"\{[^}]+\}", "1", canonical)))
    assert ("GET", "/positions") in found  # the listing itself works
    return sorted(found)


def is_admin(path: str) -> bool:
    return path.startswith("/admin/")


async def call(client: TestClient, method: str, path: str,
               token: str | None = None) -> ClientResponse:
    data = b"{}" if method == "POST" else None
    return await client.request(method, path, data=data, headers=bearer(token))


async def one_signal(client: TestClient) -> None:
    """Make signal 1 exist, so that /signals/{id} answers 200 to an authorised caller."""
    body = {"secret": SECRET, **alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500, ist(5),
                                      stop=77800)}
    response = await client.post("/webhook", data=json.dumps(body))
    assert response.status in (200, 202), await response.text()
    assert (await response.json())["signal_id"] == 1


async def test_open_routes_answer_without_a_token(serve):
    client = await serve(CLOSED)
    open_routes = [(m, p) for m, p in routes(client) if p in OPEN_PATHS]
    assert {p for _, p in open_routes} == set(OPEN_PATHS)
    for method, path in open_routes:
        response = await call(client, method, path)
        assert not await refused(response, "view token required"), (method, path)
    assert (await client.get("/health")).status == 200
    assert (await client.get("/ready")).status in (200, 503)  # answered, not refused


async def test_every_admin_route_needs_the_admin_token(serve):
    client = await serve(CLOSED)
    admin = [r for r in routes(client) if is_admin(r[1])]
    assert {("POST", f"/admin/{action}") for action in ADMIN_ACTIONS} <= set(admin)
    for method, path in admin:
        for token in (None, "wrong", VIEW, ADMIN + "x"):
            response = await call(client, method, path, token)
            assert await refused(response, "admin token required"), (method, path, token)
        response = await call(client, method, path, ADMIN)
        assert response.status != 401, (method, path)


@pytest.mark.parametrize("action", ADMIN_ACTIONS)
async def test_operator_actions_are_refused_without_the_admin_token(serve, action):
    client = await serve(CLOSED)
    for token in (None, VIEW):
        response = await client.post(f"/admin/{action}", json={"reason": "test"},
                                     headers=bearer(token))
        assert await refused(response, "admin token required"), (action, token)
    # However the path is spelled, it is the admin route the router would match.
    response = await client.post(f"/%61dmin/{action}", json={"reason": "test"})
    assert await refused(response, "admin token required")


async def test_views_need_the_view_or_admin_token_when_not_open(serve):
    client = await serve(CLOSED)
    await one_signal(client)
    # The page's static assets (scripts, styles) are open: they say nothing of the book.
    views = [r for r in routes(client) if r[1] not in OPEN_PATHS and not is_admin(r[1])
             and r[1] != "/static"]
    assert {"/status", "/positions", "/signals", "/signals/1", "/orders", "/metrics",
            "/db/status"} <= {p for _, p in views}
    for method, path in views:
        for token in (None, "wrong", VIEW + "x"):
            response = await call(client, method, path, token)
            assert await refused(response, "view token required"), (method, path, token)
        for token in (VIEW, ADMIN):
            response = await call(client, method, path, token)
            assert response.status == 200, (method, path, await response.text())
            response.close()  # /events streams until the reader leaves
    # A wrong scheme is no token at all.
    response = await client.get("/positions", headers={"Authorization": f"Basic {VIEW}"})
    assert await refused(response, "view token required")


async def test_unknown_paths_still_404_for_authorised_callers(serve):
    client = await serve(CLOSED)
    assert (await client.get("/nowhere", headers=bearer(VIEW))).status == 404
    assert (await client.get("/admin/nowhere", headers=bearer(ADMIN))).status == 404
    assert await refused(await client.get("/nowhere"), "view token required")


async def test_views_are_open_on_loopback_and_closed_elsewhere(serve, monkeypatch):
    for name in [n for n in os.environ if n.startswith("PM_")]:
        monkeypatch.delenv(name)
    loopback = await serve(access_policy(Settings(host="127.0.0.1"), ADMIN))
    assert (await loopback.get("/positions")).status == 200
    assert await refused(await loopback.post("/admin/pause", json={}), "admin token required")
    exposed = await serve(access_policy(Settings(host="0.0.0.0", view_token=VIEW), ADMIN))
    assert await refused(await exposed.get("/positions"), "view token required")
    assert (await exposed.get("/positions", headers=bearer(VIEW))).status == 200
    # A proxy on this machine would make a loopback listener public: proxied calls need a token.
    assert await refused(await loopback.get("/positions", headers=forwarded("198.51.100.7")),
                         "view token required")
    behind = await serve(access_policy(Settings(host="127.0.0.1", trusted_proxies="127.0.0.1"),
                                       ADMIN))
    assert await refused(await behind.get("/positions"), "view token required")
    assert (await behind.get("/positions", headers=bearer(ADMIN))).status == 200
    forced = await serve(access_policy(Settings(host="127.0.0.1", views_require_token=True),
                                       ADMIN))
    assert await refused(await forced.get("/positions"), "view token required")


async def signals_stored(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute("SELECT count(*) FROM signal_log")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


def forwarded(client_ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": f"6.6.6.6, {client_ip}", "Content-Type": "application/json"}


async def post_alert(client: TestClient, headers: dict[str, str],
                     seconds_ago: float = 5) -> tuple[int, dict[str, Any]]:
    body = {"secret": SECRET, **alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500,
                                      ist(seconds_ago), stop=77800)}
    response = await client.post("/webhook", data=json.dumps(body), headers=headers)
    return response.status, await response.json()


async def test_the_allow_list_refuses_an_unlisted_sender_and_admits_a_listed_one(serve, dsn):
    allow = networks("52.89.214.238,34.212.75.30", "PM_WEBHOOK_ALLOW_IPS")
    client = await serve(AccessPolicy(ADMIN, views_open=True, webhook_allow=allow,
                                      trusted_proxies=PROXY))
    # The left-most entry is what the sender claims; the proxy's own hop is the address.
    status, answer = await post_alert(client, {"X-Forwarded-For": "52.89.214.238, 203.0.113.9"})
    assert (status, answer) == (403, {"status": "error", "error": "forbidden",
                                      "detail": "source address not allowed"})
    assert await signals_stored(dsn) == 0  # refused before the body was read
    status, answer = await post_alert(client, forwarded("52.89.214.238"))
    assert status in (200, 202) and answer["signal_id"] == 1, answer


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(serve, dsn):
    allow = networks("52.89.214.238", "PM_WEBHOOK_ALLOW_IPS")
    client = await serve(AccessPolicy(ADMIN, views_open=True, webhook_allow=allow,
                                      trusted_proxies=networks("10.0.0.0/8", "X")))
    status, answer = await post_alert(client, forwarded("52.89.214.238"))
    assert status == 403 and answer["error"] == "forbidden"
    assert await signals_stored(dsn) == 0


async def test_the_rate_limiter_buckets_per_forwarded_client(serve):
    client = await serve(AccessPolicy(ADMIN, views_open=True, trusted_proxies=PROXY),
                         rate_limit_per_min=1)
    wrong_secret = json.dumps({"secret": "nope"})
    statuses = []
    for sender in ("198.51.100.1", "198.51.100.1", "198.51.100.2"):
        response = await client.post("/webhook", data=wrong_secret, headers=forwarded(sender))
        statuses.append(response.status)
    # One token each: the first sender's second alert is limited, the other sender's is not.
    assert statuses == [401, 429, 401]
