"""Telegram through the daemon as users run it: a trade told in the operator's chat, in
order, and the chat's commands acted on — with the fake Bot API as Telegram."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.telegram_server import FakeTelegramThread
from tests.support.alerts import alert, ist
from tests.support.daemon import TradingDaemon

CONVERSATION = Path("artifacts/telegram-conversation.txt")


@pytest.fixture
def bot():
    fake = FakeTelegramThread().start()
    yield fake
    fake.stop()


def heads(messages: list[dict]) -> list[str]:
    return [m["text"].split("\n")[0] for m in messages]


def test_a_trade_and_the_commands_in_the_chat(state_dir, bot):
    daemon = TradingDaemon(state_dir, env={
        "PM_TELEGRAM_BOT_TOKEN": bot.token, "PM_TELEGRAM_CHAT_ID": bot.chat_id,
        "PM_TELEGRAM_API_URL": bot.url, "PM_TELEGRAM_PACE_S": "0.2"}).start()
    try:
        assert daemon.wait_ready()
        gold = "GOLD_MINI"
        assert daemon.send(**alert("BASE_ENTRY", gold, "Long_1", 78500, ist(240), stop=77800,
                                   atr=700))[1]["status"] == "executed"
        assert daemon.send(**alert("PYRAMID", gold, "Long_2", 80000, ist(170), stop=79500,
                                   atr=700))[1]["status"] == "executed"
        bot.wait_for(lambda m: len(m) >= 2)
        bot.command("/status")
        bot.wait_for(lambda m: any("Status" in h for h in heads(m)))
        bot.command("/pause", chat_id="31337")  # a stranger: ignored
        bot.command("/pause lunch")
        bot.wait_for(lambda m: any("Trading REDUCING" in h for h in heads(m)))
        assert daemon.get("/status")[1]["trading_state"]["state"] == "REDUCING"
        bot.command("/resume")
        bot.wait_for(lambda m: any("Trading ACTIVE" in h for h in heads(m)))
        assert daemon.send(**alert("EXIT", gold, "ALL", 80500, ist(160)))[1]["status"] == \
            "executed"
        messages = bot.wait_for(lambda m: any(h.startswith("<b>[PAPER] Exit") for h in heads(m)))
    finally:
        daemon.stop()
    said = heads(messages)
    entry1 = said.index("<b>[PAPER] Entry GOLD_MINI Long_1</b>")
    entry2 = said.index("<b>[PAPER] Entry GOLD_MINI Long_2</b>")
    status = said.index("<b>[PAPER] Status</b>")
    paused = said.index("<b>[PAPER] Trading REDUCING</b>")
    resumed = said.index("<b>[PAPER] Trading ACTIVE</b>")
    exited = next(i for i, h in enumerate(said) if h.startswith("<b>[PAPER] Exit GOLD_MINI"))
    assert entry1 < entry2 < status < paused < resumed < exited  # in the order it happened
    assert all(m["chat_id"] == bot.chat_id for m in messages)
    exit_text = messages[exited]["text"]
    assert "Long_1: " in exit_text and "Long_2: " in exit_text and "total P&L" in exit_text
    output = daemon.output()
    assert bot.token not in output and bot.token.split(":")[1] not in output
    assert '"telegram_command_refused"' in output and '"31337"' in output
    CONVERSATION.parent.mkdir(exist_ok=True)
    CONVERSATION.write_text("\n\n".join(f"#{n + 1}\n{m['text']}"
                                        for n, m in enumerate(messages)) + "\n")
