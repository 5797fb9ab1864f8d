"""The order-intent protocol: durable intent, then the broker, then one transaction for the fill.

Every broker call is preceded by a committed intent whose tag the broker keeps, so after a
crash or an ambiguous failure the intent is resolved by looking the tag up: adopt what is
there, and place again only when the lookup proves nothing was placed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import structlog

from core.accounting import layer_pnl
from core.db_state_manager import DatabaseStateManager
from core.db_transaction import Transaction
from core.errors import VersionConflict
from core.models import (
    BASE_LAYER,
    LayerStatus,
    LedgerType,
    NewIntent,
    NewLayer,
    OrderIntent,
    PyramidingState,
    SignalOutcome,
)
from core.specs import InstrumentSpec
from live.brokers.base import (
    Broker,
    BrokerOrder,
    BrokerUnavailable,
    OrderRejected,
    OrderRequest,
    OrderStatus,
)
from live.metrics import Metrics

T = TypeVar("T")
CENT = Decimal("0.01")
log = structlog.get_logger(__name__)


def money(value: Decimal) -> str:
    return str(value.quantize(CENT))


class OrderFlow:
    def __init__(self, db: DatabaseStateManager, broker: Broker,
                 instruments: dict[str, InstrumentSpec], *, processed_by: str,
                 clock: Callable[[], datetime], metrics: Metrics, poll_interval_s: float = 0.25,
                 retry_max_s: float = 5.0):
        self._db = db
        self._broker = broker
        self._instruments = instruments
        self._processed_by = processed_by
        self._clock = clock
        self._metrics = metrics
        self._poll_interval_s = poll_interval_s
        self._retry_max_s = retry_max_s

    async def open_intent(self, tx: Transaction, signal_id: int | None, instrument: str,
                          side: str, lots: int, price: Decimal, purpose: dict[str, Any],
                          position_ids: tuple[int, ...] = ()) -> OrderIntent:
        """Write the intent (and move its signal to processing) inside `tx`."""
        spec = self._instruments[instrument]
        intent = await tx.insert_intent(NewIntent(
            signal_id=signal_id, instrument=instrument, side=side, lots=lots,
            quantity=spec.broker_quantity(lots), order_type="MARKET", price=price,
            tradingsymbol=self._broker.tradingsymbol(instrument, self._clock()),
            position_ids=position_ids, purpose=purpose))
        if signal_id is not None:
            await tx.mark_signal_processing(signal_id)
        await tx.log_event("intent_created", signal_id=signal_id, intent_id=intent.id,
                           instrument=instrument, side=side, lots=lots, tag=intent.tag,
                           purpose=purpose)
        return intent

    async def complete(self, intent: OrderIntent, *, fresh: bool,
                       deadline: datetime | None = None) -> SignalOutcome:
        """Drive a committed intent to its final state and record it; return the outcome.

        `fresh`: the intent was committed just now by this process, so nothing can have been
        placed yet and the tag lookup is skipped. `deadline`: an entry not placed by then is
        given up (only once the broker proves it holds no order with the tag).
        """
        order = await self._order_for(intent, fresh, deadline)
        if order is None:
            return await self.apply_rejection(intent, None, "stale: not placed in time")
        while not order.is_final:
            await asyncio.sleep(self._poll_interval_s)
            order = await self._retrying(lambda o=order: self._broker.order(o.order_id))
        self._metrics.orders.labels(order.status.value).inc()
        try:
            if order.filled_quantity > 0:
                return await self.apply_fill(intent, order)
            return await self.apply_rejection(
                intent, order.order_id or None,
                order.message or f"order {order.status.value.lower()}")
        except VersionConflict:
            recorded = await self._recorded_outcome(intent)
            if recorded is None:
                raise
            return recorded

    async def _recorded_outcome(self, intent: OrderIntent) -> SignalOutcome | None:
        """Return the outcome another process already recorded for this intent, if any."""
        current = next((i for i in await self._db.intents_for_signal(intent.signal_id or 0)
                        if i.id == intent.id), None)
        if current is None or current.status in ("pending", "placed", "partial"):
            return None
        record = await self._db.signal(intent.signal_id or 0)
        outcome = record.outcome if record and record.outcome else current.status
        return SignalOutcome(intent.signal_id or 0, outcome, record.reason if record else None)

    async def _order_for(self, intent: OrderIntent, fresh: bool,
                         deadline: datetime | None) -> BrokerOrder | None:
        if intent.broker_order_id:
            return await self._retrying(lambda: self._broker.order(intent.broker_order_id or ""))
        if not fresh:
            found = await self._retrying(lambda: self._broker.find_by_tag(intent.tag))
            if found:
                return found[0]
        while deadline is None or self._clock() <= deadline:
            try:
                started = time.perf_counter()
                order_id = await self._broker.place(self._request(intent))
                self._metrics.broker_latency.labels("place").observe(
                    time.perf_counter() - started)
                return await self._retrying(lambda o=order_id: self._broker.order(o))
            except OrderRejected as exc:
                return _refused(intent, str(exc))
            except BrokerUnavailable as exc:
                # The order may have been placed: never place again before looking.
                log.warning("placement_ambiguous", intent_id=intent.id, tag=intent.tag,
                            error=str(exc))
                found = await self._retrying(lambda: self._broker.find_by_tag(intent.tag))
                if found:
                    return found[0]
                await asyncio.sleep(self._poll_interval_s)
        return None

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """Repeat a read-only broker call until the broker answers."""
        delay = self._poll_interval_s
        while True:
            try:
                return await call()
            except BrokerUnavailable as exc:
                log.warning("broker_unavailable", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)

    def _request(self, intent: OrderIntent) -> OrderRequest:
        return OrderRequest(tag=intent.tag, instrument=intent.instrument,
                            tradingsymbol=intent.tradingsymbol or intent.instrument,
                            side=intent.side, quantity=intent.quantity,
                            order_type=intent.order_type, price=intent.price)

    # -- recording the outcome ------------------------------------------------------------
    async def apply_fill(self, intent: OrderIntent, order: BrokerOrder) -> SignalOutcome:
        """Record a filled order in one transaction: fills, intent, layers, ledger, signal."""
        now = self._clock()
        spec = self._instruments[intent.instrument]
        price = order.average_price or _average(order)
        filled_lots = _lots(spec, order.filled_quantity)
        async with self._db.transaction() as tx:
            status = "filled" if order.status == OrderStatus.COMPLETE else "cancelled"
            await tx.update_intent_later(intent, status=status, broker_order_id=order.order_id,
                                         filled_quantity=order.filled_quantity,
                                         average_price=price)
            for trade in order.trades:
                await tx.insert_fill(intent.id, trade.trade_id, trade.quantity, trade.price,
                                     trade.traded_at)
            if intent.purpose["kind"] == "entry":
                result = await self._open_layer(tx, intent, spec, filled_lots,
                                                order.filled_quantity, price, now)
            else:
                result = await self._close_layers(tx, intent, spec, price, now)
            if intent.signal_id is not None:
                await tx.decide_signal(intent.signal_id, "executed", None, self._processed_by,
                                       now)
            await tx.log_event("order_filled", signal_id=intent.signal_id, intent_id=intent.id,
                               instrument=intent.instrument, order_id=order.order_id,
                               filled_quantity=order.filled_quantity, price=price, **result)
        return SignalOutcome(intent.signal_id or 0, "executed", None, result)

    async def _open_layer(self, tx: Transaction, intent: OrderIntent, spec: InstrumentSpec,
                          lots: int, quantity: int, price: Decimal,
                          now: datetime) -> dict[str, Any]:
        purpose = intent.purpose
        layer = await tx.insert_layer(NewLayer(
            trade_id=int(purpose["trade_id"]), instrument=intent.instrument,
            layer=purpose["layer"], lots=lots, quantity=quantity, entry_price=price,
            entry_timestamp=now, initial_stop=Decimal(purpose["initial_stop"]),
            atr=Decimal(purpose["atr"]), limiter=purpose["limiter"],
            tradingsymbol=intent.tradingsymbol, signal_id=intent.signal_id))
        current = await self._db.pyramiding_state(intent.instrument)
        if layer.layer == BASE_LAYER:
            state = PyramidingState(intent.instrument, layer.trade_id, layer.id, price, 0,
                                    current.version if current else 0)
        else:
            assert current is not None, "a pyramid fill needs its trade's pyramiding state"
            state = replace(current, last_pyramid_price=price,
                            pyramid_count=current.pyramid_count + 1)
        await tx.save_pyramiding(state)
        return {"lots": lots, "position_id": layer.id, "fill_price": str(price),
                "limiter": layer.limiter}

    async def _close_layers(self, tx: Transaction, intent: OrderIntent, spec: InstrumentSpec,
                            price: Decimal, now: datetime) -> dict[str, Any]:
        ids = [int(i) for i in intent.purpose["position_ids"]]
        live = {layer.id: layer for layer in await self._db.live_layers(intent.instrument)}
        total = Decimal(0)
        for layer_id in ids:
            layer = live[layer_id]
            pnl = layer_pnl(layer.entry_price, price, layer.lots, spec.point_value).quantize(CENT)
            await tx.update_layer_later(layer, status=LayerStatus.CLOSED.value,
                                        exit_price=price, exit_timestamp=now,
                                        exit_reason=intent.purpose["reason"], realized_pnl=pnl)
            await tx.append_ledger(LedgerType.TRADING_PNL, pnl, position_id=layer_id)
            total += pnl
        if not set(live) - set(ids):
            await tx.delete_pyramiding(intent.instrument)  # flat: the trade is over
        return {"pnl": money(total), "positions_closed": ids, "fill_price": str(price)}

    async def apply_rejection(self, intent: OrderIntent, order_id: str | None,
                              message: str) -> SignalOutcome:
        """Record a refused order: nothing booked, exits' layers open again."""
        now = self._clock()
        async with self._db.transaction() as tx:
            await tx.update_intent_later(intent, status="rejected", reason=message,
                                         broker_order_id=order_id)
            if intent.purpose.get("kind") == "exit":
                live = {x.id: x for x in await self._db.live_layers(intent.instrument)}
                for layer_id in intent.purpose["position_ids"]:
                    await tx.update_layer_later(live[int(layer_id)],
                                                status=LayerStatus.OPEN.value)
            if intent.signal_id is not None:
                await tx.decide_signal(intent.signal_id, "rejected", message,
                                       self._processed_by, now)
            await tx.log_event("order_rejected", signal_id=intent.signal_id,
                               intent_id=intent.id, instrument=intent.instrument,
                               reason=message)
        return SignalOutcome(intent.signal_id or 0, "rejected", message)


def _refused(intent: OrderIntent, message: str) -> BrokerOrder:
    return BrokerOrder(order_id="", tag=intent.tag, tradingsymbol=intent.tradingsymbol or "",
                       side=intent.side, quantity=intent.quantity, status=OrderStatus.REJECTED,
                       filled_quantity=0, average_price=None, message=message)


def _average(order: BrokerOrder) -> Decimal:
    quantity = sum(t.quantity for t in order.trades)
    return sum((t.price * t.quantity for t in order.trades), Decimal(0)) / quantity


def _lots(spec: InstrumentSpec, quantity: int) -> int:
    return quantity // spec.lot_size if spec.quantity_unit == "units" else quantity
