"""After a close and reopen, the loaders return exactly what was committed, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.db_state_manager import DatabaseStateManager
from core.intents import EntryPurpose, ExitPurpose
from core.models import NewIntent, PyramidingState, Side
from tests.support.factories import T0, new_layer, new_signal

NOW = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
ENTRY = EntryPurpose("Long_2", 1, Decimal("78800"), Decimal("700"), "geometric")


class Abandoned(Exception):
    pass


async def build_book(db):
    """Commit a book with every kind of record; also start one transition that fails."""
    received = await db.admit_signal(new_signal(), 60)
    processing = await db.admit_signal(new_signal("EXIT", position="ALL"), 60)
    decided = await db.admit_signal(new_signal("MARKET_DATA", position=None), 60)
    async with db.transaction() as tx:
        await tx.seed_portfolio(Decimal("5000000"))
        await tx.mark_signal_processing(processing.signal_id)
        await tx.decide_signal(decided.signal_id, "ignored", "no open layers", "test", NOW)
        gold_trade, silver_trade = await tx.next_trade_id(), await tx.next_trade_id()
        base = await tx.insert_layer(new_layer(gold_trade, signal_id=received.signal_id))
        pyramid = await tx.insert_layer(new_layer(gold_trade, layer="Long_2", lots=1,
                                                  entry_price=Decimal("79300")))
        closing = await tx.insert_layer(new_layer(silver_trade, "SILVER_MINI"))
        closing = await tx.update_layer(closing, status="closing")
        closed = await tx.insert_layer(new_layer(silver_trade, "SILVER_MINI", "Long_2"))
        await tx.update_layer(closed, status="closed", exit_price=Decimal("79000"),
                              exit_timestamp=T0, exit_reason="EXIT", realized_pnl=Decimal("10"))
        pyramiding = await tx.save_pyramiding(PyramidingState(
            "GOLD_MINI", gold_trade, base.id, Decimal("79300"), 1))
        pending = await tx.insert_intent(NewIntent(
            processing.signal_id, "SILVER_MINI", Side.SELL, 3, 3, "MARKET",
            ExitPurpose("EXIT", (closing.id,)), position_ids=(closing.id,)))
        placed = await tx.insert_intent(NewIntent(None, "GOLD_MINI", Side.BUY, 1, 1, "LIMIT",
                                                  ENTRY, price=Decimal("79300.5")))
        placed = await tx.update_intent(placed, status="placed", broker_order_id="B1")
        filled = await tx.insert_intent(NewIntent(None, "GOLD_MINI", Side.BUY, 3, 3, "MARKET",
                                                  ENTRY))
        await tx.update_intent(filled, status="filled", filled_quantity=3,
                               average_price=Decimal("78500"))
    with pytest.raises(Abandoned):
        async with db.transaction() as tx:
            await tx.insert_layer(new_layer(await tx.next_trade_id(), "COPPER"))
            raise Abandoned
    return {
        "layers": [base, pyramid, closing], "pyramiding": [pyramiding],
        "portfolio": await db.portfolio_state(), "intents": [pending, placed],
        "signals": [received.signal_id, processing.signal_id],
    }


async def test_loaders_return_exactly_what_was_committed(dsn):
    async with DatabaseStateManager(dsn) as first_run:
        committed = await build_book(first_run)
    async with DatabaseStateManager(dsn) as second_run:
        assert await second_run.load_live_layers() == committed["layers"]
        assert await second_run.load_pyramiding_states() == committed["pyramiding"]
        assert await second_run.load_portfolio_state() == committed["portfolio"]
        assert await second_run.load_unresolved_intents() == committed["intents"]
        pending = await second_run.load_pending_signals()
        assert [s.id for s in pending] == committed["signals"]
        assert [s.status for s in pending] == ["received", "processing"]
        await second_run.load_cache()
        assert await second_run.all_live_layers() == committed["layers"]
        assert await second_run.live_layers("COPPER") == []
        assert await second_run.pyramiding_state("GOLD_MINI") == committed["pyramiding"][0]
        assert await second_run.pyramiding_state("COPPER") is None


async def test_a_decided_signal_cannot_be_decided_again(db):
    from core.errors import SignalAlreadyDecided

    admitted = await db.admit_signal(new_signal(), 60)
    async with db.transaction() as tx:
        await tx.decide_signal(admitted.signal_id, "blocked", "already in position", "t", NOW)
    with pytest.raises(SignalAlreadyDecided):
        async with db.transaction() as tx:
            await tx.decide_signal(admitted.signal_id, "executed", None, "t", NOW)
    stored = await db.signal(admitted.signal_id)
    assert (stored.outcome, stored.reason) == ("blocked", "already in position")
