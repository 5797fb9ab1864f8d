"""The order-intent protocol: durable intent, then the broker, then one transaction for the fill.

Every broker call is preceded by a committed intent whose tag the broker keeps, so after a
crash or an ambiguous failure the intent is resolved by looking the tag up: adopt what is
there, and place only the quantity the lookup proves was never placed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import TypeVar

import structlog

from core.book_store import BookStore, BookTransaction
from core.errors import VersionConflict
from core.intents import EntryPurpose, ExitPurpose, Purpose, purpose_to_json
from core.models import ContractRef, NewIntent, OrderIntent, Outcome, Side, SignalOutcome
from core.reconciliation import Discrepancy, explained_square_off
from core.specs import InstrumentSpec
from live import failpoints
from live.brokers.base import (
    Broker,
    BrokerAuthExpired,
    BrokerOrder,
    BrokerUnavailable,
    OrderRejected,
    OrderRequest,
)
from live.fill_booking import FillBooking
from live.metrics import Metrics

T = TypeVar("T")
log = structlog.get_logger(__name__)


class OrderFlow:
    def __init__(self, db: BookStore, broker: Broker,
                 instruments: dict[str, InstrumentSpec], *, processed_by: str,
                 clock: Callable[[], datetime], metrics: Metrics, poll_interval_s: float = 0.25,
                 poll_interval_max_s: float = 3.0, settle_s: float = 1.0,
                 retry_max_s: float = 5.0):
        self._db = db
        # Called with the instrument after every fill is booked (e.g. to reconcile it).
        self.fill_listeners: list[Callable[[str], None]] = []
        self._broker = broker
        self._clock = clock
        self._metrics = metrics
        self._poll_interval_s = poll_interval_s
        self._poll_interval_max_s = poll_interval_max_s
        self._settle_s = settle_s
        self._retry_max_s = retry_max_s
        self._instruments = instruments
        self.booking = FillBooking(db, instruments, processed_by=processed_by, clock=clock)

    @property
    def store(self) -> BookStore:
        return self._db

    @property
    def instruments(self) -> dict[str, InstrumentSpec]:
        return self._instruments

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._clock

    async def open_intent(self, tx: BookTransaction, signal_id: int | None, instrument: str,
                          side: Side, lots: int, price: Decimal, purpose: Purpose,
                          position_ids: tuple[int, ...] = (),
                          quantity: int | None = None, contract: ContractRef | None = None,
                          first: bool = True) -> OrderIntent:
        """Write the intent (and move its signal to processing) inside `tx`.

        An entry buys today's contract; an exit passes its layers' own `contract` and the
        `quantity` (broker units) they hold, so neither a roll of the front month nor a
        lot-size change in config changes what it sells. `first`: the first (or only) intent
        of its signal, which moves the signal to processing.
        """
        spec = self._instruments[instrument]
        if contract is None:
            contract = self._broker.contract(instrument, self._clock())
        intent = await tx.insert_intent(NewIntent(
            signal_id=signal_id, instrument=instrument, side=side, lots=lots,
            quantity=spec.broker_quantity(lots) if quantity is None else quantity,
            order_type="MARKET", price=price, tradingsymbol=contract.tradingsymbol,
            exchange=contract.exchange, expiry=contract.expiry,
            position_ids=position_ids, purpose=purpose))
        if signal_id is not None and first:
            await tx.mark_signal_processing(signal_id)
        await tx.log_event("intent_created", signal_id=signal_id, intent_id=intent.id,
                           instrument=instrument, side=side, lots=lots, tag=intent.tag,
                           purpose=purpose_to_json(purpose))
        return intent

    async def complete(self, intent: OrderIntent, *, fresh: bool,
                       deadline: datetime | None = None) -> SignalOutcome:
        """Drive a committed intent to its final state and record it; return the outcome.

        `fresh`: the intent was committed just now by this process, so nothing can have been
        placed yet and the tag lookup is skipped. `deadline`: an entry not placed by then is
        given up (only once the broker proves it holds no order with the tag).
        """
        if isinstance(intent.purpose, ExitPurpose):
            try:
                short = await self._broker_short(intent, fresh)
            except BrokerAuthExpired:  # nothing can be placed; the exit is retried later
                short = ("broker session expired", False)
            if short is not None:
                reason, squared_off = short
                if squared_off:  # the broker closed it itself: reconciliation books that
                    return await self.booking.give_up_exit(intent, reason)
                return await self.booking.apply_rejection(intent, None, reason)
        orders, refusal = await self._orders_for(intent, fresh, deadline)
        if orders and not all(o.is_final for o in orders):
            intent = await self.booking.record_placed(intent, _ids(orders))
            orders = await self._until_final(intent, orders)
        filled = [o for o in orders if o.filled_quantity > 0]
        for order in orders:
            self._metrics.orders.labels(order.status.value).inc()
        try:
            if filled:
                outcome = await self.booking.apply_fill(intent, orders)
                failpoints.reached("after_fill_recorded")
                for listener in self.fill_listeners:
                    listener(intent.instrument)
                return outcome
            message = refusal or next((o.message for o in orders if o.message), None)
            return await self.booking.apply_rejection(
                intent, _ids(orders), message or "order not filled")
        except VersionConflict:
            recorded = await self._recorded_outcome(intent)
            if recorded is None:
                raise
            return recorded

    async def _orders_for(self, intent: OrderIntent, fresh: bool, deadline: datetime | None
                          ) -> tuple[list[BrokerOrder], str | None]:
        """Return the intent's orders at the venue, placing what is provably missing."""
        orders: list[BrokerOrder] = []
        if not fresh:
            orders = await self._retrying(partial(self._broker.find_by_tag, intent.tag))
            if not orders and intent.broker_order_id:  # e.g. no longer in today's book
                orders = [await self._retrying(partial(self._broker.order, i))
                          for i in intent.broker_order_id.split(",")]
        entry = isinstance(intent.purpose, EntryPurpose)
        while sum(o.quantity for o in orders) < intent.quantity:
            if deadline is not None and self._clock() > deadline:
                return orders, "stale: not placed in time"
            missing = intent.quantity - sum(o.quantity for o in orders)
            try:
                started = time.perf_counter()
                ids = await self._broker.place(self._request(intent, missing))
                failpoints.reached("after_broker_accept")
                self._metrics.broker_latency.labels("place").observe(
                    time.perf_counter() - started)
                orders += [await self._retrying(partial(self._broker.order, i)) for i in ids]
            except OrderRejected as exc:
                return orders, str(exc)
            except BrokerAuthExpired:
                # Nothing was placed. An exit is retried once there is a session again.
                return orders, "broker_unavailable" if entry else "broker session expired"
            except BrokerUnavailable as exc:
                # The order may have reached the venue: never place again before looking.
                log.warning("placement_ambiguous", intent_id=intent.id, tag=intent.tag,
                            error=str(exc))
                orders = await self._look_up(intent)
        return orders, None

    async def _broker_short(self, intent: OrderIntent, fresh: bool) -> tuple[str, bool] | None:
        """Before an exit sells anything under its tag: does the broker still hold what the
        book holds in that contract? If not, the sale could open a short, so it is not
        placed. Returns why, and whether the broker's own trades (its square-off, a trade
        in Kite) explain the difference; None when the broker holds it all."""
        if intent.tradingsymbol is None:
            return None
        if not fresh:
            placed = await self._reading(partial(self._broker.find_by_tag, intent.tag))
            if placed:
                return None  # placed already: resolved by its tag, as ever
        symbol = intent.tradingsymbol
        book = sum(layer.quantity for layer in await self._db.live_layers(intent.instrument)
                   if layer.tradingsymbol == symbol)
        held = await self._reading(partial(self._broker.position, symbol))
        if held >= book:
            return None
        difference = Discrepancy(symbol, book, held)
        explained = explained_square_off(difference, await self._reading(self._broker.trades),
                                         await self._db.own_activity(symbol)) is not None
        log.error("exit_not_placed_broker_short", intent_id=intent.id, tag=intent.tag,
                  tradingsymbol=symbol, book=book, broker=held, squared_off=explained)
        return f"broker holds {held} of the book's {book} in {symbol}", explained

    async def _look_up(self, intent: OrderIntent) -> list[BrokerOrder]:
        await asyncio.sleep(self._settle_s)  # let the venue's order book catch up
        return await self._retrying(partial(self._broker.find_by_tag, intent.tag))

    async def _until_final(self, intent: OrderIntent,
                           orders: list[BrokerOrder]) -> list[BrokerOrder]:
        """Poll (and work) the orders until every one is final."""
        delay = self._poll_interval_s
        request = self._request(intent, intent.quantity)
        while not all(o.is_final for o in orders):
            await self._broker.wait_for_update(delay)
            delay = min(delay * 1.5, self._poll_interval_max_s)
            orders = [o if o.is_final else
                      await self._retrying(partial(self._broker.manage, o, request))
                      for o in orders]
        return orders

    async def _reading(self, call: Callable[[], Awaitable[T]]) -> T:
        """Repeat a broker read while the broker is unreachable; an expired session is
        raised (the caller decides whether to wait for the next one)."""
        delay = self._poll_interval_s
        while True:
            try:
                return await call()
            except BrokerAuthExpired:
                raise
            except BrokerUnavailable as exc:
                log.warning("broker_unavailable", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """Repeat a broker call that changes nothing until the broker answers."""
        while True:
            try:
                return await self._reading(call)
            except BrokerAuthExpired:
                log.warning("broker_session_expired_waiting")
                await self._broker.wait_available()

    def _request(self, intent: OrderIntent, quantity: int) -> OrderRequest:
        return OrderRequest(tag=intent.tag, instrument=intent.instrument,
                            tradingsymbol=intent.tradingsymbol or intent.instrument,
                            side=intent.side, quantity=quantity,
                            order_type=intent.order_type, price=intent.price,
                            quoted=isinstance(intent.purpose, EntryPurpose)
                            and intent.purpose.quoted)

    async def _recorded_outcome(self, intent: OrderIntent) -> SignalOutcome | None:
        """Return the outcome another process already recorded for this intent, if any."""
        current = next((i for i in await self._db.intents_for_signal(intent.signal_id or 0)
                        if i.id == intent.id), None)
        if current is None or current.is_unresolved:
            return None
        record = await self._db.signal(intent.signal_id or 0)
        if record is not None and record.outcome is not None:
            return SignalOutcome(record.id, record.outcome, record.reason)
        # An intent of no signal (or one decided elsewhere): what its fill made of it.
        outcome = Outcome.EXECUTED if current.filled_quantity > 0 else Outcome.REJECTED
        return SignalOutcome(intent.signal_id or 0, outcome, current.reason)


def _ids(orders: list[BrokerOrder]) -> str | None:
    ids = [o.order_id for o in orders if o.order_id]
    return ",".join(ids) if ids else None
