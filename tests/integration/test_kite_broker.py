"""The Zerodha adapter through the engine: the real kiteconnect client against the fake server."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR
from config.kite import load_kite_config
from core.calendar import TradingCalendar
from core.reconciliation import book_positions, diff_positions
from core.roll_schedule import roll_day
from live.brokers.kite import KiteBroker
from live.brokers.kite_client import KiteCalls
from live.brokers.kite_session import KiteSession, save_session
from live.metrics import Metrics
from live.operator_commands import record_acceptance
from tests.fakes.kite_server import FakeKiteConfig, running_fake_kite
from tests.support.trading import INSTRUMENTS, PORTFOLIO, Clock, Trading

D = Decimal
SECRET = "fake_api_secret"
LIMITS = (D("2"), D("1"))


def kite_config(**policy_changes):
    config = load_kite_config(DEFAULT_CONFIG_DIR / "kite.json")
    fast = {"request_timeout_s": 1.5, "poll_interval_s": 0.05, "poll_interval_max_s": 0.2,
            "partial_fill_wait_s": 0.5}
    instruments = {
        name: contract.model_copy(update={"policy": contract.policy.model_copy(update={
            "chase_interval_s": 0.2, "max_modifications": 2, **policy_changes})})
        for name, contract in config.instruments.items()}
    return config.model_copy(update={**fast, "instruments": instruments})


@pytest.fixture
async def fake():
    config = FakeKiteConfig(fault_timeout_s=3.0,
                            available_cash_inr={"equity": D("50000000"),
                                                "commodity": D("50000000")})
    async with running_fake_kite(config) as handle:
        yield handle


async def start_trading(db, dsn, fake, tmp_path, capital="5000000", clock=None,
                        calendar=None, gate=lambda: None, **policy):
    clock = clock or Clock(datetime.now(UTC))
    calendar = calendar or TradingCalendar({})
    session = KiteSession(tmp_path, "fake_access_token")
    broker = KiteBroker(KiteCalls("fake_api_key", fake.url, 1.5, gate), session,
                        kite_config(**policy), INSTRUMENTS,
                        api_secret=SECRET, clock=clock, metrics=Metrics(),
                        session_check_s=0.1, calendar=calendar)
    trading = Trading(db, dsn, config=PORTFOLIO.model_copy(
        update={"initial_capital": D(capital)}), clock=clock, broker=broker,
        price_limits=LIMITS, calendar=calendar)
    await trading.start()
    trading.inbox.start_processing()
    trading.session = session  # type: ignore[attr-defined]
    return trading


@pytest.fixture
async def kite(db, dsn, fake, tmp_path):
    trading = await start_trading(db, dsn, fake, tmp_path)
    yield trading
    await trading.close()


def fake_orders(fake):
    return fake.state.snapshot()["orders"]


def gold_entry(**fields):
    return {"price": "72000", "stop": "71300", "atr": "700", "instrument": "GOLD_MINI",
            **fields}


async def positions_agree(trading) -> bool:
    book = book_positions(await trading.db.load_live_layers())
    return diff_positions(book, await trading.broker.positions()) == []


async def test_entry_is_a_limit_at_the_quote_plus_buffer(kite, fake):
    outcome = await kite.send("BASE_ENTRY", **gold_entry())
    assert outcome.outcome == "executed", outcome
    [order] = fake_orders(fake)
    assert (order["order_type"], order["product"], order["tradingsymbol"][:5]) == (
        "LIMIT", "NRML", "GOLDM")
    assert D(str(order["price"])) == D("72005")  # 5 ticks of 1.0 above the quote
    assert order["quantity"] == outcome.result["lots"]  # MCX counts lots
    intent = (await kite.db.list_intents(1))[0]
    assert order["tag"] == intent.tag and intent.status == "filled"
    assert await positions_agree(kite)


async def test_market_policy_always_carries_protection(db, dsn, fake, tmp_path):
    trading = await start_trading(db, dsn, fake, tmp_path, order_type="MARKET")
    try:
        assert (await trading.send("BASE_ENTRY", **gold_entry())).outcome == "executed"
        [order] = fake_orders(fake)
        assert order["order_type"] == "MARKET"
        assert D(str(order["market_protection"])) == D("2")
    finally:
        await trading.close()


async def test_bank_nifty_above_freeze_is_sliced_into_one_intent(db, dsn, fake, tmp_path):
    trading = await start_trading(db, dsn, fake, tmp_path, capital="50000000")
    try:
        outcome = await trading.send("BASE_ENTRY", instrument="BANK_NIFTY", price="52000",
                                     stop="51650", atr="350")
        assert outcome.outcome == "executed"
        lots = outcome.result["lots"]
        orders = fake_orders(fake)
        assert [o["quantity"] for o in orders] == [600, 600, lots * 30 - 1200]
        assert len({o["tag"] for o in orders}) == 1
        [layer] = await trading.db.load_live_layers()
        assert (layer.lots, layer.quantity) == (lots, lots * 30)
        [intent] = await trading.db.list_intents(5)
        assert len(intent.broker_order_id.split(",")) == 3
        assert await positions_agree(trading)
    finally:
        await trading.close()


@pytest.mark.parametrize("fault", ["timeout", "drop"])
async def test_accepted_then_lost_answer_is_adopted_not_repeated(kite, fake, fault):
    fake.state.add_fault("place", fault)
    outcome = await kite.send("BASE_ENTRY", **gold_entry())
    assert outcome.outcome == "executed"
    assert len(fake_orders(fake)) == 1  # the lookup found it: never placed twice
    assert await positions_agree(kite)


@pytest.mark.parametrize("fault", ["rate_limited", "html_502", "network_503"])
async def test_refused_before_acceptance_is_placed_once_lookup_proves_absence(kite, fake,
                                                                              fault):
    fake.state.add_fault("place", fault)
    outcome = await kite.send("BASE_ENTRY", **gold_entry())
    assert outcome.outcome == "executed"
    assert len(fake_orders(fake)) == 1


async def test_rms_rejection_books_nothing(kite, fake):
    fake.state.reject_next_for_margin(1)
    outcome = await kite.send("BASE_ENTRY", **gold_entry())
    assert outcome.outcome == "rejected"
    assert outcome.reason.startswith("Insufficient funds.")
    assert await kite.db.load_live_layers() == []
    assert await kite.broker.positions() == {}


async def test_margin_error_at_placement_is_rejected(kite, fake):
    fake.state.fail_next_with_margin_error(1)
    outcome = await kite.send("BASE_ENTRY", **gold_entry())
    assert outcome.outcome == "rejected"
    assert [o for o in fake_orders(fake)] == []


async def test_partial_fill_is_booked_after_the_rest_is_cancelled(kite, fake):
    fake.state.set_fill_mode("partial", "0.5")
    outcome = await kite.send("BASE_ENTRY", **gold_entry())
    assert outcome.outcome == "executed"
    [order] = fake_orders(fake)
    assert order["status"] == "CANCELLED" and 0 < order["filled_quantity"] < order["quantity"]
    [layer] = await kite.db.load_live_layers()
    assert layer.lots == order["filled_quantity"] == outcome.result["lots"]
    [intent] = await kite.db.list_intents(1)
    assert (intent.status, intent.filled_quantity) == ("cancelled", order["filled_quantity"])
    assert await positions_agree(kite)


async def run_away_market(trading, fake, to_price: str):
    """Place an entry that rests, then move the market above its limit."""
    fake.state.set_fill_mode("rest")
    pending = asyncio.create_task(trading.send("BASE_ENTRY", wait_s=15, **gold_entry()))
    for _ in range(100):
        if fake_orders(fake):
            break
        await asyncio.sleep(0.02)
    [order] = fake_orders(fake)
    fake.state.set_price(order["tradingsymbol"], to_price)  # above the limit: stays open
    return pending


async def test_resting_limit_is_moved_with_the_market(kite, fake):
    pending = await run_away_market(kite, fake, "72100")
    outcome = await pending
    assert outcome.outcome == "executed"
    [order] = fake_orders(fake)
    assert "MODIFIED" in [h["status"] for h in order["history"]]
    assert (order["order_type"], D(str(order["price"]))) == ("LIMIT", D("72105"))
    assert D(outcome.result["fill_price"]) == D("72100")
    assert await positions_agree(kite)


async def test_limit_becomes_protected_market_after_its_chases(db, dsn, fake, tmp_path):
    trading = await start_trading(db, dsn, fake, tmp_path, max_modifications=0)
    try:
        outcome = await (await run_away_market(trading, fake, "72100"))
        assert outcome.outcome == "executed"
        [order] = fake_orders(fake)
        assert order["order_type"] == "MARKET"
        assert D(str(order["market_protection"])) == D("2")
        assert await positions_agree(trading)
    finally:
        await trading.close()


async def test_divergent_quote_rejects_the_entry_with_the_numbers(kite, fake):
    outcome = await kite.send("BASE_ENTRY", **gold_entry(price="75000", stop="74300"))
    assert outcome.outcome == "rejected"
    assert outcome.reason == ("Quote 72000 diverges 4.00% from signal price 75000 "
                              "(limit 2%)")
    assert fake_orders(fake) == []


async def test_token_expiry_refuses_entries_and_retries_exits_after_login(kite, fake, tmp_path):
    assert (await kite.send("BASE_ENTRY", **gold_entry())).outcome == "executed"
    fake.state.expire_token()
    refused = await kite.send("BASE_ENTRY", instrument="SILVER_MINI", price="88000",
                              stop="86000", atr="1500")
    assert (refused.outcome, refused.reason) in {("rejected", "broker_unavailable")}
    assert kite.broker.unavailable_reason == "token_expired"
    exit_waiting = await kite.send("EXIT", position="Long_1", price="72100", stop="0",
                                   reason="exit", instrument="GOLD_MINI")
    # Answered at once; the exit itself is kept, not dropped.
    assert "exit pending" in exit_waiting.reason
    [closing] = await kite.db.load_live_layers()
    assert closing.status == "closing"
    kite.exits._calendar = _AnyHour()  # the fake Kite server trades at any hour
    [pending] = kite.exits.pending()
    kite.clock.now = pending.due
    assert await kite.exits.attempt_due() == 0  # no session with the broker: not attempted
    # The operator logs in again (kite-login writes the session file): no restart.
    from kiteconnect import KiteConnect

    request_token = fake.state.register_request_token()
    session = await asyncio.to_thread(KiteConnect("fake_api_key", root=fake.url)
                                      .generate_session, request_token, SECRET)
    save_session(tmp_path, session["access_token"], session["user_id"], None)
    for _ in range(100):
        if kite.broker.unavailable_reason is None:
            break
        await asyncio.sleep(0.1)
    assert kite.broker.unavailable_reason is None
    assert await kite.exits.attempt_due() == 1
    assert await kite.db.load_live_layers() == []
    assert await positions_agree(kite)


class _AnyHour:
    def next_session_open(self, spec, moment):
        return moment


async def test_contract_rolls_to_next_month_before_expiry(db, dsn, fake, tmp_path):
    trading = await start_trading(db, dsn, fake, tmp_path)
    try:
        broker = trading.broker
        contracts = broker._contracts["BANK_NIFTY"]
        first = contracts[0]
        # BANK_NIFTY: no cut-off before its cash-settled expiry; entries move to the next
        # month 2 trading days before it (the adapter's default calendar: weekdays).
        rolled = roll_day(INSTRUMENTS["BANK_NIFTY"], TradingCalendar({}), first.expiry)
        rolled_day = datetime.combine(rolled, datetime.min.time(), UTC)
        day_before_roll = rolled_day - timedelta(days=1)
        assert broker.contract("BANK_NIFTY", day_before_roll).tradingsymbol == first.tradingsymbol
        assert broker.contract("BANK_NIFTY", rolled_day).tradingsymbol == contracts[1].tradingsymbol
    finally:
        await trading.close()


async def test_postback_checksum_is_verified_and_repeats_are_harmless(kite):
    payload = {"order_id": "1953341975595868160", "order_timestamp": "2026-11-20 10:15:00",
               "status": "COMPLETE"}
    payload["checksum"] = hashlib.sha256(
        (payload["order_id"] + payload["order_timestamp"] + SECRET).encode()).hexdigest()
    assert kite.broker.accept_postback(payload)
    assert kite.broker.accept_postback(payload)  # a repeat
    assert not kite.broker.accept_postback({**payload, "checksum": "0" * 64})
    assert not kite.broker.accept_postback({**payload, "order_timestamp": "x"})


async def test_reconciliation_blocks_entries_until_accepted(kite, fake):
    # A trade made outside the daemon (e.g. from Kite web) with no intent behind it.
    from kiteconnect import KiteConnect

    client = KiteConnect("fake_api_key", access_token="fake_access_token", root=fake.url)
    symbol = kite.broker.contract("COPPER", datetime.now(UTC)).tradingsymbol
    await asyncio.to_thread(client.place_order, variety="regular", exchange="MCX",
                            tradingsymbol=symbol, transaction_type="BUY", quantity=2,
                            product="NRML", order_type="MARKET", market_protection=2)
    reasons = await kite.recover()
    assert reasons == [f"position mismatch {symbol}: book 0, broker 2"]
    blocked = await kite.send("BASE_ENTRY", instrument="COPPER", price="900", stop="880",
                              atr="10")
    assert blocked.outcome == "rejected" and "entries blocked" in blocked.reason
    assert (await kite.send("BASE_ENTRY", **gold_entry())).outcome == "executed"  # only COPPER
    differences = diff_positions(book_positions(await kite.db.load_live_layers()),
                                 await kite.broker.positions())
    await record_acceptance(kite.db, "book", differences)
    assert await kite.recover() == []


async def test_client_side_limits_never_provoke_a_429(kite, fake):
    fake.state.enforce_rate_limits(True)
    from live.brokers.base import OrderRequest

    symbol = kite.broker.contract("GOLD_MINI", datetime.now(UTC)).tradingsymbol
    requests = [OrderRequest(f"RL{i}", "GOLD_MINI", symbol, "BUY", 1, "LIMIT", D("72000"))
                for i in range(14)]
    await asyncio.gather(*(kite.broker.place(r) for r in requests))
    state = fake.state.snapshot()
    assert len(state["orders"]) == 14
    assert state["rate_limits"]["enforced"]
    assert state["rate_limits"]["total_violations"] == 0


async def test_a_term_that_ends_inside_a_placement_sends_nothing(db, dsn, fake, tmp_path):
    """A pair's leader asks its gate the instant before each request, not once per call: a
    node frozen while `place` awaited the quote for its limit price must not send the order
    when it wakes, its term gone (the next leader may have placed it already)."""
    from live.brokers.base import OrderRequest
    from live.leader_broker import NotLeader, leader_gate

    requests_left = [1_000_000]

    def may_act() -> bool:
        requests_left[0] -= 1
        return requests_left[0] >= 0

    trading = await start_trading(db, dsn, fake, tmp_path, gate=leader_gate(may_act))
    try:
        symbol = trading.broker.contract("GOLD_MINI", datetime.now(UTC)).tradingsymbol
        requests_left[0] = 1  # the quote goes; the term ends before the order
        with pytest.raises(NotLeader):
            await trading.broker.place(OrderRequest("PM1E3", "GOLD_MINI", symbol, "BUY", 1,
                                                    "LIMIT", D("72000")))
        assert requests_left[0] < 0  # it did ask again, after the quote
        assert fake_orders(fake) == []
    finally:
        await trading.close()
