"""The admin endpoints through the real application on real PostgreSQL: their answers, the
bad input each refuses (changing nothing), and the audit rows every call leaves."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from live.access import AccessPolicy
from live.rate_limit import RateLimiter
from live.server import Context, WebhookPolicy, build_app
from tests.integration.test_operator_controls import enter
from tests.support.trading import INSTRUMENTS

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def trading(trading_in_operation):
    return trading_in_operation


@pytest.fixture
async def client(trading):
    ctx = Context(db=trading.db, inbox=trading.inbox, engine=trading.engine,
                  instruments=INSTRUMENTS, metrics=trading.metrics,
                  readiness=trading.readiness, broker=trading.broker,
                  limiter=RateLimiter(1000), policy=WebhookPolicy("s3cret", 16384, 2000, 1000),
                  exits=trading.exits, rollover=trading.rollover, control=trading.control,
                  flattener=trading.flattener, access=AccessPolicy(TOKEN, views_open=True))
    client = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    yield client
    await client.close()


async def call(client, path: str, body: object) -> tuple[int, dict]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = await client.post(path, data=data, headers=AUTH)
    return response.status, await response.json()


def audit(dsn: str, event: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(
            "SELECT details FROM execution_log WHERE event = %s ORDER BY id", (event,))]


async def test_pause_resume_halt_answer_the_state_and_show_it_in_status(client, dsn):
    code, answer = await call(client, "/admin/pause", {"reason": "lunch"})
    assert code == 200 and answer["changed"] is True
    assert answer["trading_state"]["state"] == "REDUCING"
    assert answer["trading_state"]["actor"] == "operator"
    status = await (await client.get("/status")).json()
    assert status["trading_state"]["state"] == "REDUCING"
    assert status["trading_state"]["reason"] == "lunch"

    code, answer = await call(client, "/admin/resume", {"reason": "back"})
    assert (code, answer["changed"], answer["trading_state"]["state"]) == (200, True, "ACTIVE")
    code, answer = await call(client, "/admin/resume", {"reason": "back again"})
    assert (code, answer["changed"]) == (200, False)  # no change recorded twice
    assert [e["state"] for e in audit(dsn, "trading_state_changed")] == ["REDUCING", "ACTIVE"]
    assert [e["action"] for e in audit(dsn, "operator_action")] == ["pause", "resume",
                                                                    "resume"]
    code, answer = await call(client, "/admin/halt", {"reason": "broker trouble"})
    assert (code, answer["trading_state"]["state"]) == (200, "HALTED")


async def test_manual_exit_answers_like_an_exit_alert(client, trading):
    await enter(trading, layers=2)
    code, answer = await call(client, "/admin/exit", {"instrument": "GOLD_MINI",
                                                      "position": "Long_2",
                                                      "reason": "taking profit"})
    assert code == 200 and answer["status"] == "executed" and answer["signal_id"] is None
    assert answer["result"]["positions_closed"]
    closed = await trading.db.list_positions("closed", 10)
    assert [(x.layer, x.exit_reason) for x in closed] == [("Long_2", "MANUAL")]


@pytest.mark.parametrize(("body", "code", "detail"), [
    ({"instrument": "PLATINUM", "position": "ALL"}, 404, "unknown instrument PLATINUM"),
    ({"instrument": "GOLD_MINI", "position": "Long_3"}, 404, "no open layer Long_3 in GOLD_MINI"),
    ({"instrument": "COPPER"}, 404, "no open layers in COPPER"),
    ({"instrument": "GOLD_MINI", "position": "Long_9"}, 400, "Invalid position"),
    ({"position": "ALL"}, 400, "instrument is required"),
    ({"instrument": 7}, 400, "Invalid instrument"),
])
async def test_bad_manual_exits_are_refused_and_change_nothing(client, trading, body, code,
                                                               detail):
    await enter(trading)
    status, answer = await call(client, "/admin/exit", body)
    assert status == code and detail in answer["detail"]
    assert len(await trading.db.all_live_layers()) == 1


@pytest.mark.parametrize("amount", ["0", "-5", "abc", "1e400", "NaN", "Infinity", "10.001",
                                    None, True, [], "1000000000000000"])
async def test_bad_amounts_are_400_and_change_nothing(client, trading, amount):
    before = await trading.db.portfolio_state()
    code, answer = await call(client, "/admin/capital", {"type": "DEPOSIT", "amount": amount})
    assert code == 400 and answer["detail"].startswith("Invalid amount")
    assert await trading.db.portfolio_state() == before


async def test_bodies_that_are_not_json_objects_are_400(client):
    for body in (b"\xff\xfe", b"[1]", b'{"reason": "a", "reason": "b"}', b"{"):
        code, answer = await call(client, "/admin/pause", body)
        assert code == 400 and answer["detail"]
    code, answer = await call(client, "/admin/capital", {"type": "LOAN", "amount": "5"})
    assert code == 400 and "Invalid type" in answer["detail"]


async def test_capital_moves_the_ledger_and_refuses_an_overdraft(client, trading):
    code, answer = await call(client, "/admin/capital", {"type": "DEPOSIT",
                                                         "amount": "100000.00",
                                                         "note": "top-up"})
    assert code == 200
    entry = answer["entry"]
    assert (entry["txn_type"], entry["amount"], entry["equity_after"]) == (
        "DEPOSIT", "100000.00", "100100000.00")
    code, answer = await call(client, "/admin/capital", {"type": "WITHDRAW",
                                                         "amount": "200000000"})
    assert code == 409
    assert answer["detail"] == ("withdrawal of 200000000.00 exceeds closed equity "
                                "100100000.00")
    state = await trading.db.portfolio_state()
    assert str(state.closed_equity) == "100100000.00"
    code, answer = await call(client, "/admin/capital", {"type": "WITHDRAW", "amount": 100000})
    assert code == 200 and answer["entry"]["equity_after"] == "100000000.00"


async def test_flatten_answers_flat_and_a_second_request_joins_the_first(client, trading):
    for instrument in ("GOLD_MINI", "COPPER"):
        await enter(trading, instrument, layers=2)
    first, second = await asyncio.gather(call(client, "/admin/flatten", {"reason": "drill"}),
                                         call(client, "/admin/flatten", {"reason": "again"}))
    # The second joins the first — unless the first was done before it arrived, when it is
    # a flatten of its own with nothing left to close.
    first, second = sorted((first, second), key=lambda a: -a[1]["layers_closed"])
    assert second == first or (second[0], second[1]["layers_closed"]) == (200, 0)
    code, answer = first
    assert (code, answer["status"], answer["layers_closed"]) == (200, "flat", 4)
    sells = [i for i in await trading.db.list_intents(50) if i.side == "SELL"]
    assert len(sells) == 2  # one exit per instrument, never two sets
    status = await (await client.get("/status")).json()
    assert status["trading_state"]["state"] == "HALTED"
    assert status["flatten"]["status"] == "flat"


async def test_levers_wait_for_recovery_and_a_flatten_cannot_be_resumed_midway(client,
                                                                              trading):
    trading.readiness.starting("resolve_intents")
    code, answer = await call(client, "/admin/pause", {"reason": "early"})
    assert (code, answer["error"]) == (503, "starting")
    trading.readiness.started()

    await enter(trading)
    trading.flattener.current = replace(
        await _started_flatten(trading), status="flattening")
    code, answer = await call(client, "/admin/resume", {"reason": "too soon"})
    assert code == 409 and "under way" in answer["detail"]
    assert (await trading.db.trading_state()).state == "HALTED"


async def _started_flatten(trading):
    from core.trading_state import Actor, TradingState

    async with trading.db.transaction() as tx:
        row = await tx.start_flatten("drill", Actor.OPERATOR, trading.clock())
        await trading.control.set_in(tx, TradingState.HALTED, "flatten: drill", Actor.OPERATOR)
    return row
