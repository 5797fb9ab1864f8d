"""Concurrent writers of one row: exactly one wins, the other is told to reload."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from core.errors import VersionConflict
from core.models import PyramidingState
from tests.support.factories import open_layer


async def race(*updates):
    return await asyncio.gather(*updates, return_exceptions=True)


async def test_two_concurrent_layer_updates_one_wins(db, postgresql):
    layer = await open_layer(db)
    both_inside = asyncio.Barrier(2)

    async def ratchet(stop: str):
        async with db.transaction() as tx:
            await both_inside.wait()  # both transactions are open before either writes
            return await tx.update_layer(layer, current_stop=Decimal(stop))

    results = await race(ratchet("78000"), ratchet("78100"))
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], VersionConflict)
    row = postgresql.execute("SELECT current_stop, version FROM portfolio_positions WHERE id=%s",
                             (layer.id,)).fetchone()
    assert row == (winners[0].current_stop, 2)
    assert await db.live_layers("GOLD_MINI") == winners


async def test_stale_version_is_refused_after_a_commit(db):
    layer = await open_layer(db)
    async with db.transaction() as tx:
        await tx.update_layer(layer, highest_close=Decimal("79000"))
    with pytest.raises(VersionConflict):
        async with db.transaction() as tx:
            await tx.update_layer(layer, highest_close=Decimal("79500"))
    reloaded = (await db.live_layers("GOLD_MINI"))[0]
    assert reloaded.highest_close == Decimal("79000") and reloaded.version == 2


async def test_pyramiding_state_conflicts_are_detected(db):
    base = await open_layer(db)
    fresh = PyramidingState("GOLD_MINI", base.trade_id, base.id, Decimal("78500"), 0)
    async with db.transaction() as tx:
        stored = await tx.save_pyramiding(fresh)
    with pytest.raises(VersionConflict):  # a second "first" insert
        async with db.transaction() as tx:
            await tx.save_pyramiding(fresh)
    both_inside = asyncio.Barrier(2)

    async def add_pyramid(price: str):
        async with db.transaction() as tx:
            await both_inside.wait()
            return await tx.save_pyramiding(PyramidingState(
                "GOLD_MINI", base.trade_id, base.id, Decimal(price), 1, stored.version))

    results = await race(add_pyramid("79000"), add_pyramid("79100"))
    assert sum(isinstance(r, VersionConflict) for r in results) == 1
    current = await db.pyramiding_state("GOLD_MINI")
    assert current.pyramid_count == 1 and current.version == 2
