"""Exits are never dropped: an exit the broker refuses, that meets a closed session, or that
fills partly is retried — later, and at the next session open — until its layers are flat.

Real PostgreSQL; the paper broker (sessions enforced) and the real kiteconnect client against
the fake Kite server.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.db_state_manager import DatabaseStateManager
from core.intents import ExitPurpose
from tests.integration.test_kite_broker import fake, gold_entry, positions_agree, start_trading
from tests.support.paper_venue import pnl_rows, venue_trade
from tests.support.trading import PORTFOLIO, Trading

__all__ = ["fake"]

D = Decimal
SESSIONS = PORTFOLIO.model_copy(update={"paper_enforce_sessions": True})
FRIDAY_MORNING = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)  # 10:30 IST, GOLD_MINI in session
FRIDAY_NIGHT = datetime(2026, 11, 20, 18, 30, tzinfo=UTC)  # 00:00 IST Saturday: closed
MONDAY_OPEN = datetime(2026, 11, 23, 3, 30, tzinfo=UTC)  # 09:00 IST


@pytest.fixture
async def paper(db, dsn):
    trading = await Trading(db, dsn, config=SESSIONS).start()
    trading.clock.now = FRIDAY_MORNING
    yield trading
    await trading.close()


async def entered(trading: Trading, **fields) -> int:
    outcome = await trading.send("BASE_ENTRY", price="78500", **fields)
    assert outcome.outcome == "executed", outcome
    return outcome.result["lots"]


async def test_exit_in_a_closed_session_is_retried_at_the_next_open(paper, postgresql):
    lots = await entered(paper)
    paper.clock.now = FRIDAY_NIGHT
    outcome = await paper.send("EXIT", price="79000", at=paper.clock.now)

    # The signal is answered, the exit is not dropped: its layer stays closing.
    assert outcome.outcome == "rejected"
    assert "exit pending" in outcome.reason and outcome.result["exit_pending"]
    [layer] = await paper.db.live_layers("GOLD_MINI")
    assert layer.status == "closing"
    [pending] = paper.exits.pending()
    assert pending.intent.quantity == layer.quantity
    assert pending.intent.tradingsymbol == layer.tradingsymbol
    assert isinstance(pending.intent.purpose, ExitPurpose)
    assert pending.intent.purpose.reason == "trend reversal"
    reasons = paper.readiness.reasons()
    assert "exit_pending:GOLD_MINI" in reasons
    assert paper.metrics.exits_pending.labels("GOLD_MINI")._value.get() == 1

    # An entry meanwhile is refused; the exit waits for the session rather than hammering.
    blocked = await paper.send("PYRAMID", position="Long_2", price="80000")
    assert blocked.outcome == "rejected" and "exit_pending:GOLD_MINI" in blocked.reason
    paper.clock.now = FRIDAY_NIGHT + timedelta(hours=2)
    assert await paper.exits.attempt_due() == 0
    [report] = paper.exits.report()
    assert report["next_attempt_at"] == MONDAY_OPEN.astimezone(
        datetime.fromisoformat(report["next_attempt_at"]).tzinfo).isoformat()
    assert report["last_reason"] == "market closed"

    # Monday's open: the retry sells the layer's quantity in its own contract.
    paper.clock.now = MONDAY_OPEN + timedelta(seconds=1)
    assert await paper.exits.attempt_due() == 1
    assert await paper.db.live_layers("GOLD_MINI") == []
    assert paper.exits.pending() == []
    assert "exit_pending:GOLD_MINI" not in paper.readiness.reasons()
    assert paper.metrics.exits_pending.labels("GOLD_MINI")._value.get() == 0
    point_value = D("10")
    assert pnl_rows(postgresql) == [(D("79000") - D("78500")) * lots * point_value]
    assert await positions_agree(paper)


async def test_refusals_back_off_and_each_attempt_is_its_own_intent(paper):
    await entered(paper)
    paper.clock.now = FRIDAY_NIGHT
    await paper.send("EXIT", price="79000", at=paper.clock.now)
    paper.exits._calendar = ALWAYS_OPEN  # the venue still refuses: its clock says closed
    dues = []
    for _ in range(4):
        [pending] = paper.exits.pending()
        dues.append(pending.due)
        paper.clock.now = pending.due
        assert await paper.exits.attempt_due() == 1
    [pending] = paper.exits.pending()
    gaps = [(b - a).total_seconds() for a, b in zip(dues, dues[1:], strict=False)]
    assert gaps == [10.0, 20.0, 40.0]  # 5 s doubling (each attempt starts at its due time)
    assert pending.attempt == 5
    intents = await paper.db.list_intents(20)
    exits = [i for i in intents if i.side == "SELL"]
    assert len({i.tag for i in exits}) == 6  # a new tag per attempt: each resolvable alone
    assert sorted(i.status for i in exits) == ["pending"] + ["rejected"] * 5
    [layer] = await paper.db.live_layers("GOLD_MINI")
    assert layer.status == "closing"


async def test_a_pending_exit_survives_a_restart(dsn):
    db = DatabaseStateManager(dsn, retry_window_s=5)
    await db.open()
    try:
        trading = await Trading(db, dsn, config=SESSIONS).start()
        trading.clock.now = FRIDAY_MORNING
        await entered(trading)
        trading.clock.now = FRIDAY_NIGHT
        await trading.send("EXIT", price="79000", at=trading.clock.now)
        await trading.close()

        # A new daemon on Monday: recovery resolves the pending attempt by its tag and,
        # the session being open, it fills.
        again = await Trading(db, dsn, config=SESSIONS).start()
        again.clock.now = MONDAY_OPEN + timedelta(minutes=1)
        await db.load_cache()
        reasons = await again.recover()
        assert reasons == []
        assert await db.live_layers("GOLD_MINI") == []
        assert await positions_agree(again)
        await again.close()
    finally:
        await db.close()


async def test_an_exit_filled_partly_is_retried_for_the_rest(db, dsn, fake, tmp_path,
                                                              postgresql):
    trading = await start_trading(db, dsn, fake, tmp_path)
    trading.exits._calendar = ALWAYS_OPEN
    try:
        outcome = await trading.send("BASE_ENTRY", **gold_entry())
        lots = outcome.result["lots"]
        assert lots >= 2, outcome
        fake.state.set_fill_mode("partial", "0.5")
        exited = await trading.send("EXIT", price="72400", instrument="GOLD_MINI")
        assert exited.outcome == "executed" and exited.result["exit_pending"]
        [layer] = await db.live_layers("GOLD_MINI")
        assert layer.status == "closing" and layer.lots == lots - lots // 2
        fake.state.set_fill_mode("immediate")
        [pending] = trading.exits.pending()
        trading.clock.now = pending.due
        assert await trading.exits.attempt_due() == 1
        assert await db.live_layers("GOLD_MINI") == []
        assert await trading.broker.positions() == {}  # flat, not short
        assert len(pnl_rows(postgresql)) == 2  # the part sold first, then the rest
    finally:
        await trading.close()


async def test_an_exit_refused_by_the_venue_is_placed_again(db, dsn, fake, tmp_path):
    trading = await start_trading(db, dsn, fake, tmp_path)
    trading.exits._calendar = ALWAYS_OPEN
    try:
        await trading.send("BASE_ENTRY", **gold_entry())
        fake.state.reject_next_for_margin(1)
        refused = await trading.send("EXIT", price="72400", instrument="GOLD_MINI")
        assert refused.outcome == "rejected" and "exit pending" in refused.reason
        [pending] = trading.exits.pending()
        trading.clock.now = pending.due
        assert await trading.exits.attempt_due() == 1
        assert await db.live_layers("GOLD_MINI") == []
        assert await trading.broker.positions() == {}
    finally:
        await trading.close()


async def test_a_retry_never_sells_what_the_broker_no_longer_holds(paper, postgresql):
    await entered(paper)
    paper.clock.now = FRIDAY_NIGHT
    await paper.send("EXIT", price="79000", at=paper.clock.now)
    [layer] = await paper.db.live_layers("GOLD_MINI")
    venue_trade(postgresql, layer.tradingsymbol, "SELL", layer.quantity, "78000")
    paper.clock.now = MONDAY_OPEN + timedelta(seconds=1)
    await paper.exits.attempt_due()
    assert await paper.broker.positions() == {}  # not short
    assert await paper.db.live_layers("GOLD_MINI") == []  # booked at the broker's trade
    assert closed_reasons(postgresql) == ["BROKER_SQUARE_OFF"]
    assert paper.exits.pending() == []


def closed_reasons(postgresql) -> list[str]:
    return [r for (r,) in postgresql.execute(
        "SELECT exit_reason FROM portfolio_positions WHERE status = 'closed' ORDER BY id")]


class _AlwaysOpen:
    """A session calendar for the fake Kite server, which trades at any hour."""

    def next_session_open(self, spec, moment):
        return moment


ALWAYS_OPEN = _AlwaysOpen()



async def test_an_exit_after_the_brokers_square_off_sells_nothing(paper, postgresql):
    await entered(paper)
    [layer] = await paper.db.live_layers("GOLD_MINI")
    venue_trade(postgresql, layer.tradingsymbol, "SELL", layer.quantity, "78000")
    # The EXIT comes before reconciliation has looked: selling now would open a short.
    outcome = await paper.send("EXIT", price="79000")
    assert outcome.outcome == "rejected" and "square-off is booked" in outcome.reason
    assert await paper.broker.positions() == {}
    assert await paper.db.live_layers("GOLD_MINI") == []
    assert closed_reasons(postgresql) == ["BROKER_SQUARE_OFF"]
    assert pnl_rows(postgresql) == [(D("78000") - D("78500")) * layer.lots * 10]


async def test_an_exit_all_after_a_partial_manual_sale_sells_the_rest(paper, postgresql):
    lots = await entered(paper)
    pyramid = await paper.send("PYRAMID", position="Long_2", price="80000", stop="79300")
    assert pyramid.outcome == "executed", pyramid
    base, top = await paper.db.live_layers("GOLD_MINI")
    # The trader sold the pyramid's lots in Kite's app; then the EXIT ALL arrives.
    venue_trade(postgresql, top.tradingsymbol, "SELL", top.quantity, "80100")
    outcome = await paper.send("EXIT", position="ALL", price="80200")
    assert outcome.result["exit_pending"], outcome
    [pending] = paper.exits.pending()
    assert (pending.intent.position_ids, pending.intent.quantity) == ([base.id], lots)
    paper.clock.now = pending.due
    await paper.exits.attempt_due()
    assert await paper.db.live_layers("GOLD_MINI") == []
    assert await paper.broker.positions() == {}  # flat, not short
    assert sorted(closed_reasons(postgresql)) == ["BROKER_SQUARE_OFF", "trend reversal"]


async def test_an_exit_of_layers_closed_meanwhile_is_not_sold(paper, postgresql):
    await entered(paper)
    paper.clock.now = FRIDAY_NIGHT
    await paper.send("EXIT", price="79000", at=paper.clock.now)
    [pending] = paper.exits.pending()
    # An operator closed the layer by hand meanwhile (`reconcile --accept broker`).
    postgresql.execute("UPDATE portfolio_positions SET status = 'closed', exit_price = 78000,"
                       " exit_timestamp = now(), exit_reason = 'operator',"
                       " realized_pnl = 0, version = version + 1")
    await paper.db.load_cache()
    paper.clock.now = MONDAY_OPEN + timedelta(seconds=1)
    await paper.exits.attempt_due()
    assert paper.exits.pending() == []
    [(status,)] = postgresql.execute(
        "SELECT status FROM order_intents WHERE tag = %s", (pending.intent.tag,)).fetchall()
    assert status == "rejected"
    assert [s for (s,) in postgresql.execute("SELECT side FROM paper_orders")] == ["BUY", "SELL"]


async def test_an_exit_the_broker_cannot_explain_waits_rather_than_sells(paper):
    await entered(paper)
    [layer] = await paper.db.live_layers("GOLD_MINI")
    async with paper.broker._pool.connection() as conn:  # the venue lost part of it
        await conn.execute("UPDATE paper_trades SET quantity = quantity - 1")
    outcome = await paper.send("EXIT", price="79000")
    assert outcome.outcome == "rejected" and "exit pending" in outcome.reason
    assert await paper.broker.positions() == {layer.tradingsymbol: layer.quantity - 1}
    [pending] = paper.exits.pending()
    assert pending.intent.quantity == layer.quantity
