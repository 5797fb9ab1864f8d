"""`POST /admin/import-positions`: an existing book of open layers brought into the running
daemon (the rules are `core.position_import`'s).

Through the daemon, never straight into the database: its write-through cache is the book
decisions read. Every row is checked; on any rejection nothing is written (422, every
reason). A dry run shows the plan and writes nothing. Otherwise every layer, each
instrument's pyramiding state and the `positions_imported` audit row commit in ONE
transaction; then the broker is compared with the book as at startup, and the new layers
get their broker stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

import psycopg
import structlog
from aiohttp import web

from core.accounting import money_text, percent
from core.db_pool import TRANSIENT_ERRORS
from core.db_transaction import Transaction
from core.exposure import Exposure, exposure
from core.models import ContractRef, Layer, NewLayer, PyramidingState
from core.position_import import (
    IMPORTED,
    ImportCheck,
    ImportedLayer,
    ImportedTrade,
    check_import,
    preview_layer,
)
from core.reconciliation import Discrepancy, book_positions
from core.trading_state import Actor
from live.admin_api import BadRequest, _handler, _text
from live.brokers.base import BrokerError
from live.server import Context, error, reply
from live.waiting import within
from live.webhook_body import BadBody, parse_body

ACTION = "import-positions"
IMPORTED_EVENT = "positions_imported"
MAX_BODY_BYTES = 1 << 20  # 500 rows with room to spare; the webhook's 16 KiB cap is for alerts
log = structlog.get_logger(__name__)


class FlattenUnderWay(Exception):
    """A flatten would sell what the import brings in: the operator asked for flat."""


# -- the request ----------------------------------------------------------------------------
async def _body(request: web.Request) -> dict[str, Any]:
    # Read past the application's client_max_size (sized for alerts) up to our own cap.
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise BadRequest(f"the import exceeds {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"the import exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        return parse_body(b"".join(chunks))
    except BadBody as exc:
        raise BadRequest(exc.detail) from None


def _rows(body: dict[str, Any]) -> list[Any]:
    rows = body.get("rows")
    if not isinstance(rows, list):
        raise BadRequest("rows is required: a list of objects, one per layer")
    return rows


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"Invalid {key}: true or false")
    return value


@_handler(ACTION, read=_body)
async def import_positions(ctx: Context, body: dict[str, Any]
                           ) -> tuple[web.Response, dict[str, Any]]:
    """Check (and unless a dry run, write) the rows of an import; answer the plan."""
    rows, dry_run = _rows(body), _flag(body, "dry_run")
    details: dict[str, Any] = {"reason": _text(body, "reason"), "file": _text(body, "file"),
                               "rows": len(rows), "dry_run": dry_run}
    response, outcome = await _import(ctx, rows, dry_run, details)
    return response, {**details, **outcome}


async def _import(ctx: Context, rows: list[Any], dry_run: bool,
                  details: dict[str, Any]) -> tuple[web.Response, dict[str, Any]]:
    refusal = _flatten_refusal(ctx)
    if refusal is not None:
        return error(409, "refused", refusal), {}
    async with AsyncExitStack() as held:
        # The instruments' locks: no signal, exit or roll moves their layers meanwhile.
        for name in sorted({str(r.get("instrument", "")).strip().upper() for r in rows
                            if isinstance(r, dict)} & set(ctx.instruments)):
            await held.enter_async_context(ctx.engine.locks(name))
        now = ctx.clock()
        book = await ctx.db.all_live_layers()
        check = check_import(rows, instruments=ctx.instruments, book=book, now=now,
                             contracts={name: _listed(ctx, name, now)
                                        for name in ctx.instruments})
        if not check.ok:
            return _rejected(check), {"rejected": len(check.rejections)}
        plan = await _plan(ctx, check, book)
        if dry_run:
            return reply({"status": "dry_run", "plan": plan}), {"risk": plan["risk"]}
        try:
            written = await _write(ctx, check, details)
        except FlattenUnderWay as exc:
            return error(409, "refused", str(exc)), {}
        except psycopg.IntegrityError as exc:  # the book changed under us: nothing written
            log.warning("positions_import_conflict", error=str(exc).splitlines()[0])
            return error(409, "conflict", "the book changed while importing; nothing was "
                                          "imported: check it and try again"), {}
    log.warning(IMPORTED_EVENT, count=len(written), instruments=sorted(
        {x.instrument for x in written}))
    reconciled = await _reconcile(ctx)
    stops = await _protect(ctx, written)
    return reply({"status": "imported", "imported": [_layer_view(x, stops) for x in written],
                  "plan": plan, "reconciliation": reconciled}), {
        "position_ids": [x.id for x in written], "reconciliation": reconciled}


def _flatten_refusal(ctx: Context) -> str | None:
    running = ctx.flattener.current if ctx.flattener else None
    if running is not None and running.status == "flattening":
        return _flattening(running.id)
    return None


def _flattening(flatten_id: int) -> str:
    return (f"flatten {flatten_id} is under way: it would sell what the import brings in; "
            "import once the book is flat")


def _listed(ctx: Context, instrument: str, now: datetime) -> list[ContractRef]:
    try:
        return ctx.broker.contracts(instrument, now)
    except BrokerError:  # no contract loaded: every row of it is refused, with the reason
        return []


# -- the plan -----------------------------------------------------------------------------
async def _plan(ctx: Context, check: ImportCheck, book: Sequence[Layer]) -> dict[str, Any]:
    previews = [preview_layer(x) for x in check.layers]
    before = await ctx.engine.exposure()
    after = exposure(await ctx.db.portfolio_state(), [*book, *previews], ctx.instruments,
                     ctx.engine.price_of)
    limit = ctx.engine.config.max_portfolio_risk_percent
    warnings = list(check.warnings)
    risk_after = percent(after.risk, after.equity.blended)
    if risk_after > limit:
        warnings.append(f"open risk after the import {money_text(risk_after)}% exceeds "
                        f"max_portfolio_risk_percent {limit}%: entries will be cut or blocked")
    return {
        "layers": [_planned(x) for x in check.layers],
        "trades": [_trade_view(t) for t in check.trades()],
        "risk": {"before": money_text(before.risk), "imported": money_text(check.risk),
                 "after": money_text(after.risk)},
        "equity": _equity(before, after),
        "risk_percent": {"before": money_text(percent(before.risk, before.equity.blended)),
                         "after": money_text(risk_after), "limit": str(limit)},
        "margin_percent_after": money_text(percent(after.margin_used, after.equity.blended)),
        "venue": await _venue(ctx, [*book, *previews], check),
        "trading_state": ctx.control.report() if ctx.control else None,
        "warnings": warnings,
    }


def _equity(before: Exposure, after: Exposure) -> dict[str, str]:
    return {"closed": money_text(after.equity.closed),
            "blended_before": money_text(before.equity.blended),
            "blended_after": money_text(after.equity.blended)}


async def _venue(ctx: Context, layers: list[Layer], check: ImportCheck) -> dict[str, Any]:
    """What the broker holds of the imported contracts against what the book would: the
    reconciliation after the import will say the same."""
    symbols = sorted({x.contract.tradingsymbol for x in check.layers})
    try:
        held = await ctx.broker.positions()
    except BrokerError as exc:
        return {"available": False, "detail": str(exc), "contracts": []}
    book = book_positions(layers)
    return {"available": True, "contracts": [
        {"tradingsymbol": s, "book_after": book.get(s, 0), "broker": held.get(s, 0),
         "agrees": book.get(s, 0) == held.get(s, 0)} for s in symbols]}


def _planned(layer: ImportedLayer) -> dict[str, Any]:
    return {"row": layer.row, "instrument": layer.instrument, "layer": layer.layer,
            "lots": layer.lots, "quantity": layer.quantity, "entry_price": layer.entry_price,
            "initial_stop": layer.initial_stop, "current_stop": layer.current_stop,
            "highest_close": layer.highest_close, "atr": layer.atr,
            "entry_timestamp": layer.entry_timestamp,
            "tradingsymbol": layer.contract.tradingsymbol, "exchange": layer.contract.exchange,
            "expiry": layer.contract.expiry, "risk": money_text(layer.risk)}


def _trade_view(trade: ImportedTrade) -> dict[str, Any]:
    return {"instrument": trade.instrument, "layers": [x.layer for x in trade.layers],
            "pyramid_count": trade.pyramid_count,
            "last_pyramid_price": trade.last_pyramid_price}


def _rejected(check: ImportCheck) -> web.Response:
    count = len(check.rejections)
    return reply({"status": "error", "error": "rejected",
                  "detail": f"{count} rejection{'' if count == 1 else 's'}: nothing imported",
                  "rejections": [{"row": r.row, "field": r.field, "reason": r.reason}
                                 for r in check.rejections]}, 422)


# -- the write ----------------------------------------------------------------------------
async def _write(ctx: Context, check: ImportCheck, details: dict[str, Any]) -> list[Layer]:
    """Every layer, each trade's pyramiding state and the audit row: one transaction."""
    trades = check.trades()
    # Read before the transaction (nothing inside it reads through the cache); a flat
    # instrument may still have the row of its last trade.
    existing = {t.instrument: await ctx.db.pyramiding_state(t.instrument) for t in trades}
    written: list[Layer] = []
    async with ctx.db.transaction() as tx:
        # The state row first: a flatten starting now waits for this commit (and then
        # closes these layers too), or committed first and is seen here.
        await tx.trading_state(for_entry=True)
        running = await (await tx.conn.execute(
            "SELECT id FROM flattens WHERE status = 'flattening'")).fetchone()
        if running is not None:
            raise FlattenUnderWay(_flattening(running[0]))
        for trade in trades:
            layers = await _write_trade(tx, trade, existing[trade.instrument])
            written += layers
        await tx.log_event(IMPORTED_EVENT, actor=Actor.OPERATOR, count=len(written),
                           file=details["file"], reason=details["reason"],
                           position_ids=[x.id for x in written],
                           layers=[f"{x.instrument} {x.layer}" for x in written],
                           risk=money_text(check.risk))
    return written


async def _write_trade(tx: Transaction, trade: ImportedTrade,
                       current: PyramidingState | None) -> list[Layer]:
    trade_id = await tx.next_trade_id()
    layers = []
    for row in trade.layers:
        layer = await tx.insert_layer(NewLayer(
            trade_id=trade_id, instrument=row.instrument, layer=row.layer, lots=row.lots,
            quantity=row.quantity, entry_price=row.entry_price,
            entry_timestamp=row.entry_timestamp, initial_stop=row.initial_stop, atr=row.atr,
            limiter=IMPORTED, tradingsymbol=row.contract.tradingsymbol,
            exchange=row.contract.exchange, expiry=row.contract.expiry))
        # A new layer starts at its initial stop and entry; an imported one may have
        # trailed since.
        if (row.current_stop, row.highest_close) != (layer.current_stop, layer.highest_close):
            layer = await tx.update_layer(layer, current_stop=row.current_stop,
                                          highest_close=row.highest_close)
        layers.append(layer)
    await tx.save_pyramiding(PyramidingState(
        trade.instrument, trade_id, layers[0].id, trade.last_pyramid_price,
        trade.pyramid_count, current.version if current else 0))
    return layers


# -- after the commit ---------------------------------------------------------------------
async def _reconcile(ctx: Context) -> dict[str, Any]:
    """Compare the broker with the book as at startup: a difference blocks entries."""
    if ctx.reconciler is None:
        return {"ran": False, "detail": "no reconciler"}
    try:
        differences = await ctx.reconciler.check(compare_in_flight=True)
    except (BrokerError, *TRANSIENT_ERRORS) as exc:
        log.warning("positions_import_reconciliation_unavailable", error=str(exc))
        return {"ran": False, "detail": f"{type(exc).__name__}: {exc}; the periodic check "
                                        "compares later"}
    return {"ran": True, "agreed": not differences,
            "differences": [_difference(d) for d in differences]}


def _difference(d: Discrepancy) -> dict[str, Any]:
    return {"tradingsymbol": d.tradingsymbol, "book": d.book, "broker": d.broker,
            "detail": d.describe()}


async def _protect(ctx: Context, written: list[Layer]) -> dict[int, dict[str, Any] | None]:
    """Rest the new layers' stops at the broker now, as startup does; what fails is left to
    the keeper's next round."""
    stops = ctx.stops
    if stops is None:
        return {}
    for instrument in sorted({x.instrument for x in written}):
        try:
            async with ctx.engine.locks(instrument):
                await within(30, stops.sync_locked(instrument))
        except (BrokerError, TimeoutError) as exc:
            log.warning("positions_import_stops_later", instrument=instrument, error=str(exc))
            stops.poke(instrument)
    return {x.id: stops.view(x.id) for x in written}


def _layer_view(layer: Layer, stops: dict[int, dict[str, Any] | None]) -> dict[str, Any]:
    return {"position_id": layer.id, "trade_id": layer.trade_id,
            "instrument": layer.instrument, "layer": layer.layer, "lots": layer.lots,
            "quantity": layer.quantity, "entry_price": layer.entry_price,
            "current_stop": layer.current_stop, "tradingsymbol": layer.tradingsymbol,
            "broker_stop": stops.get(layer.id)}
