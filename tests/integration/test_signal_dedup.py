"""The durable inbox: exact repeats and TradingView re-fires within the window are duplicates."""

from __future__ import annotations

import asyncio

import pytest

from core.db_state_manager import DatabaseStateManager
from tests.support.factories import new_signal

WINDOW_S = 60


async def admit(db, signal):
    return await db.admit_signal(signal, WINDOW_S)


async def test_fifty_concurrent_identical_signals_one_accepted(db, postgresql):
    signal = new_signal()
    results = await asyncio.gather(*(admit(db, signal) for _ in range(50)))
    assert sum(r.accepted for r in results) == 1
    assert len({r.signal_id for r in results}) == 1
    assert postgresql.execute("SELECT count(*) FROM signal_log").fetchone()[0] == 1


async def test_concurrent_refires_within_window_one_accepted(db, postgresql):
    refires = [new_signal(delta_s=d) for d in range(0, 40, 2)]
    results = await asyncio.gather(*(admit(db, s) for s in refires))
    assert sum(r.accepted for r in results) == 1
    assert postgresql.execute("SELECT count(*) FROM signal_log").fetchone()[0] == 1


@pytest.mark.parametrize(("delta_s", "accepted"), [(0, False), (30, False), (60, False),
                                                   (61, True), (-60, False), (-61, True)])
async def test_window_rule(db, delta_s, accepted):
    first = await admit(db, new_signal())
    second = await admit(db, new_signal(delta_s=delta_s))
    assert first.accepted
    assert second.accepted is accepted
    if not accepted:
        assert second.signal_id == first.signal_id


async def test_window_is_per_instrument_type_and_position(db):
    await admit(db, new_signal())
    assert (await admit(db, new_signal(position="Long_2", delta_s=5))).accepted
    assert (await admit(db, new_signal(signal_type="EXIT", delta_s=5))).accepted
    assert (await admit(db, new_signal(instrument="SILVER_MINI", delta_s=5))).accepted


async def test_market_data_uses_exact_fingerprint_only(db):
    assert (await admit(db, new_signal("MARKET_DATA", position=None))).accepted
    assert (await admit(db, new_signal("MARKET_DATA", position=None, delta_s=30))).accepted
    assert not (await admit(db, new_signal("MARKET_DATA", position=None))).accepted


async def test_dedup_survives_a_restart(dsn):
    async with DatabaseStateManager(dsn) as first_run:
        original = await admit(first_run, new_signal())
    async with DatabaseStateManager(dsn) as second_run:
        again = await admit(second_run, new_signal())
        refire = await admit(second_run, new_signal(delta_s=45))
    assert original.accepted and not again.accepted and not refire.accepted
    assert again.signal_id == refire.signal_id == original.signal_id


async def test_payload_is_stored_without_loss(db):
    signal = new_signal()
    admitted = await admit(db, signal)
    stored = await db.signal(admitted.signal_id)
    assert stored.status == "received" and stored.outcome is None
    assert stored.payload["price"] == "78500"
    assert stored.signal_timestamp == signal.signal_timestamp
