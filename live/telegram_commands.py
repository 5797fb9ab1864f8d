"""Commands from the operator's Telegram chat (DESIGN.md §11): `/status`, `/positions`,
`/pause`, `/resume`, `/flatten` (then `/flatten confirm` within a minute).

Only the configured chat is answered; anything else is logged and left unanswered (a bot's
name is easy to find, its chat id is not). The poller keeps Telegram's update offset in the
database, so a command is acted on once across restarts and failovers, and a command that
waited longer than `MAX_AGE_S` (the daemon was down) is answered but not carried out: a
pause sent an hour ago is not what the operator wants now. It runs on the node that acts
(single, or a pair's leader), and each action goes through the same parts as the admin API,
recorded in `execution_log` with `via: telegram`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from core.trading_state import Actor, TradingState
from live.notification_store import NotificationStore
from live.notification_text import REPLY, Texts, lots_text
from live.operator_actions import OPERATOR_ACTION, StateRefused, change_state
from live.telegram_api import BotApi, RetryAfter, TelegramError
from live.waiting import within
from live.web_format import number, percent, rupees, signed_rupees

if TYPE_CHECKING:
    from live.server import Context

log = structlog.get_logger(__name__)

CONFIRM_WITHIN_S = 60.0
MAX_AGE_S = 120.0
POLL_WAIT_S = 25  # Telegram holds a getUpdates this long for an update to come
FLATTEN_ANSWER_WAIT_S = 10.0
REPEAT_WINDOW = 100  # one getUpdates answer holds at most 100 updates
HELP = "Commands: /status, /positions, /pause [reason], /resume [reason], /flatten"


class TelegramCommands:
    def __init__(self, api: BotApi, store: NotificationStore, chat_id: str, ctx: Context,
                 texts: Texts, *, reply_sent: Callable[[], None] = lambda: None,
                 may_act: Callable[[], bool] = lambda: True,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self._api = api
        self._store = store
        self._chat_id = str(chat_id)
        self._ctx = ctx
        self._texts = texts
        self._reply_sent = reply_sent
        self._may_act = may_act
        self._offset: int | None = None  # Telegram's, kept in memory: see `poll_once`
        self._wall = wall
        self._monotonic = monotonic
        self._sleep = sleep
        self._consumer = f"{store.channel}:updates"
        self._flatten_asked_at: float | None = None
        self._working: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                if not self._may_act():  # a node whose term ended reads no commands
                    await self._sleep(1.0)
                    continue
                try:
                    await self.poll_once(POLL_WAIT_S)
                    failures = 0
                except RetryAfter as exc:
                    await self._sleep(exc.seconds)
                except Exception as exc:  # the poller outlives any one failure
                    failures += 1
                    if failures == 1:
                        log.warning("telegram_commands_unreachable", error=str(exc),
                                    kind=type(exc).__name__)
                    await self._sleep(min(60.0, 2.0 ** min(failures, 6)))
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop waiting for a flatten to answer (the daemon is stopping)."""
        for task in list(self._working):
            task.cancel()
        await asyncio.gather(*self._working, return_exceptions=True)

    async def poll_once(self, wait_s: int) -> int:
        """Read and handle the updates waiting (held up to `wait_s`); return how many.

        The offset that confirms updates to Telegram is kept in memory: the first poll of a
        run asks without one and gets every update not yet confirmed (Telegram numbers
        them afresh after a quiet week, so a stored offset could hide every new one). The
        stored id only skips what this bot acted on just before a crash."""
        handled = await self._store.cursor(self._consumer)
        updates = await self._api.get_updates(self._offset, wait_s)
        for update in updates:
            update_id = int(update.get("update_id", 0))
            self._offset = update_id + 1
            if handled is not None and 0 <= handled - update_id < REPEAT_WINDOW:
                continue  # acted on already (the crash came before Telegram was told)
            # Marked read before it is acted on: a crash in between loses one command (the
            # operator sees no answer and asks again) rather than running it twice.
            await self._store.set_cursor(self._consumer, update_id)
            try:
                await self.handle(update)
            except (TelegramError, psycopg.Error, OSError):
                raise
            except Exception:  # a command that failed is answered, and the poller goes on
                log.exception("telegram_command_failed", update_id=update_id)
                await self.reply("That command failed; the daemon's log says why.")
        return len(updates)

    async def handle(self, update: dict[str, Any]) -> None:
        message = update.get("message") or {}
        chat = str((message.get("chat") or {}).get("id", ""))
        text = str(message.get("text") or "").strip()
        if chat != self._chat_id:
            log.warning("telegram_command_refused", chat_id=chat,
                        update_id=update.get("update_id"), reason="not the allowed chat")
            return
        if not text.startswith("/"):
            return
        word, _, rest = text.partition(" ")
        command = word.split("@", 1)[0].lower()  # "/status@my_bot" in a group
        log.info("telegram_command", command=command)
        age_s = self._wall() - float(message.get("date") or 0)
        if age_s > MAX_AGE_S and command not in ("/status", "/positions"):
            await self.reply(f"{command} was sent {int(age_s)} s ago, while the daemon could "
                             "not answer: not carried out. Send it again if you still mean it.")
            return
        await self.run_command(command, rest.strip())

    async def run_command(self, command: str, rest: str) -> None:
        if command == "/status":
            await self.queue(await self.status_text())
        elif command == "/positions":
            await self.queue(await self.positions_text())
        elif command in ("/pause", "/resume"):
            wanted = TradingState.REDUCING if command == "/pause" else TradingState.ACTIVE
            await self.reply(await self._change_state(command[1:], wanted, rest or None))
        elif command == "/flatten":
            await self._flatten(rest.lower())
        else:
            await self.reply(HELP)

    async def reply(self, text: str) -> None:
        """Answer in plain words."""
        await self.queue(self._texts.say_plain("Reply", text))

    async def queue(self, body: str) -> None:
        """Queue a message: the sender keeps the chat's pace and order."""
        await self._store.add(REPLY, body)
        self._reply_sent()

    # -- what the commands do ---------------------------------------------------------------
    def _busy(self) -> str | None:
        if self._ctx.readiness.stage is not None:
            return "The daemon is still recovering; try again in a moment."
        return None

    async def _change_state(self, action: str, wanted: TradingState, reason: str | None
                            ) -> str:
        busy = self._busy()
        if busy:
            return busy
        try:
            record, changed = await change_state(self._ctx, wanted,
                                                 reason or f"telegram {action}")
        except StateRefused as exc:
            return str(exc)
        await self._audit(action, reason=reason, changed=changed, state=record.state)
        if not changed:
            return f"Already {record.state}."
        return f"Done: trading is {record.state} ({record.reason})."

    async def _flatten(self, rest: str) -> None:
        now = self._monotonic()
        if rest != "confirm":
            self._flatten_asked_at = now
            layers = len(await self._ctx.db.all_live_layers())
            await self.reply(f"Flatten closes every layer ({layers} open) and halts trading. "
                             f"Send /flatten confirm within {int(CONFIRM_WITHIN_S)} s.")
            return
        asked, self._flatten_asked_at = self._flatten_asked_at, None
        if asked is None or now - asked > CONFIRM_WITHIN_S:
            await self.reply("No flatten to confirm (send /flatten first, then /flatten "
                             f"confirm within {int(CONFIRM_WITHIN_S)} s).")
            return
        busy = self._busy()
        if busy or self._ctx.flattener is None:
            await self.reply(busy or "This daemon cannot flatten.")
            return
        task = await self._ctx.flattener.request("telegram flatten", Actor.OPERATOR)
        await self._audit("flatten", reason="telegram flatten")
        await self.reply("Flattening: every layer is being closed; trading is HALTED.")
        # The answer comes when the broker confirms flat; the poller reads on meanwhile.
        waiting = asyncio.create_task(self._when_flat(task))
        self._working.add(waiting)
        waiting.add_done_callback(self._working.discard)

    async def _when_flat(self, task: asyncio.Task[Any]) -> None:
        try:
            report = await within(FLATTEN_ANSWER_WAIT_S, asyncio.shield(task))
        except TimeoutError:
            await self.reply("Still flattening after 10 s; /status shows the progress.")
            return
        except Exception as exc:  # noqa: BLE001 - the operator must hear of it
            log.exception("telegram_flatten_failed")
            await self.reply(f"Flatten failed: {type(exc).__name__}; the daemon's log says "
                             "why, and /status shows the book.")
            return
        await self.reply(f"Flat: {report.layers_closed} layers closed, "
                         f"{report.orders_cancelled} orders cancelled in "
                         f"{report.elapsed_ms} ms.")

    async def _audit(self, action: str, **details: Any) -> None:
        try:
            async with self._ctx.db.transaction() as tx:
                await tx.log_event(OPERATOR_ACTION, action=action, actor=Actor.OPERATOR,
                                   via="telegram", **details)
        except Exception:  # the audit row is not the action: never undo or fail it
            log.exception("operator_action_not_recorded", action=action, via="telegram")

    async def status_text(self) -> str:
        from live.dashboard_views import banner, equity

        top = banner(self._ctx)
        figures = await equity(self._ctx)
        state = top["trading_state"]
        lines = [f"{state.get('state')}"
                 + (f" ({state.get('reason')})" if state.get("reason") else ""),
                 f"role {top['role']}, {'ready' if top['ready'] else 'not ready: '}"
                 + "; ".join(top["reasons"]),
                 f"closed equity {rupees(figures['equity']['closed'])}, open "
                 f"{rupees(figures['equity']['open'])}",
                 f"today {signed_rupees(figures['today_pnl'])}, risk "
                 f"{percent(figures['risk_percent'])}, margin "
                 f"{percent(figures['margin_percent'])}"]
        pending = self._ctx.exits.report() if self._ctx.exits else []
        if pending:
            lines.append(f"{len(pending)} exits pending")
        return self._texts.say_plain("Status", *lines)

    async def positions_text(self) -> str:
        from live.dashboard_views import open_layers

        rows = await open_layers(self._ctx)
        if not rows:
            return self._texts.say_plain("Positions", "No open layers: the book is flat.")
        lines = [f"{r.layer.instrument} {r.layer.layer}: {lots_text(r.layer.lots)} @ "
                 f"{number(r.layer.entry_price)}, stop {number(r.layer.current_stop)}, last "
                 f"{number(r.last_price)}, P&L {signed_rupees(r.unrealised)}, risk "
                 f"{rupees(r.risk)}" for r in rows]
        return self._texts.say_plain(f"Positions ({len(rows)})", *lines)
