"""What a notification says (DESIGN.md §11): one short message per event a trader wants on
their phone, in Telegram's HTML, always naming the mode (PAPER or LIVE).

`messages` turns a batch of outbox events into (kind, text) pairs; the layers one exit closed
together are one message with each layer's P&L and the total. Kinds are what an operator
switches on and off (`PM_TELEGRAM_EVENTS`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from core.accounting import open_risk
from core.specs import InstrumentSpec
from live.outbox_follower import Row
from live.web_format import ist, number, rupees, signed_rupees

ENTRY, EXIT, TRADING_STATE, DAILY_LOSS = "entry", "exit", "trading_state", "daily_loss"
MISMATCH, EXIT_PENDING, ROLL, BROKER_STOP = "mismatch", "exit_pending", "roll", "broker_stop"
UNPROTECTED, SESSION, FAILOVER = "unprotected", "session", "failover"
ORDER_REJECTED, SIGNAL_ERROR, FLATTEN = "order_rejected", "signal_error", "flatten"
REPLY = "reply"  # an answer to a command: always sent
KINDS = (ENTRY, EXIT, TRADING_STATE, DAILY_LOSS, MISMATCH, EXIT_PENDING, ROLL, BROKER_STOP,
         UNPROTECTED, SESSION, FAILOVER, ORDER_REJECTED, SIGNAL_ERROR, FLATTEN)
DEFAULT_KINDS = KINDS  # every one of them matters with real money; switch off what is noise

TAG = re.compile(r"<[^>]+>")
log = structlog.get_logger(__name__)


def plain(text: str) -> str:
    """The message without its formatting (sent when Telegram cannot parse the HTML)."""
    return html.unescape(TAG.sub("", text))


def _e(value: object) -> str:
    return html.escape(str(value), quote=False)


def _dec(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def lots_text(value: object) -> str:
    return "1 lot" if str(value) == "1" else f"{value} lots"


def _price(value: object) -> str:
    amount = _dec(value)
    return number(amount) if amount is not None else "—"


class Texts:
    """Messages of one daemon: its mode and its instruments (for ₹ risk)."""

    def __init__(self, mode: str, instruments: Mapping[str, InstrumentSpec]) -> None:
        self.mode = mode
        self._instruments = instruments

    def head(self, title: str) -> str:
        return f"<b>[{self.mode}] {_e(title)}</b>"

    def say(self, title: str, *lines: str) -> str:
        """A message: the title in bold, then `lines` (HTML already)."""
        return "\n".join([self.head(title), *lines])

    def say_plain(self, title: str, *lines: str) -> str:
        """A message whose lines are plain text (escaped here)."""
        return self.say(title, *map(_e, lines))

    def messages(self, rows: Sequence[Row]) -> list[tuple[str, int, str]]:
        """(kind, event id, text) for the events of `rows` that notify, in order."""
        out: list[tuple[str, int, str]] = []
        exits: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for event_id, kind, _, data in rows:
            if kind == "layer.closed":
                # One exit's layers: its instrument, reason and fill (`signal_id` is each
                # layer's entry).
                key = (data.get("instrument"), data.get("exit_reason"), data.get("exit_price"))
                if key not in exits:
                    exits[key] = []
                    out.append((EXIT, event_id, ""))  # filled in once the batch is read
                exits[key].append(data)
                continue
            message = self._rendered(event_id, kind, self.event, kind, data)
            if message is not None:
                out.append((message[0], event_id, message[1]))
        groups = iter(exits.values())
        told = [(k, i, self._exit_text(i, next(groups)) if k == EXIT and not t else t)
                for k, i, t in out]
        return [(k, i, t) for k, i, t in told if t]

    def _exit_text(self, event_id: int, layers: list[dict[str, Any]]) -> str:
        told = self._rendered(event_id, "layer.closed", lambda: (EXIT, self.exit(layers)))
        return told[1] if told else ""

    @staticmethod
    def _rendered(event_id: int, kind: str, render: Callable[..., tuple[str, str] | None],
                  *args: Any) -> tuple[str, str] | None:
        """One event's message; an event it cannot read is logged and left out, so one odd
        event never stops the news after it."""
        try:
            return render(*args)
        except Exception:  # noqa: BLE001
            log.exception("notification_not_rendered", event_id=event_id, kind=kind)
            return None

    def event(self, kind: str, d: dict[str, Any]) -> tuple[str, str] | None:
        """The message of one event, or None when it is not news for a phone."""
        if kind == "layer.opened":
            return ENTRY, self.entry(d)
        if kind == "trading_state.changed":
            return TRADING_STATE, self.say(
                f"Trading {d.get('state')}",
                f"was {_e(d.get('previous'))}; {_e(d.get('reason'))} ({_e(d.get('actor'))})")
        if kind == "layer.rolled":
            return ROLL, self.say(
                f"Rolled {d.get('instrument')}",
                f"{_e(d.get('from'))} → {_e(d.get('to'))}, {lots_text(d.get('lots'))}, spread "
                f"{_price(d.get('spread'))}, P&L {signed_rupees(_dec(d.get('pnl')))}")
        if kind == "leadership.changed":
            return FAILOVER, self.say("Leader changed", f"instance {_e(d.get('instance'))} "
                                      f"leads (epoch {d.get('epoch')})")
        if kind == "signal.decided":
            if d.get("outcome") != "error":
                return None
            return SIGNAL_ERROR, self.say(
                f"Signal failed: {d.get('instrument')}",
                f"{_e(d.get('type'))} {_e(d.get('position'))}: {_e(d.get('reason'))}",
                "Entries of this instrument are blocked until it is resolved.")
        if kind.startswith("audit."):
            return self.audit(kind.removeprefix("audit."), d)
        return None

    def entry(self, d: dict[str, Any]) -> str:
        instrument = str(d.get("instrument"))
        entry, stop = _dec(d.get("entry_price")), _dec(d.get("stop"))
        lots = int(d.get("lots") or 0)
        spec = self._instruments.get(instrument)
        risk = (open_risk([(entry, stop, lots, spec.point_value)])
                if spec is not None and entry is not None and stop is not None else None)
        return self.say(
            f"Entry {instrument} {d.get('layer')}",
            f"{lots_text(lots)} @ {_price(entry)} ({_e(d.get('tradingsymbol') or instrument)})",
            f"stop {_price(stop)}, risk {rupees(risk)}")

    def exit(self, layers: list[dict[str, Any]]) -> str:
        first = layers[0]
        total = sum((_dec(x.get("realized_pnl")) or Decimal(0) for x in layers), Decimal(0))
        lines = [f"{_e(x.get('layer'))}: {lots_text(x.get('lots'))} "
                 f"{_price(x.get('entry_price'))} → "
                 f"{_price(x.get('exit_price'))}, P&L {signed_rupees(_dec(x.get('realized_pnl')))}"
                 for x in layers]
        if len(layers) > 1:
            lines.append(f"total P&L {signed_rupees(total)}")
        return self.say(f"Exit {first.get('instrument')} ({first.get('exit_reason')})", *lines)

    def audit(self, event: str, d: dict[str, Any]) -> tuple[str, str] | None:
        instrument = d.get("instrument")
        if event == "daily_loss_breached":
            return DAILY_LOSS, self.say(
                "Daily loss limit reached",
                f"day {_e(d.get('day'))}: P&L {signed_rupees(_dec(d.get('pnl')))} against the "
                f"limit {rupees(_dec(d.get('limit')))}; new entries stop")
        if event == "reconciliation_mismatch":
            return MISMATCH, self.say(
                f"Book and broker differ: {d.get('tradingsymbol') or instrument}",
                f"book {d.get('book')}, broker {d.get('broker')}; entries of "
                f"{_e(instrument or 'it')} are blocked")
        if event in ("exit_retry_scheduled", "exit_replanned"):
            detail = (f"attempt {d.get('attempt')}, {d.get('quantity')} units"
                      if event == "exit_retry_scheduled" else _e(d.get("reason")))
            return EXIT_PENDING, self.say(f"Exit pending: {instrument}", detail,
                                          "retried until the layer is flat")
        if event == "roll_leg_retry_scheduled":
            return ROLL, self.say(f"Roll not filled: {instrument}",
                                  f"leg retried (attempt {d.get('attempt')}, "
                                  f"{d.get('quantity')} units)")
        if event == "broker_stop_fired":
            return BROKER_STOP, self.say(
                f"Broker stop fired: {instrument} {d.get('layer')}",
                f"{_e(d.get('kind'))} at trigger {_price(d.get('trigger'))}, "
                f"order {_e(d.get('order_id'))}")
        if event == "order_rejected":
            return ORDER_REJECTED, self.say(f"Order rejected: {instrument}",
                                            _e(d.get("reason")))
        if event == "flattened":
            return FLATTEN, self.say("Flat", f"{d.get('layers_closed')} layers closed, "
                                     f"{d.get('orders_cancelled')} orders cancelled in "
                                     f"{d.get('elapsed_ms')} ms")
        if event == "leadership_lost":
            return FAILOVER, self.say("Leadership lost",
                                      f"instance {_e(d.get('instance'))} stepped down")
        if event in ("redis_unavailable", "redis_available"):
            lost = event == "redis_unavailable"
            return FAILOVER, self.say(
                "Redis unreachable" if lost else "Redis back",
                "the leader trades on; a standby cannot take over" if lost
                else "failover possible again")
        return None

    # -- conditions the daemon sees rather than events of the book ------------------------
    def unprotected(self, layer: str, why: str | None) -> str:
        if why is None:
            return self.say(f"Protected again: {layer}", "its broker stop is resting")
        return self.say(f"Unprotected: {layer}", f"no broker stop: {_e(why)}")

    def roll_overdue(self, instrument: str, resolved: bool) -> str:
        if resolved:
            return self.say(f"Roll no longer overdue: {instrument}")
        return self.say(f"Roll overdue: {instrument}",
                        "held past the broker's cut-off; it may be squared off")

    def session_expiring(self, expires_at: Any, minutes: int) -> str:
        return self.say("Broker session expiring",
                        f"at {ist(expires_at)} (in {minutes} min): log in again "
                        "(kite-login) before then")

    def session_expired(self, resolved: bool) -> str:
        if resolved:
            return self.say("Broker session restored")
        return self.say("Broker session expired",
                        "no orders can be placed: log in again (kite-login)")
