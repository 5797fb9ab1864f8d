"""Telegram alerts and commands (DESIGN.md §11) on real PostgreSQL and the fake Bot API:
what the book does reaches the chat in order, after commit, whatever Telegram does — and
whatever Telegram does changes no trade's timing."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import psycopg
import pytest
from structlog.testing import capture_logs

from config.settings import build_settings
from core.accounting import open_risk
from core.trading_state import Actor, TradingState
from live.notification_text import plain
from live.telegram import Telegram, build_telegram
from live.telegram_api import BotApi, Unavailable
from live.web_format import rupees
from tests.fakes.telegram_server import CHAT_ID, Fault, running_fake_telegram
from tests.integration.test_operator_controls import BASES, enter
from tests.support.trading import INSTRUMENTS

SECRET = "s" * 32


@pytest.fixture
def trading(trading_in_operation):
    return trading_in_operation


@pytest.fixture
async def fake():
    async with running_fake_telegram() as handle:
        yield handle


class Runs:
    """The daemon's Telegram parts on this test's book, running as the daemon runs them."""

    def __init__(self, trading, dsn: str, fake) -> None:
        self.trading, self.dsn, self.fake = trading, dsn, fake
        self.started: dict[int, tuple[Telegram, list[asyncio.Task]]] = {}

    def start(self, **settings: object) -> Telegram:
        trading, fake = self.trading, self.fake
        values = {"telegram_bot_token": fake.token, "telegram_chat_id": CHAT_ID,
                  "telegram_api_url": fake.url, "telegram_pace_s": 0,
                  "webhook_secret": SECRET, **settings}
        ctx = trading.context(SECRET)
        parts = build_telegram(build_settings(values), ctx, self.dsn)
        assert parts is not None
        parts.writer._poll_s = 0.05  # noqa: SLF001 - tests need not wait a second per look
        tasks = [asyncio.create_task(work) for _, work in parts.workers()]
        self.started[id(parts)] = (parts, tasks)
        return parts

    async def running(self, **settings: object) -> Telegram:
        """Started, and its notifier at its place in the outbox (as once the daemon serves)."""
        parts = self.start(**settings)
        await until(lambda: parts.writer.last >= 0)
        return parts

    async def stop(self, parts: Telegram) -> None:
        _, tasks = self.started.pop(id(parts))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await parts.close()


@pytest.fixture
async def telegram(trading, dsn, fake):
    runs = Runs(trading, dsn, fake)
    yield runs
    for parts, _ in list(runs.started.values()):
        await runs.stop(parts)


async def until(predicate, timeout_s: float = 15.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.05)


def texts(fake) -> list[str]:
    """The chat as its reader sees it (the HTML's tags rendered, not shown)."""
    return [plain(m["text"]) for m in fake.state.messages]


def notifications(dsn: str) -> list[tuple[str, int, bool, bool]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT kind, attempts, delivered_at IS NOT NULL, "
                            "expired_at IS NOT NULL FROM notifications ORDER BY id").fetchall()


async def test_a_trade_reaches_the_chat_in_order_with_its_risk_and_pnl(trading, telegram,
                                                                         fake, dsn):
    await telegram.running()
    await enter(trading, layers=2)
    layers = {x.layer: x for x in await trading.db.all_live_layers()}
    assert (await trading.send("EXIT", position="ALL", price="80000")).outcome == "executed"
    await until(lambda: any("Exit" in t for t in texts(fake)))

    said = texts(fake)
    assert all(t.startswith("[PAPER] ") for t in said), said  # the mode, on every message
    entries = [t for t in said if t.startswith("[PAPER] Entry GOLD_MINI")]
    assert [t.split("\n")[0] for t in entries] == ["[PAPER] Entry GOLD_MINI Long_1",
                                                    "[PAPER] Entry GOLD_MINI Long_2"]
    base = layers["Long_1"]
    risk = open_risk([(base.entry_price, base.current_stop, base.lots,
                       INSTRUMENTS["GOLD_MINI"].point_value)])
    assert f"{base.lots} lots @ {base.entry_price:,.2f}" in entries[0]
    assert risk > 0 and f"risk {rupees(risk)}" in entries[0]
    exit_text = next(t for t in said if t.startswith("[PAPER] Exit GOLD_MINI"))
    closed = {x.layer: x for x in await trading.db.list_positions("closed", 10)}
    total = sum(x.realized_pnl for x in closed.values())
    assert "Long_1: " in exit_text and "Long_2: " in exit_text  # one message, each layer
    assert total > 0 and f"total P&L +{rupees(total)}" in exit_text
    assert said.index(entries[1]) < said.index(exit_text)
    # Sent as HTML; each kept until delivered.
    assert all(m["parse_mode"] == "HTML" for m in fake.state.messages)
    assert all(delivered for _, _, delivered, _ in notifications(dsn))


async def test_429_is_waited_out_and_bad_html_goes_as_plain_text(trading, telegram, fake, dsn):
    await telegram.running()
    fake.state.faults.append(Fault("429", 1, retry_after=1))
    asked = time.monotonic()
    await trading.send("BASE_ENTRY", price="78500", stop="77800")
    await until(lambda: len(fake.state.messages) == 1)
    assert time.monotonic() - asked >= 1.0  # retry_after honoured
    assert notifications(dsn)[0][1] == 2  # two attempts, one delivery

    fake.state.faults.append(Fault("parse", 1))
    await trading.send("EXIT", position="Long_1", price="79000")
    await until(lambda: len(fake.state.messages) == 2)
    plain = fake.state.messages[1]
    assert plain["parse_mode"] is None and plain["text"].startswith("[PAPER] Exit GOLD_MINI")
    assert "<b>" not in plain["text"]


async def test_an_outage_keeps_the_messages_until_delivered_or_expired(trading, telegram,
                                                                       fake, dsn):
    fake.state.faults.append(Fault("502", -1))
    parts = await telegram.running(telegram_message_ttl_s=2)
    await trading.send("BASE_ENTRY", price="78500", stop="77800")
    await until(lambda: len(fake.state.attempts) >= 2)  # tried again, not dropped
    await until(lambda: notifications(dsn)[0][3], timeout_s=10)  # then given up: too old
    assert fake.state.messages == []
    fake.state.faults.clear()
    await trading.send("EXIT", position="Long_1", price="79000")
    await until(lambda: len(fake.state.messages) == 1)  # the queue moves on after expiry
    assert texts(fake)[0].startswith("[PAPER] Exit")
    assert parts.sender.sent == 1


async def test_a_restart_neither_loses_nor_repeats_a_message(trading, telegram, fake, dsn):
    first = await telegram.running()
    fake.state.faults.append(Fault("502", -1))  # nothing delivered by the first run
    await trading.send("BASE_ENTRY", price="78500", stop="77800")
    await until(lambda: len(notifications(dsn)) == 1)
    await telegram.stop(first)
    await trading.send("EXIT", position="Long_1", price="79000")  # while it is down
    fake.state.faults.clear()
    await telegram.running()
    await until(lambda: len(fake.state.messages) == 2)
    await asyncio.sleep(0.5)  # nothing more comes
    said = [t.split("\n")[0] for t in texts(fake)]
    assert said[0] == "[PAPER] Entry GOLD_MINI Long_1" and said[1].startswith(
        "[PAPER] Exit GOLD_MINI"), said
    assert len(said) == 2 and len(notifications(dsn)) == 2


# -- commands -----------------------------------------------------------------------------
def trading_state(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT state FROM trading_state").fetchone()[0]


async def test_commands_from_the_chat_act_and_answer_others_are_ignored(trading, telegram,
                                                                        fake, dsn):
    await enter(trading)
    await telegram.running(telegram_events="")  # replies only: the conversation is short
    with capture_logs() as logs:
        fake.state.push_text("999", "/pause intruder")  # another chat: no answer, no pause
        fake.state.push_text(CHAT_ID, "/status")
        await until(lambda: len(fake.state.messages) == 1)
    assert trading_state(dsn) == "ACTIVE"
    assert any(e["event"] == "telegram_command_refused" and e["chat_id"] == "999" for e in logs)
    assert all(m["chat_id"] == CHAT_ID for m in fake.state.messages)
    status = texts(fake)[0]
    assert status.startswith("[PAPER] Status\nACTIVE") and "closed equity ₹" in status

    fake.state.push_text(CHAT_ID, "/positions")
    fake.state.push_text(CHAT_ID, "/pause lunch")
    await until(lambda: len(fake.state.messages) == 3)
    assert "GOLD_MINI Long_1: " in texts(fake)[1]
    assert trading_state(dsn) == "REDUCING" and "REDUCING" in texts(fake)[2]
    fake.state.push_text(CHAT_ID, "/resume")
    await until(lambda: len(fake.state.messages) == 4)
    assert trading_state(dsn) == "ACTIVE"
    with psycopg.connect(dsn) as conn:
        audit = conn.execute("SELECT details->>'action' FROM execution_log WHERE event = "
                             "'operator_action' AND details->>'via' = 'telegram' ORDER BY id"
                             ).fetchall()
    assert [a for (a,) in audit] == ["pause", "resume"]

    # A pause that waited while the daemon was away is not carried out.
    fake.state.push_text(CHAT_ID, "/pause", date=int(time.time()) - 600)
    await until(lambda: len(fake.state.messages) == 5)
    assert trading_state(dsn) == "ACTIVE" and "not carried out" in texts(fake)[4]


async def test_flatten_needs_its_confirmation(trading, telegram, fake, dsn):
    await enter(trading, layers=2)
    await telegram.running(telegram_events="")
    fake.state.push_text(CHAT_ID, "/flatten confirm")  # nothing asked: refused
    await until(lambda: len(fake.state.messages) == 1)
    assert "No flatten to confirm" in texts(fake)[0] and len(await trading.db.all_live_layers())
    fake.state.push_text(CHAT_ID, "/flatten")
    await until(lambda: len(fake.state.messages) == 2)
    assert "2 open" in texts(fake)[1] and "/flatten confirm within 60 s" in texts(fake)[1]
    fake.state.push_text(CHAT_ID, "/flatten confirm")
    await until(lambda: any(t.startswith("[PAPER] Reply\nFlat: 2 layers closed")
                            for t in texts(fake)))
    assert await trading.db.all_live_layers() == [] and trading_state(dsn) == "HALTED"


async def test_a_command_is_acted_on_once_across_a_restart(trading, telegram, fake, dsn):
    first = await telegram.running(telegram_events="")
    pause = fake.state.push_text(CHAT_ID, "/pause")
    await until(lambda: len(fake.state.messages) == 1)
    await telegram.stop(first)
    await trading.control.set(TradingState.ACTIVE, "back", Actor.OPERATOR)
    # A crash before Telegram was told: it hands the same update to the next run.
    fake.state.updates[:0] = [{"update_id": pause, "message": {
        "message_id": pause, "date": int(time.time()), "chat": {"id": int(CHAT_ID)},
        "text": "/pause"}}]
    await telegram.running(telegram_events="")
    fake.state.push_text(CHAT_ID, "/status")
    await until(lambda: len(fake.state.messages) == 2)
    await asyncio.sleep(0.3)
    assert len(fake.state.messages) == 2  # the pause was neither carried out nor answered again
    assert trading_state(dsn) == "ACTIVE" and "ACTIVE" in texts(fake)[1]


# -- never in the money path ---------------------------------------------------------------
@pytest.mark.parametrize("fault", [Fault("hang", -1, seconds=30), Fault("429", -1,
                                                                        retry_after=30)],
                         ids=["hanging", "429-storm"])
async def test_telegram_changes_no_trades_timing(trading, telegram, fake, dsn, fault):
    """Decision latency with Telegram stuck: every signal is decided while the Bot API still
    holds (or refuses) the first message, each within the webhook's decision wait."""
    fake.state.faults.append(fault)
    await telegram.running()
    latencies = []
    for n, instrument in enumerate(["GOLD_MINI", "SILVER_MINI", "COPPER", "BANK_NIFTY"]):
        price = BASES[instrument]
        started = time.perf_counter()
        outcome = await trading.send("BASE_ENTRY", instrument=instrument, wait_s=2,
                                     price=str(price), stop=price * Decimal("0.98"),
                                     atr=price / 100, supertrend=price * Decimal("0.99"))
        latencies.append((time.perf_counter() - started) * 1000)
        assert outcome is not None and outcome.outcome == "executed", (n, outcome)
        if n == 0:  # the first entry's message is now stuck at the Bot API
            await until(lambda: fake.state.hanging == 1 or len(fake.state.attempts) >= 1)
    assert fake.state.messages == [] and len(fake.state.attempts) >= 1
    if fault.kind == "hang":
        assert fake.state.hanging == 1  # still held: the trades did not wait for it
    print(f"decision latency with Telegram {fault.kind}: "
          + ", ".join(f"{ms:.1f} ms" for ms in latencies))
    await until(lambda: len(notifications(dsn)) == 4)  # all kept, none lost, none delivered
    assert not any(delivered for _, _, delivered, _ in notifications(dsn))


async def test_the_token_never_reaches_a_log_line(fake):
    """aiohttp names the request's URL (the token is in its path) in the errors it raises
    for a redirect loop: none of that text may come out."""
    from aiohttp import web

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.path)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", loop)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        with capture_logs() as logs:
            api = BotApi(fake.token, url, timeout_s=2)
            with pytest.raises(Unavailable) as refused:
                await api.send_message(CHAT_ID, "hello")
            await api.close()
    finally:
        await runner.cleanup()
    assert "TooManyRedirects" in str(refused.value)  # the failure is named…
    assert fake.token not in str(refused.value) and fake.token not in repr(logs)  # …not its URL


# -- conditions the daemon sees ---------------------------------------------------------------
async def test_a_roll_overdue_and_the_broker_session_are_told_once_each(trading, dsn, fake):
    from datetime import datetime
    from types import SimpleNamespace
    from zoneinfo import ZoneInfo

    from live.notification_conditions import Conditions
    from live.notification_store import NotificationStore
    from live.notification_text import KINDS, Texts
    from live.rollover import ROLL_OVERDUE

    # A live venue's session as the Kite broker reports it: 05:40 IST, 20 min before 06:00.
    venue = SimpleNamespace(name="zerodha", unavailable_reason=None)
    clock = datetime(2026, 12, 4, 5, 40, tzinfo=ZoneInfo("Asia/Kolkata"))
    ctx = SimpleNamespace(broker=venue, readiness=trading.readiness, stops=trading.stops,
                          clock=lambda: clock)
    store = NotificationStore(dsn, "telegram", 60)
    conditions = Conditions(ctx, store, Texts("LIVE", INSTRUMENTS), KINDS)
    try:
        assert await conditions.check() == 1  # expiring
        assert await conditions.check() == 0  # said once
        trading.readiness.block_entries(ROLL_OVERDUE + "GOLD_MINI", "overdue", "GOLD_MINI")
        venue.unavailable_reason = "token_expired"
        assert await conditions.check() == 2
        trading.readiness.unblock(ROLL_OVERDUE + "GOLD_MINI")
        venue.unavailable_reason = None
        assert await conditions.check() == 2  # both over
    finally:
        await store.close()
    with psycopg.connect(dsn) as conn:
        said = [plain(b).split("\n")[0] for (b,) in conn.execute(
            "SELECT body FROM notifications ORDER BY id")]
    assert said == ["[LIVE] Broker session expiring", "[LIVE] Roll overdue: GOLD_MINI",
                    "[LIVE] Broker session expired", "[LIVE] Roll no longer overdue: GOLD_MINI",
                    "[LIVE] Broker session restored"]


async def test_a_wrong_token_keeps_every_message_until_it_is_fixed(trading, telegram, fake, dsn):
    with capture_logs() as logs:
        await telegram.running(telegram_bot_token="654321:not-this-bot")
        await trading.send("BASE_ENTRY", price="78500", stop="77800")
        await trading.send("EXIT", position="Long_1", price="79000")
        await until(lambda: len(notifications(dsn)) == 2)
        await asyncio.sleep(1.5)
    assert [(delivered, expired) for _, _, delivered, expired in notifications(dsn)] == [
        (False, False), (False, False)]  # not given up one by one: kept for the fixed bot
    assert any(e["event"] == "telegram_channel_down" for e in logs)
    assert "not-this-bot" not in repr(logs)


async def test_commands_still_reach_it_after_telegram_renumbers_its_updates(trading, telegram,
                                                                            fake, dsn):
    with psycopg.connect(dsn) as conn:  # a week of quiet: Telegram's next id may be lower
        conn.execute("INSERT INTO stream_cursors VALUES ('telegram:updates', 999999999)")
    await telegram.running(telegram_events="")
    fake.state.push_text(CHAT_ID, "/pause")
    await until(lambda: len(fake.state.messages) == 1)
    assert trading_state(dsn) == "REDUCING"
