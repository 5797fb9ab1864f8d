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
from typing import Protocol, TypeVar

import structlog

from core.book_store import BookStore, BookTransaction
from core.errors import VersionConflict
from core.intents import EntryPurpose, ExitPurpose, Purpose, RollPurpose, purpose_to_json
from core.models import ContractRef, NewIntent, OrderIntent, Outcome, Side, SignalOutcome
from core.reconciliation import Discrepancy, explained_square_off
from core.specs import InstrumentSpec
from core.trading_state import FLATTEN
from live import failpoints
from live.brokers.base import (
    Broker,
    BrokerAuthExpired,
    BrokerOrder,
    BrokerUnavailable,
    OrderRejected,
    OrderRequest,
    read_through_outages,
)
from live.fill_booking import FillBooking, book_square_off
from live.metrics import Metrics

T = TypeVar("T")
log = structlog.get_logger(__name__)


class StopGuard(Protocol):
    async def release(self, intent: OrderIntent) -> frozenset[int]: ...


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
        # The layers' broker-resident stops, cancelled before the daemon sells a layer.
        self.stops: StopGuard | None = None

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
        if _sells_held_layers(intent):
            refused = await self._release_stops(intent)
            if refused is None:
                refused = await self._before_selling(intent, fresh)
            if refused is not None:
                return refused
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

    async def _release_stops(self, intent: OrderIntent) -> SignalOutcome | None:
        """Cancel the broker stops of the layers about to be sold (confirmed). Layers whose
        stop fired instead are the venue's to sell: the exit goes on without them."""
        if self.stops is None:
            return None
        try:
            taken = await self.stops.release(intent)
        except BrokerAuthExpired:  # a stop that cannot be cancelled must not be sold over
            return await self.booking.apply_rejection(intent, None, "broker session expired")
        except BrokerUnavailable as exc:  # nor one whose cancel is not confirmed: retried
            return await self.booking.apply_rejection(intent, None, f"broker stop: {exc}")
        if not taken:
            return None
        reason = f"sold by the broker stop of layers {sorted(taken)}"
        if isinstance(intent.purpose, ExitPurpose):
            return await self.booking.replan_exit(intent, reason, without=taken)
        return await self.booking.apply_rejection(intent, None, reason)

    async def _before_selling(self, intent: OrderIntent, fresh: bool) -> SignalOutcome | None:
        """Before an exit (or a roll's close leg) sells anything under its tag: are its
        layers still open, and does the broker still hold what it would sell? If not, the
        sale could open a short: it is not placed. A square-off the broker's own trades
        explain is booked, and the exit carries on with what is left of its layers;
        anything unexplained waits and is tried again. None: go ahead and place."""
        purpose = intent.purpose
        symbol = intent.tradingsymbol
        if symbol is None:
            return None
        if not fresh:
            if intent.broker_order_id:
                return None  # placed already: resolved by its orders, as ever
            if await self._retrying(partial(self._broker.find_by_tag, intent.tag)):
                return None
        layers = await self._db.live_layers(intent.instrument)
        if isinstance(purpose, ExitPurpose) and not {*purpose.position_ids} <= {
                layer.id for layer in layers}:
            return await self.booking.replan_exit(intent, "some of its layers were closed "
                                                          "meanwhile")
        try:
            held = await self._reading(partial(self._broker.position, symbol))
            if held >= intent.quantity:
                return None
            book = sum(x.quantity for x in layers if x.tradingsymbol == symbol)
            square_off = explained_square_off(
                Discrepancy(symbol, book, held), await self._reading(self._broker.trades),
                await self._db.own_activity(symbol))
        except BrokerAuthExpired:  # nothing was placed; it is tried again with a session
            return await self.booking.apply_rejection(intent, None, "broker session expired")
        reason = f"broker holds {held} of the {intent.quantity} to sell in {symbol}"
        log.error("sale_not_placed_broker_short", intent_id=intent.id, tag=intent.tag,
                  tradingsymbol=symbol, book=book, broker=held,
                  squared_off=square_off is not None)
        if (square_off is None or not isinstance(purpose, ExitPurpose)
                or not await book_square_off(self._db, intent.instrument,
                                             self._instruments[intent.instrument],
                                             square_off, self._clock())):
            return await self.booking.apply_rejection(intent, None, reason)
        return await self.booking.replan_exit(intent, f"{reason}: the broker's square-off "
                                                      "is booked")

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
        return await read_through_outages(call, self._poll_interval_s, self._retry_max_s)

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
                            and intent.purpose.quoted,
                            urgent=isinstance(intent.purpose, ExitPurpose)
                            and intent.purpose.reason == FLATTEN)

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


def _sells_held_layers(intent: OrderIntent) -> bool:
    purpose = intent.purpose
    return isinstance(purpose, ExitPurpose) or (isinstance(purpose, RollPurpose)
                                                and purpose.leg == "close")


def _ids(orders: list[BrokerOrder]) -> str | None:
    ids = [o.order_id for o in orders if o.order_id]
    return ",".join(ids) if ids else None
