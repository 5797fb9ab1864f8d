"""The fake book store keeps the PostgreSQL adapter's rules (the ones the engine relies on).

The same rules are tested against real PostgreSQL in tests/integration; these pin the fake,
so that the fast engine tests run against a store that behaves like the real one.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from core.errors import InsufficientEquity, SignalAlreadyDecided, VersionConflict
from core.intents import EntryPurpose, ExitPurpose
from core.models import (
    IntentStatus,
    LayerStatus,
    LedgerType,
    NewIntent,
    NewLayer,
    NewSignal,
    Outcome,
    PyramidingState,
    Side,
    SignalStatus,
)
from core.signals import fingerprint
from tests.fakes.book_store import ConstraintViolation, FakeBookStore
from tests.support.trading import START

D = Decimal
ENTRY = EntryPurpose(layer="Long_1", trade_id=None, initial_stop=D("77800"), atr=D("700"),
                     limiter="risk")


def new_signal(kind: str = "BASE_ENTRY", position: str | None = "Long_1", seconds: int = 0,
               instrument: str = "GOLD_MINI") -> NewSignal:
    at = START + timedelta(seconds=seconds)
    return NewSignal(fingerprint(instrument, kind, position, at), kind, instrument, position, at,
                     {"price": D("78500")}, at)


def new_layer(layer: str = "Long_1") -> NewLayer:
    return NewLayer(trade_id=1, instrument="GOLD_MINI", layer=layer, lots=7, quantity=7,
                    entry_price=D("78500"), entry_timestamp=START, initial_stop=D("77800"),
                    atr=D("700"), limiter="risk")


@pytest.fixture
def store() -> FakeBookStore:
    book = FakeBookStore()
    book.seed(D("5000000"))
    return book


async def open_layer(store: FakeBookStore):
    async with store.transaction() as tx:
        return await tx.insert_layer(new_layer())


async def test_a_failed_block_applies_nothing_and_a_clean_one_everything(store):
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.insert_layer(new_layer())
            await tx.append_ledger(LedgerType.DEPOSIT, D("100"))
            raise RuntimeError("boom")
    assert store.tables.layers == {} and await store.live_layers("GOLD_MINI") == []
    assert (await store.portfolio_state()).closed_equity == D("5000000")
    layer = await open_layer(store)
    assert (layer.status, layer.current_stop, layer.highest_close, layer.version) == (
        LayerStatus.OPEN, D("77800"), D("78500"), 1)
    assert layer.id == 2  # ids come from a sequence: a rollback does not give them back
    assert await store.live_layers("GOLD_MINI") == [layer]


async def test_updates_check_and_increment_the_version(store):
    layer = await open_layer(store)
    async with store.transaction() as tx:
        moved = await tx.update_layer(layer, current_stop=D("78000"))
    assert moved.version == 2
    with pytest.raises(VersionConflict):
        async with store.transaction() as tx:
            await tx.update_layer_later(layer, status=LayerStatus.CLOSING)
    with pytest.raises(ValueError):
        async with store.transaction() as tx:
            await tx.update_layer(moved, trade_id=2)
    with pytest.raises(VersionConflict):  # a later conflict undoes the whole transaction
        async with store.transaction() as tx:
            await tx.append_ledger(LedgerType.DEPOSIT, D("100"))
            await tx.update_layer_later(layer, status=LayerStatus.CLOSING)
    assert (await store.portfolio_state()).closed_equity == D("5000000")
    assert (await store.live_layers("GOLD_MINI"))[0] == moved


async def test_the_cache_misses_another_writer_until_reloaded(store):
    layer = await open_layer(store)
    assert await store.live_layers("GOLD_MINI") == [layer]  # now cached
    store.change_behind_cache(layer.id, current_stop=D("78000"))
    assert (await store.live_layers("GOLD_MINI"))[0].version == 1
    with pytest.raises(VersionConflict):
        async with store.transaction() as tx:
            await tx.update_layer(layer, status=LayerStatus.CLOSING)
    assert (await store.live_layers("GOLD_MINI"))[0].version == 2  # a failure drops it
    store.change_behind_cache(layer.id, current_stop=D("78100"))
    await store.load_cache()
    assert (await store.live_layers("GOLD_MINI"))[0].current_stop == D("78100")


async def test_concurrent_writers_of_one_row_conflict_at_commit(store):
    layer = await open_layer(store)
    with pytest.raises(VersionConflict):
        async with store.transaction() as first:
            await first.update_layer(layer, current_stop=D("78000"))
            async with store.transaction() as second:
                await second.update_layer(layer, current_stop=D("78100"))
    assert store.tables.layers[layer.id].current_stop == D("78100")


async def test_pyramiding_state_is_versioned_and_deleted(store):
    state = PyramidingState("GOLD_MINI", 1, None, D("78500"), 0)
    async with store.transaction() as tx:
        saved = await tx.save_pyramiding(state)
    assert saved.version == 1
    with pytest.raises(VersionConflict):  # a second insert
        async with store.transaction() as tx:
            await tx.save_pyramiding(state)
    async with store.transaction() as tx:
        assert (await tx.save_pyramiding(saved)).version == 2
        await tx.delete_pyramiding("GOLD_MINI")
    assert await store.pyramiding_state("GOLD_MINI") is None


async def test_ledger_moves_closed_equity_and_the_high_water_mark(store):
    async with store.transaction() as tx:
        first = await tx.insert_layer(new_layer())
        second = await tx.insert_layer(new_layer("Long_2"))
        await tx.append_ledger(LedgerType.TRADING_PNL, D("-10000"), position_id=first.id)
        await tx.append_ledger(LedgerType.DEPOSIT, D("100000"))  # high shifts by the amount
        await tx.append_ledger(LedgerType.TRADING_PNL, D("5000"), position_id=second.id)
    state = await store.portfolio_state()
    assert (state.closed_equity, state.equity_high) == (D("5095000"), D("5100000"))
    async with store.transaction() as tx:
        entry = await tx.append_ledger(LedgerType.WITHDRAW, D("95000"))
    assert (entry.equity_before, entry.equity_after) == (D("5095000"), D("5000000"))
    assert (await store.portfolio_state()).equity_high == D("5005000")
    with pytest.raises(ConstraintViolation):  # one P&L row per position
        async with store.transaction() as tx:
            await tx.append_ledger(LedgerType.TRADING_PNL, D("1"), position_id=first.id)
    with pytest.raises(InsufficientEquity):
        async with store.transaction() as tx:
            await tx.append_ledger(LedgerType.WITHDRAW, D("6000000"))


async def test_a_partial_exit_copies_the_layer_into_a_closed_row(store):
    layer = await open_layer(store)
    async with store.transaction() as tx:
        await tx.update_layer_later(layer, lots=4, quantity=4)
        part = await tx.insert_closed_part(layer, 3, 3, exit_price=D("79000"),
                                           exit_timestamp=START, exit_reason="x",
                                           realized_pnl=D("15000"))
    closed = store.tables.layers[part]
    assert (closed.id != layer.id, closed.status, closed.lots, closed.entry_price) == (
        True, LayerStatus.CLOSED, 3, D("78500"))
    assert [x.lots for x in await store.live_layers("GOLD_MINI")] == [4]


async def test_signal_decisions_follow_decide_sql(store):
    admission = await store.admit_signal(new_signal(), 60)
    async with store.transaction() as tx:
        await tx.mark_signal_processing(admission.signal_id)
    with pytest.raises(SignalAlreadyDecided):
        async with store.transaction() as tx:
            await tx.mark_signal_processing(admission.signal_id)
    await store.record_decision(admission.signal_id, Outcome.ERROR, "processing error: X",
                                "test", START)
    async with store.transaction() as tx:  # an `error` may be replaced by what happened
        await tx.decide_signal(admission.signal_id, Outcome.EXECUTED, None, "test", START)
    with pytest.raises(SignalAlreadyDecided):
        await store.record_decision(admission.signal_id, Outcome.REJECTED, "x", "test", START)
    record = await store.signal(admission.signal_id)
    assert (record.status, record.outcome) == (SignalStatus.PROCESSED, Outcome.EXECUTED)
    assert await store.latest_event("signal_decided") == {
        "outcome": "error", "reason": "processing error: X"}


async def test_admission_applies_both_dedup_rules(store):
    first = await store.admit_signal(new_signal(), 60)
    assert first.accepted
    repeat = await store.admit_signal(new_signal(seconds=60), 60)  # the window is inclusive
    assert (repeat.signal_id, repeat.accepted) == (first.signal_id, False)
    assert (await store.admit_signal(new_signal(seconds=-61), 60)).accepted
    assert (await store.admit_signal(new_signal("PYRAMID", "Long_2", 5), 60)).accepted
    market = await store.admit_signal(new_signal("MARKET_DATA", None), 60)
    assert market.accepted  # the window rule is for trade signals only
    assert (await store.admit_signal(new_signal("MARKET_DATA", None, 1), 60)).accepted
    again = await store.admit_signal(new_signal("MARKET_DATA", None), 60)
    assert (again.signal_id, again.accepted) == (market.signal_id, False)  # the fingerprint
    late = await store.admit_signal(new_signal(instrument="SILVER_MINI"), 60, "stale", "test")
    record = await store.signal(late.signal_id)
    assert (record.status, record.outcome, record.reason, record.processed_by) == (
        SignalStatus.PROCESSED, Outcome.REJECTED, "stale", "test")
    assert late.signal_id == 7  # the fingerprint repeat used up a sequence value
    assert [s.id for s in await store.load_pending_signals()] == [1, 2, 3, 4, 5]


async def test_intents_are_tagged_pending_and_versioned(store):
    admission = await store.admit_signal(new_signal(), 60)
    async with store.transaction() as tx:
        intent = await tx.insert_intent(NewIntent(
            admission.signal_id, "GOLD_MINI", Side.BUY, 7, 7, "MARKET", ENTRY, D("78500")))
        exit_intent = await tx.insert_intent(NewIntent(
            None, "GOLD_MINI", Side.SELL, 7, 7, "MARKET",
            ExitPurpose("x", (1,)), D("79000"), position_ids=(1,)))
    assert (intent.tag, intent.status, intent.purpose) == (
        f"PM{intent.id}", IntentStatus.PENDING, ENTRY)
    assert exit_intent.position_ids == [1]
    async with store.transaction() as tx:
        await tx.update_intent_later(intent, status=IntentStatus.FILLED, filled_quantity=7,
                                     average_price=D("78500"))
    assert await store.intents_for_signal(admission.signal_id) == [
        store.tables.intents[intent.id]]
    assert [i.id for i in await store.load_unresolved_intents()] == [exit_intent.id]
    with pytest.raises(VersionConflict):
        async with store.transaction() as tx:
            await tx.update_intent(intent, status=IntentStatus.REJECTED)


async def test_fail_next_fires_once(store):
    store.fail_next("insert_layer", OSError("disk"))
    with pytest.raises(OSError):
        await open_layer(store)
    assert (await open_layer(store)).status == LayerStatus.OPEN
    store.fail_next("commit", OSError("commit"))
    with pytest.raises(OSError):
        async with store.transaction() as tx:
            await tx.append_ledger(LedgerType.DEPOSIT, D("1"))
    assert (await store.portfolio_state()).closed_equity == D("5000000")
