"""The cache shows committed values only, and a failed transaction leaves everything as before."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from core.models import LedgerType
from tests.support.factories import new_layer, open_layer


class Boom(Exception):
    pass


def stored_stop(postgresql: psycopg.Connection, layer_id: int) -> Decimal:
    row = postgresql.execute(
        "SELECT current_stop FROM portfolio_positions WHERE id = %s", (layer_id,)).fetchone()
    assert row is not None
    return row[0]


async def test_insert_is_invisible_until_commit(db):
    await db.load_cache()
    async with db.transaction() as tx:
        trade_id = await tx.next_trade_id()
        layer = await tx.insert_layer(new_layer(trade_id))
        assert await db.live_layers("GOLD_MINI") == []
    assert await db.live_layers("GOLD_MINI") == [layer]


async def test_update_is_invisible_until_commit(db):
    layer = await open_layer(db)
    async with db.transaction() as tx:
        moved = await tx.update_layer(layer, current_stop=Decimal("78000"))
        assert (await db.live_layers("GOLD_MINI"))[0].current_stop == Decimal("77800")
    assert await db.live_layers("GOLD_MINI") == [moved]
    assert moved.version == layer.version + 1


async def test_python_failure_leaves_cache_and_database_as_before(db, postgresql):
    layer = await open_layer(db)
    assert await db.live_layers("GOLD_MINI") == [layer]
    with pytest.raises(Boom):
        async with db.transaction() as tx:
            await tx.update_layer(layer, current_stop=Decimal("78100"))
            raise Boom
    assert await db.live_layers("GOLD_MINI") == [layer]
    assert stored_stop(postgresql, layer.id) == Decimal("77800")


async def test_database_failure_leaves_cache_and_database_as_before(db, postgresql):
    layer = await open_layer(db)
    await db.live_layers("GOLD_MINI")
    with pytest.raises(psycopg.errors.CheckViolation):
        async with db.transaction() as tx:
            ratcheted = await tx.update_layer(layer, current_stop=Decimal("78100"))
            # Zero lots violates the schema: the whole transition fails, the ratchet with it.
            await tx.update_layer(ratcheted, lots=0)
    assert await db.live_layers("GOLD_MINI") == [layer]
    assert stored_stop(postgresql, layer.id) == Decimal("77800")


async def test_failed_ledger_write_leaves_equity_as_before(db, postgresql):
    async with db.transaction() as tx:
        await tx.seed_portfolio(Decimal("5000000"))
    before = await db.portfolio_state()
    with pytest.raises(Boom):
        async with db.transaction() as tx:
            await tx.append_ledger(LedgerType.DEPOSIT, Decimal("1000000"))
            assert (await db.portfolio_state()).closed_equity == Decimal("5000000")
            raise Boom
    assert await db.portfolio_state() == before
    assert postgresql.execute("SELECT count(*) FROM capital_transactions").fetchone()[0] == 1


async def test_cache_serves_reads_without_the_database(db):
    layer = await open_layer(db)
    await db.load_cache()
    hits = db.cache.hits
    for _ in range(10):
        assert await db.live_layers("GOLD_MINI") == [layer]
    assert db.cache.hits == hits + 10
