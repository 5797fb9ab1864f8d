"""The kill switch through the real kiteconnect client against the fake Kite server: a
resting entry is cancelled (and the cancel confirmed) before every layer is sold, and flat
is reported only once Kite's positions say so."""

from __future__ import annotations

import asyncio

from core.trading_state import Actor, TradingState
from tests.integration.test_kite_broker import (
    fake,
    fake_orders,
    gold_entry,
    kite,
    positions_agree,
)

__all__ = ["fake", "kite"]


async def test_flatten_cancels_a_resting_entry_then_sells_everything(kite, fake):
    assert (await kite.send("BASE_ENTRY", **gold_entry())).outcome == "executed"
    fake.state.set_fill_mode("rest")
    pending = asyncio.create_task(kite.send("BASE_ENTRY", wait_s=30, instrument="SILVER_MINI",
                                            price="88000", stop="86000", atr="1500"))
    for _ in range(200):
        buys = [o for o in fake_orders(fake) if o["tradingsymbol"].startswith("SILVERM")]
        if buys:
            break
        await asyncio.sleep(0.02)
    [resting] = buys
    fake.state.set_price(resting["tradingsymbol"], "89000")  # above its limit: it rests
    fake.state.set_fill_mode("immediate")  # the exits fill as they come

    report = await asyncio.wait_for(
        await kite.flattener.request("drill", Actor.OPERATOR), 30)

    assert (report.status, report.layers_closed, report.orders_cancelled) == ("flat", 1, 1)
    [sale] = [o for o in fake_orders(fake) if o["transaction_type"] == "SELL"]
    assert (sale["order_type"], str(sale["market_protection"])) == ("MARKET", "2")  # out now
    [resting] = [o for o in fake_orders(fake) if o["order_id"] == resting["order_id"]]
    assert resting["status"] == "CANCELLED" and resting["filled_quantity"] == 0
    refused = await pending
    assert refused.outcome != "executed"
    assert await kite.db.all_live_layers() == []
    assert set((await kite.broker.positions()).values()) <= {0}
    assert await positions_agree(kite)
    assert (await kite.db.trading_state()).state is TradingState.HALTED
