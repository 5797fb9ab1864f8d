"""Broker-resident stops at Zerodha through the real kiteconnect client and the fake Kite
server: a GTT for a BANK_NIFTY layer, an SL order for a GOLD_MINI layer, following the trail
with one Kite call per move, and fired stops booked once at the broker's fill price."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal

import pytest

from core.broker_stops import BROKER_STOP
from core.intents import ExitPurpose
from core.models import Side
from tests.integration.test_broker_stops import keep
from tests.integration.test_kite_broker import (
    fake,
    fake_orders,
    gold_entry,
    positions_agree,
    start_trading,
)
from tests.support.alerts import trading_morning
from tests.support.trading import Clock

__all__ = ["fake"]
D = Decimal


def in_session() -> Clock:
    """A morning when NFO and MCX both trade (exits outside hours wait for the open)."""
    return Clock(trading_morning().astimezone(UTC))
BANK = {"instrument": "BANK_NIFTY", "price": "52000", "stop": "51650", "atr": "350"}


@pytest.fixture
async def bank(db, dsn, fake, tmp_path):
    """A BANK_NIFTY layer entered at 52000 (stop 51650) in session, its stop not placed yet."""
    trading = await start_trading(db, dsn, fake, tmp_path, capital="10000000",
                                  clock=in_session())
    fake.state.set_price(bank_symbol(fake), "52000")
    assert (await trading.send("BASE_ENTRY", **BANK)).outcome == "executed"
    yield trading
    await trading.close()


@pytest.fixture
async def gold(db, dsn, fake, tmp_path):
    """The engine on Zerodha at a time MCX trades (its SL orders rest only in session)."""
    trading = await start_trading(db, dsn, fake, tmp_path, clock=in_session())
    yield trading
    await trading.close()


def bank_symbol(venue) -> str:
    return next(k.split(":")[1] for k in sorted(venue.state.snapshot()["prices"])
                if k.startswith("NFO:BANKNIFTY"))


def gold_symbol(venue) -> str:
    return next(k.split(":")[1] for k in sorted(venue.state.snapshot()["prices"])
                if k.startswith("MCX:GOLDM"))


def calls(venue) -> dict[str, int]:
    return dict(venue.state.calls)


def spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after
            if after.get(k, 0) != before.get(k, 0)}


async def test_a_bank_nifty_layer_rests_a_gtt_that_follows_the_trail(bank, fake):
    trading, symbol = bank, bank_symbol(fake)
    await keep(trading, "BANK_NIFTY")
    (layer,) = await trading.db.live_layers("BANK_NIFTY")
    (gtt,) = fake.state.gtts()
    assert (gtt["type"], gtt["status"]) == ("single", "active")
    assert gtt["condition"]["trigger_values"] == [51650]
    (order,) = gtt["orders"]
    assert (order["transaction_type"], order["order_type"], order["product"]) == (
        "SELL", "LIMIT", "NRML")
    assert order["quantity"] == layer.quantity  # NFO counts units
    assert D(str(order["price"])) == D("51133.5")  # 1 % below, down to the 0.05 tick
    assert trading.stops.view(layer.id)["id"] == str(gtt["id"])

    # The trail rises: the GTT is moved with its last price (a GTT needs it), no re-placement.
    fake.state.set_price(symbol, "53000")
    await trading.send("MARKET_DATA", instrument="BANK_NIFTY", price="53000", atr="350")
    before = calls(fake)
    await keep(trading, "BANK_NIFTY")
    assert spent(before, calls(fake)) == {"quote": 1, "gtt_modify": 1}
    (gtt,) = fake.state.gtts()
    (layer,) = await trading.db.live_layers("BANK_NIFTY")
    assert gtt["condition"]["trigger_values"] == [float(layer.current_stop)] == [52125.0]
    assert trading.stops.view(layer.id)["trigger"] == "52125.0000"


async def test_a_gold_mini_layer_rests_an_sl_order_that_follows_the_trail(gold, fake):
    kite = gold
    symbol = gold_symbol(fake)
    fake.state.set_price(symbol, "72000")
    assert (await kite.send("BASE_ENTRY", **gold_entry())).outcome == "executed"
    await keep(kite)
    (layer,) = await kite.db.live_layers("GOLD_MINI")
    stop = next(o for o in fake_orders(fake) if o["tag"].startswith("BS"))
    assert (stop["order_type"], stop["transaction_type"], stop["validity"]) == (
        "SL", "SELL", "DAY")
    assert stop["status"] == "TRIGGER PENDING" and stop["quantity"] == layer.quantity
    assert (D(str(stop["trigger_price"])), D(str(stop["price"]))) == (D(71300), D(70587))
    assert fake.state.gtts() == []  # no GTT on MCX

    fake.state.set_price(symbol, "73000")
    await kite.send("MARKET_DATA", price="73000", atr="700")
    before = calls(fake)
    await keep(kite)
    assert spent(before, calls(fake)) == {"modify": 1}  # one Kite call per trailing move
    stop = next(o for o in fake_orders(fake) if o["tag"] == stop["tag"])
    assert D(str(stop["trigger_price"])) == D(71600) and stop["status"] == "TRIGGER PENDING"


async def test_a_gtt_that_fires_is_booked_at_the_brokers_fill(bank, fake):
    trading, symbol = bank, bank_symbol(fake)
    await keep(trading, "BANK_NIFTY")
    fake.state.set_price(symbol, "51600")  # through the trigger: the GTT places its LIMIT
    (gtt,) = fake.state.gtts()
    assert gtt["status"] == "triggered"
    placed = gtt["orders"][0]["result"]["order_result"]["order_id"]
    await keep(trading, "BANK_NIFTY", check=True)  # the periodic check adopts it
    await trading.exits.attempt_due()
    (closed,) = await trading.db.list_positions("closed", 10)
    assert (closed.exit_reason, closed.exit_price) == (BROKER_STOP, D(51600))
    sells = [o for o in fake_orders(fake) if o["transaction_type"] == "SELL"]
    assert [o["order_id"] for o in sells] == [placed]
    # The daemon's own stop on the same bar finds nothing left to sell.
    late = await trading.send("MARKET_DATA", instrument="BANK_NIFTY", price="51600",
                              atr="350")
    assert late.outcome == "ignored"
    assert [o["order_id"] for o in fake_orders(fake)
            if o["transaction_type"] == "SELL"] == [placed]
    assert await positions_agree(trading)


async def test_a_price_through_a_fired_gtt_is_decided_after_the_brokers_sale(bank, fake):
    trading, symbol = bank, bank_symbol(fake)
    await keep(trading, "BANK_NIFTY")
    fake.state.set_price(symbol, "51600")  # fired; its postback has not been seen
    outcome = await trading.send("MARKET_DATA", instrument="BANK_NIFTY", price="51600",
                                 atr="350")
    # The price reached the stop, so the stop was read before deciding, and its filled
    # order booked: the layer is the broker's sale, closed already, not the daemon's exit.
    assert (outcome.outcome, outcome.reason) == ("ignored", "no open layers")
    (closed,) = await trading.db.list_positions("closed", 10)
    assert (closed.exit_reason, closed.exit_price) == (BROKER_STOP, D(51600))
    assert trading.exits.pending() == []
    assert len([o for o in fake_orders(fake) if o["transaction_type"] == "SELL"]) == 1
    # A new entry on the next bar is a new trade: nothing of the old one is left.
    again = await trading.send("BASE_ENTRY", **{**BANK, "price": "51600", "stop": "51250"})
    assert again.outcome == "executed"


async def test_an_exit_racing_a_fired_gtt_sells_once(bank, fake):
    trading, symbol = bank, bank_symbol(fake)
    await keep(trading, "BANK_NIFTY")
    fake.state.set_price(symbol, "51600")  # fired; the daemon has not looked yet
    # The chart's price is above the trigger: nothing says the stop fired until its cancel
    # is refused (the GTT triggered). The broker's order is adopted and the daemon's own
    # sale is replanned without the layer.
    outcome = await trading.send("EXIT", instrument="BANK_NIFTY", price="51700")
    assert outcome.outcome == "ignored" and "sold by the broker stop" in outcome.reason
    await trading.exits.attempt_due()
    (closed,) = await trading.db.list_positions("closed", 10)
    assert closed.exit_reason == BROKER_STOP
    assert len([o for o in fake_orders(fake) if o["transaction_type"] == "SELL"]) == 1
    assert await positions_agree(trading)


async def test_the_daemons_exit_deletes_the_gtt_before_selling(bank, fake):
    trading, symbol = bank, bank_symbol(fake)
    await keep(trading, "BANK_NIFTY")
    fake.state.set_price(symbol, "52500")
    assert (await trading.send("EXIT", instrument="BANK_NIFTY",
                               price="52500")).outcome == "executed"
    assert [g["status"] for g in fake.state.gtts()] == ["deleted"]
    (closed,) = await trading.db.list_positions("closed", 10)
    assert closed.exit_reason != BROKER_STOP
    assert await positions_agree(trading)


async def test_an_sl_order_that_lapsed_at_the_session_end_is_placed_again(gold, fake):
    kite = gold
    symbol = gold_symbol(fake)
    fake.state.set_price(symbol, "72000")
    await kite.send("BASE_ENTRY", **gold_entry())
    await keep(kite)
    (layer,) = await kite.db.live_layers("GOLD_MINI")
    first = kite.stops.view(layer.id)["id"]
    assert fake.state.expire_day_orders("MCX") == [first]
    await keep(kite, check=True)  # the next session's first round
    again = kite.stops.view(layer.id)
    assert again["status"] == "active" and again["id"] != first
    stops = [o for o in fake_orders(fake) if o["order_type"] == "SL"]
    assert [o["status"] for o in stops] == ["CANCELLED", "TRIGGER PENDING"]


async def test_a_gtt_too_close_to_the_price_is_named_unprotected(bank, fake):
    trading, symbol = bank, bank_symbol(fake)
    fake.state.set_price(symbol, "51700")  # 0.1 % above the 51650 trigger
    trading.readiness.started()
    await keep(trading, "BANK_NIFTY")
    # Zerodha would accept it disabled (a GTT that never fires): it is not placed at all.
    assert fake.state.gtts() == []
    (layer,) = await trading.db.live_layers("BANK_NIFTY")
    assert "within 0.25 %" in trading.stops.view(layer.id)["reason"]
    assert trading.readiness.reasons() == ["unprotected:BANK_NIFTY Long_1"]
    fake.state.set_price(symbol, "52200")  # far enough again: the next round places it
    await keep(trading, "BANK_NIFTY", check=True)
    assert [g["status"] for g in fake.state.gtts()] == ["active"]
    assert trading.readiness.reasons() == []


async def test_reconciliation_books_a_fired_gtt_as_the_stop_not_a_square_off(bank, fake):
    trading, symbol = bank, bank_symbol(fake)
    await keep(trading, "BANK_NIFTY")
    fake.state.set_price(symbol, "51600")
    # The broker holds less than the book, explained by an untagged trade: the stop's.
    await trading.reconciler.check()
    await trading.exits.attempt_due()
    (closed,) = await trading.db.list_positions("closed", 10)
    assert (closed.exit_reason, closed.exit_price) == (BROKER_STOP, D(51600))
    assert await trading.reconciler.check() == []


async def test_an_sl_order_gapped_through_its_limit_is_chased_until_it_sells(
        db, dsn, fake, tmp_path):
    trading = await start_trading(db, dsn, fake, tmp_path, clock=in_session())
    try:
        fake.state.set_price(gold_symbol(fake), "72000")
        await trading.send("BASE_ENTRY", **gold_entry())
        await keep(trading)
        stop = next(o for o in fake_orders(fake) if o["tag"].startswith("BS"))
        # Through the trigger and its 70587 limit, in the layer's own contract.
        fake.state.set_price(stop["tradingsymbol"], "70000")
        stop = next(o for o in fake_orders(fake) if o["tag"] == stop["tag"])
        assert stop["status"] == "OPEN"  # triggered; its limit rests above the market
        await keep(trading, check=True)
        await trading.exits.attempt_due()
        (closed,) = await trading.db.list_positions("closed", 10)
        assert (closed.exit_reason, closed.exit_price) == (BROKER_STOP, D(70000))
        stop = next(o for o in fake_orders(fake) if o["tag"] == stop["tag"])
        assert stop["status"] == "COMPLETE"
        assert len([o for o in fake_orders(fake) if o["transaction_type"] == "SELL"]) == 1
        assert await positions_agree(trading)
    finally:
        await trading.close()


async def test_a_sale_committed_before_its_stop_fired_does_not_sell_it_again(bank, fake):
    """An exit (a retry, a roll leg) committed while the stop still rested, attempted only
    after a check adopted the fired stop: it must leave the layer to the stop's order."""
    trading, symbol = bank, bank_symbol(fake)
    await keep(trading, "BANK_NIFTY")
    (layer,) = await trading.db.live_layers("BANK_NIFTY")
    async with trading.db.transaction() as tx:
        await tx.update_layer(layer, status="closing")
        pending = await trading.flow.open_intent(
            tx, None, "BANK_NIFTY", Side.SELL, layer.lots, D(51600),
            ExitPurpose(reason="PM_STOP_HIT", position_ids=(layer.id,), attempt=1),
            position_ids=(layer.id,), quantity=layer.quantity, contract=layer.contract,
            first=False)
    fake.state.set_fill_mode("rest")  # the stop's LIMIT rests: the broker still holds it all
    fake.state.set_price(symbol, "51600")
    await keep(trading, "BANK_NIFTY", check=True)  # adopted by the check
    outcome = await trading.flow.complete(pending, fresh=False)
    assert outcome.outcome == "ignored" and "sold by the broker stop" in outcome.reason
    assert len([o for o in fake_orders(fake) if o["transaction_type"] == "SELL"]) == 1


async def test_an_ambiguous_gtt_placement_is_found_not_placed_twice(bank, fake):
    fake.state.add_fault("gtt_place", "timeout")  # placed, but the answer never comes
    await keep(bank, "BANK_NIFTY")
    (layer,) = await bank.db.live_layers("BANK_NIFTY")
    assert bank.stops.view(layer.id)["status"] == "placing"
    await keep(bank, "BANK_NIFTY", check=True)
    assert bank.stops.view(layer.id)["status"] == "active"
    assert [g["status"] for g in fake.state.gtts()] == ["active"]
    assert bank.stops.view(layer.id)["id"] == str(fake.state.gtts()[0]["id"])


def gold_price(venue, price: str) -> None:
    """Trade every listed GOLDM contract at `price`."""
    for key in venue.state.snapshot()["prices"]:
        if key.startswith("MCX:GOLDM"):
            venue.state.set_price(key.split(":")[1], price)


async def gold_layers(kite, fake) -> list[dict]:
    """Two GOLD_MINI layers, each with its SL order resting; return those orders."""
    gold_price(fake, "72000")
    assert (await kite.send("BASE_ENTRY", **gold_entry())).outcome == "executed"
    gold_price(fake, "74000")
    pyramid = await kite.send("PYRAMID", **gold_entry(
        position="Long_2", price="74000", stop="73000"))
    assert pyramid.outcome == "executed", pyramid
    await keep(kite)
    stops = [o for o in fake_orders(fake) if o["tag"].startswith("BS")]
    assert [o["status"] for o in stops] == ["TRIGGER PENDING"] * 2
    return stops


async def test_an_exit_confirms_all_its_layers_stop_cancels_with_one_read(gold, fake):
    """Each SL order is cancelled, and one read of the order book confirms them all before
    the sale (a read per stop spent a flatten's ten reads a second)."""
    kite = gold
    stops = await gold_layers(kite, fake)
    before = calls(fake)
    outcome = await kite.send("EXIT", position="ALL", price="74000")
    assert outcome.outcome == "executed", outcome
    used = spent(before, calls(fake))
    # Two cancels, one read of the order book; the one order read is the sale's own.
    assert (used["cancel"], used["orders"], used["order_history"]) == (2, 1, 1)
    after = {o["order_id"]: o for o in fake_orders(fake)}
    assert [after[o["order_id"]]["status"] for o in stops] == ["CANCELLED"] * 2
    [sale] = [o for o in fake_orders(fake) if o["tag"].startswith("PM")
              and o["transaction_type"] == "SELL"]
    assert sale["quantity"] == sum(o["quantity"] for o in stops)
    assert [kite.stops.of_layer(p.id) for p in await kite.db.live_layers("GOLD_MINI")] == []
    assert await positions_agree(kite)


async def test_a_stop_that_fired_among_those_cancelled_together_sells_its_layer_alone(
        gold, fake):
    """One layer's SL order fires while the exit cancels both: that one is adopted (the
    venue's order sells it), the other is cancelled and confirmed, and the daemon's exit
    is replanned for the other layer only: one sale each."""
    kite = gold
    stops = await gold_layers(kite, fake)
    gold_price(fake, "72900")  # under Long_2's trigger only: it fires at the venue
    # The chart's price is above both triggers: nothing says a stop fired until the
    # exit's cancels are read back.
    outcome = await kite.send("EXIT", position="ALL", price="74000")
    assert "sold by the broker stop of layers" in outcome.reason, outcome
    await kite.exits.attempt_due()  # the rest, replanned without the layer sold
    after = {o["order_id"]: o for o in fake_orders(fake)}
    assert sorted(after[o["order_id"]]["status"] for o in stops) == ["CANCELLED", "COMPLETE"]
    sells = [o for o in fake_orders(fake) if o["transaction_type"] == "SELL"
             and o["filled_quantity"] > 0]
    assert sorted(o["tag"][:2] for o in sells) == ["BS", "PM"]
    assert sum(o["filled_quantity"] for o in sells) == sum(o["quantity"] for o in stops)
    reasons = sorted(p.exit_reason for p in await kite.db.list_positions("closed", 10))
    assert reasons == [BROKER_STOP, "trend reversal"]
    assert await positions_agree(kite)


async def test_an_exit_confirms_its_gtt_deletes_with_one_read_of_the_list(bank, fake):
    trading, symbol = bank, bank_symbol(fake)
    fake.state.set_price(symbol, "53000")
    pyramid = await trading.send("PYRAMID", **{**BANK, "position": "Long_2", "price": "53000",
                                                 "stop": "52500"})
    assert pyramid.outcome == "executed", pyramid
    await keep(trading, "BANK_NIFTY")
    assert [g["status"] for g in fake.state.gtts()] == ["active"] * 2
    before = calls(fake)
    outcome = await trading.send("EXIT", instrument="BANK_NIFTY", position="ALL",
                                 price="53000")
    assert outcome.outcome == "executed", outcome
    used = spent(before, calls(fake))
    assert (used["gtt_delete"], used["gtts"], used.get("gtt", 0)) == (2, 1, 0)
    assert [g["status"] for g in fake.state.gtts()] == ["deleted"] * 2
    assert await positions_agree(trading)
