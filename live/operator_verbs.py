"""The operator verbs (DESIGN.md §9): pause, resume, halt, flatten, exit, capital, status,
import-positions (`live.position_import_cli`).

Each asks the running daemon one thing and answers with one line (an import: one per layer
and a summary) and an exit code: 0 done,
1 refused (the daemon answered no), 2 not asked (bad usage, no token, no daemon).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from config.settings import Settings
from live.operator_client import Answer, CannotAsk, OperatorClient, admin_token
from live.position_import_cli import import_positions

DONE, REFUSED, NOT_ASKED = 0, 1, 2
VERBS = ("pause", "resume", "halt", "flatten", "exit", "capital", "status",
         "import-positions")
UNAUTHORISED = (401, 403)


@dataclass(frozen=True)
class Reply:
    line: str
    code: int = DONE


def run_verb(verb: str, options: Mapping[str, Any], settings: Settings) -> Reply:
    """Ask the daemon at `options["url"]` (default: this host, the configured port) to carry
    out `verb`; never raises for anything an operator can cause."""
    url = options.get("url") or f"http://127.0.0.1:{settings.port}"
    configured = settings.admin_token.get_secret_value() if settings.admin_token else None
    try:
        if verb == "status":  # a read view: open on a loopback daemon, so a token is optional
            token = _optional_token(configured, settings)
            return status(OperatorClient(url, token))
        client = OperatorClient(url, admin_token(configured, settings.state_dir))
        return _ASK[verb](client, options)
    except CannotAsk as exc:
        return Reply(f"{verb}: {exc}", NOT_ASKED)


def change_state(client: OperatorClient, verb: str, reason: str | None) -> Reply:
    """pause → REDUCING, resume → ACTIVE, halt → HALTED."""
    previous = _current_state(client)
    answer = client.post(f"/admin/{verb}", _with_reason({}, reason))
    if answer.status != 200:
        return _refused(verb, answer)
    record = answer.body.get("trading_state") or {}
    state = record.get("state")
    if not answer.body.get("changed"):
        was = " (unchanged)"
    else:
        was = f" (was {previous})" if previous and previous != state else ""
    said = f'reason "{record["reason"]}"' if record.get("reason") else "no reason"
    return Reply(f"trading state {state}{was}: {said} by {record.get('actor')}")


def flatten(client: OperatorClient, reason: str | None) -> Reply:
    """Close every layer and cancel every open order."""
    answer = client.post("/admin/flatten", _with_reason({}, reason))
    body = answer.body
    if answer.status == 202:
        return Reply(f"flattening: still under way (flatten {body.get('flatten_id')}); "
                     "`status` shows when it is flat")
    if answer.status != 200:
        return _refused("flatten", answer)
    return Reply(f"flat: {_count(body.get('layers_closed'), 'layer')} closed, "
                 f"{_count(body.get('orders_cancelled'), 'order')} cancelled in "
                 f"{body.get('elapsed_ms')} ms")


def exit_position(client: OperatorClient, instrument: str, position: str,
                  reason: str | None) -> Reply:
    """Exit one layer (or ALL of an instrument) now, as an EXIT alert would."""
    what = f"exit {instrument} {position}"
    answer = client.post("/admin/exit", _with_reason(
        {"instrument": instrument, "position": position}, reason))
    body = answer.body
    if answer.status not in (200, 202) or body.get("status") == "error":
        return _refused(what, answer)
    outcome = body.get("status")
    if outcome == "accepted":
        return Reply(f"{what}: accepted, still being carried out (signal {body.get('signal_id')})")
    if outcome != "executed":
        return Reply(f"{what}: {outcome} ({body.get('reason')})", REFUSED)
    result = body.get("result") or {}
    closed = result.get("positions_closed") or []
    layers = f", {_count(len(closed), 'layer')} closed" if position == "ALL" and closed else ""
    return Reply(f"{what}: executed{layers}, P&L {result.get('pnl')}")


def capital(client: OperatorClient, kind: str, amount_text: str, note: str | None) -> Reply:
    """Deposit or withdraw capital: a ledger row that moves closed equity."""
    txn_type = kind.upper()
    amount = positive_amount(amount_text)
    if amount is None:
        return Reply(f"capital: AMOUNT must be a positive amount such as 100000.00, got "
                     f"{amount_text!r}", NOT_ASKED)
    body: dict[str, Any] = {"type": txn_type, "amount": format(amount, "f")}
    if note is not None:
        body["note"] = note
    answer = client.post("/admin/capital", body)
    if answer.status != 200:
        return _refused(f"{txn_type} {format(amount, 'f')}", answer)
    entry = answer.body.get("entry") or {}
    return Reply(f"{entry.get('txn_type', txn_type)} {entry.get('amount')}: closed equity "
                 f"{entry.get('equity_before')} -> {entry.get('equity_after')}")


def status(client: OperatorClient) -> Reply:
    """One line of `/status`: state, open layers, equity, the day's P&L, readiness."""
    answer = client.get("/status")
    if answer.status != 200:
        return _refused("status", answer)
    body = answer.body
    state = (body.get("trading_state") or {}).get("state") or "state unknown"
    daily = body.get("daily") or {}
    parts = [state, _count(body.get("open_positions"), "open layer"),
             f"closed equity {(body.get('equity') or {}).get('closed')}"]
    if daily.get("pnl") is not None:  # a daemon without the daily limits has no day figure
        parts.append(f"day P&L {daily['pnl']}")
    if daily.get("breached"):
        parts.append("daily loss limit breached")
    if body.get("exits_pending"):
        parts.append(_count(len(body["exits_pending"]), "exit") + " pending")
    reasons = body.get("not_ready_reasons") or []
    parts.append("ready" if body.get("ready") else f"not ready ({'; '.join(reasons)})")
    return Reply("status: " + ", ".join(parts))


def positive_amount(text: str) -> Decimal | None:
    """The amount in `text` if it is a positive, finite decimal; None otherwise."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount > 0 else None


_ASK: dict[str, Callable[[OperatorClient, Mapping[str, Any]], Reply]] = {
    "pause": lambda client, o: change_state(client, "pause", o.get("reason")),
    "resume": lambda client, o: change_state(client, "resume", o.get("reason")),
    "halt": lambda client, o: change_state(client, "halt", o.get("reason")),
    "flatten": lambda client, o: flatten(client, o.get("reason")),
    "exit": lambda client, o: exit_position(client, o["instrument"], o.get("position") or "ALL",
                                            o.get("reason")),
    "capital": lambda client, o: capital(client, o["kind"], o["amount"], o.get("note")),
    "import-positions": lambda client, o: Reply(*import_positions(
        client, o["file"], bool(o.get("dry_run")), o.get("reason"))),
}


def _optional_token(configured: str | None, settings: Settings) -> str | None:
    try:
        return admin_token(configured, settings.state_dir)
    except CannotAsk:
        return None


def _current_state(client: OperatorClient) -> str | None:
    # Only for the message's "(was …)": the change itself is decided by the daemon.
    answer = client.get("/status")
    record = answer.body.get("trading_state") if answer.status == 200 else None
    return record.get("state") if isinstance(record, dict) else None


def _with_reason(body: dict[str, Any], reason: str | None) -> dict[str, Any]:
    return {**body, "reason": reason} if reason is not None else body


def _refused(what: str, answer: Answer) -> Reply:
    if answer.status in UNAUTHORISED:
        return Reply(f"{what}: not authorised ({answer.detail}); check PM_ADMIN_TOKEN or the "
                     "state dir's admin_token", NOT_ASKED)
    return Reply(f"{what} refused: {answer.detail}", REFUSED)


def _count(n: object, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
