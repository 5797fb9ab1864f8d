"""The paper venue: fills at the reference price plus slippage, keeps its own book."""

from __future__ import annotations

from decimal import Decimal

import pytest

from live.brokers.base import OrderRequest, OrderStatus
from live.brokers.paper import PaperBroker
from tests.support.trading import INSTRUMENTS, PORTFOLIO


@pytest.fixture
async def venue(dsn):
    broker = PaperBroker(dsn, INSTRUMENTS, PORTFOLIO.model_copy(
        update={"paper_slippage_ticks": 2}))
    await broker.start()
    yield broker
    await broker.close()


def request(tag: str, side: str, quantity: int, price: str = "52000",
            instrument: str = "BANK_NIFTY") -> OrderRequest:
    return OrderRequest(tag, instrument, instrument, side, quantity, "MARKET", Decimal(price))


async def test_fills_with_slippage_against_the_trader(venue):
    [buy_id] = await venue.place(request("PM1", "BUY", 90))
    [sell_id] = await venue.place(request("PM2", "SELL", 30, "52100"))
    buy, sell = await venue.order(buy_id), await venue.order(sell_id)
    assert (buy.status, buy.filled_quantity, buy.average_price) == (
        OrderStatus.COMPLETE, 90, Decimal("52000.10"))  # 2 ticks of 0.05 worse
    assert sell.average_price == Decimal("52099.90")
    assert await venue.positions() == {"BANK_NIFTY": 60}
    assert await venue.quote("BANK_NIFTY") == Decimal("52099.90")
    assert await venue.quote("COPPER") is None


async def test_orders_are_found_by_tag_and_tags_are_not_deduplicated(venue):
    await venue.place(request("PM7", "BUY", 30))
    await venue.place(request("PM7", "BUY", 30))  # a real venue accepts a repeated tag too
    found = await venue.find_by_tag("PM7")
    assert len(found) == 2 and all(o.trades for o in found)
    assert await venue.find_by_tag("PM8") == []


async def test_margin_is_a_fraction_of_equity_less_what_is_used(venue):
    assert await venue.available_margin(Decimal("5000000"), Decimal("735000")) == Decimal(
        "2265000")
    assert await venue.available_margin(Decimal("1000000"), Decimal("900000")) == 0


async def test_sessions_are_enforced_when_configured(dsn):
    from datetime import UTC, datetime

    strict = PaperBroker(dsn, INSTRUMENTS, PORTFOLIO.model_copy(
        update={"paper_enforce_sessions": True}))
    await strict.start()
    try:
        night = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)  # 23:30 IST: NFO is closed
        [order_id] = await strict.place(request("PM9", "BUY", 30), now=night)
        order = await strict.order(order_id)
        assert (order.status, order.filled_quantity) == (OrderStatus.REJECTED, 0)
        assert await strict.positions() == {}
    finally:
        await strict.close()
