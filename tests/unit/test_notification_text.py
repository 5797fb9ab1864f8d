"""What the chat reads: each event's message, the mode on all of them, HTML that parses."""

from __future__ import annotations

from datetime import UTC, datetime

from live.notification_text import EXIT, TRADING_STATE, Texts, plain
from tests.fakes.telegram_server import html_parses
from tests.support.trading import INSTRUMENTS

AT = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def row(event_id: int, kind: str, **data):
    return (event_id, kind, AT, data)


def test_an_operator_reason_cannot_break_the_html():
    texts = Texts("LIVE", INSTRUMENTS)
    [(kind, event_id, text)] = texts.messages([row(7, "trading_state.changed", state="REDUCING",
                                                   previous="ACTIVE", actor="operator",
                                                   reason="<b>lunch</b> & <script>")])
    assert (kind, event_id) == (TRADING_STATE, 7)
    assert html_parses(text)
    assert plain(text) == ("[LIVE] Trading REDUCING\nwas ACTIVE; <b>lunch</b> & <script> "
                           "(operator)")


def test_one_exits_layers_are_one_message_and_other_exits_their_own():
    texts = Texts("PAPER", INSTRUMENTS)
    closed = dict(instrument="GOLD_MINI", exit_reason="STOP", exit_price="79000")
    messages = texts.messages([
        row(1, "layer.closed", layer="Long_1", lots=2, entry_price="78000",
            realized_pnl="20000.00", signal_id=1, **closed),
        row(2, "intent.filled"),
        row(3, "layer.closed", layer="Long_2", lots=1, entry_price="79500",
            realized_pnl="-5000.00", signal_id=4, **closed),
        row(4, "layer.closed", layer="Long_1", lots=1, entry_price="900", instrument="COPPER",
            exit_reason="MANUAL", exit_price="910", realized_pnl="25000.00")])
    assert [(k, i) for k, i, _ in messages] == [(EXIT, 1), (EXIT, 4)]
    gold = plain(messages[0][2]).split("\n")
    assert gold == ["[PAPER] Exit GOLD_MINI (STOP)",
                    "Long_1: 2 lots 78,000.00 → 79,000.00, P&L +₹20,000.00",
                    "Long_2: 1 lot 79,500.00 → 79,000.00, P&L -₹5,000.00",
                    "total P&L +₹15,000.00"]
    assert "total" not in messages[1][2]  # one layer: its P&L is the total


def test_what_is_not_news_stays_quiet():
    texts = Texts("PAPER", INSTRUMENTS)
    assert texts.messages([row(1, "intent.created"), row(2, "fill.booked"),
                           row(3, "signal.decided", outcome="executed"),
                           row(4, "audit.operator_action")]) == []
    [(kind, _, text)] = texts.messages([row(5, "signal.decided", outcome="error",
                                            instrument="COPPER", type="BASE_ENTRY",
                                            position="Long_1", reason="boom")])
    assert kind == "signal_error" and "blocked" in text
