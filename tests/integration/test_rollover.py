"""Rolling layers out of an expiring contract (DOMAIN.md §9), on the paper broker with
`paper_contracts: monthly`, real PostgreSQL and the shipped holiday calendar.

GOLD_MINI's December 2026 future expires Fri 4 Dec (the 5th is a Saturday); its cut-off is
1 Dec (3 days before), its roll day 27 Nov (2 trading days before the cut-off), at 10:00 IST.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_holidays
from core.rollover import DONE
from core.trading_state import Actor, TradingState
from live.brokers.base import OrderRequest
from tests.support.paper_venue import venue_trade
from tests.support.trading import PORTFOLIO, Trading

D = Decimal
CALENDAR = load_holidays(DEFAULT_CONFIG_DIR / "holidays.json")
MONTHLY = PORTFOLIO.model_copy(update={"paper_contracts": "monthly"})
DEC, JAN = "GOLD_MINI26DECFUT", "GOLD_MINI27JANFUT"
ENTERED = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)  # Fri 10:30 IST
BEFORE_ROLL = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)  # Fri 09:30 IST, the roll day
ROLL_TIME = datetime(2026, 11, 27, 4, 35, tzinfo=UTC)  # 10:05 IST
SPREAD = D("395")  # 79,000 × 0.5 % for one month further out


async def start(db, dsn) -> Trading:
    trading = await Trading(db, dsn, config=MONTHLY, calendar=CALENDAR).start()
    trading.clock.now = ENTERED
    return trading


@pytest.fixture
async def paper(db, dsn):
    trading = await start(db, dsn)
    yield trading
    await trading.close()


async def held_in_december(trading: Trading) -> int:
    entry = await trading.send("BASE_ENTRY", price="78500")
    assert entry.outcome == "executed", entry
    [layer] = await trading.db.live_layers("GOLD_MINI")
    assert (layer.tradingsymbol, layer.expiry.isoformat()) == (DEC, "2026-12-04")
    return entry.result["lots"]


async def drive(trading: Trading, rounds: int = 5) -> None:
    """Carry out every pending leg and exit (the daemon's loop, run by hand)."""
    for _ in range(rounds):
        due = trading.exits.pending()
        if not due:
            return
        trading.clock.now = max(trading.clock.now, *(p.due for p in due))
        await trading.exits.attempt_due()


def pnl_rows(postgresql):
    return postgresql.execute(
        "SELECT c.amount, c.note, p.exit_reason, p.tradingsymbol FROM capital_transactions c"
        " JOIN portfolio_positions p ON p.id = c.position_id"
        " WHERE c.txn_type = 'TRADING_PNL' ORDER BY c.id").fetchall()


async def test_a_roll_carries_the_layer_into_the_next_month_with_its_risk(paper, postgresql):
    lots = await held_in_december(paper)
    paper.clock.now = BEFORE_ROLL
    assert await paper.rollover.check() == []  # the roll day, before roll_at
    report = (await paper.rollover.report())["GOLD_MINI"]
    assert (report["held"][0]["tradingsymbol"], str(report["next_roll_day"]),
            str(report["cutoff"]), report["roll_at"]) == (DEC, "2026-11-27", "2026-12-01", "10:00")
    # No new entry goes into the expiring contract from the roll day on.
    assert report["entry_contract"]["tradingsymbol"] == JAN
    paper.clock.now = ROLL_TIME
    await paper.send("MARKET_DATA", position=None, price="79000", atr="700")
    [before] = await paper.db.live_layers("GOLD_MINI")

    [roll_id] = await paper.rollover.check()
    assert (await paper.rollover.live_roll("GOLD_MINI")).id == roll_id
    assert "exit_pending:GOLD_MINI" in paper.readiness.reasons()  # entries wait for it
    await drive(paper)

    [after] = await paper.db.live_layers("GOLD_MINI")
    assert (after.id, after.trade_id, after.lots, after.status) == (
        before.id, before.trade_id, lots, "open")
    assert (after.tradingsymbol, after.expiry.isoformat()) == (JAN, "2027-01-05")
    assert after.entry_price == D("79000") + SPREAD
    assert (after.initial_stop, after.current_stop, after.highest_close) == (
        before.initial_stop + SPREAD, before.current_stop + SPREAD,
        before.highest_close + SPREAD)
    # The rupee risk to the stop is what it was before the roll.
    assert (after.entry_price - after.current_stop) == (D("79000") - before.current_stop)
    assert await paper.broker.positions() == {JAN: lots}
    state = await paper.db.pyramiding_state("GOLD_MINI")
    assert state.last_pyramid_price == D("78500") + SPREAD
    roll = await paper.db.roll(roll_id)
    assert (roll.status, roll.close_price, roll.open_price, roll.spread, roll.pnl) == (
        DONE, D("79000"), D("79395"), SPREAD, D("500") * lots * 10)
    assert pnl_rows(postgresql) == [
        (D("500") * lots * 10, f"roll {DEC} -> {JAN}", "ROLL", DEC)]
    assert "exit_pending:GOLD_MINI" not in paper.readiness.reasons()

    # Until December expires, alerts still quote it: their prices get the spread added.
    assert await paper.rollover.basis("GOLD_MINI", paper.clock.now) == SPREAD
    await paper.send("MARKET_DATA", position=None, price="79600", atr="700")
    [trailed] = await paper.db.live_layers("GOLD_MINI")
    assert trailed.highest_close == D("79600") + SPREAD
    paper.clock.now = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)  # after the 4 Dec expiry
    assert await paper.rollover.basis("GOLD_MINI", paper.clock.now) == 0

    exited = await paper.send("EXIT", price="80500")
    assert exited.outcome == "executed"
    assert await paper.broker.positions() == {}
    rows = pnl_rows(postgresql)
    assert [r[3] for r in rows] == [DEC, JAN]
    assert rows[1][0] == (D("80500") - D("79395")) * lots * 10
    state = await paper.db.portfolio_state()
    assert state.closed_equity == MONTHLY.initial_capital + rows[0][0] + rows[1][0]


async def test_an_exit_during_the_roll_is_carried_out_once_it_is_done(paper):
    lots = await held_in_december(paper)
    paper.clock.now = ROLL_TIME
    await paper.rollover.check()
    exited = await paper.send("EXIT", price="79000")
    assert (exited.outcome, exited.reason) == ("executed", "exit follows the roll under way")
    await drive(paper)
    assert await paper.db.live_layers("GOLD_MINI") == []
    assert await paper.broker.positions() == {}
    sells = [i for i in await paper.db.list_intents(20) if i.side == "SELL"]
    assert [(i.tradingsymbol, i.quantity) for i in sells] == [(JAN, lots), (DEC, lots)]


@pytest.mark.parametrize("stop_after", ["close_intent", "close_fill", "open_placed"])
async def test_a_roll_interrupted_anywhere_resumes_and_is_never_repeated(
        db, dsn, postgresql, stop_after):
    first = await start(db, dsn)
    lots = await held_in_december(first)
    first.clock.now = ROLL_TIME
    await first.send("MARKET_DATA", position=None, price="79000", atr="700")
    await first.rollover.check()
    if stop_after != "close_intent":
        [close] = first.exits.pending()
        first.clock.now = close.due
        await first.exits.attempt_due()  # the close leg fills; the open leg is committed
    if stop_after == "open_placed":
        [opening] = first.exits.pending()
        # The venue took the open leg; the process died before anything was recorded.
        await first.broker.place(OrderRequest(
            tag=opening.intent.tag, instrument="GOLD_MINI",
            tradingsymbol=opening.intent.tradingsymbol, side=opening.intent.side,
            quantity=opening.intent.quantity, order_type="MARKET", price=opening.intent.price))
    await first.close()  # a crash: nothing more of this process runs

    again = await start(db, dsn)
    again.clock.now = ROLL_TIME + timedelta(minutes=1)
    await db.load_cache()
    await again.recover()
    await drive(again)
    try:
        [layer] = await db.live_layers("GOLD_MINI")
        assert (layer.tradingsymbol, layer.lots, layer.status) == (JAN, lots, "open")
        assert await again.broker.positions() == {JAN: lots}  # bought once, sold once
        assert len(pnl_rows(postgresql)) == 1
        assert (await again.rollover.live_roll("GOLD_MINI")) is None
    finally:
        await again.close()


async def test_a_position_past_its_cutoff_blocks_entries_until_rolled(paper):
    await held_in_december(paper)
    paper.clock.now = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)  # down through the roll day
    await paper.rollover.check()
    assert "roll_overdue:GOLD_MINI" in paper.readiness.reasons()
    pyramid = await paper.send("PYRAMID", position="Long_2", price="80000")
    assert pyramid.outcome == "rejected" and "roll_overdue:GOLD_MINI" in pyramid.reason
    await drive(paper)
    await paper.rollover.check()
    assert "roll_overdue:GOLD_MINI" not in paper.readiness.reasons()
    [layer] = await paper.db.live_layers("GOLD_MINI")
    assert layer.tradingsymbol == JAN


async def test_alerts_that_quote_the_traded_contract_get_no_basis(db, dsn):
    from tests.support import trading as support

    spec = support.INSTRUMENTS["GOLD_MINI"]
    traded = spec.model_copy(update={"alerts_follow": "traded_contract"})
    support.INSTRUMENTS["GOLD_MINI"] = traded
    try:
        trading = await start(db, dsn)
        await held_in_december(trading)
        trading.clock.now = ROLL_TIME
        await trading.rollover.check()
        await drive(trading)
        assert await trading.rollover.basis("GOLD_MINI", trading.clock.now) == 0
        await trading.close()
    finally:
        support.INSTRUMENTS["GOLD_MINI"] = spec



async def test_an_exit_of_one_layer_during_the_roll_leaves_the_others_rolled(paper):
    await held_in_december(paper)
    pyramid = await paper.send("PYRAMID", position="Long_2", price="80000", stop="79300")
    assert pyramid.outcome == "executed", pyramid
    paper.clock.now = ROLL_TIME
    await paper.rollover.check()
    exited = await paper.send("EXIT", position="Long_2", price="80000")
    assert exited.reason == "exit follows the roll under way"
    await drive(paper)
    [kept] = await paper.db.live_layers("GOLD_MINI")
    assert (kept.layer, kept.tradingsymbol, kept.status) == ("Long_1", JAN, "open")
    assert await paper.broker.positions() == {JAN: kept.quantity}


async def test_an_exit_all_during_the_roll_also_sells_a_layer_already_in_the_new_month(paper):
    await held_in_december(paper)
    paper.clock.now = BEFORE_ROLL  # the roll day, before roll_at: a pyramid buys January
    pyramid = await paper.send("PYRAMID", position="Long_2", price="80000", stop="79300")
    assert pyramid.outcome == "executed", pyramid
    paper.clock.now = ROLL_TIME
    await paper.rollover.check()
    exited = await paper.send("EXIT", position="ALL", price="80000")
    assert exited.outcome == "executed", exited
    await drive(paper)
    assert await paper.db.live_layers("GOLD_MINI") == []
    assert await paper.broker.positions() == {}


async def test_a_roll_never_sells_what_the_broker_squared_off(paper, postgresql):
    lots = await held_in_december(paper)
    paper.clock.now = ROLL_TIME
    await paper.rollover.check()
    venue_trade(postgresql, DEC, "SELL", lots, "78900")  # the broker closed it meanwhile
    await drive(paper, rounds=2)
    assert await paper.broker.positions() == {}  # no short in December, nothing bought
    assert "exit_pending:GOLD_MINI" in paper.readiness.reasons()  # shown, for an operator
    assert (await paper.rollover.live_roll("GOLD_MINI")).status == "closing"


async def test_no_roll_starts_while_trading_is_halted(paper):
    await held_in_december(paper)
    paper.clock.now = ROLL_TIME
    await paper.control.set(TradingState.HALTED, "investigating", Actor.OPERATOR)
    assert await paper.rollover.check() == []
    [layer] = await paper.db.live_layers("GOLD_MINI")
    assert layer.status == "open" and layer.tradingsymbol == "GOLD_MINI26DECFUT"

    await paper.control.set(TradingState.REDUCING, "paused only", Actor.OPERATOR)
    assert len(await paper.rollover.check()) == 1  # a pause keeps positions: they roll
