"""Startup recovery after a crash at each step of the intent protocol."""

from __future__ import annotations

from decimal import Decimal

from core.intents import EntryPurpose
from core.models import NewSignal, Side
from core.signals import parse_signal, storable_payload
from tests.support.trading import INSTRUMENTS, Trading, signal_payload


def count(postgresql, table: str, where: str = "true") -> int:
    return postgresql.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]


async def stored_signal(trading: Trading, kind: str = "BASE_ENTRY", **fields) -> int:
    """Make a signal durable, as the webhook does, and crash before the engine sees it."""
    payload = signal_payload(kind, at=trading.clock.now, **fields)
    signal = parse_signal(payload, INSTRUMENTS)
    admission = await trading.db.admit_signal(NewSignal(
        signal.fingerprint, signal.signal_type.value, signal.instrument, signal.position,
        signal.timestamp, storable_payload(payload), trading.clock.now), 60)
    return admission.signal_id


async def intent_for(trading: Trading, signal_id: int):
    """Commit the entry intent for a stored signal, as the engine does before calling the broker."""
    async with trading.db.transaction() as tx:
        return await trading.flow.open_intent(
            tx, signal_id, "GOLD_MINI", Side.BUY, 2, Decimal("78500"),
            EntryPurpose(layer="Long_1", trade_id=None, initial_stop=Decimal("77800"),
                         atr=Decimal("700"), limiter="risk"))


async def restart(runs) -> tuple[Trading, list[str]]:
    trading = await runs()
    return trading, await trading.recover()


async def test_signal_stored_but_not_processed_is_processed_once(runs, postgresql):
    first = await runs()
    signal_id = await stored_signal(first)
    second, reasons = await restart(runs)
    assert reasons == []
    assert count(postgresql, "signal_log", f"id = {signal_id} AND outcome = 'executed'") == 1
    assert count(postgresql, "paper_orders") == 1
    third, _ = await restart(runs)  # a further restart finds nothing to do
    assert count(postgresql, "paper_orders") == 1


async def test_intent_committed_but_never_placed_is_placed_once(runs, postgresql):
    first = await runs()
    intent = await intent_for(first, await stored_signal(first))
    _, reasons = await restart(runs)
    assert reasons == []
    assert count(postgresql, "paper_orders", f"tag = '{intent.tag}'") == 1
    assert count(postgresql, "order_intents", "status = 'filled'") == 1
    assert len(await (await runs()).db.load_live_layers()) == 1


async def test_order_placed_but_not_recorded_is_adopted_not_repeated(runs, postgresql):
    first = await runs()
    intent = await intent_for(first, await stored_signal(first))
    await first.broker.place(first.flow._request(intent, intent.quantity))  # venue has it
    second, reasons = await restart(runs)
    assert reasons == []
    assert count(postgresql, "paper_orders", f"tag = '{intent.tag}'") == 1
    [layer] = await second.db.load_live_layers()
    assert layer.lots == 2
    assert count(postgresql, "signal_log", "outcome = 'executed'") == 1


async def test_entry_intent_past_its_deadline_is_given_up(runs, postgresql):
    first = await runs()
    signal_id = await stored_signal(first)
    await intent_for(first, signal_id)
    first.clock.advance(3600)  # the daemon stayed down for an hour
    await restart(runs)
    assert count(postgresql, "paper_orders") == 0
    assert count(postgresql, "signal_log", f"id = {signal_id} AND outcome = 'rejected'") == 1


async def test_exit_is_carried_out_however_late(runs, postgresql):
    first = await runs()
    await first.send("BASE_ENTRY")
    exit_id = await stored_signal(first, "EXIT", position="Long_1", price="79000")
    first.clock.advance(3600)
    second, _ = await restart(runs)
    assert count(postgresql, "signal_log", f"id = {exit_id} AND outcome = 'executed'") == 1
    assert await second.db.load_live_layers() == []


async def test_broker_book_mismatch_blocks_entries_and_is_reported(runs, postgresql):
    first = await runs()
    await first.send("BASE_ENTRY")
    postgresql.execute("DELETE FROM paper_trades")  # the venue lost the position
    second, reasons = await restart(runs)
    assert reasons == ["position mismatch GOLD_MINI: book 7, broker 0"]
    outcome = await second.send("PYRAMID", position="Long_2", price="80000", stop="79500")
    assert outcome.outcome == "rejected" and "entries blocked" in outcome.reason
    # Only that instrument's entries: which contract differs is known.
    other = await second.send("BASE_ENTRY", instrument="SILVER_MINI", price="90000",
                              stop="88000")
    assert other.outcome == "executed"
