"""Contract tests: the real kiteconnect client against the fake Kite server (KITE.md §6.1).

Each test drives `kiteconnect.KiteConnect(..., root=fake.url)` over HTTP, so what passes here is
what the client really sends and parses. The client is blocking: calls run in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors

from tests.fakes.kite_server import (
    FIXTURE_INSTRUMENTS,
    FREEZE_MESSAGE,
    PROTECTION_MESSAGE,
    FakeKiteConfig,
    FakeKiteHandle,
    FakeKiteProcess,
    running_fake_kite,
)

API_KEY = "kitekey"
API_SECRET = "kitesecret"
ACCESS_TOKEN = "kitetoken"
TODAY = date(2026, 12, 29)  # a Tuesday; Dec 2026's last Thursday is the 31st, MCX's 5th is past
NFO_SYMBOL = "BANKNIFTY26DECFUT"
MCX_SYMBOL = "GOLDM27JANFUT"
CLIENT_TIMEOUT_S = 1.0
FAULT_TIMEOUT_S = 2.5  # longer than the client's timeout, so the `timeout` fault times it out
PLACED = ["PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "OPEN"]


def make_config(**overrides: Any) -> FakeKiteConfig:
    settings: dict[str, Any] = {"api_key": API_KEY, "api_secret": API_SECRET,
                                "access_token": ACCESS_TOKEN, "today": TODAY,
                                "fault_timeout_s": FAULT_TIMEOUT_S, **overrides}
    return FakeKiteConfig(**settings)


def new_client(url: str, access_token: str | None = ACCESS_TOKEN) -> KiteConnect:
    return KiteConnect(API_KEY, access_token=access_token, root=url, timeout=CLIENT_TIMEOUT_S)


@pytest.fixture
async def fake() -> AsyncIterator[FakeKiteHandle]:
    async with running_fake_kite(make_config()) as handle:
        yield handle


@pytest.fixture
def kite(fake: FakeKiteHandle) -> Iterator[KiteConnect]:
    client = new_client(fake.url)
    yield client
    client.reqsession.close()


async def call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking client call off the loop the fake serves on."""
    return await asyncio.to_thread(function, *args, **kwargs)


def nfo_order(**overrides: Any) -> dict[str, Any]:
    order: dict[str, Any] = {"variety": "regular", "exchange": "NFO", "tradingsymbol": NFO_SYMBOL,
                             "transaction_type": "BUY", "quantity": 30, "product": "NRML",
                             "order_type": "MARKET", "market_protection": 2, "tag": "t1"}
    return {**order, **overrides}


def statuses(history: list[dict[str, Any]]) -> list[str]:
    return [entry["status"] for entry in history]


# --------------------------------------------------------------------------- session and user


async def test_generate_session_issues_a_token_that_works(fake: FakeKiteHandle) -> None:
    fake.state.register_request_token("req1")
    client = new_client(fake.url, access_token=None)
    try:
        session = await call(client.generate_session, "req1", API_SECRET)
        assert isinstance(session["login_time"], datetime)
        assert session["access_token"] and session["api_key"] == API_KEY
        assert (await call(client.profile))["user_id"] == "AB1234"
        with pytest.raises(kite_errors.TokenException):  # request tokens are single-use
            await call(client.generate_session, "req1", API_SECRET)
    finally:
        client.reqsession.close()
    old = new_client(fake.url)  # a new login kills the older token
    with pytest.raises(kite_errors.TokenException) as raised:
        await call(old.profile)
    assert raised.value.code == 403
    old.reqsession.close()


async def test_bad_checksum_and_unknown_request_token_are_token_exceptions(
        fake: FakeKiteHandle) -> None:
    fake.state.register_request_token("req2")
    client = new_client(fake.url, access_token=None)
    with pytest.raises(kite_errors.TokenException, match="checksum") as raised:
        await call(client.generate_session, "req2", "wrong-secret")
    assert raised.value.code == 403
    with pytest.raises(kite_errors.TokenException):
        await call(client.generate_session, "never-registered", API_SECRET)
    client.reqsession.close()


async def test_invalidated_token_is_refused(kite: KiteConnect) -> None:
    assert await call(kite.invalidate_access_token) is True
    with pytest.raises(kite_errors.TokenException, match="Incorrect `api_key` or `access_token`"):
        await call(kite.profile)


async def test_profile_and_margins(fake: FakeKiteHandle, kite: KiteConnect) -> None:
    assert (await call(kite.profile))["broker"] == "ZERODHA"
    margins = await call(kite.margins)
    assert set(margins) == {"equity", "commodity"}
    assert margins["equity"]["available"]["cash"] == 5_000_000
    fake.state.set_cash("commodity", "250000.5")
    commodity = await call(kite.margins, "commodity")
    assert commodity["net"] == 250000.5
    assert set(commodity["utilised"]) >= {"debits", "span", "exposure", "m2m_realised"}


# --------------------------------------------------------------------------- instruments, quotes


async def test_instruments_parse_with_the_listed_futures(kite: KiteConnect) -> None:
    rows = await call(kite.instruments)
    futures = {row["tradingsymbol"]: row for row in rows if row["instrument_type"] == "FUT"}
    assert [s for s in futures if s.startswith("BANKNIFTY")] == [
        "BANKNIFTY26DECFUT", "BANKNIFTY27JANFUT", "BANKNIFTY27FEBFUT"]
    # MCX expires on the 5th: on Dec 29 the December contract is gone, so Jan/Feb/Mar.
    assert [s for s in futures if s.startswith("GOLDM")] == [
        "GOLDM27JANFUT", "GOLDM27FEBFUT", "GOLDM27MARFUT"]
    bank = futures[NFO_SYMBOL]
    assert [futures[s]["expiry"] for s in futures if s.startswith("BANKNIFTY")] == [
        date(2026, 12, 31), date(2027, 1, 28), date(2027, 2, 25)]  # last Thursdays
    assert (bank["lot_size"], bank["tick_size"], bank["segment"]) == (30, 0.05, "NFO-FUT")
    assert isinstance(bank["instrument_token"], int) and bank["strike"] == 0.0
    copper = futures["COPPER27JANFUT"]
    assert (copper["lot_size"], copper["tick_size"], copper["expiry"]) == (
        2500, 0.05, date(2027, 1, 5))
    assert (futures["SILVERM27JANFUT"]["lot_size"], futures[MCX_SYMBOL]["tick_size"]) == (5, 1.0)
    assert len(rows) == 99 + 12  # every fixture row, plus 4 series × 3 months
    mcx = await call(kite.instruments, "MCX")
    assert {row["exchange"] for row in mcx} == {"MCX"} and len(mcx) == 9


@pytest.mark.parametrize(("today", "first_nfo", "first_mcx"), [
    (date(2027, 1, 28), "BANKNIFTY27JANFUT", "GOLDM27FEBFUT"),  # expiry day is still listed
    (date(2027, 1, 29), "BANKNIFTY27FEBFUT", "GOLDM27FEBFUT"),  # the day after, it is gone
    (date(2027, 3, 5), "BANKNIFTY27MARFUT", "GOLDM27MARFUT"),
])
async def test_listed_contracts_roll_after_expiry(fake: FakeKiteHandle, kite: KiteConnect,
                                                  today: date, first_nfo: str,
                                                  first_mcx: str) -> None:
    fake.state.set_today(today)
    rows = await call(kite.instruments)
    futures = [row for row in rows if row["instrument_type"] == "FUT"]
    assert all(row["expiry"] >= today for row in futures) and len(futures) == 12
    assert [row["tradingsymbol"] for row in futures if row["name"] == "BANKNIFTY"][0] == first_nfo
    assert [row["tradingsymbol"] for row in futures if row["name"] == "GOLDM"][0] == first_mcx


async def test_instruments_csv_keeps_the_fixture_rows_and_crlf(fake: FakeKiteHandle) -> None:
    headers = {"X-Kite-Version": "3", "Authorization": f"token {API_KEY}:{ACCESS_TOKEN}"}
    response = await call(requests.get, fake.url + "/instruments", headers=headers, timeout=5)
    assert response.headers["Content-Type"].startswith("text/csv")
    fixture = FIXTURE_INSTRUMENTS.read_bytes()
    assert response.content.startswith(fixture)  # byte for byte, CRLF included
    assert response.content.count(b"\r\n") == response.content.count(b"\n")
    assert b"BANKNIFTY26DECFUT,BANKNIFTY,0.0,2026-12-31,0.0,0.05,30,FUT,NFO-FUT,NFO\r\n" \
        in response.content


async def test_quote_ltp_and_ohlc(fake: FakeKiteHandle, kite: KiteConnect) -> None:
    key = f"NFO:{NFO_SYMBOL}"
    fake.state.set_price(NFO_SYMBOL, "52100.5")
    quote = await call(kite.quote, key, "NSE:NOSUCHSYMBOL")
    assert list(quote) == [key]  # unknown instruments are dropped
    row = quote[key]
    assert row["last_price"] == 52100.5 and isinstance(row["timestamp"], datetime)
    assert len(row["depth"]["buy"]) == len(row["depth"]["sell"]) == 5
    assert row["lower_circuit_limit"] < row["last_price"] < row["upper_circuit_limit"]
    assert row["ohlc"] == {"open": 52000, "high": 52100.5, "low": 52000, "close": 52000}
    assert (await call(kite.ltp, key, f"MCX:{MCX_SYMBOL}"))[f"MCX:{MCX_SYMBOL}"] == {
        "instrument_token": fake.state.market.instruments[f"MCX:{MCX_SYMBOL}"].instrument_token,
        "last_price": 72000}
    assert set((await call(kite.ohlc, key))[key]) == {"instrument_token", "last_price", "ohlc"}


# --------------------------------------------------------------------------- orders


async def test_empty_book_answers_empty_lists(kite: KiteConnect) -> None:
    assert await call(kite.orders) == []
    assert await call(kite.trades) == []
    assert await call(kite.positions) == {"net": [], "day": []}


async def test_market_order_completes_with_history_trades_and_position(
        kite: KiteConnect) -> None:
    order_id = await call(kite.place_order, **nfo_order(quantity=60, tag="entry1"))
    assert isinstance(order_id, str) and len(order_id) == 19
    history = await call(kite.order_history, order_id)
    assert statuses(history) == [*PLACED, "COMPLETE"]
    assert isinstance(history[-1]["order_timestamp"], datetime)
    [order] = await call(kite.orders)
    assert (order["status"], order["filled_quantity"], order["average_price"]) == (
        "COMPLETE", 60, 52000)
    assert order["tag"] == "entry1" and "entry1" in order["tags"]
    [trade] = await call(kite.order_trades, order_id)
    assert isinstance(trade["trade_id"], str) and trade["quantity"] == 60
    assert isinstance(trade["fill_timestamp"], datetime) and len(trade["order_timestamp"]) == 8
    assert await call(kite.trades) == [trade]
    [net] = (await call(kite.positions))["net"]
    assert (net["tradingsymbol"], net["quantity"], net["multiplier"]) == (NFO_SYMBOL, 60, 1)


async def test_mcx_quantity_is_lots_and_multiplier_is_lot_size(kite: KiteConnect) -> None:
    await call(kite.place_order, **nfo_order(exchange="MCX", tradingsymbol=MCX_SYMBOL,
                                             quantity=2))
    await call(kite.place_order, **nfo_order(exchange="MCX", tradingsymbol=MCX_SYMBOL,
                                             quantity=1, transaction_type="SELL"))
    [net] = (await call(kite.positions))["net"]
    assert (net["quantity"], net["multiplier"]) == (1, 100)
    assert (net["buy_value"], net["sell_value"], net["value"]) == (14_400_000, 7_200_000,
                                                                   -7_200_000)
    assert net["average_price"] == 72000 and net["pnl"] == 0


async def test_order_ids_are_increasing_19_digit_strings(kite: KiteConnect) -> None:
    ids = [await call(kite.place_order, **nfo_order()) for _ in range(3)]
    assert all(len(order_id) == 19 and order_id.isdigit() for order_id in ids)
    assert [int(order_id) for order_id in ids] == sorted(int(order_id) for order_id in ids)
    assert len(set(ids)) == 3


async def test_limit_order_rests_then_fills_on_a_price_move(fake: FakeKiteHandle,
                                                            kite: KiteConnect) -> None:
    order_id = await call(kite.place_order, **nfo_order(order_type="LIMIT", price=51900))
    assert statuses(await call(kite.order_history, order_id)) == PLACED
    fake.state.set_price(NFO_SYMBOL, "51950")
    assert (await call(kite.orders))[0]["status"] == "OPEN"
    fake.state.set_price(NFO_SYMBOL, "51880.05")  # below the limit: fills at the better price
    [order] = await call(kite.orders)
    assert (order["status"], order["average_price"]) == ("COMPLETE", 51880.05)


async def test_market_order_fills_only_inside_its_protection_band(fake: FakeKiteHandle,
                                                                  kite: KiteConnect) -> None:
    fake.state.set_fill_mode("rest")
    order_id = await call(kite.place_order, **nfo_order(market_protection=1))  # band 52520
    fake.state.set_price(NFO_SYMBOL, "52600")
    assert (await call(kite.order_history, order_id))[-1]["status"] == "OPEN"
    fake.state.set_price(NFO_SYMBOL, "52500")
    [order] = await call(kite.orders)
    assert (order["status"], order["average_price"]) == ("COMPLETE", 52500)


async def test_stop_loss_waits_for_its_trigger(fake: FakeKiteHandle, kite: KiteConnect) -> None:
    order_id = await call(kite.place_order, **nfo_order(order_type="SL", price=52150,
                                                        trigger_price=52100))
    assert (await call(kite.order_history, order_id))[-1]["status"] == "TRIGGER PENDING"
    fake.state.set_price(NFO_SYMBOL, "52100")
    history = await call(kite.order_history, order_id)
    assert statuses(history)[-3:] == ["TRIGGER PENDING", "OPEN", "COMPLETE"]


async def test_modify_moves_through_modify_states_then_fills(kite: KiteConnect) -> None:
    order_id = await call(kite.place_order, **nfo_order(order_type="LIMIT", price=51000))
    assert await call(kite.modify_order, "regular", order_id, price=52000) == order_id
    history = await call(kite.order_history, order_id)
    assert statuses(history) == [*PLACED, "MODIFY VALIDATION PENDING", "MODIFY PENDING",
                                 "MODIFIED", "OPEN", "COMPLETE"]
    assert history[-2]["price"] == 52000 and history[-3]["price"] == 51000
    assert history[-1]["average_price"] == 52000


async def test_modify_limit_and_final_orders(fake: FakeKiteHandle, kite: KiteConnect) -> None:
    order_id = await call(kite.place_order, **nfo_order(order_type="LIMIT", price=50000))
    for step in range(25):
        await call(kite.modify_order, "regular", order_id, price=50000 + step)
    with pytest.raises(kite_errors.InputException, match="Maximum allowed order modifications"):
        await call(kite.modify_order, "regular", order_id, price=50100)
    await call(kite.cancel_order, "regular", order_id)
    with pytest.raises(kite_errors.InputException) as raised:
        await call(kite.cancel_order, "regular", order_id)
    assert raised.value.code == 400
    done = await call(kite.place_order, **nfo_order())
    with pytest.raises(kite_errors.InputException):
        await call(kite.modify_order, "regular", done, quantity=60)


async def test_cancel_after_a_partial_fill_keeps_the_filled_part(fake: FakeKiteHandle,
                                                                 kite: KiteConnect) -> None:
    fake.state.set_fill_mode("partial", "0.5")
    order_id = await call(kite.place_order, **nfo_order(order_type="LIMIT", price=52000,
                                                        quantity=120))
    [order] = await call(kite.orders)
    assert (order["status"], order["filled_quantity"]) == ("OPEN", 60)
    await call(kite.cancel_order, "regular", order_id)
    history = await call(kite.order_history, order_id)
    assert statuses(history)[-2:] == ["CANCEL PENDING", "CANCELLED"]
    assert (history[-1]["filled_quantity"], history[-1]["cancelled_quantity"]) == (60, 60)
    assert len(await call(kite.order_trades, order_id)) == 1


async def test_test_fill_control_fills_part_of_a_resting_order(fake: FakeKiteHandle,
                                                               kite: KiteConnect) -> None:
    fake.state.set_fill_mode("rest")
    order_id = await call(kite.place_order, **nfo_order(order_type="LIMIT", price=52000,
                                                        quantity=90))
    fake.state.fill(order_id, 30, "51990")
    fake.state.fill(order_id, 60, "52000")
    [order] = await call(kite.orders)
    assert order["status"] == "COMPLETE"
    assert Decimal(str(order["average_price"])).quantize(Decimal("0.0001")) == \
        Decimal("51996.6667")  # VWAP of 30 @ 51990 and 60 @ 52000
    assert [t["quantity"] for t in await call(kite.order_trades, order_id)] == [30, 60]


async def test_autoslice_splits_above_the_freeze_quantity(fake: FakeKiteHandle,
                                                          kite: KiteConnect) -> None:
    fake.state.fail_next_with_margin_error(1)
    answer = await call(kite.place_autoslice_order, **nfo_order(quantity=1230, tag="big1"))
    parent, children = answer["order_id"], answer["children"]
    assert len(children) == 3 and len(parent) == 19
    assert children[0]["error"]["error_type"] == "MarginException"
    assert children[0]["error"]["code"] == 400
    placed = {child["order_id"] for child in children[1:]}
    orders = await call(kite.orders)
    assert {order["order_id"] for order in orders} == placed
    assert sorted(order["quantity"] for order in orders) == [30, 600]
    for order in orders:
        assert {"autoslice", f"autoslice:{parent}", "big1"} <= set(order["tags"])
        assert order["tag"] == "big1" and order["status"] == "COMPLETE"


async def test_quantity_above_freeze_is_refused_with_kites_message(kite: KiteConnect) -> None:
    with pytest.raises(kite_errors.InputException) as raised:
        await call(kite.place_order, **nfo_order(quantity=630))
    assert str(raised.value) == FREEZE_MESSAGE.format(quantity=630, lots=21, freeze=600,
                                                      freeze_lots=20)
    assert "The order quantity 630 (21 lots) is higher than the maximum quantity of 600 " \
           "(20 lots)" in str(raised.value)
    assert await call(kite.place_order, **nfo_order(quantity=600))  # the limit itself is allowed
    assert len(await call(kite.orders)) == 1


@pytest.mark.parametrize("protection", [None, 0])
async def test_market_order_without_protection_is_refused(kite: KiteConnect,
                                                          protection: int | None) -> None:
    with pytest.raises(kite_errors.InputException) as raised:
        await call(kite.place_order, **nfo_order(market_protection=protection))
    assert str(raised.value) == PROTECTION_MESSAGE
    assert await call(kite.orders) == []


@pytest.mark.parametrize(("overrides", "message"), [
    ({"market_protection": True}, "failed to decode market_protection"),
    ({"order_type": "LIMIT", "price": 52000.03}, "Tick size"),
    ({"order_type": "LIMIT"}, "Price is required"),
    ({"quantity": 45}, "multiple of the lot size"),
    ({"tag": "a" * 21}, "tag"),
    ({"tag": "bad-tag"}, "tag"),
    ({"exchange": "XYZ"}, "exchange"),
    ({"variety": "bo"}, "variety"),
    ({"product": "BO"}, "product"),
    ({"validity": "GTC"}, "validity"),
])
async def test_invalid_orders_are_input_exceptions(kite: KiteConnect, overrides: dict[str, Any],
                                                   message: str) -> None:
    with pytest.raises(kite_errors.InputException, match=message) as raised:
        await call(kite.place_order, **nfo_order(**overrides))
    assert raised.value.code == 400


async def test_rms_rejection_after_acceptance(fake: FakeKiteHandle, kite: KiteConnect) -> None:
    fake.state.reject_next_for_margin(1)
    order_id = await call(kite.place_order, **nfo_order())
    history = await call(kite.order_history, order_id)
    assert statuses(history) == ["PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "REJECTED"]
    rejected = history[-1]
    assert rejected["status_message"].startswith("Insufficient funds. Required margin is ")
    assert rejected["status_message"].endswith("Check the orderbook for open orders.")
    assert rejected["status_message_raw"].startswith("RMS:Margin Exceeds,Required:")
    assert rejected["exchange_order_id"] is None
    second = await call(kite.place_order, **nfo_order())
    assert (await call(kite.order_history, second))[-1]["status"] == "COMPLETE"


async def test_margin_exception_reaches_the_client_as_general_exception(
        fake: FakeKiteHandle, kite: KiteConnect) -> None:
    fake.state.fail_next_with_margin_error(1)
    with pytest.raises(kite_errors.GeneralException, match="Insufficient funds") as raised:
        await call(kite.place_order, **nfo_order())
    assert raised.value.code == 400
    assert await call(kite.orders) == []
    assert await call(kite.place_order, **nfo_order())


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(("endpoint", "fault", "error", "code"), [
    ("orders", "rate_limited", kite_errors.NetworkException, 429),
    ("positions", "html_502", kite_errors.DataException, 502),
    ("quote", "html_429", kite_errors.DataException, 502),
    ("margins", "network_503", kite_errors.NetworkException, 503),
    ("any", "rate_limited", kite_errors.NetworkException, 429),
])
async def test_faults_map_to_the_client_exceptions(fake: FakeKiteHandle, kite: KiteConnect,
                                                   endpoint: str, fault: str, error: type,
                                                   code: int) -> None:
    calls = {"orders": kite.orders, "positions": kite.positions, "margins": kite.margins,
             "quote": lambda: kite.ltp(f"NFO:{NFO_SYMBOL}"), "any": kite.orders}
    fake.state.add_fault(endpoint, fault, count=1)
    with pytest.raises(error) as raised:
        await call(calls[endpoint])
    assert type(raised.value) is error and raised.value.code == code
    await call(calls[endpoint])  # the fault was for one call only


async def test_timeout_on_place_happens_after_the_order_exists(fake: FakeKiteHandle,
                                                               kite: KiteConnect) -> None:
    fake.state.add_fault("place", "timeout")
    with pytest.raises(requests.exceptions.ReadTimeout):
        await call(kite.place_order, **nfo_order(tag="ambig1"))
    [order] = await call(kite.orders)
    assert (order["tag"], order["status"]) == ("ambig1", "COMPLETE")


async def test_dropped_connection_on_place_after_the_order_exists(fake: FakeKiteHandle,
                                                                  kite: KiteConnect) -> None:
    fake.state.add_fault("place", "drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        await call(kite.place_order, **nfo_order(tag="ambig2"))
    assert [order["tag"] for order in await call(kite.orders)] == ["ambig2"]
    fake.state.add_fault("order_history", "drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        await call(kite.order_history, (await call(kite.orders))[0]["order_id"])


async def test_token_expired_fault_kills_the_session(fake: FakeKiteHandle,
                                                     kite: KiteConnect) -> None:
    expired: list[bool] = []
    kite.set_session_expiry_hook(lambda: expired.append(True))
    fake.state.add_fault("positions", "token_expired")
    with pytest.raises(kite_errors.TokenException) as raised:
        await call(kite.positions)
    assert raised.value.code == 403 and expired == [True]
    with pytest.raises(kite_errors.TokenException):
        await call(kite.profile)
    assert fake.state.snapshot()["token_valid"] is False


async def test_expire_token_control(fake: FakeKiteHandle, kite: KiteConnect) -> None:
    await call(kite.profile)
    fake.state.expire_token()
    with pytest.raises(kite_errors.TokenException):
        await call(kite.orders)


async def test_rate_limits_refuse_bursts_and_count_violations(fake: FakeKiteHandle,
                                                              kite: KiteConnect) -> None:
    for _ in range(3):
        await call(kite.ltp, f"NFO:{NFO_SYMBOL}")
    assert fake.state.snapshot()["rate_limits"]["total_violations"] == 0
    fake.state.enforce_rate_limits(True)
    await call(kite.ltp, f"NFO:{NFO_SYMBOL}")
    with pytest.raises(kite_errors.NetworkException, match="Too many requests") as raised:
        await call(kite.ltp, f"NFO:{NFO_SYMBOL}")
    assert raised.value.code == 429
    results = await asyncio.gather(*(call(kite.place_order, **nfo_order()) for _ in range(16)),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, kite_errors.NetworkException)]
    assert refused and all(r.code == 429 for r in refused)
    violations = fake.state.snapshot()["rate_limits"]["violations"]
    assert violations == {"quote": 1, "orders": len(refused)}
    assert len(await call(kite.orders)) == 16 - len(refused)  # a 429 places nothing


async def test_unknown_route_and_missing_token_answer_json_errors(fake: FakeKiteHandle) -> None:
    headers = {"X-Kite-Version": "3", "Authorization": f"token {API_KEY}:{ACCESS_TOKEN}"}
    missing = await call(requests.get, fake.url + "/no/such/route", headers=headers, timeout=5)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/json")
    assert missing.json() == {"status": "error", "message": "Route not found", "data": None,
                              "error_type": "GeneralException"}
    anonymous = await call(requests.get, fake.url + "/orders", headers={"X-Kite-Version": "3"},
                           timeout=5)
    assert anonymous.status_code == 403
    assert anonymous.json()["error_type"] == "TokenException"
    unversioned = await call(requests.get, fake.url + "/orders",
                             headers={"Authorization": headers["Authorization"]}, timeout=5)
    assert unversioned.status_code == 400
    assert unversioned.json()["error_type"] == "InputException"


async def test_http_controls(fake: FakeKiteHandle, kite: KiteConnect) -> None:
    def post(name: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{fake.url}/_test/{name}", json=body, timeout=5)

    assert (await call(post, "fill_mode", {"mode": "rest"})).status_code == 200
    order_id = await call(kite.place_order, **nfo_order())
    bad = await call(post, "fill_mode", {"mode": "sometimes"})
    assert bad.status_code == 400 and bad.json()["status"] == "error"
    filled = await call(post, "fill", {"order_id": order_id, "quantity": 30, "price": "52001"})
    assert filled.json()["data"]["average_price"] == 52001
    assert (await call(post, "fault", {"endpoint": "orders", "fault": "network_503",
                                       "count": 1})).status_code == 200
    with pytest.raises(kite_errors.NetworkException):
        await call(kite.orders)
    assert (await call(post, "today", {"date": "2027-02-01"})).status_code == 200
    symbols = {row["tradingsymbol"] for row in await call(kite.instruments, "NFO")}
    assert {"BANKNIFTY27FEBFUT", "BANKNIFTY27MARFUT", "BANKNIFTY27APRFUT"} <= symbols
    assert NFO_SYMBOL not in symbols
    assert (await call(post, "reset", {})).status_code == 200
    state = (await call(requests.get, f"{fake.url}/_test/state", timeout=5)).json()["data"]
    assert state["orders"] == [] and state["token_valid"] is True


# --------------------------------------------------------------------------- postbacks


@asynccontextmanager
async def postback_receiver() -> AsyncIterator[tuple[str, asyncio.Queue[dict[str, Any]]]]:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        received.put_nowait(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/postback", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/postback", received
    finally:
        await runner.cleanup()


async def test_postbacks_carry_a_valid_checksum() -> None:
    async with postback_receiver() as (url, received), \
            running_fake_kite(make_config(postback_url=url)) as fake:
        fake.state.set_fill_mode("partial")
        kite = new_client(fake.url)
        order_id = await call(kite.place_order, **nfo_order(order_type="LIMIT", price=52000,
                                                            quantity=60))
        await call(kite.cancel_order, "regular", order_id)
        kite.reqsession.close()
        update = await asyncio.wait_for(received.get(), 5)
        cancelled = await asyncio.wait_for(received.get(), 5)
    for payload in (update, cancelled):
        expected = hashlib.sha256(
            (payload["order_id"] + payload["order_timestamp"] + API_SECRET).encode()).hexdigest()
        assert payload["checksum"] == expected and payload["order_id"] == order_id
        assert "status" in payload and "data" not in payload  # no envelope
    assert (update["status"], update["filled_quantity"], update["unfilled_quantity"]) == (
        "UPDATE", 30, 30)
    assert (cancelled["status"], cancelled["user_id"], cancelled["app_id"]) == (
        "CANCELLED", "AB1234", 1234)


async def test_failing_postbacks_do_not_break_the_fake() -> None:
    async with postback_receiver() as (url, _):
        pass  # the receiver is gone: postbacks to it fail
    async with running_fake_kite(make_config(postback_url=url)) as fake:
        kite = new_client(fake.url)
        await call(kite.place_order, **nfo_order())
        for _ in range(100):
            if fake.state.postbacks["failed"]:
                break
            await asyncio.sleep(0.05)
        assert fake.state.postbacks["failed"] == 1
        assert (await call(kite.orders))[0]["status"] == "COMPLETE"
        kite.reqsession.close()


# --------------------------------------------------------------------------- own process


def test_state_file_survives_a_restart_of_the_fake(tmp_path: Path) -> None:
    process = FakeKiteProcess(api_key=API_KEY, api_secret=API_SECRET, access_token=ACCESS_TOKEN,
                              today=TODAY, state_file=tmp_path / "kite.json",
                              log_path=tmp_path / "fake.log")
    with process:
        assert f"fake kite listening on {process.url}" in process.output()
        kite = new_client(process.url)
        done = kite.place_order(**nfo_order(tag="before1"))
        resting = kite.place_order(**nfo_order(order_type="LIMIT", price=51000, tag="before2"))
        process.restart()
        assert {o["order_id"]: o["status"] for o in kite.orders()} == {
            done: "COMPLETE", resting: "OPEN"}
        assert len(kite.order_history(done)) == 5 and len(kite.trades()) == 1
        process.control("price", tradingsymbol=NFO_SYMBOL, price="51000")
        assert kite.order_history(resting)[-1]["status"] == "COMPLETE"
        assert int(kite.place_order(**nfo_order())) > int(resting)
        process.control("expire_token")
        process.restart()
        with pytest.raises(kite_errors.TokenException):
            kite.orders()  # an expired token stays expired across the restart
        assert len(process.state()["orders"]) == 3
        kite.reqsession.close()
