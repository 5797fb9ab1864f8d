"""The aiohttp application: the webhook and the read-only views of the book."""

from __future__ import annotations

import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from core.db_pool import TRANSIENT_ERRORS
from core.db_state_manager import DatabaseStateManager
from core.models import Layer, OrderIntent, Outcome, SignalOutcome, SignalRecord
from core.signals import InvalidSignal, parse_signal, storable_payload
from core.specs import InstrumentSpec
from live.access import AccessPolicy, access_control, client_address
from live.broker_stops import BrokerStops
from live.brokers.base import Broker
from live.engine import LiveTradingEngine
from live.exit_retries import ExitRetries
from live.group_commit import Overloaded
from live.inbox import Inbox
from live.metrics import Metrics
from live.rate_limit import RateLimiter
from live.readiness import MISMATCH, Readiness
from live.rollover import Rollover
from live.status import status_report
from live.trading_control import TradingControl

if TYPE_CHECKING:
    from live.daily_limits import DailyLimits
    from live.event_feed import EventFeed
    from live.flatten import Flattener
    from live.ha_node import HaNode  # a pair's: Redis is imported only by a pair
    from live.reconciler import Reconciler
from live.webhook_body import BadBody, parse_body

MAX_LIST_LIMIT = 1000
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WebhookPolicy:
    secret: str
    max_bytes: int
    decision_wait_ms: int
    rate_limit_per_min: int


@dataclass
class Context:
    db: DatabaseStateManager
    inbox: Inbox
    engine: LiveTradingEngine
    instruments: dict[str, InstrumentSpec]
    policy: WebhookPolicy
    metrics: Metrics
    readiness: Readiness
    broker: Broker
    limiter: RateLimiter
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    exits: ExitRetries | None = None
    rollover: Rollover | None = None
    control: TradingControl | None = None
    flattener: Flattener | None = None
    limits: DailyLimits | None = None  # the daily loss limit and entry count
    stops: BrokerStops | None = None  # the layers' broker-resident stops
    config_sha256: str | None = None  # the configuration this daemon decides under
    ha: HaNode | None = None  # a pair's node (None: a single daemon)
    feed: EventFeed | None = None  # the outbox as it happens: the dashboard's live stream
    reconciler: Reconciler | None = None
    # Without a policy (tests that build a Context by hand) views are open and the admin
    # routes refuse everyone: the token is random and never shown. The daemon always sets it.
    access: AccessPolicy = field(
        default_factory=lambda: AccessPolicy(secrets.token_urlsafe(32), views_open=True))


CTX = web.AppKey("ctx", Context)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


dumps = partial(json.dumps, default=_default)


def reply(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=dumps)


def error(status: int, code: str, detail: str) -> web.Response:
    return reply({"status": "error", "error": code, "detail": detail}, status)


def overloaded() -> web.Response:
    """Refused unstored, past capacity: a retry after a second may find room."""
    response = error(503, "overloaded", "too many alerts at once: not stored, send again")
    response.headers["Retry-After"] = "1"
    return response


def outcome_reply(outcome: SignalOutcome) -> web.Response:
    if outcome.outcome is Outcome.ERROR:
        # A fault, not a business outcome: the signal is stored and decided `error`; an order
        # it had sent is still resolved with the broker (see /ready and /signals/{id}).
        return reply({"status": "error", "error": "processing_error",
                      "detail": outcome.reason, "signal_id": outcome.signal_id}, 500)
    # Signal ids start at 1: 0 is an exit the daemon decided itself (manual, flatten).
    return reply({"status": outcome.outcome, "signal_id": outcome.signal_id or None,
                  "reason": outcome.reason, "result": outcome.result})


@web.middleware
async def request_context(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
    structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex[:12])
    try:
        return await handler(request)
    except TRANSIENT_ERRORS as exc:
        log.warning("database_unavailable", path=request.path, error=str(exc))
        return error(503, "unavailable", "database unavailable")
    finally:
        structlog.contextvars.clear_contextvars()


async def webhook(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    response = await _webhook(request, ctx)
    ctx.metrics.webhook_requests.labels(str(response.status)).inc()
    return response


async def _webhook(request: web.Request, ctx: Context) -> web.Response:
    received_at = ctx.clock()
    # Behind a proxy every alert arrives from the proxy: the sender is the forwarded client.
    client = client_address(request, ctx.access.trusted_proxies)
    if not ctx.access.admits_webhook_from(client):
        return error(403, "forbidden", "source address not allowed")
    if not ctx.limiter.allow(client, time.monotonic()):
        return error(429, "rate_limited", "Too many requests")
    if ctx.inbox.overloaded:  # shed before any work: the sender hears it in time
        return overloaded()
    if (request.content_length or 0) > ctx.policy.max_bytes:
        return error(413, "payload_too_large", f"Payload exceeds {ctx.policy.max_bytes} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, "payload_too_large", f"Payload exceeds {ctx.policy.max_bytes} bytes")
    try:
        payload = parse_body(body)
    except BadBody as exc:
        return error(400, "validation_error", exc.detail)
    secret = payload.get("secret")
    if not isinstance(secret, str) or not hmac.compare_digest(
            secret.encode(), ctx.policy.secret.encode()):
        return error(401, "unauthorized", "Unauthorized")
    try:
        signal = parse_signal(payload, ctx.instruments)
    except InvalidSignal as exc:
        return error(400, "validation_error", exc.phrase)
    structlog.contextvars.bind_contextvars(instrument=signal.instrument)
    try:
        admission, outcome = await ctx.inbox.submit(signal, storable_payload(payload),
                                                    received_at)
    except Overloaded as exc:
        log.warning("webhook_shed", reason=str(exc))
        return overloaded()
    structlog.contextvars.bind_contextvars(signal_id=admission.signal_id)
    if not admission.accepted:
        return reply({"status": "duplicate", "signal_id": admission.signal_id,
                      "reason": "duplicate signal", "result": {}})
    if outcome is None:
        # The wait counts from when the alert was sent: time spent being stored is part of
        # it, and so is the time it waited unread while the daemon was behind.
        waited = (ctx.clock() - received_at).total_seconds() + ctx.inbox.unseen_wait_s
        outcome = await ctx.inbox.wait_for_decision(admission.signal_id, ctx.inbox.patience_s(
            signal.instrument, max(ctx.policy.decision_wait_ms / 1000 - waited, 0.0)))
    if outcome is None:
        return reply({"status": "accepted", "signal_id": admission.signal_id, "reason": None,
                      "result": {}}, 202)
    return outcome_reply(outcome)


async def health(request: web.Request) -> web.Response:
    return reply({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    reasons = current_reasons(ctx)
    ctx.metrics.ready.set(int(not reasons))
    return reply({"ready": not reasons, "reasons": reasons}, 200 if not reasons else 503)


def current_reasons(ctx: Context) -> list[str]:
    """Why the daemon cannot trade right now: standby, startup, blocks, database, broker."""
    standby = ctx.ha.not_ready_reason() if ctx.ha else None
    if standby is not None:  # load balancers route by /ready: only the leader says yes
        return [standby]
    return ctx.readiness.reasons(ctx.broker.unavailable_reason)


async def db_status(request: web.Request) -> web.Response:
    status = await request.app[CTX].db.status()
    return reply(status, 200 if status["status"] == "connected" else 503)


async def status(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    report = await status_report(ctx.engine, ctx.metrics)
    reasons = current_reasons(ctx)
    return reply({"broker": ctx.broker.name, "ready": not reasons,
                  "role": ctx.ha.role if ctx.ha else "single",
                  "ha": ctx.ha.report() if ctx.ha else None,
                  "not_ready_reasons": reasons,
                  "paused": not ctx.readiness.database_available,
                  "discrepancies": ctx.readiness.block_reasons(MISMATCH),
                  "exits_pending": ctx.exits.report() if ctx.exits else [],
                  "rollover": await ctx.rollover.report() if ctx.rollover else {},
                  "trading_state": ctx.control.report() if ctx.control else None,
                  "flatten": ctx.flattener.report() if ctx.flattener else None,
                  "daily": await ctx.limits.report() if ctx.limits else None,
                  "broker_stops": ctx.stops.report() if ctx.stops else None,
                  "config_sha256": ctx.config_sha256, **report})


async def kite_postback(request: web.Request) -> web.Response:
    """Kite order postback: checksum verified in constant time; repeats are harmless."""
    accept = getattr(request.app[CTX].broker, "accept_postback", None)
    if accept is None:
        return error(404, "not_found", "no postbacks for this broker")
    try:
        payload = parse_body(await request.read())
    except BadBody as exc:
        return error(400, "validation_error", exc.detail)
    if not accept(payload):
        return error(403, "unauthorized", "Invalid checksum")
    return reply({"status": "ok"})


def _limit(request: web.Request, default: int = 100) -> int:
    try:
        return max(1, min(int(request.query.get("limit", default)), MAX_LIST_LIMIT))
    except ValueError:
        raise web.HTTPBadRequest(text=dumps({"status": "error", "error": "validation_error",
                                             "detail": "Invalid limit"}),
                                 content_type="application/json") from None


async def positions(request: web.Request) -> web.Response:
    wanted = request.query.get("status", "open")
    if wanted not in ("open", "closed", "all"):
        return error(400, "validation_error", "Invalid status")
    ctx = request.app[CTX]
    layers = await ctx.db.list_positions(wanted, _limit(request))
    return reply({"positions": [
        {**position_view(layer),
         **({"broker_stop": ctx.stops.view(layer.id)} if ctx.stops and layer.is_live else {})}
        for layer in layers]})


async def signals(request: web.Request) -> web.Response:
    instrument = request.query.get("instrument")
    records = await request.app[CTX].db.list_signals(
        _limit(request), instrument.upper() if instrument else None)
    return reply({"signals": [signal_view(record) for record in records]})


def signal_id_of(request: web.Request) -> int | None:
    """The path's signal id, or None when it cannot be one (not a bigint)."""
    try:
        signal_id = int(request.match_info["signal_id"])
    except ValueError:
        return None
    return signal_id if 0 <= signal_id < 2**63 else None


async def signal_detail(request: web.Request) -> web.Response:
    db = request.app[CTX].db
    signal_id = signal_id_of(request)
    if signal_id is None:
        return error(400, "validation_error", "Invalid signal id")
    record = await db.signal(signal_id)
    if record is None:
        return error(404, "not_found", f"no signal {signal_id}")
    intents = await db.intents_for_signal(signal_id)
    return reply({**signal_view(record), "payload": record.payload,
                  "orders": [order_view(intent) for intent in intents]})


async def orders(request: web.Request) -> web.Response:
    intents = await request.app[CTX].db.list_intents(_limit(request))
    return reply({"orders": [order_view(intent) for intent in intents]})


def position_view(layer: Layer) -> dict[str, Any]:
    return {
        "position_id": layer.id, "trade_id": layer.trade_id, "instrument": layer.instrument,
        "layer": layer.layer, "is_base_position": layer.is_base_position,
        "status": layer.status, "lots": layer.lots, "quantity": layer.quantity,
        "entry_price": layer.entry_price, "entry_timestamp": layer.entry_timestamp,
        "initial_stop": layer.initial_stop, "current_stop": layer.current_stop,
        "highest_close": layer.highest_close, "atr": layer.atr, "limiter": layer.limiter,
        "tradingsymbol": layer.tradingsymbol, "exchange": layer.exchange,
        "expiry": layer.expiry, "exit_price": layer.exit_price,
        "exit_timestamp": layer.exit_timestamp, "exit_reason": layer.exit_reason,
        "realized_pnl": layer.realized_pnl,
    }


def signal_view(record: SignalRecord) -> dict[str, Any]:
    return {
        "signal_id": record.id, "type": record.signal_type, "instrument": record.instrument,
        "position": record.position, "status": record.status, "outcome": record.outcome,
        "reason": record.reason, "signal_timestamp": record.signal_timestamp,
        "received_at": record.received_at, "processed_at": record.processed_at,
    }


def order_view(intent: OrderIntent) -> dict[str, Any]:
    return {
        "intent_id": intent.id, "tag": intent.tag, "signal_id": intent.signal_id,
        "instrument": intent.instrument, "tradingsymbol": intent.tradingsymbol,
        "side": intent.side, "lots": intent.lots, "quantity": intent.quantity,
        "status": intent.status, "broker_order_id": intent.broker_order_id,
        "filled_quantity": intent.filled_quantity, "average_price": intent.average_price,
        "reason": intent.reason,
    }


def build_app(ctx: Context) -> web.Application:
    """Return the daemon's HTTP application."""
    app = web.Application(client_max_size=ctx.policy.max_bytes,
                          middlewares=[request_context, access_control(ctx.access)])
    app[CTX] = ctx
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/db/status", db_status)
    app.router.add_get("/status", status)
    app.router.add_get("/positions", positions)
    app.router.add_get("/signals", signals)
    app.router.add_get("/signals/{signal_id}", signal_detail)
    app.router.add_get("/orders", orders)
    app.router.add_get("/metrics", make_aiohttp_handler(ctx.metrics.registry))
    app.router.add_post("/kite/postback", kite_postback)
    from live.admin_api import add_admin_routes  # they build on this module's replies
    from live.dashboard import add_dashboard_routes

    add_admin_routes(app)
    add_dashboard_routes(app)
    return app
