"""Contract tests of the fake's GTTs and stop orders against the real kiteconnect client
(KITE.md §1.5, §8): what passes here is what the client sends and parses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from kiteconnect import exceptions as kite_errors

from tests.fakes.kite.book import DAY_END_MESSAGE
from tests.fakes.kite_server import FakeKiteHandle, running_fake_kite
from tests.integration.test_fake_kite_contract import (
    MCX_SYMBOL,
    NFO_SYMBOL,
    call,
    fake,
    kite,
    make_config,
    new_client,
    nfo_order,
    postback_receiver,
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
    order_id = await resting_mcx_stop(fake, kite, "BS2")
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


# --------------------------------------------------------------------------- shapes and counts


async def resting_mcx_stop(fake: FakeKiteHandle, kite, tag: str) -> str:
    """A one-lot SL SELL resting (TRIGGER PENDING) 1,000 below MCX's price of 72000."""
    fake.state.set_price(MCX_SYMBOL, "72000")
    return await call(kite.place_order, variety="regular", exchange="MCX",
                      tradingsymbol=MCX_SYMBOL, transaction_type="SELL", quantity=1,
                      product="NRML", order_type="SL", validity="DAY", tag=tag,
                      trigger_price=71000, price=70300)


def fired_result_keys() -> tuple[set[str], set[str]]:
    document = json.loads((FIXTURES / "gtt_get_orders.json").read_text())
    result = document["data"][1]["orders"][1]["result"]
    return set(result), set(result["order_result"])


def raw_gtt(kind: str = "single", triggers: list[Any] | None = None,
            symbol: str = NFO_SYMBOL, **order: Any) -> dict[str, str]:
    """A placement form as it travels, for what the client itself would refuse to send."""
    leg = {"exchange": "NFO", "tradingsymbol": symbol, "transaction_type": "SELL",
           "quantity": 30, "order_type": "LIMIT", "product": "NRML", "price": 50000, **order}
    values = triggers if triggers is not None else [51000]
    return {"type": kind, "condition": json.dumps(
        {"exchange": "NFO", "tradingsymbol": symbol, "trigger_values": values,
         "last_price": 52000}), "orders": json.dumps([leg] * len(values))}


async def test_answers_have_the_fixture_shapes_and_calls_are_counted(fake: FakeKiteHandle,
                                                                     kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    before = dict(fake.state.calls)
    placed = await call(kite.place_gtt, **stop_gtt(51000, 52000))
    assert set(placed) == {"trigger_id"}  # gtt_place_order.json
    trigger_id = placed["trigger_id"]
    (listed,) = await call(kite.get_gtts)
    keys, condition, order = fixture_keys("gtt_get_orders.json")
    assert keys <= set(listed) and condition <= set(listed["condition"]) and order == set(
        listed["orders"][0])
    assert listed["condition"]["instrument_token"] == fake.state.market.instruments[
        f"NFO:{NFO_SYMBOL}"].instrument_token
    assert listed["expires_at"][:4] == str(int(listed["created_at"][:4]) + 1)
    assert await call(kite.modify_gtt, trigger_id, **stop_gtt(51500, 52000)) == {
        "trigger_id": trigger_id}  # gtt_modify_order.json
    await call(kite.get_gtt, trigger_id)
    assert await call(kite.delete_gtt, trigger_id) == {"trigger_id": trigger_id}
    spent = {k: v - before.get(k, 0) for k, v in fake.state.calls.items()
             if v != before.get(k, 0)}
    assert spent == {"gtt_place": 1, "gtts": 1, "gtt_modify": 1, "gtt": 1, "gtt_delete": 1}
    with pytest.raises(kite_errors.GeneralException) as raised:
        await call(kite.get_gtt, 999_999_999)
    assert raised.value.code == 404


async def test_the_server_refuses_what_a_gtt_cannot_be(fake: FakeKiteHandle, kite) -> None:
    with pytest.raises(kite_errors.InputException, match="LIMIT"):
        await call(kite.place_gtt, **{**stop_gtt(51000, 52000), "orders": [
            {"transaction_type": "SELL", "quantity": 30, "order_type": "MARKET",
             "product": "NRML", "price": 0}]})
    refused = {
        "instrument": raw_gtt(symbol="BANKNIFTY99JANFUT"),
        "trigger count": raw_gtt(triggers=[51000, 53000]),
        "two-leg count": raw_gtt("two-leg", triggers=[51000]),
        "two-leg order": raw_gtt("two-leg", triggers=[53000, 51000]),
        "quantity": raw_gtt(quantity=0),
        "type": {**raw_gtt(), "type": "oco"},
    }
    for what, form in refused.items():
        with pytest.raises(kite_errors.InputException):
            await call(kite._post, "gtt.place", params=form)
            pytest.fail(f"accepted a GTT with a bad {what}")
    assert await call(kite.get_gtts) == []


async def test_a_fired_gtt_records_its_order_as_the_fixture_does(fake: FakeKiteHandle,
                                                                 kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    trigger_id = (await call(kite.place_gtt, **stop_gtt(51000, 52000, price=50500)))[
        "trigger_id"]
    fake.state.set_price(NFO_SYMBOL, "50950")
    gtt = await call(kite.get_gtt, trigger_id)
    assert gtt["updated_at"] >= gtt["created_at"]
    result = gtt["orders"][0]["result"]
    result_keys, order_result_keys = fired_result_keys()
    assert set(result) == result_keys and set(result["order_result"]) == order_result_keys
    assert result["meta"] == f'{{"app_id":12617,"gtt":{trigger_id}}}'
    assert (result["validity"], result["order_type"], result["price"], result["quantity"]) == (
        "DAY", "LIMIT", 50500, 30)
    assert result["account_id"] == "AB1234" and result["triggered_at"] == 50950
    assert result["order_result"]["rejection_reason"] == ""
    history = await call(kite.order_history, result["order_result"]["order_id"])
    assert [h["status"] for h in history][-1] == "COMPLETE"
    assert all(h["meta"] == {"gtt": trigger_id} and h["variety"] == "regular"
               and h["tag"] is None for h in history)
    with pytest.raises(kite_errors.InputException):  # only an active GTT can be modified
        await call(kite.modify_gtt, trigger_id, **stop_gtt(50000, 51000))


async def test_a_refused_order_is_recorded_as_failed(fake: FakeKiteHandle, kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    trigger_id = (await call(kite.place_gtt, **stop_gtt(51000, 52000)))["trigger_id"]
    fake.state.fail_next_with_margin_error(1)
    fake.state.set_price(NFO_SYMBOL, "51000")
    gtt = await call(kite.get_gtt, trigger_id)
    assert gtt["status"] == "triggered"
    outcome = gtt["orders"][0]["result"]["order_result"]
    assert (outcome["status"], outcome["order_id"]) == ("failed", "")
    assert outcome["rejection_reason"].startswith("Insufficient funds")
    assert await call(kite.orders) == []


async def test_a_gtt_past_its_trigger_when_placed_fires_at_once(fake: FakeKiteHandle,
                                                                kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "50000")  # the caller's last price is stale
    trigger_id = (await call(kite.place_gtt, **stop_gtt(51000, 52000, price=49500)))[
        "trigger_id"]
    gtt = await call(kite.get_gtt, trigger_id)
    assert gtt["status"] == "triggered" and gtt["orders"][0]["result"]["triggered_at"] == 50000


async def test_a_buy_gtt_above_the_price_fires_on_the_rise(fake: FakeKiteHandle, kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    buy = {**stop_gtt(53000, 52000), "orders": [
        {"transaction_type": "BUY", "quantity": 30, "order_type": "LIMIT", "product": "NRML",
         "price": 53100}]}
    trigger_id = (await call(kite.place_gtt, **buy))["trigger_id"]
    fake.state.set_price(NFO_SYMBOL, "51000")  # the other way: nothing
    assert (await call(kite.get_gtt, trigger_id))["status"] == "active"
    fake.state.set_price(NFO_SYMBOL, "53050")
    gtt = await call(kite.get_gtt, trigger_id)
    order_id = gtt["orders"][0]["result"]["order_result"]["order_id"]
    last = (await call(kite.order_history, order_id))[-1]
    assert (gtt["status"], last["status"], last["average_price"]) == (
        "triggered", "COMPLETE", 53050)


@pytest.mark.parametrize(("price", "leg"), [("50900", 0), ("53100", 1)])
async def test_a_two_leg_gtt_fires_the_leg_whose_trigger_was_reached(
        fake: FakeKiteHandle, kite, price: str, leg: int) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    oco = {**stop_gtt(0, 52000), "trigger_type": "two-leg", "trigger_values": [51000, 53000],
           "orders": [{"transaction_type": "SELL", "quantity": 30, "order_type": "LIMIT",
                       "product": "NRML", "price": p} for p in (50500, 52900)]}
    trigger_id = (await call(kite.place_gtt, **oco))["trigger_id"]
    fake.state.set_price(NFO_SYMBOL, price)
    gtt = await call(kite.get_gtt, trigger_id)
    assert gtt["status"] == "triggered"
    assert [o["result"] is not None for o in gtt["orders"]] == [leg == 0, leg == 1]
    (order,) = await call(kite.orders)
    assert order["status"] == "COMPLETE" and order["price"] == (50500, 52900)[leg]


async def test_a_disabled_gtt_can_be_deleted_not_modified(fake: FakeKiteHandle, kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    trigger_id = (await call(kite.place_gtt, **stop_gtt(51880, 52000)))["trigger_id"]  # 0.23 %
    assert (await call(kite.get_gtt, trigger_id))["status"] == "disabled"
    with pytest.raises(kite_errors.InputException):
        await call(kite.modify_gtt, trigger_id, **stop_gtt(51000, 52000))
    await call(kite.delete_gtt, trigger_id)
    with pytest.raises(kite_errors.InputException, match="Trigger is not active"):
        await call(kite.delete_gtt, trigger_id)
    # A modify that brings an active trigger within 0.25 % disables it too.
    other = (await call(kite.place_gtt, **stop_gtt(51000, 52000)))["trigger_id"]
    await call(kite.modify_gtt, other, **stop_gtt(51900, 52000))
    assert (await call(kite.get_gtt, other))["status"] == "disabled"


async def test_the_fired_order_sends_postbacks_with_the_gtt_meta() -> None:
    async with postback_receiver() as (url, received), \
            running_fake_kite(make_config(postback_url=url)) as fake:
        fake.state.set_price(NFO_SYMBOL, "52000")
        client = new_client(fake.url)
        trigger_id = (await call(client.place_gtt, **stop_gtt(51000, 52000, price=50500)))[
            "trigger_id"]
        fake.state.set_price(NFO_SYMBOL, "50000")  # gapped below the limit: it rests
        client.reqsession.close()
        (order_id,) = fake.state.expire_day_orders()
        cancelled = await asyncio.wait_for(received.get(), 5)
    assert (cancelled["order_id"], cancelled["status"]) == (order_id, "CANCELLED")
    assert cancelled["meta"] == {"gtt": trigger_id}
    assert cancelled["status_message"] == DAY_END_MESSAGE


# --------------------------------------------------------------------------- faults, controls


async def test_a_dropped_answer_to_delete_gtt_leaves_it_deleted(fake: FakeKiteHandle,
                                                                 kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    trigger_id = (await call(kite.place_gtt, **stop_gtt(51000, 52000)))["trigger_id"]
    fake.state.add_fault("gtt_delete", "drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        await call(kite.delete_gtt, trigger_id)
    assert (await call(kite.get_gtt, trigger_id))["status"] == "deleted"


async def test_an_answering_fault_on_modify_gtt_changes_nothing(fake: FakeKiteHandle,
                                                                 kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    trigger_id = (await call(kite.place_gtt, **stop_gtt(51000, 52000)))["trigger_id"]
    fake.state.add_fault("gtt_modify", "network_503")
    with pytest.raises(kite_errors.NetworkException):
        await call(kite.modify_gtt, trigger_id, **stop_gtt(51500, 52000))
    assert (await call(kite.get_gtt, trigger_id))["condition"]["trigger_values"] == [51000]


async def test_control_routes_list_gtts_and_expire_day_orders(fake: FakeKiteHandle,
                                                              kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    trigger_id = (await call(kite.place_gtt, **stop_gtt(51000, 52000)))["trigger_id"]
    before = dict(fake.state.calls)
    listed = (await call(requests.get, fake.url + "/_test/gtts", timeout=5)).json()["data"]
    assert [g["id"] for g in listed] == [trigger_id] == [g["id"] for g in fake.state.gtts()]
    assert fake.state.snapshot()["gtts"] == listed
    resting = await call(kite.place_order, **nfo_order(order_type="LIMIT", price=51000))
    expired = (await call(requests.post, fake.url + "/_test/expire_day_orders",
                          json={"exchange": "NFO"}, timeout=5)).json()["data"]
    assert expired == [resting]
    assert dict(fake.state.calls)["place"] == before.get("place", 0) + 1  # controls uncounted
    fake.state.reset()
    assert fake.state.gtts() == [] and await call(kite.get_gtts) == []


# --------------------------------------------------------------------------- stop orders


async def test_a_buy_stop_order_rests_above_the_price(fake: FakeKiteHandle, kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    order = nfo_order(order_type="SL", validity="DAY")
    with pytest.raises(kite_errors.InputException,
                       match="Trigger price for stoploss buy orders should be higher than the "
                             "last traded price."):
        await call(kite.place_order, **{**order, "trigger_price": 51900, "price": 52000})
    order_id = await call(kite.place_order, **{**order, "trigger_price": 52500, "price": 52600})
    fake.state.set_price(NFO_SYMBOL, "52400")
    assert (await call(kite.order_history, order_id))[-1]["status"] == "TRIGGER PENDING"
    fake.state.set_price(NFO_SYMBOL, "52550")
    history = await call(kite.order_history, order_id)
    assert [h["status"] for h in history][-2:] == ["OPEN", "COMPLETE"]
    assert history[-1]["average_price"] == 52550


async def test_a_sell_stop_market_order_fires_on_the_fall(fake: FakeKiteHandle, kite) -> None:
    fake.state.set_price(MCX_SYMBOL, "72000")
    order = {"variety": "regular", "exchange": "MCX", "tradingsymbol": MCX_SYMBOL,
             "transaction_type": "SELL", "quantity": 1, "product": "NRML",
             "order_type": "SL-M", "market_protection": -1, "validity": "DAY"}
    message = ("Trigger price for stoploss sell orders should be lower than the last traded "
               "price.")
    with pytest.raises(kite_errors.InputException) as raised:
        await call(kite.place_order, **order, trigger_price=72000)  # at the LTP: not below
    assert str(raised.value) == message
    order_id = await call(kite.place_order, **order, trigger_price=71000)
    fake.state.set_price(MCX_SYMBOL, "70990")
    last = (await call(kite.order_history, order_id))[-1]
    assert (last["status"], last["average_price"]) == ("COMPLETE", 70990)


async def test_a_resting_stop_order_is_cancelled_once(fake: FakeKiteHandle, kite) -> None:
    order_id = await resting_mcx_stop(fake, kite, "BS3")
    assert await call(kite.cancel_order, "regular", order_id) == order_id
    last = (await call(kite.order_history, order_id))[-1]
    assert (last["status"], last["cancelled_quantity"]) == ("CANCELLED", 1)
    with pytest.raises(kite_errors.InputException):
        await call(kite.cancel_order, "regular", order_id)
    fake.state.set_price(MCX_SYMBOL, "70000")  # a cancelled stop never fires
    assert (await call(kite.order_history, order_id))[-1]["status"] == "CANCELLED"
    assert fake.state.expire_day_orders() == []


async def test_the_session_end_lapses_only_resting_day_orders(fake: FakeKiteHandle,
                                                              kite) -> None:
    fake.state.set_price(NFO_SYMBOL, "52000")
    done = await call(kite.place_order, **nfo_order())
    limit = await call(kite.place_order, **nfo_order(order_type="LIMIT", price=51000))
    stop = await call(kite.place_order, **nfo_order(
        transaction_type="SELL", order_type="SL", trigger_price=51000, price=50900))
    assert sorted(fake.state.expire_day_orders()) == sorted([limit, stop])
    book = {o["order_id"]: o for o in await call(kite.orders)}
    assert book[done]["status"] == "COMPLETE"
    for order_id in (limit, stop):
        assert (book[order_id]["status"], book[order_id]["status_message"]) == (
            "CANCELLED", DAY_END_MESSAGE)
    assert fake.state.expire_day_orders() == []  # nothing left to lapse
