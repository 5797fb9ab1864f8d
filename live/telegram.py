"""Telegram, wired (DESIGN.md §11): the outbox's events and the daemon's conditions become
notifications, a sender delivers them to the operator's chat, and a poller takes the chat's
commands. All of it runs beside the signal path on the node that acts, on connections of
its own: Telegram away, slow or refusing changes no trade's timing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from config.errors import ConfigError
from config.kite import load_kite_config
from config.settings import Settings
from live.every import every
from live.notification_conditions import Conditions
from live.notification_store import NotificationStore
from live.notification_text import DEFAULT_KINDS, KINDS, Texts
from live.notification_writer import NotificationWriter
from live.telegram_api import BotApi, TelegramError
from live.telegram_commands import TelegramCommands
from live.telegram_sender import TelegramSender

if TYPE_CHECKING:
    from live.server import Context

log = structlog.get_logger(__name__)
CHANNEL = "telegram"
CONDITIONS_CHECK_S = 1.0


def telegram_kinds(settings: Settings) -> tuple[str, ...]:
    """The kinds of news that notify: PM_TELEGRAM_EVENTS, or all of them."""
    if settings.telegram_events is None:
        return DEFAULT_KINDS
    kinds = tuple(k.strip() for k in settings.telegram_events.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ConfigError(f"PM_TELEGRAM_EVENTS: unknown kind {', '.join(unknown)} "
                          f"(known: {', '.join(KINDS)})")
    return kinds


def telegram_configured(settings: Settings) -> bool:
    """Whether Telegram is on; a token without a chat (or the reverse) stops startup."""
    token, chat = settings.telegram_bot_token, settings.telegram_chat_id
    if (token is None) != (chat is None):
        raise ConfigError("PM_TELEGRAM_BOT_TOKEN and PM_TELEGRAM_CHAT_ID are set together")
    telegram_kinds(settings)
    return token is not None


@dataclass
class Telegram:
    api: BotApi
    store: NotificationStore
    writer: NotificationWriter
    sender: TelegramSender
    commands: TelegramCommands
    conditions: Conditions

    def workers(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        return [("telegram-check", self.check()),
                ("telegram-notifier", self.writer.run()),
                ("telegram-sender", self.sender.run()),
                ("telegram-commands", self.commands.run()),
                ("telegram-conditions", every(CONDITIONS_CHECK_S, self.conditions.check,
                                              "notification_conditions_failed")),
                ("telegram-prune", every(3600, self.store.prune, "notifications_prune_failed"))]

    async def check(self) -> None:
        """Say once at the start whether the bot answers (the trading does not wait)."""
        try:
            me = await self.api.get_me()
        except TelegramError as exc:
            log.warning("telegram_unavailable", error=str(exc))
            return
        log.info("telegram_ready", bot=me.get("username"))

    async def close(self) -> None:
        await self.commands.close()
        await self.writer.close()
        await self.sender.close()
        await self.store.close()
        await self.api.close()


def build_telegram(settings: Settings, ctx: Context, conninfo: str,
                   may_act: Callable[[], bool] = lambda: True) -> Telegram | None:
    """Telegram's parts for this daemon, or None when no bot is configured. `may_act`: a
    pair's node sends, reads commands and moves the cursor only while its term holds."""
    if not telegram_configured(settings):
        return None
    assert settings.telegram_bot_token is not None and settings.telegram_chat_id is not None
    kinds = telegram_kinds(settings)
    # Kite's session is warned of as its broker warns of it (kite.json); paper has none.
    expiry_warning_min = (load_kite_config(settings.config_dir / "kite.json")
                          .token_expiry_warning_minutes if settings.broker == "zerodha" else 0)
    chat = settings.telegram_chat_id
    texts = Texts("PAPER" if ctx.broker.name == "paper" else "LIVE", ctx.instruments)
    api = BotApi(settings.telegram_bot_token.get_secret_value(), settings.telegram_api_url)
    # The sender on a connection of its own: a command or a check never waits on its query.
    sender = TelegramSender(api, NotificationStore(conninfo, CHANNEL,
                                                   settings.telegram_message_ttl_s),
                            chat, pace_s=settings.telegram_pace_s, may_act=may_act)
    store = NotificationStore(conninfo, CHANNEL, settings.telegram_message_ttl_s)
    writer = NotificationWriter(conninfo, store, texts, kinds, wake=sender.wake,
                                may_act=may_act)
    commands = TelegramCommands(api, store, chat, ctx, texts, reply_sent=sender.wake,
                                may_act=may_act)
    conditions = Conditions(ctx, store, texts, kinds, wake=sender.wake,
                            expiry_warning_min=expiry_warning_min, may_act=may_act)
    return Telegram(api, store, writer, sender, commands, conditions)
