"""The pair's fence in PostgreSQL: once a newer leader has written the book, every write of
the older one rolls back whole, and the intents a leader creates carry its epoch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import psycopg
import pytest

from core.db_state_manager import DatabaseStateManager
from core.errors import Fenced
from core.models import NewIntent, Outcome, Side
from tests.integration.test_recovery_loaders import ENTRY
from tests.support.factories import T0, new_signal, open_layer


def intent(instrument: str = "GOLD_MINI") -> NewIntent:
    return NewIntent(signal_id=None, instrument=instrument, side=Side.BUY, lots=1, quantity=1,
                     order_type="MARKET", purpose=ENTRY, price=Decimal("78500"))


@pytest.fixture
async def other(dsn) -> AsyncIterator[DatabaseStateManager]:
    """A second node's door to the same book."""
    manager = DatabaseStateManager(dsn, min_size=1, max_size=4, retry_window_s=5)
    await manager.open()
    yield manager
    await manager.close()


async def promote(node: DatabaseStateManager, dsn: str, epoch: int) -> None:
    """What a promotion does to the fence (`live.fence_lease`): move it to the new term."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("UPDATE leader_fence SET epoch = %s WHERE epoch < %s", (epoch, epoch))
    node.epoch = epoch


async def count(dsn: str, query: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        row = await (await conn.execute(query)).fetchone()
        return int(row[0])


async def test_a_newer_leader_fences_the_older_ones_writes(db, other, dsn):
    old, new = db, other
    await promote(old, dsn, 1)
    async with old.transaction() as tx:
        first = await tx.insert_intent(intent())
    assert first.fencing_epoch == 1 and await old.fence_epoch() == 1

    await promote(new, dsn, 2)
    async with new.transaction() as tx:
        second = await tx.insert_intent(intent())
    assert second.fencing_epoch == 2 and await new.fence_epoch() == 2

    # The old leader, back from a pause, tries to write: the whole transaction rolls back.
    with pytest.raises(Fenced):
        async with old.transaction() as tx:
            await tx.insert_intent(intent())
    with pytest.raises(Fenced):
        await open_layer(old)
    assert await count(dsn, "SELECT count(*) FROM order_intents") == 2
    assert await count(dsn, "SELECT count(*) FROM portfolio_positions") == 0
    assert await new.fence_epoch() == 2


async def test_an_older_leaders_decision_is_not_recorded(db, other, dsn):
    admission = await db.admit_signal(new_signal(at=T0), window_s=60)
    db.epoch = 4
    await promote(other, dsn, 5)
    with pytest.raises(Fenced):
        await db.record_decision(admission.signal_id, Outcome.IGNORED, "late", "old", T0)
    assert await count(dsn, "SELECT count(*) FROM signal_log WHERE outcome IS NULL") == 1
    # The leader records it, with its audit row, in one fenced transaction.
    await other.record_decision(admission.signal_id, Outcome.IGNORED, "mine", "new", T0)
    assert await count(dsn, "SELECT count(*) FROM execution_log "
                            "WHERE event = 'signal_decided'") == 1


async def test_a_single_daemon_leaves_the_fence_alone(db, dsn):
    async with db.transaction() as tx:
        made = await tx.insert_intent(intent())
    assert made.fencing_epoch == 0 and await db.fence_epoch() == 0


async def test_a_promotion_waits_for_the_old_leaders_open_transaction(db, other, dsn):
    """The fence is a share lock: the successor's move waits for the old leader's open
    transaction, which commits in its own term; every later one rolls back."""
    await promote(db, dsn, 1)
    async with db.transaction() as tx:
        await tx.insert_intent(intent())
        moving = asyncio.create_task(promote(other, dsn, 2))
        await asyncio.sleep(0.3)
        assert not moving.done()  # it waits for this transaction
    await moving
    with pytest.raises(Fenced):
        async with db.transaction() as tx:
            await tx.insert_intent(intent())
    epochs = await count(dsn, "SELECT count(*) FROM order_intents WHERE fencing_epoch = 1")
    assert epochs == 1 and await other.fence_epoch() == 2
