"""Contract tests of the fake's GTTs and stop orders against the real kiteconnect client
(KITE.md §1.5, §8): what passes here is what the client sends and parses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kiteconnect import exceptions as kite_errors

from tests.fakes.kite_server import FakeKiteHandle, running_fake_kite
from tests.integration.test_fake_kite_contract import (
    MCX_SYMBOL,
    NFO_SYMBOL,
    call,
    fake,
    kite,
    make_config,
    new_client,
)

__all__ = ["fake", "kite"]
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fakes" / "kite_fixtures"


def fixture_keys(name: str) -> tuple[set[str], set[str], set[str]]:
    document = json.loads((FIXTURES / name).read_text())
    gtt = document["data"][0] if isinstance(document["data"], list) else document["data"]
    return set(gtt), set(gtt["condition"]), set(gtt["orders"][0])


def stop_gtt(trigger: float, last: float, quantity: int = 30,
             price: float | None = None) -> dict[str, Any]:
    return {"trigger_type": "single", "tradingsymbol": NFO_SYMBOL, "exchange": "NFO",
            "trigger_values": [trigger], "last_price": last,
            "orders": [{"transaction_type": "SELL", "quantity": quantity,
                        "order_type": "LIMIT", "product": "NRML",
                        "price": price if price is not None else trigger - 500}]}


async def test_place_get_modify_delete_round_trip(fake: FakeKiteHandle, kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    placed = await call(kite.place_gtt, **stop_gtt(51000, 52000))
    trigger_id = placed["trigger_id"]
    assert isinstance(trigger_id, int)
    gtt = await call(kite.get_gtt, trigger_id)
    keys, condition, order = fixture_keys("gtt_get_order.json")
    assert keys <= set(gtt) and condition <= set(gtt["condition"]) and order <= set(
        gtt["orders"][0])
    assert (gtt["status"], gtt["type"], gtt["condition"]["trigger_values"]) == (
        "active", "single", [51000])
    assert gtt["orders"][0]["result"] is None

    assert (await call(kite.modify_gtt, trigger_id, **stop_gtt(51500, 52000)))[
        "trigger_id"] == trigger_id
    assert (await call(kite.get_gtt, trigger_id))["condition"]["trigger_values"] == [51500]
    assert (await call(kite.delete_gtt, trigger_id))["trigger_id"] == trigger_id
    (listed,) = await call(kite.get_gtts)
    assert listed["status"] == "deleted"
    with pytest.raises(kite_errors.InputException):  # only an active GTT can be modified
        await call(kite.modify_gtt, trigger_id, **stop_gtt(51600, 52000))
    with pytest.raises(kite_errors.InputException):
        await call(kite.delete_gtt, trigger_id)


async def test_a_gtt_fires_on_the_price_and_places_its_limit(fake: FakeKiteHandle,
                                                             kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    trigger_id = (await call(kite.place_gtt, **stop_gtt(51000, 52000, price=50500)))[
        "trigger_id"]
    fake.state.set_price(NFO_SYMBOL, "51200")
    assert (await call(kite.get_gtt, trigger_id))["status"] == "active"
    fake.state.set_price(NFO_SYMBOL, "50900")  # through the trigger
    gtt = await call(kite.get_gtt, trigger_id)
    assert gtt["status"] == "triggered"
    result = gtt["orders"][0]["result"]
    assert result["triggered_at"] == 50900 and result["order_result"]["status"] == "success"
    order_id = result["order_result"]["order_id"]
    (order,) = [o for o in await call(kite.orders) if o["order_id"] == order_id]
    assert (order["order_type"], order["transaction_type"], order["quantity"]) == (
        "LIMIT", "SELL", 30)
    assert order["status"] == "COMPLETE" and order["average_price"] == 50900
    assert order["tag"] is None and order["meta"] == {"gtt": trigger_id}
    with pytest.raises(kite_errors.InputException):  # a triggered GTT cannot be deleted
        await call(kite.delete_gtt, trigger_id)
    fake.state.set_price(NFO_SYMBOL, "50000")  # it fires once
    assert len([o for o in await call(kite.orders) if o["transaction_type"] == "SELL"]) == 1


async def test_a_gap_below_the_limit_leaves_its_order_resting_until_the_day_ends(
        fake: FakeKiteHandle, kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    trigger_id = (await call(kite.place_gtt, **stop_gtt(51000, 52000, price=50500)))[
        "trigger_id"]
    fake.state.set_price(NFO_SYMBOL, "50000")
    order_id = (await call(kite.get_gtt, trigger_id))["orders"][0]["result"]["order_result"][
        "order_id"]
    assert (await call(kite.order_history, order_id))[-1]["status"] == "OPEN"
    assert fake.state.expire_day_orders() == [order_id]
    last = (await call(kite.order_history, order_id))[-1]
    assert last["status"] == "CANCELLED" and "end of the trading session" in last[
        "status_message"]


async def test_a_trigger_within_a_quarter_percent_of_the_price_is_disabled(
        fake: FakeKiteHandle, kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    trigger_id = (await call(kite.place_gtt, **stop_gtt(51900, 52000)))["trigger_id"]
    assert (await call(kite.get_gtt, trigger_id))["status"] == "disabled"
    fake.state.set_price(NFO_SYMBOL, "51000")
    assert (await call(kite.get_gtt, trigger_id))["status"] == "disabled"  # never fires
    assert not [o for o in await call(kite.orders)]


async def test_no_gtt_on_mcx_and_at_most_250_active(fake: FakeKiteHandle, kite) -> None:
    mcx = {**stop_gtt(70000, 72000), "tradingsymbol": MCX_SYMBOL, "exchange": "MCX"}
    with pytest.raises(kite_errors.InputException, match="not available"):
        await call(kite.place_gtt, **mcx)
    fake.state.set_price(NFO_SYMBOL, "52000")
    for _ in range(250):
        fake.state.gtt.place({"type": "single", "condition": json.dumps(
            {"exchange": "NFO", "tradingsymbol": NFO_SYMBOL, "trigger_values": [40000],
             "last_price": 52000}), "orders": json.dumps([
            {"exchange": "NFO", "tradingsymbol": NFO_SYMBOL, "transaction_type": "SELL",
             "quantity": 30, "order_type": "LIMIT", "product": "NRML", "price": 39000}])})
    with pytest.raises(kite_errors.InputException, match="250"):
        await call(kite.place_gtt, **stop_gtt(41000, 52000))


async def test_a_sell_stop_order_rests_until_the_price_falls_to_it(fake: FakeKiteHandle,
                                                                   kite) -> None:
    fake.state.set_price(MCX_SYMBOL, "72000")
    order = {"variety": "regular", "exchange": "MCX", "tradingsymbol": MCX_SYMBOL,
             "transaction_type": "SELL", "quantity": 2, "product": "NRML",
             "order_type": "SL", "validity": "DAY", "tag": "BS1"}
    with pytest.raises(kite_errors.InputException, match="lower than the last"):
        await call(kite.place_order, **order, trigger_price=72100, price=71900)
    order_id = await call(kite.place_order, **order, trigger_price=71000, price=70300)
    assert (await call(kite.order_history, order_id))[-1]["status"] == "TRIGGER PENDING"
    await call(kite.modify_order, "regular", order_id, trigger_price=71200, price=70500)
    assert (await call(kite.order_history, order_id))[-1]["trigger_price"] == 71200
    fake.state.set_price(MCX_SYMBOL, "71150")
    last = (await call(kite.order_history, order_id))[-1]
    assert (last["status"], last["average_price"]) == ("COMPLETE", 71150)


async def test_resting_stop_orders_lapse_at_the_session_end(fake: FakeKiteHandle, kite) -> None:
    fake.state.set_price(MCX_SYMBOL, "72000")
    order_id = await call(kite.place_order, variety="regular", exchange="MCX",
                          tradingsymbol=MCX_SYMBOL, transaction_type="SELL", quantity=1,
                          product="NRML", order_type="SL", validity="DAY", tag="BS2",
                          trigger_price=71000, price=70300)
    assert fake.state.expire_day_orders("NFO") == []
    assert fake.state.expire_day_orders("MCX") == [order_id]
    assert (await call(kite.order_history, order_id))[-1]["status"] == "CANCELLED"


async def test_gtts_survive_a_restart_of_the_fake(tmp_path) -> None:
    state_file = tmp_path / "kite.json"
    async with running_fake_kite(make_config(state_file=state_file)) as first:
        first.state.set_price(NFO_SYMBOL, "52000")
        client = new_client(first.url)
        trigger_id = (await call(client.place_gtt, **stop_gtt(51000, 52000)))["trigger_id"]
        client.reqsession.close()
    async with running_fake_kite(make_config(state_file=state_file)) as again:
        client = new_client(again.url)
        assert (await call(client.get_gtt, trigger_id))["status"] == "active"
        again.state.set_price(NFO_SYMBOL, "50000")
        assert (await call(client.get_gtt, trigger_id))["status"] == "triggered"
        client.reqsession.close()


async def test_a_lost_answer_to_place_gtt_leaves_the_gtt_there(fake: FakeKiteHandle,
                                                                kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    fake.state.add_fault("gtt_place", "timeout")
    with pytest.raises(Exception):  # noqa: B017 - the client's own timeout error
        await call(kite.place_gtt, **stop_gtt(51000, 52000))
    (gtt,) = await call(kite.get_gtts)
    assert gtt["status"] == "active" and gtt["condition"]["trigger_values"] == [51000]
