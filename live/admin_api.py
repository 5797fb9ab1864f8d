"""The operator's levers over HTTP (DESIGN.md §9): pause, resume, halt, flatten, a manual
exit and capital movements. JSON in and out; the access middleware has already checked the
admin token. Every call is recorded in `execution_log` with its actor and reason.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from aiohttp import web

from core.errors import InsufficientEquity
from core.models import LedgerEntry, LedgerType
from core.trading_state import MANUAL, Actor, TradingState
from live.access import SESSION
from live.operator_actions import OPERATOR_ACTION, StateRefused, change_state
from live.server import CTX, Context, error, outcome_reply, reply
from live.waiting import within
from live.webhook_body import BadBody, parse_body

FLATTEN_ANSWER_WAIT_S = 10.0  # past this a flatten answers 202 and carries on
MAX_REASON_CHARS = 500
MAX_AMOUNT = Decimal("1e15")
POSITION = re.compile(r"Long_[1-6]|ALL")
# What a browser session must type to confirm (a click alone is too easy to make).
TYPED_CONFIRMATION = {"flatten": "FLATTEN"}
log = structlog.get_logger(__name__)


class BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return parse_body(raw)
    except BadBody as exc:
        raise BadRequest(exc.detail) from None


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key} is required")
        return None
    if not isinstance(value, str) or len(value) > MAX_REASON_CHARS:
        raise BadRequest(f"Invalid {key}: a string of at most {MAX_REASON_CHARS} characters")
    return value.strip() or None


def amount_of(value: object) -> Decimal:
    """The amount of a capital movement: a positive decimal of rupees and paise."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise BadRequest("Invalid amount: give a positive decimal such as \"100000.00\"")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadRequest("Invalid amount: give a positive decimal such as \"100000.00\"")\
            from None
    if not amount.is_finite() or amount <= 0 or amount >= MAX_AMOUNT:
        raise BadRequest("Invalid amount: must be positive and below 10^15")
    if amount != amount.quantize(Decimal("0.01")):
        raise BadRequest("Invalid amount: at most two decimal places (paise)")
    return amount.quantize(Decimal("0.01"))


Handle = Callable[[Context, dict[str, Any]], Awaitable[tuple[web.Response, dict[str, Any]]]]
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _handler(action: str, read: Callable[[web.Request], Awaitable[dict[str, Any]]] = _body
             ) -> Callable[[Handle], Handler]:
    """Wrap an admin handler: bad input is a 400 that changed nothing; every call is
    recorded (after the action's own transaction, so a failed audit never undoes it).
    `read`: how the body is read (an import is larger than an alert)."""
    def wrap(handle: Handle) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            ctx = request.app[CTX]
            standby = ctx.ha.not_ready_reason() if ctx.ha else None
            if standby:  # only the leader acts (and its cache is the book's): say where it is
                return error(503, "standby", f"this node is the {standby}; send it there")
            if ctx.readiness.stage is not None:  # recovery still drives the book's orders
                return error(503, "starting", "the daemon is still recovering; try again")
            try:
                body = await read(request)
                _confirmed(request, action, body)
                response, details = await handle(ctx, body)
            except BadRequest as exc:
                return error(400, "validation_error", exc.detail)
            try:
                async with ctx.db.transaction() as tx:
                    await tx.log_event(OPERATOR_ACTION, action=action, actor=Actor.OPERATOR,
                                       status=response.status, **details)
            except Exception:  # the audit row is not the action: never fail the answer
                log.exception("operator_action_not_recorded", action=action)
            log.info(OPERATOR_ACTION, action=action, status=response.status)
            return response
        return handler
    return wrap


def _confirmed(request: web.Request, action: str, body: dict[str, Any]) -> None:
    word = TYPED_CONFIRMATION.get(action)
    if word is not None and request.get(SESSION) is not None and body.get("confirm") != word:
        raise BadRequest(f"type {word} to confirm")


def _state_handler(action: str, wanted: TradingState) -> Handler:
    @_handler(action)
    async def handle(ctx: Context, body: dict[str, Any]) -> tuple[web.Response, dict[str, Any]]:
        reason = _text(body, "reason")
        assert ctx.control is not None
        try:
            record, changed = await change_state(ctx, wanted, reason or action)
        except StateRefused as exc:
            return error(409, "refused", str(exc)), {"reason": reason}
        return reply({"status": "ok", "changed": changed,
                      "trading_state": ctx.control.report()}), {
            "reason": reason, "changed": changed, "state": record.state}
    return handle


@_handler("flatten")
async def flatten(ctx: Context, body: dict[str, Any]) -> tuple[web.Response, dict[str, Any]]:
    reason = _text(body, "reason") or "operator flatten"
    assert ctx.flattener is not None
    task = await ctx.flattener.request(reason, Actor.OPERATOR)
    try:
        report = await within(FLATTEN_ANSWER_WAIT_S, asyncio.shield(task))
    except TimeoutError:
        row = ctx.flattener.current
        return reply({"status": "flattening", "flatten_id": row.id if row else None}, 202), {
            "reason": reason}
    return reply({"status": report.status, "flatten_id": report.flatten_id,
                  "layers_closed": report.layers_closed,
                  "orders_cancelled": report.orders_cancelled,
                  "elapsed_ms": report.elapsed_ms}), {"reason": reason,
                                                      "flatten_id": report.flatten_id}


@_handler("exit")
async def manual_exit(ctx: Context, body: dict[str, Any]
                      ) -> tuple[web.Response, dict[str, Any]]:
    instrument = (_text(body, "instrument", required=True) or "").upper()
    position = _text(body, "position") or "ALL"
    reason = _text(body, "reason")
    details = {"instrument": instrument, "position": position, "reason": reason}
    if instrument not in ctx.instruments:
        return error(404, "not_found", f"unknown instrument {instrument}"), details
    if not POSITION.fullmatch(position):
        raise BadRequest("Invalid position: Long_1 to Long_6, or ALL")
    outcome = await ctx.engine.operator_exit(instrument, position, MANUAL)
    if outcome is None:
        what = "no open layers" if position == "ALL" else f"no open layer {position}"
        return error(404, "not_found", f"{what} in {instrument}"), details
    return outcome_reply(outcome), {**details, "outcome": outcome.outcome}


@_handler("capital")
async def capital(ctx: Context, body: dict[str, Any]) -> tuple[web.Response, dict[str, Any]]:
    kind = body.get("type")
    if kind not in (LedgerType.DEPOSIT, LedgerType.WITHDRAW):
        raise BadRequest("Invalid type: DEPOSIT or WITHDRAW")
    amount = amount_of(body.get("amount"))
    note = _text(body, "note")
    details = {"type": kind, "amount": amount, "note": note}
    try:
        async with ctx.db.transaction() as tx:
            entry = await tx.append_ledger(LedgerType(kind), amount,
                                           note=note or f"operator {kind.lower()}")
    except InsufficientEquity:
        state = await ctx.db.portfolio_state()
        closed = state.closed_equity if state else Decimal(0)
        return error(409, "refused", f"withdrawal of {amount} exceeds closed equity "
                                     f"{closed}"), details
    log.info("capital_moved", txn_type=kind, amount=str(amount),
             equity_after=str(entry.equity_after))
    return reply({"status": "ok", "entry": ledger_view(entry)}), {**details,
                                                                  "entry_id": entry.id}


def ledger_view(entry: LedgerEntry) -> dict[str, Any]:
    return {"id": entry.id, "txn_type": entry.txn_type, "amount": entry.amount,
            "equity_before": entry.equity_before, "equity_after": entry.equity_after,
            "note": entry.note, "created_at": entry.created_at}


def add_admin_routes(app: web.Application) -> None:
    app.router.add_post("/admin/pause", _state_handler("pause", TradingState.REDUCING))
    app.router.add_post("/admin/resume", _state_handler("resume", TradingState.ACTIVE))
    app.router.add_post("/admin/halt", _state_handler("halt", TradingState.HALTED))
    app.router.add_post("/admin/flatten", flatten)
    app.router.add_post("/admin/exit", manual_exit)
    app.router.add_post("/admin/capital", capital)
    from live.position_import import import_positions  # it builds on this module's helpers

    app.router.add_post("/admin/import-positions", import_positions)
