"""The dashboard (DESIGN.md §12): the page, its panels as htmx fragments, the equity data,
the login, and `GET /events`, the outbox as Server-Sent Events.

The page and its fragments are views: the access middleware lets them through under the
same rules as the JSON views (loopback, a view or admin token, or a session cookie). The
controls are the admin API's own routes, called with the session cookie and its CSRF
header; the page shows them only to an admin session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from live import dashboard_views as views
from live.access import SESSION, client_address, csrf_matches, via_trusted_proxy
from live.event_feed import replay
from live.outbox_follower import Row
from live.rate_limit import RateLimiter
from live.server import CTX, Context, error, reply, signal_id_of
from live.waiting import within
from live.web_format import ist, number, percent, rupees, signed_rupees
from live.web_session import COOKIE, SESSION_S, Grant, Session

if TYPE_CHECKING:
    import jinja2

WEB = Path(__file__).parent / "web"
KEEPALIVE_S = 15.0
WRITE_TIMEOUT_S = 10.0
FEED_START_WAIT_S = 5.0
REPLAY_PAGE = 1000
LOGIN_ATTEMPTS_PER_MIN = 10
HEADERS = {
    # Everything the page runs is served from here: no inline script, no other origin.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}
PANELS = {"banner", "equity", "positions", "signals", "health"}
LOGINS = web.AppKey("dashboard_logins", RateLimiter)
log = structlog.get_logger(__name__)


def _moment(value: datetime | str | None) -> str:
    return ist(datetime.fromisoformat(value) if isinstance(value, str) else value)


def _tone(value: Any) -> str:
    return "" if value is None or value == 0 else ("good" if value > 0 else "bad")


@functools.cache
def templates() -> jinja2.Environment:
    """The page's templates, made at the first page served: jinja2 is no part of a start."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(WEB / "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters.update(rupees=rupees, signed_rupees=signed_rupees, price=number,
                               percent=percent, ist=_moment, tone=_tone)
    return environment


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION)


def render(request: web.Request, template: str, status: int = 200,
           **values: Any) -> web.Response:
    session = session_of(request)
    body = templates().get_template(template).render(
        session=session, admin=session is not None and session.grant is Grant.ADMIN, **values)
    return web.Response(text=body, status=status, content_type="text/html", headers=HEADERS)


async def _panel_values(ctx: Context, panel: str) -> dict[str, Any]:
    if panel == "banner":
        return {"banner": views.banner(ctx)}
    if panel == "equity":
        return {"equity": await views.equity(ctx)}
    if panel == "positions":
        return {"layers": await views.open_layers(ctx)}
    if panel == "signals":
        return {"signals": await views.recent_signals(ctx)}
    return {"health": await views.health(ctx)}


async def page(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    values: dict[str, Any] = {}
    # The panels read on their own pool connections: side by side, not one after another.
    for panel_values in await asyncio.gather(*(_panel_values(ctx, p) for p in sorted(PANELS))):
        values.update(panel_values)
    return render(request, "dashboard.html", **values)


def fragment(panel: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler of one panel alone: what htmx swaps in on each event."""
    async def handler(request: web.Request) -> web.Response:
        values = await _panel_values(request.app[CTX], panel)
        return render(request, f"_{panel}.html", **values)
    return handler


async def signal_fragment(request: web.Request) -> web.Response:
    signal_id = signal_id_of(request)
    if signal_id is None:
        return error(400, "validation_error", "Invalid signal id")
    detail = await views.signal_detail(request.app[CTX], signal_id)
    if detail is None:
        return error(404, "not_found", f"no signal {signal_id}")
    return render(request, "_signal_detail.html", detail=detail)


async def equity_data(request: web.Request) -> web.Response:
    return reply(await views.equity_series(request.app[CTX]))


# -- login ------------------------------------------------------------------------------
async def login_page(request: web.Request) -> web.Response:
    return render(request, "login.html", error=None)


async def login(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    client = client_address(request, ctx.access.trusted_proxies)  # behind a proxy: the user
    if not request.app[LOGINS].allow(client, time.monotonic()):
        return render(request, "login.html", 429, error="Too many attempts; wait a minute.")
    form = await request.post()
    token = form.get("token")
    grant = _grant_for(ctx, token.strip() if isinstance(token, str) else "")
    if grant is None:
        log.info("dashboard_login_refused", client=client)  # never the token
        return render(request, "login.html", 401, error="That token is not valid.")
    cookie, _ = ctx.access.sessions.issue(grant)
    response = web.Response(status=303, headers={**HEADERS, "Location": "/"})
    response.set_cookie(COOKIE, cookie, max_age=SESSION_S, path="/", httponly=True,
                        samesite="Strict", secure=_over_tls(request, ctx))
    log.info("dashboard_login", grant=str(grant), client=client)
    return response


def _over_tls(request: web.Request, ctx: Context) -> bool:
    """HTTPS here, or at a trusted proxy in front (the cookie then never goes in clear)."""
    if request.secure:
        return True
    return (request.headers.get("X-Forwarded-Proto", "").lower() == "https"
            and via_trusted_proxy(request, ctx.access.trusted_proxies))


def _grant_for(ctx: Context, token: str) -> Grant | None:
    if ctx.access.admits_admin(token):
        return Grant.ADMIN
    view = ctx.access.view_token
    if view is not None and hmac.compare_digest(token.encode(), view.encode()):
        return Grant.VIEW
    return None


async def logout(request: web.Request) -> web.Response:
    """End the cookie's session (the page's CSRF header proves the page asked)."""
    session = session_of(request)
    if session is not None:
        if not csrf_matches(request, session):
            return error(403, "forbidden", "CSRF token required")
        request.app[CTX].access.sessions.revoke(session)
    response = reply({"status": "ok"})
    response.del_cookie(COOKIE, path="/")
    return response


# -- the live stream --------------------------------------------------------------------
async def events(request: web.Request) -> web.StreamResponse:
    """The outbox as Server-Sent Events, from now on or after `Last-Event-ID` (`?after=`):
    a browser that reconnects gets what it missed, in id order, at least once."""
    ctx = request.app[CTX]
    if ctx.feed is None:
        return error(503, "unavailable", "no event feed")
    try:
        after = _after(request)
    except ValueError:
        return error(400, "validation_error", "Invalid Last-Event-ID")
    try:  # where the feed stands: without it a replay's end is unknown
        await within(FEED_START_WAIT_S, ctx.feed.started.wait())
    except TimeoutError:
        return error(503, "unavailable", "the event feed has not started; try again")
    subscription = ctx.feed.subscribe()  # before the replay: nothing falls between the two
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await _send(response, b"retry: 2000\n\n")
        # An id past the feed's (a restored database) replays from where the feed stands.
        sent = ctx.feed.last if after is None else min(after, ctx.feed.last)
        sent = await _replay(ctx, response, sent, ctx.feed.last)
        while True:
            try:
                rows = await within(KEEPALIVE_S, subscription.queue.get())
            except TimeoutError:
                await _send(response, b": keepalive\n\n")
                continue
            if rows is None:  # cut off (too far behind) or the daemon stopping
                break
            sent = await _write(response, rows, sent)
    except (ConnectionResetError, TimeoutError):
        return response  # the reader went away, or stopped reading
    finally:
        ctx.feed.unsubscribe(subscription)
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await response.write_eof()
    return response


async def _replay(ctx: Context, response: web.StreamResponse, sent: int, upto: int) -> int:
    """Send the events after `sent` up to `upto`, a page at a time; the database
    connection is held for each read only, never while a slow reader takes the rows."""
    while sent < upto:
        async with ctx.db.reading() as conn:
            rows = await replay(conn, sent, upto, REPLAY_PAGE)
        if not rows:
            break
        sent = await _write(response, rows, sent)
    return sent


async def _send(response: web.StreamResponse, data: bytes) -> None:
    # A reader that stops reading must not hold the handler (nor the daemon's shutdown).
    async with asyncio.timeout(WRITE_TIMEOUT_S):
        await response.write(data)


def _after(request: web.Request) -> int | None:
    text = request.headers.get("Last-Event-ID") or request.query.get("after")
    if text is None or not text.strip():
        return None
    value = int(text.strip())
    if value < 0:
        raise ValueError(text)
    return value


async def _write(response: web.StreamResponse, rows: list[Row], sent: int) -> int:
    chunks = []
    for event_id, kind, occurred_at, data in rows:
        if event_id <= sent:
            continue  # a replayed event also queued, or one sent before a reconnect
        body = json.dumps({"id": event_id, "type": kind, "time": occurred_at.isoformat(),
                           "data": data}, sort_keys=True)
        chunks.append(f"id: {event_id}\ndata: {body}\n\n")
        sent = event_id
    if chunks:
        await _send(response, "".join(chunks).encode())
    return sent


def add_dashboard_routes(app: web.Application) -> None:
    app[LOGINS] = RateLimiter(LOGIN_ATTEMPTS_PER_MIN)
    app.router.add_get("/", page)
    app.router.add_get("/ui/equity.json", equity_data)
    app.router.add_get("/ui/signals/{signal_id}", signal_fragment)
    for panel in sorted(PANELS):
        app.router.add_get(f"/ui/{panel}", fragment(panel))
    app.router.add_get("/events", events)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_static("/static", WEB / "static", append_version=False)
