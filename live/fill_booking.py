"""Recording a broker outcome in the book: one transaction per fill or refusal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.accounting import layer_pnl, money_text
from core.db_state_manager import DatabaseStateManager
from core.db_transaction import Transaction
from core.models import (
    BASE_LAYER,
    Layer,
    LayerStatus,
    LedgerType,
    NewLayer,
    OrderIntent,
    PyramidingState,
    SignalOutcome,
)
from core.specs import InstrumentSpec
from live import failpoints
from live.brokers.base import BrokerOrder, OrderStatus

CENT = Decimal("0.01")
PRICE_SCALE = Decimal("0.0001")


class FillBooking:
    def __init__(self, db: DatabaseStateManager, instruments: dict[str, InstrumentSpec], *,
                 processed_by: str, clock: Callable[[], datetime]):
        self._db = db
        self._instruments = instruments
        self._processed_by = processed_by
        self._clock = clock

    async def record_placed(self, intent: OrderIntent, order_ids: str | None) -> OrderIntent:
        """Note the venue's ids of orders still working (what /orders shows meanwhile)."""
        async with self._db.transaction() as tx:
            return await tx.update_intent(intent, status="placed", broker_order_id=order_ids)

    async def apply_fill(self, intent: OrderIntent, orders: list[BrokerOrder]) -> SignalOutcome:
        """Record what filled, in one transaction: fills, intent, layers, ledger, signal."""
        now = self._clock()
        spec = self._instruments[intent.instrument]
        quantity = sum(o.filled_quantity for o in orders)
        price = _average(orders)
        complete = all(o.status == OrderStatus.COMPLETE for o in orders) and (
            quantity == intent.quantity)
        async with self._db.transaction() as tx:
            await tx.update_intent_later(
                intent, status="filled" if complete else "cancelled",
                broker_order_id=",".join(o.order_id for o in orders),
                filled_quantity=quantity, average_price=price)
            for order in orders:
                for trade in order.trades:
                    await tx.insert_fill(intent.id, trade.trade_id, trade.quantity,
                                         trade.price, trade.traded_at)
            lots = quantity // spec.lot_size if spec.quantity_unit == "units" else quantity
            if intent.purpose["kind"] == "entry":
                result = await self._open_layer(tx, intent, lots, quantity, price, now)
            else:
                result = await self._close_layers(tx, intent, spec, lots, price, now)
            if intent.signal_id is not None:
                await tx.decide_signal(intent.signal_id, "executed", None, self._processed_by,
                                       now)
            await tx.log_event("order_filled", signal_id=intent.signal_id, intent_id=intent.id,
                               instrument=intent.instrument, filled_quantity=quantity,
                               price=price, complete=complete, **result)
        return SignalOutcome(intent.signal_id or 0, "executed", None, result)

    async def _open_layer(self, tx: Transaction, intent: OrderIntent, lots: int,
                          quantity: int, price: Decimal, now: datetime) -> dict[str, Any]:
        purpose = intent.purpose
        base = purpose["layer"] == BASE_LAYER
        trade_id = await tx.next_trade_id() if base else int(purpose["trade_id"])
        layer = await tx.insert_layer(NewLayer(
            trade_id=trade_id, instrument=intent.instrument, layer=purpose["layer"], lots=lots,
            quantity=quantity, entry_price=price, entry_timestamp=now,
            initial_stop=Decimal(purpose["initial_stop"]), atr=Decimal(purpose["atr"]),
            limiter=purpose["limiter"], tradingsymbol=intent.tradingsymbol,
            signal_id=intent.signal_id))
        current = await self._db.pyramiding_state(intent.instrument)
        if base:
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
                            lots: int, price: Decimal, now: datetime) -> dict[str, Any]:
        """Close the intent's layers in order with the filled lots; what did not fill reopens."""
        live = {layer.id: layer for layer in await self._db.live_layers(intent.instrument)}
        reason = intent.purpose["reason"]
        total, closed, remaining = Decimal(0), [], lots
        for layer_id in (int(i) for i in intent.purpose["position_ids"]):
            layer = live[layer_id]
            take = min(remaining, layer.lots)
            remaining -= take
            if take == 0:
                await tx.update_layer_later(layer, status=LayerStatus.OPEN.value)
                continue
            pnl = layer_pnl(layer.entry_price, price, take, spec.point_value).quantize(CENT)
            closed_id = await self._close(tx, layer, take, spec, price, now, reason, pnl)
            await tx.append_ledger(LedgerType.TRADING_PNL, pnl, position_id=closed_id)
            total += pnl
            closed.append(closed_id)
            if len(intent.purpose["position_ids"]) > 1:
                failpoints.reached("during_exit_allocation")
        if not set(live) - set(closed) and remaining == 0:
            await tx.delete_pyramiding(intent.instrument)  # flat: the trade is over
        return {"pnl": money_text(total), "positions_closed": closed, "fill_price": str(price)}

    async def _close(self, tx: Transaction, layer: Layer, lots: int, spec: InstrumentSpec,
                     price: Decimal, now: datetime, reason: str, pnl: Decimal) -> int:
        """Close `lots` of a layer: all of it, or split off a closed part and keep the rest."""
        exit_fields = {"exit_price": price, "exit_timestamp": now, "exit_reason": reason,
                       "realized_pnl": pnl}
        if lots == layer.lots:
            await tx.update_layer_later(layer, status=LayerStatus.CLOSED.value, **exit_fields)
            return layer.id
        kept = layer.lots - lots
        await tx.update_layer_later(layer, status=LayerStatus.OPEN.value, lots=kept,
                                    quantity=spec.broker_quantity(kept))
        return await tx.insert_closed_part(layer, lots, spec.broker_quantity(lots),
                                           **exit_fields)

    async def apply_rejection(self, intent: OrderIntent, order_ids: str | None,
                              message: str) -> SignalOutcome:
        """Record a refused order: nothing booked, an exit's layers open again."""
        now = self._clock()
        async with self._db.transaction() as tx:
            await tx.update_intent_later(intent, status="rejected", reason=message,
                                         broker_order_id=order_ids)
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


def _average(orders: list[BrokerOrder]) -> Decimal:
    """Volume-weighted average fill price over every filled order."""
    filled = [o for o in orders if o.filled_quantity > 0]
    if all(o.average_price is not None for o in filled):
        notional = sum((o.average_price * o.filled_quantity for o in filled  # type: ignore[operator]
                        ), Decimal(0))
    else:
        trades = [t for o in filled for t in o.trades]
        notional = sum((t.price * t.quantity for t in trades), Decimal(0))
    # Stored with four decimals: round here so P&L is computed from the price that is stored.
    return (notional / sum(o.filled_quantity for o in filled)).quantize(PRICE_SCALE)
