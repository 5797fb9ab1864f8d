"""`POST /admin/import-positions` through the real application on real PostgreSQL: a dry run
writes nothing, one bad row writes nothing, a good import opens every layer in one
transaction, shows in the cache and the views, is audited, reconciled and protected."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.models import Side
from live.access import AccessPolicy
from live.brokers.base import OrderRequest
from live.server import build_app
from tests.support.trading import Trading

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOOK = Path(__file__).parents[1] / "fixtures" / "legacy_book.csv"
# What the legacy system holds at the venue for the sample book, in the venue's units.
HELD = {"GOLD_MINI": 7, "BANK_NIFTY": 90, "COPPER": 1}


def book_rows() -> list[dict[str, str]]:
    with BOOK.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
async def trading(db, dsn):
    trading = await Trading(db, dsn).start()  # the shipped portfolio: 5,000,000 of capital
    trading.inbox.start_processing()
    await trading.control.load()
    trading.readiness.started()
    yield trading
    await trading.close()


@pytest.fixture
async def client(trading):
    ctx = trading.context(access=AccessPolicy(TOKEN, views_open=True))
    client = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    yield client
    await client.close()


async def legacy_venue(trading: Trading, held: dict[str, int] = HELD) -> None:
    """The positions the legacy system bought, at the venue (orders the daemon never placed)."""
    for n, (instrument, quantity) in enumerate(held.items(), start=1):
        await trading.broker.place(OrderRequest(
            tag=f"LEGACY{n}", instrument=instrument, tradingsymbol=instrument, side=Side.BUY,
            quantity=quantity, order_type="MARKET", price=Decimal("1000")))


async def post(client, body: dict) -> tuple[int, dict]:
    response = await client.post("/admin/import-positions", data=json.dumps(body),
                                 headers=AUTH)
    return response.status, await response.json()


def fetch(dsn: str, query: str, *params: object) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def nothing_written(dsn: str) -> bool:
    return fetch(dsn, """SELECT (SELECT count(*) FROM portfolio_positions),
                                (SELECT count(*) FROM pyramiding_state),
                                (SELECT count(*) FROM execution_log
                                  WHERE event = 'positions_imported')""") == [(0, 0, 0)]


async def test_a_dry_run_shows_the_plan_and_writes_nothing(client, trading, dsn):
    code, answer = await post(client, {"rows": book_rows(), "dry_run": True,
                                       "file": "legacy_book.csv"})
    assert code == 200 and answer["status"] == "dry_run", answer
    plan = answer["plan"]
    assert [(x["instrument"], x["layer"], x["risk"]) for x in plan["layers"]] == [
        ("GOLD_MINI", "Long_1", "0.00"), ("GOLD_MINI", "Long_2", "10000.00"),
        ("GOLD_MINI", "Long_3", "7000.00"), ("BANK_NIFTY", "Long_1", "21030.00"),
        ("BANK_NIFTY", "Long_2", "13500.00"), ("COPPER", "Long_1", "26125.00")]
    assert plan["risk"] == {"before": "0.00", "imported": "77655.00", "after": "77655.00"}
    assert plan["risk_percent"] == {"before": "0.00", "after": "1.55", "limit": "15"}
    assert plan["margin_percent_after"] == "36.90"
    assert [(t["instrument"], t["pyramid_count"]) for t in plan["trades"]] == [
        ("BANK_NIFTY", 1), ("COPPER", 0), ("GOLD_MINI", 2)]
    # The venue holds none of it: the dry run says what reconciliation would find.
    assert [(c["tradingsymbol"], c["book_after"], c["broker"], c["agrees"])
            for c in plan["venue"]["contracts"]] == [
        ("BANK_NIFTY", 90, 0, False), ("COPPER", 1, 0, False), ("GOLD_MINI", 7, 0, False)]
    assert nothing_written(dsn)
    assert await trading.db.all_live_layers() == []
    [(details,)] = fetch(dsn, "SELECT details FROM execution_log WHERE event = "
                              "'operator_action'")
    assert (details["action"], details["dry_run"], details["status"]) == (
        "import-positions", True, 200)


async def test_one_bad_row_writes_nothing_and_is_named(client, trading, dsn):
    rows = book_rows()
    rows[3]["lots"] = "2.5"
    rows[5]["tradingsymbol"] = "COPPER26DECFUT"
    code, answer = await post(client, {"rows": rows, "file": "legacy_book.csv"})
    assert code == 422 and answer["detail"] == "2 rejections: nothing imported"
    assert [(r["row"], r["field"]) for r in answer["rejections"]] == [
        (4, "lots"), (6, "tradingsymbol")]
    assert "'2.5' is not a positive whole number of lots" in answer["rejections"][0]["reason"]
    assert nothing_written(dsn)
    assert await trading.db.all_live_layers() == []


async def test_a_good_import_opens_the_layers_reconciled_and_protected(client, trading, dsn):
    await legacy_venue(trading)
    code, answer = await post(client, {"rows": book_rows(), "file": "legacy_book.csv",
                                       "reason": "moving off the old system"})
    assert code == 200 and answer["status"] == "imported", answer
    imported = answer["imported"]
    assert len(imported) == 6
    assert answer["reconciliation"] == {"ran": True, "agreed": True, "differences": []}
    assert {x["broker_stop"]["status"] for x in imported} == {"active"}
    assert [x["broker_stop"]["trigger"] for x in imported if x["instrument"] == "GOLD_MINI"
            ] == ["77600.0000", "77900.0000", "78400.0000"]

    # The cache holds them (decisions read it), as the views and the database do.
    cached = trading.db.cache.live_layers("GOLD_MINI")
    assert [(x.layer, x.current_stop, x.highest_close, x.limiter) for x in cached] == [
        ("Long_1", Decimal("77600"), Decimal("79300"), "imported"),
        ("Long_2", Decimal("77900"), Decimal("78400"), "imported"),
        ("Long_3", Decimal("78400"), Decimal("79100"), "imported")]
    status = await (await client.get("/status")).json()
    assert status["open_positions"] == 6 and status["risk_percent"] == "1.55"
    positions = (await (await client.get("/positions")).json())["positions"]
    assert sorted((x["instrument"], x["layer"], x["quantity"]) for x in positions) == [
        ("BANK_NIFTY", "Long_1", 60), ("BANK_NIFTY", "Long_2", 30), ("COPPER", "Long_1", 1),
        ("GOLD_MINI", "Long_1", 4), ("GOLD_MINI", "Long_2", 2), ("GOLD_MINI", "Long_3", 1)]
    assert len({x["trade_id"] for x in positions}) == 3  # one trade per instrument
    assert fetch(dsn, "SELECT instrument, pyramid_count, last_pyramid_price FROM "
                      "pyramiding_state ORDER BY instrument") == [
        ("BANK_NIFTY", 1, Decimal("52450.0000")), ("COPPER", 0, Decimal("905.4500")),
        ("GOLD_MINI", 2, Decimal("79100.0000"))]
    [(details,)] = fetch(dsn, "SELECT details FROM execution_log WHERE event = "
                              "'positions_imported'")
    assert (details["count"], details["file"], details["actor"], details["reason"]) == (
        6, "legacy_book.csv", "operator", "moving off the old system")
    assert trading.readiness.block_reasons() == []

    # The daemon trades them as its own: the same file again is refused, an exit sells.
    code, again = await post(client, {"rows": book_rows(), "file": "legacy_book.csv"})
    assert code == 422 and "already open in the book" in again["rejections"][0]["reason"]
    response = await client.post("/admin/exit", headers=AUTH, data=json.dumps(
        {"instrument": "COPPER", "position": "Long_1", "reason": "done"}))
    assert (await response.json())["status"] == "executed"
    assert await trading.broker.position("COPPER") == 0


async def test_a_venue_that_does_not_hold_the_import_is_a_mismatch_that_blocks(client,
                                                                             trading):
    rows = [r for r in book_rows() if r["instrument"] == "COPPER"]
    code, answer = await post(client, {"rows": rows})
    assert code == 200
    assert answer["reconciliation"]["agreed"] is False
    assert [d["detail"] for d in answer["reconciliation"]["differences"]] == [
        "COPPER: book 1, broker 0"]
    assert trading.readiness.entry_block("COPPER") is not None


async def test_an_import_is_refused_while_a_flatten_is_under_way(client, trading, dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO flattens (reason, actor, requested_at) "
                     "VALUES ('news', 'operator', now())")
    code, answer = await post(client, {"rows": book_rows()})
    assert code == 409 and "flatten" in answer["detail"] and "under way" in answer["detail"]
    assert nothing_written(dsn)


async def test_bad_requests_are_400(client):
    for body in ({"rows": "x"}, {"rows": [], "dry_run": "yes"}, {}):
        code, answer = await post(client, body)
        assert code == 400, answer
    code, answer = await post(client, {"rows": []})
    assert code == 422 and answer["rejections"][0]["reason"] == "the file holds no rows"
    response = await client.post("/admin/import-positions", data="{}")
    assert response.status == 401
