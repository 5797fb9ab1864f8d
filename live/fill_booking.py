"""Recording a broker outcome in the book: one transaction per fill or refusal.

What a fill means is decided by `core.booking`; this module reads what that needs once,
before the transaction, and writes the result through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog

from core.accounting import money_text
from core.book_store import BookStore, BookTransaction
from core.booking import (
    ExitBooking,
    Filled,
    average_price,
    book_exit,
    entry_layer,
    filled,
    next_pyramiding,
    opens_trade,
)
from core.intents import EntryPurpose, ExitPurpose, RollPurpose
from core.models import (
    IntentStatus,
    Layer,
    LayerStatus,
    LedgerType,
    NewIntent,
    OrderIntent,
    Outcome,
    PyramidingState,
    SignalOutcome,
)
from core.reconciliation import SQUARE_OFF_EVENT, SQUARE_OFF_REASON, SquareOff, layers_to_close
from core.specs import InstrumentSpec
from live import failpoints
from live.brokers.base import BrokerOrder, OrderStatus
from live.roll_booking import RollState, book_roll_leg, roll_layers

log = structlog.get_logger(__name__)


class FillBooking:
    def __init__(self, db: BookStore, instruments: dict[str, InstrumentSpec], *,
                 processed_by: str, clock: Callable[[], datetime]):
        self._db = db
        self._instruments = instruments
        self._processed_by = processed_by
        self._clock = clock
        # Told (after commit) of every exit retry committed: what is left of an exit that
        # was refused or filled partly, as a new intent to be carried out later.
        self.retry_listeners: list[Callable[[OrderIntent], None]] = []

    async def record_placed(self, intent: OrderIntent, order_ids: str | None) -> OrderIntent:
        """Note the venue's ids of orders still working (what /orders shows meanwhile)."""
        async with self._db.transaction() as tx:
            return await tx.update_intent(intent, status=IntentStatus.PLACED,
                                          broker_order_id=order_ids)

    async def apply_fill(self, intent: OrderIntent, orders: list[BrokerOrder]) -> SignalOutcome:
        """Record what filled, in one transaction: fills, intent, layers, ledger, signal."""
        now = self._clock()
        spec = self._instruments[intent.instrument]
        fill = filled(sum(o.filled_quantity for o in orders), _average(orders), spec)
        complete = all(o.status == OrderStatus.COMPLETE for o in orders) and (
            fill.quantity == intent.quantity)
        purpose = intent.purpose
        # Everything the booking needs is read here, once: nothing inside the transaction
        # reads through the cache.
        decides, outcome = await self._decision(intent, filled_now=True)
        follow: list[OrderIntent] = []
        if isinstance(purpose, EntryPurpose):
            pyramiding = await self._db.pyramiding_state(intent.instrument)
        elif isinstance(purpose, ExitPurpose):
            layers, live_ids = await self._exit_layers(intent.instrument, purpose)
        else:
            rolling = await self._roll_state(intent.instrument, purpose)
        async with self._db.transaction() as tx:
            await tx.update_intent_later(
                intent, status=IntentStatus.FILLED if complete else IntentStatus.CANCELLED,
                broker_order_id=",".join(o.order_id for o in orders),
                filled_quantity=fill.quantity, average_price=fill.price)
            for order in orders:
                for trade in order.trades:
                    await tx.insert_fill(intent.id, trade.trade_id, trade.quantity,
                                         trade.price, trade.traded_at)
            if isinstance(purpose, EntryPurpose):
                result = await self._open_layer(tx, intent, purpose, fill, pyramiding, now)
            elif isinstance(purpose, RollPurpose):
                result, follow = await book_roll_leg(tx, intent, purpose, rolling,
                                                     fill.quantity, fill.price, spec, now)
            else:
                booking = book_exit(layers, live_ids, fill.quantity, fill.price, spec)
                closed = await write_exit(tx, intent.instrument, booking, reason=purpose.reason,
                                          price=fill.price, at=now,
                                          crash_point=len(purpose.position_ids) > 1,
                                          keep_closing=True)
                retry = await self._retry_exit(tx, intent, purpose, booking.left)
                result = {"pnl": money_text(booking.total_pnl), "positions_closed": closed,
                          "fill_price": str(fill.price)}
                if retry is not None:
                    result["exit_pending"] = retry.tag
                    follow = [retry]
            if decides and intent.signal_id is not None:
                await tx.decide_signal(intent.signal_id, outcome, None, self._processed_by, now)
            await tx.log_event("order_filled", signal_id=intent.signal_id, intent_id=intent.id,
                               instrument=intent.instrument, filled_quantity=fill.quantity,
                               price=fill.price, complete=complete, decided=decides, **result)
        self._announce(follow)
        if isinstance(purpose, RollPurpose):
            failpoints.reached(f"after_roll_{purpose.leg}_fill")
        return SignalOutcome(intent.signal_id or 0, Outcome.EXECUTED, None, result)

    async def _retry_exit(self, tx: BookTransaction, intent: OrderIntent, purpose: ExitPurpose,
                          left: Sequence[Layer]) -> OrderIntent | None:
        """Commit the next attempt at what an exit left unsold: its layers stay closing, in
        their own contract, until they are flat (an exit is never dropped)."""
        if not left:
            return None
        ids = tuple(layer.id for layer in left)
        retry = await tx.insert_intent(NewIntent(
            signal_id=None, instrument=intent.instrument, side=intent.side,
            lots=sum(layer.lots for layer in left),
            quantity=sum(layer.quantity for layer in left), order_type=intent.order_type,
            price=intent.price, tradingsymbol=intent.tradingsymbol, exchange=intent.exchange,
            expiry=intent.expiry, position_ids=ids,
            purpose=purpose.retried(intent.id, ids)))
        await tx.log_event("exit_retry_scheduled", signal_id=intent.signal_id,
                           intent_id=retry.id, instrument=intent.instrument, tag=retry.tag,
                           retry_of=intent.id, attempt=purpose.attempt + 1,
                           quantity=retry.quantity)
        return retry

    def _announce(self, follow: Sequence[OrderIntent]) -> None:
        for intent in follow:
            for listener in self.retry_listeners:
                listener(intent)

    async def _roll_state(self, instrument: str, purpose: RollPurpose) -> RollState:
        roll = await self._db.roll(purpose.roll_id)
        if roll is None:
            raise LookupError(f"{instrument}: no roll {purpose.roll_id}")
        layers = roll_layers(await self._db.live_layers(instrument), roll)
        return RollState(roll, layers, await self._db.pyramiding_state(instrument))

    async def _decision(self, intent: OrderIntent, *, filled_now: bool) -> tuple[bool, Outcome]:
        """Return whether resolving `intent` decides its signal, and with which outcome.

        An exit that took one order per contract is decided by the last of its intents to be
        resolved, `executed` if any of them filled.
        """
        outcome = Outcome.EXECUTED if filled_now else Outcome.REJECTED
        purpose = intent.purpose
        if not isinstance(purpose, ExitPurpose) or purpose.orders == 1 or not intent.signal_id:
            return True, outcome
        siblings = [i for i in await self._db.intents_for_signal(intent.signal_id)
                    if i.id != intent.id]
        if any(i.is_unresolved for i in siblings):
            return False, outcome
        if any(i.filled_quantity > 0 for i in siblings):
            outcome = Outcome.EXECUTED
        return True, outcome

    async def _exit_layers(self, instrument: str, purpose: ExitPurpose
                           ) -> tuple[list[Layer], set[int]]:
        live = {layer.id: layer for layer in await self._db.live_layers(instrument)}
        missing = [i for i in purpose.position_ids if i not in live]
        if missing:
            raise LookupError(f"{instrument}: exit of layers {missing} that are not live")
        return [live[i] for i in purpose.position_ids], set(live)

    async def _open_layer(self, tx: BookTransaction, intent: OrderIntent,
                          purpose: EntryPurpose, fill: Filled,
                          pyramiding: PyramidingState | None,
                          now: datetime) -> dict[str, Any]:
        if opens_trade(purpose) or purpose.trade_id is None:
            trade_id = await tx.next_trade_id()
        else:
            trade_id = purpose.trade_id
        layer = await tx.insert_layer(entry_layer(
            purpose, fill, trade_id=trade_id, instrument=intent.instrument,
            contract=intent.contract, signal_id=intent.signal_id, at=now))
        await tx.save_pyramiding(next_pyramiding(
            pyramiding, purpose, instrument=intent.instrument, trade_id=trade_id,
            layer_id=layer.id, price=fill.price))
        return {"lots": fill.lots, "position_id": layer.id, "fill_price": str(fill.price),
                "limiter": layer.limiter}

    async def apply_rejection(self, intent: OrderIntent, order_ids: str | None,
                              message: str) -> SignalOutcome:
        """Record a refused order: nothing booked, an exit's layers open again."""
        now = self._clock()
        decides, outcome = await self._decision(intent, filled_now=False)
        purpose = intent.purpose
        refused: list[Layer] = []
        if isinstance(purpose, ExitPurpose):
            refused, _ = await self._exit_layers(intent.instrument, purpose)
        elif isinstance(purpose, RollPurpose):
            rolling = await self._roll_state(intent.instrument, purpose)
        follow: list[OrderIntent] = []
        result: dict[str, Any] = {}
        reason = message
        async with self._db.transaction() as tx:
            await tx.update_intent_later(intent, status=IntentStatus.REJECTED, reason=message,
                                         broker_order_id=order_ids)
            if isinstance(purpose, ExitPurpose):
                retry = await self._retry_exit(tx, intent, purpose, refused)
                follow = [retry] if retry is not None else []
                result = {"exit_pending": retry.tag} if retry is not None else {}
                reason = f"{message}; exit pending, retried until flat"
            elif isinstance(purpose, RollPurpose):
                result, follow = await book_roll_leg(
                    tx, intent, purpose, rolling, 0, None,
                    self._instruments[intent.instrument], now)
            if decides and intent.signal_id is not None:
                await tx.decide_signal(intent.signal_id, outcome, reason, self._processed_by,
                                       now)
            await tx.log_event("order_rejected", signal_id=intent.signal_id,
                               intent_id=intent.id, instrument=intent.instrument,
                               reason=message, decided=decides)
        if isinstance(purpose, ExitPurpose):
            failpoints.reached("after_exit_refused")
        self._announce(follow)
        return SignalOutcome(intent.signal_id or 0, Outcome.REJECTED, reason, result)


    async def replan_exit(self, intent: OrderIntent, reason: str,
                          without: frozenset[int] = frozenset()) -> SignalOutcome:
        """Close an exit that was never placed and must not be as it stands (some of its
        layers were closed meanwhile: by the broker's square-off, by an operator; or are
        being sold by their broker stop, `without`), and commit the next attempt at those
        of its layers still open, if any."""
        purpose = intent.purpose
        assert isinstance(purpose, ExitPurpose)
        live = {layer.id: layer for layer in await self._db.live_layers(intent.instrument)}
        left = [live[i] for i in purpose.position_ids if i in live and i not in without]
        decides, outcome = await self._decision(intent, filled_now=False)
        if without and not left and outcome is Outcome.REJECTED:
            outcome = Outcome.IGNORED  # the broker's stops sold all of it: nothing to do
        async with self._db.transaction() as tx:
            await tx.update_intent_later(intent, status=IntentStatus.REJECTED, reason=reason)
            for layer in left:
                if layer.status is LayerStatus.OPEN:  # e.g. the unsold part of a split
                    await tx.update_layer_later(layer, status=LayerStatus.CLOSING)
            retry = await self._retry_exit(tx, intent, purpose, left)
            if retry is not None:
                reason = f"{reason}; exit pending for the rest, retried until flat"
            if decides and intent.signal_id is not None:
                await tx.decide_signal(intent.signal_id, outcome, reason, self._processed_by,
                                       self._clock())
            await tx.log_event("exit_replanned", signal_id=intent.signal_id,
                               intent_id=intent.id, instrument=intent.instrument,
                               tag=intent.tag, reason=reason, decided=decides,
                               left=[layer.id for layer in left])
        self._announce([retry] if retry is not None else [])
        result = {"exit_pending": retry.tag} if retry is not None else {}
        return SignalOutcome(intent.signal_id or 0, outcome, reason, result)


async def book_square_off(db: BookStore, instrument: str, spec: InstrumentSpec,
                          square_off: SquareOff, at: datetime) -> bool:
    """Book the layers the broker closed itself (its square-off, a sale in its app) at its
    trades' price, reason BROKER_SQUARE_OFF; False if they are not whole lots of the book's
    layers (the operator decides). Newest layers first, as `layers_to_close` says."""
    layers = await db.live_layers(instrument)
    symbol = square_off.tradingsymbol
    closing = layers_to_close([x for x in layers if (x.tradingsymbol or x.instrument) == symbol],
                              square_off.quantity)
    booking = book_exit(closing, {x.id for x in layers}, square_off.quantity, square_off.price,
                        spec)
    if sum(close.quantity for close in booking.closes) != square_off.quantity:
        return False
    async with db.transaction() as tx:
        closed = await write_exit(tx, instrument, booking, reason=SQUARE_OFF_REASON,
                                  price=square_off.price, at=at)
        await tx.log_event(SQUARE_OFF_EVENT, instrument=instrument, tradingsymbol=symbol,
                           trade_ids=list(square_off.trade_ids), quantity=square_off.quantity,
                           price=square_off.price, pnl=money_text(booking.total_pnl),
                           positions_closed=closed)
    log.warning(SQUARE_OFF_EVENT, instrument=instrument, tradingsymbol=symbol,
                quantity=square_off.quantity, price=str(square_off.price),
                positions_closed=closed, pnl=money_text(booking.total_pnl))
    return True


async def write_exit(tx: BookTransaction, instrument: str, booking: ExitBooking, *,
                     reason: str, price: Decimal, at: datetime,
                     crash_point: bool = False, keep_closing: bool = False) -> list[int]:
    """Write an exit's booking; return the ids of the closed rows (split parts included).

    `keep_closing`: what the exit left unsold stays closing (its retry sells it) rather
    than opening again.
    """
    left_status = LayerStatus.CLOSING if keep_closing else LayerStatus.OPEN
    closed: list[int] = []
    for close in booking.closes:
        exit_fields = {"exit_price": price, "exit_timestamp": at, "exit_reason": reason,
                       "realized_pnl": close.pnl}
        if close.whole:
            await tx.update_layer_later(close.layer, status=LayerStatus.CLOSED, **exit_fields)
            closed_id = close.layer.id
        else:
            await tx.update_layer_later(close.layer, status=left_status,
                                        lots=close.kept_lots, quantity=close.kept_quantity)
            closed_id = await tx.insert_closed_part(close.layer, close.lots, close.quantity,
                                                    **exit_fields)
        await tx.append_ledger(LedgerType.TRADING_PNL, close.pnl, position_id=closed_id)
        closed.append(closed_id)
        if crash_point:
            failpoints.reached("during_exit_allocation")
    if not keep_closing:
        await reopen(tx, booking.reopened)
    if booking.flat:
        await tx.delete_pyramiding(instrument)  # the trade is over
    return closed


async def reopen(tx: BookTransaction, layers: Sequence[Layer]) -> None:
    """Open again the layers an exit did not close (nothing of them was sold)."""
    for layer in layers:
        await tx.update_layer_later(layer, status=LayerStatus.OPEN)


def _average(orders: Sequence[BrokerOrder]) -> Decimal:
    """Volume-weighted average fill price over every filled order."""
    fills = [o for o in orders if o.filled_quantity > 0]
    if all(o.average_price is not None for o in fills):
        return average_price((o.filled_quantity, o.average_price) for o in fills  # type: ignore[misc]
                             )
    return average_price((t.quantity, t.price) for o in fills for t in o.trades)
