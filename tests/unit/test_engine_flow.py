"""Decide-persist-act through the real Inbox, engine and order flow, on the in-memory book.

FakeBookStore stands in for PostgreSQL (STYLE.md §29) and MemoryBroker for the venue, so
every path below runs in milliseconds; the SQL itself keeps its real-PostgreSQL tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from core.book_store import BookStore
from core.models import IntentStatus, LayerStatus, LedgerType, Outcome, SignalOutcome, SignalStatus
from core.signals import parse_signal, storable_payload
from live.engine import LiveTradingEngine
from live.inbox import Inbox
from live.metrics import Metrics
from live.order_flow import OrderFlow
from live.readiness import Readiness
from tests.fakes.book_store import FakeBookStore
from tests.fakes.memory_broker import MemoryBroker
from tests.support.trading import INSTRUMENTS, PORTFOLIO, Clock, signal_payload

D = Decimal
GOLD = "GOLD_MINI"


@dataclass
class System:
    store: FakeBookStore = field(default_factory=FakeBookStore)
    broker: MemoryBroker = field(default_factory=MemoryBroker)
    clock: Clock = field(default_factory=Clock)
    readiness: Readiness = field(default_factory=Readiness)
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.store.seed(PORTFOLIO.initial_capital)
        db: BookStore = self.store  # the port the engine sees (tests/ is not type-checked)
        self.flow = OrderFlow(db, self.broker, INSTRUMENTS, processed_by="test",
                              clock=self.clock, metrics=self.metrics, poll_interval_s=0.001,
                              poll_interval_max_s=0.01, settle_s=0.001)
        self.engine = LiveTradingEngine(db, self.broker, INSTRUMENTS, PORTFOLIO, self.flow,
                                        processed_by="test", clock=self.clock,
                                        metrics=self.metrics, readiness=self.readiness)
        self.inbox = Inbox(db, self.engine, INSTRUMENTS, PORTFOLIO, processed_by="test",
                           clock=self.clock, metrics=self.metrics)

    async def admit(self, kind: str, **kwargs: Any) -> tuple[int, SignalOutcome | None]:
        kwargs.setdefault("at", self.clock.now)
        payload = signal_payload(kind, **kwargs)
        admission, outcome = await self.inbox.submit(parse_signal(payload, INSTRUMENTS),
                                                     storable_payload(payload), self.clock.now)
        assert admission.accepted
        return admission.signal_id, outcome

    async def submit(self, kind: str, **kwargs: Any) -> int:
        signal_id, outcome = await self.admit(kind, **kwargs)
        assert outcome is None
        return signal_id

    async def send(self, kind: str, **kwargs: Any) -> SignalOutcome:
        """Send a signal and return its outcome (decided with its admission or after)."""
        self.inbox.start_processing()
        signal_id, outcome = await self.admit(kind, **kwargs)
        if outcome is None:
            outcome = await self.inbox.wait_for_decision(signal_id, 2)
        assert outcome is not None, f"signal {signal_id} got no outcome"
        self.clock.advance(61)  # past the dedup window for the next signal
        return outcome

    async def layers(self, instrument: str = GOLD) -> list[Any]:
        return await self.store.live_layers(instrument)

    def ledger(self, txn_type: LedgerType) -> list[Any]:
        return [e for e in self.store.tables.ledger.values() if e.txn_type == txn_type]

    def sells(self) -> list[Any]:
        return [o for o in self.broker.orders.values() if o.side == "SELL"]


@pytest.fixture
async def system() -> AsyncIterator[System]:
    built = System()
    yield built
    await built.inbox.stop(1)


async def test_base_entry_fills_one_intent_and_opens_a_sized_layer(system):
    outcome = await system.send("BASE_ENTRY", price="78500", stop="77800")
    # Lot-R = 5,000,000 × 1% / (700 × 10) × 1.0 = 7.14 → 7 lots, limited by risk
    assert (outcome.outcome, outcome.result["lots"], outcome.result["limiter"]) == (
        Outcome.EXECUTED, 7, "risk")
    [intent] = await system.store.intents_for_signal(outcome.signal_id)
    assert (intent.tag, intent.status, intent.filled_quantity) == (
        f"PM{intent.id}", IntentStatus.FILLED, 7)
    [order] = system.broker.by_tag(intent.tag)
    assert (order.side, order.quantity, intent.broker_order_id) == ("BUY", 7, order.order_id)
    assert list(system.store.tables.fills) == [order.trades[0].trade_id]
    [layer] = await system.layers()
    assert (layer.lots, layer.entry_price, layer.initial_stop, layer.current_stop,
            layer.status, layer.limiter) == (7, D("78500"), D("77800"), D("77800"),
                                             LayerStatus.OPEN, "risk")
    state = await system.store.pyramiding_state(GOLD)
    assert (state.base_position_id, state.trade_id, state.pyramid_count,
            state.last_pyramid_price) == (layer.id, layer.trade_id, 0, D("78500"))
    record = await system.store.signal(outcome.signal_id)
    assert (record.status, record.outcome) == (SignalStatus.PROCESSED, Outcome.EXECUTED)
    assert await system.broker.positions() == {GOLD: 7}


async def test_blocked_entries_write_no_intent(system):
    wide = await system.send("BASE_ENTRY", price="78500", stop="8500")  # risk too wide
    assert (wide.outcome, wide.reason) == (Outcome.BLOCKED, "Zero lots (limited by risk)")
    await system.send("BASE_ENTRY")
    again = await system.send("BASE_ENTRY", price="79000")
    assert (again.outcome, again.reason) == (Outcome.BLOCKED, "already in position")
    assert await system.store.intents_for_signal(wide.signal_id) == []
    assert await system.store.intents_for_signal(again.signal_id) == []
    assert len(system.store.tables.intents) == len(system.broker.orders) == 1
    decided = [e["details"] for e in system.store.events("signal_decided")]
    assert decided == [{"outcome": "blocked", "reason": "Zero lots (limited by risk)"},
                       {"outcome": "blocked", "reason": "already in position"}]


async def test_exit_books_pnl_in_the_ledger_and_closes_the_layer(system):
    await system.send("BASE_ENTRY", price="78500", stop="77800")  # 7 lots
    [layer] = await system.layers()
    outcome = await system.send("EXIT", position="Long_1", price="79000")
    assert (outcome.outcome, outcome.result["pnl"]) == (Outcome.EXECUTED, "35000.00")
    portfolio = await system.store.portfolio_state()
    assert (portfolio.closed_equity, portfolio.equity_high) == (D("5035000"), D("5035000"))
    [pnl] = system.ledger(LedgerType.TRADING_PNL)
    assert (pnl.amount, pnl.equity_before, pnl.equity_after, pnl.position_id) == (
        D("35000"), D("5000000"), D("5035000"), layer.id)
    closed = system.store.tables.layers[layer.id]
    assert (closed.status, closed.exit_price, closed.exit_reason, closed.realized_pnl) == (
        LayerStatus.CLOSED, D("79000"), "trend reversal", D("35000"))
    assert await system.layers() == []
    assert await system.store.pyramiding_state(GOLD) is None  # flat: the trade is over
    assert await system.broker.positions() == {}
    again = await system.send("EXIT", position="Long_1", price="79100")
    assert (again.outcome, again.reason) == (Outcome.IGNORED, "no open layer Long_1")
    assert len(system.ledger(LedgerType.TRADING_PNL)) == 1


async def test_a_loss_lowers_closed_equity_but_not_the_high_water_mark(system):
    await system.send("BASE_ENTRY", price="78500", stop="77800")
    outcome = await system.send("EXIT", position="Long_1", price="78000")
    assert outcome.result["pnl"] == "-35000.00"
    portfolio = await system.store.portfolio_state()
    assert (portfolio.closed_equity, portfolio.equity_high) == (D("4965000"), D("5000000"))


async def test_exit_all_of_base_and_pyramid_is_one_broker_order(system):
    await system.send("BASE_ENTRY", price="78500", stop="77800")
    pyramid = await system.send("PYRAMID", position="Long_2", price="80000", stop="79500")
    assert (pyramid.outcome, pyramid.result["lots"], pyramid.result["limiter"]) == (
        Outcome.EXECUTED, 3, "geometric")
    state = await system.store.pyramiding_state(GOLD)
    assert (state.pyramid_count, state.last_pyramid_price) == (1, D("80000"))
    layers = await system.layers()
    assert [(x.layer, x.lots, x.trade_id) for x in layers] == [
        ("Long_1", 7, layers[0].trade_id), ("Long_2", 3, layers[0].trade_id)]
    outcome = await system.send("EXIT", position="ALL", price="80000")
    assert outcome.outcome == Outcome.EXECUTED
    assert sorted(outcome.result["positions_closed"]) == [x.id for x in layers]
    [sell] = system.sells()
    assert sell.quantity == 10
    # (80,000 − 78,500) × 7 × 10 + 0 for the pyramid
    assert sorted(e.amount for e in system.ledger(LedgerType.TRADING_PNL)) == [D(0), D("105000")]
    assert await system.layers() == []
    assert await system.store.pyramiding_state(GOLD) is None
    assert await system.broker.positions() == {}


@pytest.mark.parametrize("raise_", [False, True], ids=["rejected_order", "order_rejected_error"])
async def test_broker_rejection_of_an_exit_keeps_it_pending_until_it_fills(system, raise_):
    await system.send("BASE_ENTRY", price="78500", stop="77800")
    [layer] = await system.layers()
    system.broker.reject_next("RMS: blocked for trading", raise_=raise_)
    outcome = await system.send("EXIT", position="Long_1", price="79000")
    pending = "RMS: blocked for trading; exit pending, retried until flat"
    assert (outcome.outcome, outcome.reason) == (Outcome.REJECTED, pending)
    [closing] = await system.layers()
    assert (closing.id, closing.status, closing.lots) == (layer.id, LayerStatus.CLOSING, 7)
    record = await system.store.signal(outcome.signal_id)
    assert (record.outcome, record.reason) == (Outcome.REJECTED, pending)
    [intent] = await system.store.intents_for_signal(outcome.signal_id)
    assert (intent.status, intent.reason) == (IntentStatus.REJECTED, "RMS: blocked for trading")
    # The next attempt is committed with the refusal: the same layer, quantity and contract.
    [retry] = await system.store.load_unresolved_intents()
    assert (retry.tag, retry.signal_id, retry.position_ids, retry.quantity,
            retry.tradingsymbol) == (outcome.result["exit_pending"], None, [layer.id], 7, GOLD)
    assert (retry.purpose.attempt, retry.purpose.retry_of) == (1, intent.id)
    assert system.ledger(LedgerType.TRADING_PNL) == []
    assert await system.broker.positions() == {GOLD: 7}
    # A second EXIT meanwhile sells nothing more: the layer's exit is already under way.
    again = await system.send("EXIT", position="Long_1", price="79000")
    assert (again.outcome, again.reason) == (Outcome.IGNORED, "already closing")
    assert [o.status for o in system.sells()] == (["REJECTED"] if not raise_ else [])
    outcome = await system.flow.complete(retry, fresh=False)
    assert outcome.outcome == Outcome.EXECUTED and await system.layers() == []
    assert [e.amount for e in system.ledger(LedgerType.TRADING_PNL)] == [D("35000")]


async def test_market_data_trails_the_stop_without_an_order_then_a_hit_exits(system):
    await system.send("BASE_ENTRY", price="78500", stop="77800")
    up = await system.send("MARKET_DATA", position=None, price="80000", atr="500")
    [layer] = await system.layers()
    # trail = 80,000 − 2.0 × 500 = 79,000
    assert (layer.highest_close, layer.current_stop) == (D("80000"), D("79000"))
    assert up.outcome == Outcome.EXECUTED
    assert {k: D(v) for k, v in up.result["stops"].items()} == {str(layer.id): D("79000")}
    down = await system.send("MARKET_DATA", position=None, price="79500", atr="900")
    assert down.outcome == Outcome.EXECUTED
    assert (await system.layers())[0].current_stop == D("79000")  # never moves down
    assert system.sells() == [] and len(system.store.tables.intents) == 1
    hit = await system.send("MARKET_DATA", position=None, price="78900", atr="500")
    assert hit.outcome == Outcome.EXECUTED
    assert await system.layers() == []
    closed = system.store.tables.layers[layer.id]
    assert (closed.exit_reason, closed.exit_price, closed.current_stop) == (
        "PM_STOP_HIT", D("78900"), D("79000"))
    [sell] = system.sells()
    assert sell.quantity == 7


async def test_entry_processed_after_max_entry_delay_is_rejected_stale(system):
    signal_id = await system.submit("BASE_ENTRY")
    system.clock.advance(PORTFOLIO.max_entry_delay_s + 1)  # an outage held it in the inbox
    system.inbox.start_processing()
    outcome = await system.inbox.wait_for_decision(signal_id, 2)
    assert (outcome.outcome, outcome.reason) == (Outcome.REJECTED, "stale")
    assert system.store.tables.intents == {} and system.broker.orders == {}
    assert (await system.store.signal(signal_id)).outcome == Outcome.REJECTED


async def test_version_conflict_reloads_and_decides_again(system):
    await system.send("BASE_ENTRY", price="78500", stop="77800")
    [layer] = await system.layers()
    # Another writer moves the layer behind the cache's back.
    moved = system.store.change_behind_cache(layer.id, current_stop=D("78000"))
    assert (await system.layers())[0].version == layer.version  # the cache is stale
    with capture_logs() as logs:
        outcome = await system.send("EXIT", position="Long_1", price="79000")
    assert "conflict_reloading" in [entry["event"] for entry in logs]
    assert outcome.outcome == Outcome.EXECUTED
    assert len(system.sells()) == 1 and len(system.ledger(LedgerType.TRADING_PNL)) == 1
    closed = system.store.tables.layers[layer.id]
    assert (closed.status, closed.current_stop) == (LayerStatus.CLOSED, D("78000"))
    assert closed.version == moved.version + 2  # closing, closed: nothing overwritten


async def test_unexpected_error_decides_error_and_blocks_only_that_instruments_entries(
        system):
    await system.send("BASE_ENTRY", price="78500", stop="77800")
    system.store.fail_next("insert_intent", psycopg.DataError("numeric field overflow"))
    failed = await system.send("PYRAMID", position="Long_2", price="80000", stop="79500")
    assert (failed.outcome, failed.reason) == (Outcome.ERROR, "processing error: DataError")
    record = await system.store.signal(failed.signal_id)
    assert (record.status, record.outcome, record.reason) == (
        SignalStatus.PROCESSED, Outcome.ERROR, "processing error: DataError")
    assert await system.store.intents_for_signal(failed.signal_id) == []  # rolled back
    assert f"processing_error:{GOLD}" in system.readiness.reasons()

    blocked = await system.send("PYRAMID", position="Long_2", price="80000", stop="79500")
    assert blocked.outcome == Outcome.REJECTED
    assert blocked.reason.startswith("entries blocked") and GOLD in blocked.reason

    silver = await system.send("BASE_ENTRY", instrument="SILVER_MINI", price="90000",
                               stop="89000")
    assert silver.outcome == Outcome.EXECUTED and silver.result["lots"] > 0
    exit_ = await system.send("EXIT", position="Long_1", price="79000")
    assert exit_.outcome == Outcome.EXECUTED
    assert await system.layers() == []
    assert [x.instrument for x in await system.store.all_live_layers()] == ["SILVER_MINI"]


async def test_version_conflict_at_the_fill_books_the_one_order_already_placed(system):
    await system.send("BASE_ENTRY", price="78500", stop="77800")
    [layer] = await system.layers()

    def meanwhile(request):  # between the closing commit and the fill's transaction
        system.broker.on_place = None
        system.store.change_behind_cache(layer.id, current_stop=D("78100"))

    system.broker.on_place = meanwhile
    with capture_logs() as logs:
        outcome = await system.send("EXIT", position="Long_1", price="79000")
    assert "conflict_reloading" in [entry["event"] for entry in logs]
    assert (outcome.outcome, outcome.result["pnl"]) == (Outcome.EXECUTED, "35000.00")
    [sell] = system.sells()  # the resumed intent adopted its order by tag: no second one
    [intent] = await system.store.intents_for_signal(outcome.signal_id)
    assert (intent.status, intent.broker_order_id) == (IntentStatus.FILLED, sell.order_id)
    closed = system.store.tables.layers[layer.id]
    assert (closed.status, closed.current_stop) == (LayerStatus.CLOSED, D("78100"))
    assert len(system.ledger(LedgerType.TRADING_PNL)) == 1
    assert await system.broker.positions() == {}


async def test_failure_in_the_fill_transaction_leaves_no_order_unbooked(system):
    from live.recovery import recover

    system.store.fail_next("insert_layer", psycopg.DataError("value out of range"))
    failed = await system.send("BASE_ENTRY", price="78500", stop="77800")
    assert (failed.outcome, failed.reason) == (Outcome.ERROR, "processing error: DataError")
    # The broker filled the order: the failure path drives its intent again and books it.
    [intent] = await system.store.intents_for_signal(failed.signal_id)
    assert intent.status == IntentStatus.FILLED
    [layer] = await system.layers()
    assert (layer.lots, layer.signal_id) == (7, failed.signal_id)
    assert await system.broker.positions() == {GOLD: 7}
    record = await system.store.signal(failed.signal_id)
    assert record.outcome == Outcome.EXECUTED  # what the broker did replaces `error`
    assert "processing_error:GOLD_MINI" in system.readiness.reasons()  # still looked at

    await system.inbox.stop(1)  # a restart on the same book and venue has nothing to do
    restarted = System(store=system.store, broker=system.broker, clock=system.clock)
    try:
        await recover(restarted.store, restarted.broker, restarted.inbox, restarted.flow,
                      PORTFOLIO, restarted.readiness, stage_timeout_s=5)
        assert restarted.readiness.reasons() == []
        assert len(restarted.broker.orders) == 1
    finally:
        await restarted.inbox.stop(1)
