"""Each signal handler against real PostgreSQL and the paper broker."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.trading import Trading

D = Decimal


@pytest.fixture
async def trading(db, dsn):
    system = await Trading(db, dsn).start()
    yield system
    await system.close()


def count(postgresql, table: str, where: str = "true") -> int:
    return postgresql.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]


async def test_base_entry_opens_a_sized_layer(trading, postgresql):
    outcome = await trading.send("BASE_ENTRY", price="78500", stop="77800")
    # Lot-R = 5,000,000 × 1% / (700 × 10) × 1.0 = 7.14 → 7 lots, limited by risk
    assert (outcome.outcome, outcome.result["lots"], outcome.result["limiter"]) == (
        "executed", 7, "risk")
    [layer] = await trading.db.live_layers("GOLD_MINI")
    assert (layer.lots, layer.entry_price, layer.initial_stop) == (7, D("78500"), D("77800"))
    assert count(postgresql, "paper_orders") == 1
    assert count(postgresql, "order_intents", "status = 'filled'") == 1
    assert count(postgresql, "fills") == 1
    assert count(postgresql, "signal_log", "outcome = 'executed'") == 1
    state = await trading.db.pyramiding_state("GOLD_MINI")
    assert (state.base_position_id, state.pyramid_count) == (layer.id, 0)


async def test_base_entry_while_in_position_is_blocked(trading, postgresql):
    await trading.send("BASE_ENTRY")
    outcome = await trading.send("BASE_ENTRY", price="79000")
    assert (outcome.outcome, outcome.reason) == ("blocked", "already in position")
    assert count(postgresql, "order_intents") == 1


async def test_zero_lots_is_blocked_and_places_nothing(trading, postgresql):
    outcome = await trading.send("BASE_ENTRY", price="78500", stop="8500")  # risk too wide
    assert (outcome.outcome, outcome.reason) == ("blocked", "Zero lots (limited by risk)")
    assert count(postgresql, "order_intents") == 0
    assert count(postgresql, "paper_orders") == 0


async def test_pyramid_gates_then_accepted(trading, postgresql):
    await trading.send("BASE_ENTRY", price="78500", stop="77800")
    gated = await trading.send("PYRAMID", position="Long_2", price="79000", stop="78500")
    assert gated.outcome == "blocked"
    assert gated.reason.startswith("Price not > 1R (moved 500, need 700)")
    thin = await trading.send("PYRAMID", position="Long_2", price="79300", stop="78800")
    # C = floor(0.5 × (800×7×10 − 700×7×10) / (500×10)) = floor(0.7) = 0
    assert (thin.outcome, thin.reason) == ("blocked", "Zero lots (limited by risk_budget)")
    accepted = await trading.send("PYRAMID", position="Long_2", price="80000", stop="79500")
    # A = floor((3,000,000 − 7×105,000) / 105,000) = 21; B = floor(7 × 0.5) = 3;
    # C = floor(0.5 × (1500×70 − 700×70) / 5,000) = 5 → 3, geometric
    assert (accepted.outcome, accepted.result["lots"], accepted.result["limiter"]) == (
        "executed", 3, "geometric")
    layers = await trading.db.live_layers("GOLD_MINI")
    assert [(x.layer, x.lots) for x in layers] == [("Long_1", 7), ("Long_2", 3)]
    state = await trading.db.pyramiding_state("GOLD_MINI")
    assert (state.pyramid_count, state.last_pyramid_price) == (1, D("80000"))


async def test_pyramid_without_base_is_blocked(trading):
    outcome = await trading.send("PYRAMID", position="Long_2", price="79300", stop="78800")
    assert (outcome.outcome, outcome.reason) == ("blocked", "no base position")


async def test_exit_closes_layer_books_pnl_and_is_not_repeated(trading, postgresql):
    await trading.send("BASE_ENTRY", price="78500", stop="77800")  # 7 lots
    outcome = await trading.send("EXIT", position="Long_1", price="79000")
    assert outcome.outcome == "executed"
    assert outcome.result["pnl"] == "35000.00"  # (79,000 − 78,500) × 7 × 10
    portfolio = await trading.db.portfolio_state()
    assert (portfolio.closed_equity, portfolio.equity_high) == (D("5035000"), D("5035000"))
    assert await trading.db.live_layers("GOLD_MINI") == []
    again = await trading.send("EXIT", position="Long_1", price="79100")
    assert (again.outcome, again.reason) == ("ignored", "no open layer Long_1")
    assert count(postgresql, "capital_transactions", "txn_type = 'TRADING_PNL'") == 1


async def test_exit_all_is_one_order_for_the_total(trading, postgresql):
    await trading.send("BASE_ENTRY", price="78500", stop="77800")
    await trading.send("PYRAMID", position="Long_2", price="80000", stop="79500")
    lots = sum(x.lots for x in await trading.db.live_layers("GOLD_MINI"))
    outcome = await trading.send("EXIT", position="ALL", price="80000")
    assert outcome.outcome == "executed" and len(outcome.result["positions_closed"]) == 2
    sells = postgresql.execute("SELECT quantity FROM paper_orders WHERE side = 'SELL'").fetchall()
    assert sells == [(lots,)]
    assert await trading.db.pyramiding_state("GOLD_MINI") is None  # flat: trade over
    net = postgresql.execute(
        "SELECT sum(CASE side WHEN 'BUY' THEN quantity ELSE -quantity END) FROM paper_trades"
    ).fetchone()[0]
    assert net == 0


async def test_market_data_ratchets_then_hits_the_stop(trading, postgresql):
    await trading.send("BASE_ENTRY", price="78500", stop="77800")
    up = await trading.send("MARKET_DATA", position=None, price="80000", atr="500")
    assert up.outcome == "executed"
    [layer] = await trading.db.live_layers("GOLD_MINI")
    # trail = 80,000 − 2.0 × 500 = 79,000
    assert (layer.highest_close, layer.current_stop) == (D("80000"), D("79000"))
    down = await trading.send("MARKET_DATA", position=None, price="79500", atr="900")
    [layer] = await trading.db.live_layers("GOLD_MINI")
    assert layer.current_stop == D("79000")  # never moves down
    assert down.outcome == "executed"
    hit = await trading.send("MARKET_DATA", position=None, price="78900", atr="500")
    assert hit.outcome == "executed"
    assert await trading.db.live_layers("GOLD_MINI") == []
    row = postgresql.execute(
        "SELECT exit_reason, exit_price FROM portfolio_positions").fetchone()
    assert row == ("PM_STOP_HIT", D("78900"))


async def test_market_data_without_layers_and_eod_are_ignored(trading):
    assert (await trading.send("MARKET_DATA", position=None)).reason == "no open layers"
    eod = await trading.send("EOD_MONITOR", position=None)
    assert eod.outcome == "ignored"


async def test_entry_that_waited_too_long_is_rejected_stale(trading, postgresql):
    from core.signals import parse_signal, storable_payload
    from tests.support.trading import INSTRUMENTS, signal_payload

    payload = signal_payload("BASE_ENTRY", at=trading.clock.now)
    admission, _ = await trading.inbox.submit(parse_signal(payload, INSTRUMENTS),
                                               storable_payload(payload), trading.clock.now)
    trading.clock.advance(121)  # the engine only gets to it after max_entry_delay_s
    trading.inbox.start_processing()
    outcome = await trading.inbox.wait_for_decision(admission.signal_id, 10)
    assert (outcome.outcome, outcome.reason) == ("rejected", "stale")
    assert count(postgresql, "order_intents") == 0


async def test_version_conflict_reloads_and_redecides(trading, postgresql):
    await trading.send("BASE_ENTRY", price="78500", stop="77800")
    # Another writer moves the layer behind the cache's back.
    postgresql.execute("UPDATE portfolio_positions SET current_stop = 78000, "
                       "version = version + 1")
    outcome = await trading.send("EXIT", position="Long_1", price="79000")
    assert outcome.outcome == "executed"
    assert count(postgresql, "paper_orders", "side = 'SELL'") == 1
    assert count(postgresql, "capital_transactions", "txn_type = 'TRADING_PNL'") == 1
