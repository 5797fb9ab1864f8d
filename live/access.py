"""Who may call what (DESIGN.md §9): operator tokens, the read views, the webhook's senders."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from config.errors import ConfigError
from config.settings import Settings
from live.operator_client import TOKEN_FILE
from live.web_session import COOKIE, CSRF_HEADER, Grant, Session, SessionKeys

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Each of these authenticates its caller its own way (the alert's secret, Kite's checksum) or
# says nothing worth hiding; a load balancer's probes must not need a token.
# The login page and the page's static assets (htmx, the chart library, styles) too.
OPEN_PATHS = frozenset({"/webhook", "/kite/postback", "/health", "/ready", "/login",
                        "/logout"})
ADMIN_PREFIX = "/admin/"
SESSION = web.RequestKey("session", Session)  # the dashboard session a request proved
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AccessPolicy:
    """The tokens and networks the HTTP layer checks; tokens are kept out of the repr."""

    admin_token: str = field(repr=False)
    view_token: str | None = field(default=None, repr=False)
    views_open: bool = False  # to callers on this machine
    # A proxy on this machine makes a loopback listener public: what comes through one is
    # open only when views_require_token is explicitly false.
    views_open_via_proxy: bool = False
    webhook_allow: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    sessions: SessionKeys = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sessions", SessionKeys(self.admin_token, self.view_token))

    def admits_admin(self, presented: str | None) -> bool:
        return _matches(presented, self.admin_token)

    def admits_view(self, presented: str | None, via_proxy: bool = False) -> bool:
        views_open = self.views_open_via_proxy if via_proxy else self.views_open
        return views_open or self.admits_admin(presented) or (
            self.view_token is not None and _matches(presented, self.view_token))

    def admits_webhook_from(self, client: str) -> bool:
        """Whether `client` may post alerts: anyone when the allow-list is empty."""
        if not self.webhook_allow:
            return True
        address = _address(client)
        return address is not None and _within(address, self.webhook_allow)


# A generated secret lives in one node's state dir: after a failover the alerts and the
# operator's token would be refused by the other.
PAIR_NEEDS = "{} must be set, the same on both nodes, to run a pair"


def admin_token(settings: Settings) -> tuple[str, bool]:
    """Return the admin token and whether it was generated (kept in the state dir) for paper."""
    if settings.admin_token is not None:
        configured = settings.admin_token.get_secret_value().strip()
        if not configured:
            raise ConfigError("PM_ADMIN_TOKEN is empty")
        return configured, False
    if settings.broker != "paper":
        raise ConfigError("PM_ADMIN_TOKEN must be set to trade with a live broker")
    if settings.redis_url is not None:
        raise ConfigError(PAIR_NEEDS.format("PM_ADMIN_TOKEN"))
    return paper_secret(settings.state_dir / TOKEN_FILE, 32), True


def webhook_secret(settings: Settings) -> tuple[str, bool]:
    """Return the webhook secret and whether it was generated (kept in the state dir) for
    paper."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value(), False
    if settings.broker != "paper":
        raise ConfigError("PM_WEBHOOK_SECRET must be set to trade with a live broker")
    if settings.redis_url is not None:
        raise ConfigError(PAIR_NEEDS.format("PM_WEBHOOK_SECRET"))
    return paper_secret(settings.state_dir / "webhook_secret", 24), True


def paper_secret(path: Path, nbytes: int) -> str:
    """The secret kept in `path`, generated on first use (paper mode only)."""
    secret = path.read_text().strip() if path.exists() else ""
    if not secret:  # also a file left empty by a crash between create and write
        secret = secrets.token_urlsafe(nbytes)
        _write_private(path, secret)
    path.chmod(0o600)
    return secret


def _write_private(path: Path, text: str) -> None:
    # Created 0600 from the start: no moment at which another user could read it.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def access_policy(settings: Settings, admin: str) -> AccessPolicy:
    """Return the policy for these settings and admin token; ConfigError on a bad network."""
    view = settings.view_token.get_secret_value().strip() if settings.view_token else ""
    require = settings.views_require_token
    return AccessPolicy(
        admin_token=admin, view_token=view or None,
        views_open=require is False or (require is None and is_loopback(settings.host)),
        views_open_via_proxy=require is False,
        webhook_allow=networks(settings.webhook_allow_ips, "PM_WEBHOOK_ALLOW_IPS"),
        trusted_proxies=networks(settings.trusted_proxies, "PM_TRUSTED_PROXIES"))


def is_loopback(host: str) -> bool:
    """Whether a listener on `host` is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    address = _address(host.strip().strip("[]"))
    return address is not None and address.is_loopback


def networks(text: str, source: str) -> tuple[Network, ...]:
    """Parse comma-separated addresses and CIDR networks; ConfigError naming `source`."""
    parsed = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            parsed.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(f"{source}: {entry!r} is not an address or network") from None
    return tuple(parsed)


def client_address(request: web.BaseRequest, trusted: tuple[Network, ...]) -> str:
    """Return the caller's address: the peer, or behind trusted proxies the X-Forwarded-For hop."""
    return forwarded_client(request.remote, request.headers.getall("X-Forwarded-For", ()),
                            trusted)


def forwarded_client(remote: str | None, forwarded_for: Sequence[str],
                     trusted: tuple[Network, ...]) -> str:
    """Return the client of a request from peer `remote` with these X-Forwarded-For headers.

    The header is read right to left, skipping the trusted proxies' own entries: everything
    left of the first untrusted hop was written by the client and proves nothing.
    """
    peer = remote or "unknown"
    peer_address = _address(peer)
    if peer_address is None or not _within(peer_address, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer  # a hop nobody can vouch for: attribute the request to the proxy
        if not _within(address, trusted):
            return str(address)
    return peer


def access_control(policy: AccessPolicy) -> Middleware:
    """Return the middleware that refuses calls without the token their path needs."""

    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_path = _route_path(request)
        if route_path in OPEN_PATHS or _is_static(request):
            return await _with_session(request, policy, handler)
        presented = bearer_token(request)
        session = None if presented else _session(request, policy)
        if _is_admin(route_path) or _is_admin(request.path):
            if presented is not None:
                if not policy.admits_admin(presented):
                    return _refuse(request, "admin token required")
            elif session is None or session.grant is not Grant.ADMIN:
                return _refuse(request, "admin token required")
            elif not csrf_matches(request, session):
                # The cookie alone is ambient: another site's form could make it go along.
                return _refuse(request, "CSRF token required", status=403)
        elif session is None and not policy.admits_view(
                presented, via_proxy(request, policy.trusted_proxies)):
            if request.path == "/" and "text/html" in request.headers.get("Accept", ""):
                raise web.HTTPSeeOther("/login")  # a browser: to the login form
            return _refuse(request, "view token required")
        return await handler(request)

    return check_access


async def _with_session(request: web.Request, policy: AccessPolicy,
                        handler: Handler) -> web.StreamResponse:
    _session(request, policy)
    return await handler(request)


def _session(request: web.Request, policy: AccessPolicy) -> Session | None:
    """The dashboard session the request's cookie proves (kept on the request), or None."""
    session = policy.sessions.verify(request.cookies.get(COOKIE))
    if session is not None:
        request[SESSION] = session
    return session


def csrf_matches(request: web.Request, session: Session) -> bool:
    return _matches(request.headers.get(CSRF_HEADER), session.csrf)


def via_proxy(request: web.BaseRequest, trusted: tuple[Network, ...]) -> bool:
    """Whether the request came through a proxy: from a trusted one, or forwarded at all."""
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return True
    return via_trusted_proxy(request, trusted)


def via_trusted_proxy(request: web.BaseRequest, trusted: tuple[Network, ...]) -> bool:
    """Whether the peer is one of the trusted proxies (whose headers can be believed)."""
    peer = _address(request.remote or "")
    return peer is not None and _within(peer, trusted)


def bearer_token(request: web.BaseRequest) -> str | None:
    """Return the token of an `Authorization: Bearer …` header, if there is one."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _refuse(request: web.Request, detail: str, status: int = 401) -> web.Response:
    # Path and caller only: the presented token is never logged, right or wrong.
    log.info("access_refused", path=request.path, client=request.remote, detail=detail)
    return web.json_response(
        {"status": "error", "error": "unauthorized" if status == 401 else "forbidden",
         "detail": detail}, status=status, headers={"WWW-Authenticate": "Bearer"})


def _route_path(request: web.Request) -> str:
    # The route the router chose, not the raw path: only a request that reaches an open
    # handler is let through untokened.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def _is_static(request: web.Request) -> bool:
    # By the resource the router chose: a path that merely starts like one is not let in.
    return isinstance(request.match_info.route.resource, web.StaticResource)


def _is_admin(path: str) -> bool:
    return path == ADMIN_PREFIX.rstrip("/") or path.startswith(ADMIN_PREFIX)


def _matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


@functools.lru_cache(maxsize=1024)  # every request parses its peer: a few peers, many times
def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, nets: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in nets)
