"""LiveTradingEngine: decide, persist, act — the handler of each signal the inbox hands over.

A signal is decided by the pure core from cached state; a decision without an order is
committed with its outcome in one transaction; one with an order goes through `OrderFlow`
(durable intent, then the broker, then one transaction for the fill).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import structlog

from core.accounting import money_text, sizing_equity
from core.book_store import BookStore
from core.daily_limits import trading_day
from core.db_pool import TRANSIENT_ERRORS
from core.decisions import (
    BookSnapshot,
    EntryPlan,
    ExitPlan,
    MarketDataPlan,
    Verdict,
    check_execution_price,
    decide_base_entry,
    decide_exit,
    decide_market_data,
    decide_on_flat,
    decide_pyramid,
    ignored,
    rejected,
)
from core.errors import SignalAlreadyDecided, VersionConflict
from core.exposure import Exposure, marked
from core.intents import EntryPurpose, ExitPurpose
from core.models import (
    BASE_LAYER,
    Layer,
    LayerStatus,
    OrderIntent,
    Outcome,
    PyramidingState,
    Side,
    SignalOutcome,
    SignalStatus,
    SignalType,
)
from core.rollover import in_held_terms
from core.signals import Signal, entry_deadline, entry_waited_too_long
from core.specs import InstrumentSpec, PortfolioConfig
from core.trading_state import entry_refusal, exit_refusal
from live import failpoints
from live.book_exposure import BookExposure
from live.brokers.base import Broker, BrokerError
from live.inbox import InboxItem
from live.instrument_locks import InstrumentLocks
from live.metrics import Metrics
from live.order_flow import OrderFlow
from live.readiness import Readiness
from live.trading_control import TradingControl

if TYPE_CHECKING:
    from live.rollover import Rollover

ENTRY_TYPES = frozenset({SignalType.BASE_ENTRY, SignalType.PYRAMID})
EOD_RECORDED = "EOD monitor recorded"
log = structlog.get_logger(__name__)


class LiveTradingEngine:
    def __init__(self, db: BookStore, broker: Broker,
                 instruments: dict[str, InstrumentSpec], config: PortfolioConfig,
                 flow: OrderFlow, *, processed_by: str, clock: Callable[[], datetime],
                 metrics: Metrics, readiness: Readiness,
                 price_limits_percent: tuple[Decimal, Decimal] | None = None,
                 locks: InstrumentLocks | None = None,
                 control: TradingControl | None = None):
        self._db = db
        # Shared with whatever else trades an instrument's layers (exit retries, rolls,
        # reconciliation), so that one signal at a time sees and moves them.
        self.locks = locks or InstrumentLocks()
        self._broker = broker
        self._instruments = instruments
        self._config = config
        self._flow = flow
        self._processed_by = processed_by
        self._clock = clock
        self._metrics = metrics
        self._readiness = readiness
        # The trading state: its cached copy turns entries away early; the row itself is
        # read again in the transaction of every intent it could refuse.
        self.control = control or TradingControl(db, clock)
        # (base, pyramid) divergence limits of the quote check; None: no quote check.
        self._price_limits = price_limits_percent if broker.price_check else None
        self._last_price: dict[str, Decimal] = {}  # in the held contract's terms
        self._exposure = BookExposure(db, instruments, self.price_of)
        self._last_alert: dict[str, Decimal] = {}  # as the alerts quote it
        self.rollover: Rollover | None = None  # set once built (it needs the order flow)
        # Entry decisions share one portfolio cap: decide them one at a time, counting the
        # risk of entries whose orders are still in flight.
        self._entry_lock = asyncio.Lock()
        # Risk, volatility and margin of entries decided but not yet filled, by reservation.
        self._inflight: dict[int, tuple[Decimal, Decimal, Decimal]] = {}
        # Told the instrument of each signal decided (the daily loss limit wakes on it);
        # each must return at once and never raise into the signal path.
        self.decision_listeners: list[Callable[[str], None]] = []
        # What the venue may have done on a price, settled before the daemon decides on it
        # (instrument and price; the instrument's lock is held): the broker stops it
        # reached are read, then exits whose orders the venue finished are booked.
        self._venue_checks: list[Callable[[str, Decimal], Awaitable[None]]] = []
        # With each check, whether it would do nothing at a price (no I/O): a bar that
        # moves no stop is then decided with its admission.
        self._venue_quiet: list[Callable[[str, Decimal], bool]] = []

    def watch_venue(self, check: Callable[[str, Decimal], Awaitable[None]],
                    quiet: Callable[[str, Decimal], bool]) -> None:
        """Settle `check` before each decision on a price; `quiet`: it would do nothing."""
        self._venue_checks.append(check)
        self._venue_quiet.append(quiet)

    # -- the inbox's handler --------------------------------------------------------------
    async def process(self, item: InboxItem) -> SignalOutcome:
        """Decide and carry out one signal; conflicts re-decide, database faults wait."""
        attempt, delay = 0, 0.05
        while True:
            try:
                async with self.locks(item.signal.instrument):
                    outcome = await self._process(item, reread=item.recovered or attempt > 0)
                break
            except (VersionConflict, SignalAlreadyDecided) as exc:
                # Someone else moved the book or this signal: reload and decide again.
                log.warning("conflict_reloading", signal_id=item.signal_id, error=str(exc))
                await self._db.load_cache()
                await asyncio.sleep(min(0.01 * attempt, 1.0))
            except TRANSIENT_ERRORS as exc:
                self._database_available(False)
                log.warning("database_unavailable", signal_id=item.signal_id, error=str(exc),
                            retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            attempt += 1
        self._database_available(True)
        self._tell_listeners(item.signal.instrument)
        return outcome

    def _tell_listeners(self, instrument: str) -> None:
        for listener in self.decision_listeners:
            try:
                listener(instrument)
            except Exception:  # a listener's fault is its own: the signal is decided
                log.exception("decision_listener_failed", instrument=instrument)

    async def fail(self, item: InboxItem, error: Exception) -> SignalOutcome:
        """Decide the signal `error` (once: it is not retried at a restart) and block the
        instrument's entries until an operator has looked (or the daemon restarts).

        An order intent the signal had committed is driven once more: the broker may hold
        an order for it. One that still cannot be booked is named in `/ready`.
        """
        instrument = item.signal.instrument
        reason = f"processing error: {type(error).__name__}"
        try:
            await self._db.record_decision(item.signal_id, Outcome.ERROR, reason,
                                           self._processed_by, self._clock())
        except SignalAlreadyDecided:
            record = await self._db.signal(item.signal_id)  # decided meanwhile: that stands
            if record is not None and record.outcome is not None:
                return SignalOutcome(record.id, record.outcome, record.reason)
        self._readiness.processing_failed(instrument)
        log.error("signal_failed", signal_id=item.signal_id, instrument=instrument,
                  reason=reason)
        async with self.locks(instrument):
            for intent in await self._db.intents_for_signal(item.signal_id):
                if intent.is_unresolved:
                    await self._settle_after_failure(intent)
        return SignalOutcome(item.signal_id, Outcome.ERROR, reason)

    async def _settle_after_failure(self, intent: OrderIntent) -> None:
        try:
            outcome = await self._flow.complete(intent, fresh=False)
            log.info("intent_resolved", intent_id=intent.id, tag=intent.tag,
                     outcome=outcome.outcome)
        except Exception:  # the handler's failure path: report, never raise further
            log.exception("intent_unresolvable", intent_id=intent.id, tag=intent.tag)
            self._readiness.unresolved_intent(intent.instrument, intent.tag)

    def _database_available(self, available: bool) -> None:
        self._readiness.database_available = available
        self._metrics.paused.set(int(not available))

    # -- decided at admission -------------------------------------------------------------
    def decide_at_admission(self, item: InboxItem) -> Verdict | None:
        """The decision of a signal that needs neither an order nor I/O, for its admission
        to commit with it (one commit, not two), or None: it goes through `process`.

        Only what `process` would decide the same way: an EOD monitor, an entry refused
        before sizing, a signal on an instrument with no live layer (nothing to show the
        venue, trail or exit, no base to pyramid on), and a bar that moves no stop where
        the venue has nothing to act on. The inbox holds the instrument's lock, with
        nothing of the instrument queued, until the decision commits.
        """
        signal = item.signal
        kind = signal.signal_type
        if kind is SignalType.EOD_MONITOR:
            return ignored(EOD_RECORDED)
        if kind in ENTRY_TYPES:
            refusal = self._entry_refusal(item)
            if refusal is not None:
                return refusal
        spec = self._instruments[signal.instrument]
        layers = self._db.cached_live_layers(signal.instrument)
        if layers is None:
            return None
        if not layers:
            return decide_on_flat(signal, spec)
        if kind is not SignalType.MARKET_DATA or not self._venue_is_quiet(signal, layers):
            return None
        plan = decide_market_data(signal, spec, layers)
        if isinstance(plan, MarketDataPlan) and (plan.trails or plan.exit):
            return None
        return plan if isinstance(plan, Verdict) else Verdict(Outcome.EXECUTED, None)

    def _venue_is_quiet(self, signal: Signal, layers: list[Layer]) -> bool:
        """Whether showing the venue this price would do nothing (and the alert's price is
        the held contract's: no roll of the instrument to convert it by)."""
        if self.rollover is not None and not self.rollover.without_rolls(signal.instrument):
            return False
        symbols = {x.tradingsymbol for x in layers if x.tradingsymbol}
        return (all(self._broker.quiet_at(symbol, signal.price) for symbol in symbols)
                and all(quiet(signal.instrument, signal.price) for quiet in self._venue_quiet))

    async def decided_at_admission(self, item: InboxItem) -> None:
        """What `process` does beside a decision made at admission."""
        await self._take_prices(item)
        self._tell_listeners(item.signal.instrument)

    def _entry_refusal(self, item: InboxItem) -> Verdict | None:
        """Why an entry is refused before it is sized: too late, paused, blocked, no broker."""
        if entry_waited_too_long(item.received_at, self._clock(),
                                 self._config.max_entry_delay_s):
            return rejected("stale")
        paused = self.control.entry_block()
        if paused is not None:
            return Verdict(Outcome.BLOCKED, paused)
        block = self._readiness.entry_block(item.signal.instrument)
        if block is not None:
            return rejected(f"entries blocked: {block}")
        if self._broker.unavailable_reason is not None:
            return rejected("broker_unavailable")
        return None

    async def _take_prices(self, item: InboxItem) -> InboxItem:
        """Note the alert's price; return the item in the held contract's terms."""
        self._last_alert[item.signal.instrument] = item.signal.price
        if self.rollover is not None:
            # After a roll, a continuous chart still quotes the old contract until it
            # expires: its prices are converted into the held contract's terms.
            basis = await self.rollover.basis(item.signal.instrument, self._clock())
            if basis:
                item = replace(item, signal=in_held_terms(item.signal, basis))
        self._last_price[item.signal.instrument] = item.signal.price
        self._exposure.repriced(item.signal.instrument)
        return item

    async def _process(self, item: InboxItem, reread: bool) -> SignalOutcome:
        if reread:
            resumed = await self._resume(item)
            if resumed is not None:
                return resumed
        item = await self._take_prices(item)
        signal = item.signal
        kind = signal.signal_type
        if kind is SignalType.EOD_MONITOR:
            return await self._record(item, ignored(EOD_RECORDED))
        if kind in ENTRY_TYPES:
            refusal = self._entry_refusal(item)
            if refusal is not None:
                return await self._record(item, refusal)
            await self._show_venue(signal)
            return await self._enter(item)
        await self._show_venue(signal)
        layers = await self._db.live_layers(signal.instrument)
        plan: Verdict | ExitPlan | MarketDataPlan
        if kind is SignalType.EXIT:
            plan = decide_exit(signal, layers)
        else:
            plan = decide_market_data(signal, self._instruments[signal.instrument], layers)
        after_roll = kind is SignalType.EXIT and await self._exit_after_roll(signal, layers)
        if isinstance(plan, Verdict):
            if after_roll:
                plan = Verdict(Outcome.EXECUTED, "exit follows the roll under way")
            return await self._record(item, plan)
        return await self._exit(item.signal_id, signal, plan)

    async def _show_venue(self, signal: Signal) -> None:
        """Let the venue act on the price before the daemon decides on it: a venue with no
        market of its own (paper) is shown the price, as a real one would have seen it;
        then what it did is settled (`watch_venue`), as it may have sold the layer the
        decision is about."""
        layers = await self._db.live_layers(signal.instrument)
        if not layers:
            return
        try:
            for symbol in sorted({x.tradingsymbol for x in layers if x.tradingsymbol}):
                await self._broker.observe(symbol, signal.price)
            for check in self._venue_checks:
                await check(signal.instrument, signal.price)
        except BrokerError as exc:  # a sale still cancels, or adopts, the layer's stop first
            log.warning("venue_stops_not_read", instrument=signal.instrument, error=str(exc))

    async def operator_exit(self, instrument: str, position: str, reason: str
                            ) -> SignalOutcome | None:
        """Exit an instrument's layer (or ALL) by the daemon's own decision — a manual exit,
        a flatten, the day's square-off — as an EXIT alert would; None if no such layer
        is live. The exit has no signal: its intents carry `reason`."""
        async with self.locks(instrument):
            layers = await self._db.live_layers(instrument)
            targets = [x for x in layers if position in ("ALL", x.layer)]
            if not targets:
                return None
            signal = Signal(SignalType.EXIT, instrument, position,
                            await self._exit_price(instrument, targets), None, None, None,
                            None, None, self._clock(), reason, None, None)
            if await self._exit_after_roll(signal, layers):
                return SignalOutcome(0, Outcome.EXECUTED, "exit follows the roll under way")
            plan = decide_exit(signal, layers)
            if isinstance(plan, Verdict):
                return SignalOutcome(0, plan.outcome, plan.reason)
            return await self._exit(None, signal, plan, operator=True)

    async def _exit_price(self, instrument: str, layers: list[Layer]) -> Decimal:
        """The reference price of an exit no alert priced: the last price seen, else the
        venue's last trade, else the entry. (A live venue prices its order from a fresh
        quote of its own; only the paper venue fills at this price.)"""
        seen = self._last_price.get(instrument)
        if seen is not None:
            return seen
        symbol = layers[0].tradingsymbol or instrument
        try:
            quote = await self._broker.quote(symbol)
        except BrokerError as exc:
            log.warning("quote_unavailable", tradingsymbol=symbol, error=str(exc))
            quote = None
        return quote if quote is not None else layers[0].entry_price

    async def _exit_after_roll(self, signal: Signal, layers: list[Layer]) -> bool:
        """An EXIT of layers being rolled: carried out in the new contract as soon as the
        roll is done (an exit is never dropped). Its other layers exit as usual."""
        if self.rollover is None:
            return False
        roll = await self.rollover.live_roll(signal.instrument)
        if roll is None:
            return False
        targets = [layer.id for layer in layers if layer.id in roll.position_ids
                   and signal.position in ("ALL", layer.layer)]
        return bool(targets) and await self.rollover.request_exit(
            roll, signal.reason or "EXIT", targets)

    async def _resume(self, item: InboxItem) -> SignalOutcome | None:
        """Return the outcome of a signal already decided or in flight, else None."""
        record = await self._db.signal(item.signal_id)
        if record is None or record.status is SignalStatus.RECEIVED:
            return None
        if record.status is SignalStatus.PROCESSED and record.outcome is not None:
            return SignalOutcome(record.id, record.outcome, record.reason)
        unresolved = [i for i in await self._db.intents_for_signal(item.signal_id)
                      if i.is_unresolved]
        if unresolved:
            return await self._complete_all(unresolved, fresh=False, item=item)
        return None

    async def _record(self, item: InboxItem, verdict: Verdict) -> SignalOutcome:
        await self._db.record_decision(item.signal_id, verdict.outcome, verdict.reason,
                                       self._processed_by, self._clock())
        return SignalOutcome(item.signal_id, verdict.outcome, verdict.reason)

    async def _enter(self, item: InboxItem) -> SignalOutcome:
        signal = item.signal
        spec = self._instruments[signal.instrument]
        # The lock covers only snapshot → decision → reservation of the entry's risk, so
        # that entries on different instruments never pass one portfolio cap twice. With a
        # warm cache nothing inside awaits I/O; the writes happen after it is released.
        async with self._entry_lock:
            layers = await self._db.live_layers(signal.instrument)
            try:
                book = await self.book_snapshot()  # asks the venue for its free margin
            except BrokerError as exc:
                log.warning("entry_without_broker", error=str(exc))
                return await self._record(item, rejected("broker_unavailable"))
            pyramiding = await self._db.pyramiding_state(signal.instrument)
            if signal.signal_type is SignalType.BASE_ENTRY:
                plan = decide_base_entry(signal, spec, self._config, layers, book)
            else:
                plan = decide_pyramid(signal, spec, self._config, layers, pyramiding, book)
            reservation: object | None = None
            if isinstance(plan, EntryPlan):
                assert signal.atr is not None
                reservation = object()
                self._inflight[id(reservation)] = (
                    (signal.price - plan.initial_stop) * plan.lots * spec.point_value,
                    signal.atr * plan.lots * spec.point_value, plan.lots * spec.margin_per_lot)
        quote: Decimal | None = None
        try:
            if isinstance(plan, EntryPlan) and self._price_limits is not None:
                plan, quote = await self._check_price(signal, plan)
            if isinstance(plan, Verdict):
                return await self._record(item, plan)
            intent = await self._open_entry(item, plan, pyramiding, quote)
            if isinstance(intent, SignalOutcome):
                return intent
            failpoints.reached("after_intent_commit")
            return await self._flow.complete(intent, fresh=True,
                                             deadline=self._deadline(item, intent))
        finally:
            if reservation is not None:
                self._inflight.pop(id(reservation), None)

    async def _check_price(self, signal: Signal, plan: EntryPlan
                           ) -> tuple[Verdict | EntryPlan, Decimal | None]:
        """Check the entry against the venue's quote (2 % base, 1 % pyramid); return the
        decision and the quote it was checked against."""
        assert self._price_limits is not None
        symbol = self._broker.contract(signal.instrument, self._clock()).tradingsymbol
        try:
            quote = await self._broker.quote(symbol)
        except BrokerError as exc:
            log.warning("quote_unavailable", tradingsymbol=symbol, error=str(exc))
            return rejected("broker_unavailable"), None
        if quote is None:
            return rejected(f"no quote for {symbol}"), None
        pyramid = signal.signal_type is SignalType.PYRAMID
        limit = self._price_limits[1] if pyramid else self._price_limits[0]
        growth = (self._config.max_pyramid_risk_increase_percent if pyramid
                  else self._config.max_base_risk_increase_percent)
        return check_execution_price(plan, signal, quote, pyramid, limit, growth), quote

    async def _open_entry(self, item: InboxItem, plan: EntryPlan,
                          pyramiding: PyramidingState | None,
                          quote: Decimal | None) -> OrderIntent | SignalOutcome:
        """Commit the entry's intent — or, if the trading state or the day's entry cap
        refuses it in that same transaction, roll it back and record the signal's
        `blocked` decision."""
        signal = item.signal
        assert signal.atr is not None  # entries require it (DOMAIN.md §3)
        # A base entry's trade id is allocated when it fills; a pyramid joins its base's trade.
        trade_id = None if plan.layer == BASE_LAYER or pyramiding is None else (
            pyramiding.trade_id)
        purpose = EntryPurpose(layer=plan.layer, trade_id=trade_id,
                               initial_stop=plan.initial_stop, atr=signal.atr,
                               limiter=plan.limiter, quoted=quote is not None)
        day = trading_day(self._clock())
        try:
            async with self._db.transaction() as tx:
                intent = await self._flow.open_intent(
                    tx, item.signal_id, signal.instrument, Side.BUY, plan.lots,
                    quote if quote is not None else signal.price, purpose)
                refusal = entry_refusal(await tx.count_entry(day), day,
                                        self._config.max_entries_per_day)
                if refusal is not None:
                    raise _EntryRefused(refusal)  # the intent rolls back with the count
        except _EntryRefused as refused:
            return await self._record(item, Verdict(Outcome.BLOCKED, refused.reason))
        return intent

    async def _exit(self, signal_id: int | None, signal: Signal,
                    plan: ExitPlan | MarketDataPlan, operator: bool = False) -> SignalOutcome:
        """Trail the stops and commit the exit's intents, one per contract, in one
        transaction — unless the trading state refuses the exit there (the stops still
        trail). `operator`: an exit the daemon decided itself (no signal); only a flatten's
        passes HALTED."""
        trails = plan.trails if isinstance(plan, MarketDataPlan) else ()
        exit_plan = plan.exit if isinstance(plan, MarketDataPlan) else plan
        refusal: str | None = None
        async with self._db.transaction() as tx:
            for layer, trail in trails:
                await tx.update_layer_later(layer, highest_close=trail.highest_close,
                                            current_stop=trail.current_stop)
            intents: list[OrderIntent] = []
            if exit_plan is not None:
                refusal = exit_refusal(await tx.trading_state(),
                                       exit_plan.reason if operator else None)
            if exit_plan is None or refusal is not None:
                if signal_id is not None:
                    await tx.decide_signal(signal_id, Outcome.EXECUTED if refusal is None
                                           else Outcome.BLOCKED, refusal,
                                           self._processed_by, self._clock())
            else:
                for layer in exit_plan.layers:
                    await tx.update_layer_later(layer, status=LayerStatus.CLOSING)
                parts = exit_plan.by_contract()
                for n, part in enumerate(parts):
                    ids = tuple(layer.id for layer in part.layers)
                    intents.append(await self._flow.open_intent(
                        tx, signal_id, signal.instrument, Side.SELL, part.lots,
                        signal.price,
                        ExitPurpose(reason=part.reason, position_ids=ids, orders=len(parts)),
                        position_ids=ids, quantity=part.quantity,
                        contract=part.layers[0].contract, first=n == 0))
        stops = {str(layer.id): str(trail.current_stop) for layer, trail in trails}
        if refusal is not None:
            return SignalOutcome(signal_id or 0, Outcome.BLOCKED, refusal, {"stops": stops})
        if not intents:  # as a bar decided with its admission: stops only if one moved
            return SignalOutcome(signal_id or 0, Outcome.EXECUTED, None,
                                 {"stops": stops} if stops else {})
        failpoints.reached("after_intent_commit")
        outcome = await self._complete_all(intents, fresh=True)
        if stops:
            outcome.result["stops"] = stops
        return outcome

    async def _complete_all(self, intents: list[OrderIntent], *, fresh: bool,
                            item: InboxItem | None = None) -> SignalOutcome:
        """Drive each of a signal's intents to its end; the last one decides the signal."""
        outcomes = [await self._flow.complete(
            intent, fresh=fresh, deadline=self._deadline(item, intent) if item else None)
            for intent in intents]
        return merged(outcomes)

    def _deadline(self, item: InboxItem, intent: OrderIntent) -> datetime | None:
        if not isinstance(intent.purpose, EntryPurpose):
            return None  # exits are always carried out
        return entry_deadline(item.received_at, self._config.max_entry_delay_s)

    # -- the book -------------------------------------------------------------------------
    async def restore_prices(self, prices: dict[str, Decimal]) -> None:
        """Take up the last alert prices from before a restart, so that the book is not
        marked at its entries (which would read as a day's loss or gain that never was)."""
        now = self._clock()
        for instrument, price in prices.items():
            self._last_alert.setdefault(instrument, price)
            basis = await self.rollover.basis(instrument, now) if self.rollover else 0
            self._last_price.setdefault(instrument, price + basis)
            self._exposure.repriced(instrument)

    def last_alert_price(self, instrument: str) -> Decimal | None:
        """The price the last alert quoted (a continuous chart's, before any basis)."""
        return self._last_alert.get(instrument)

    def last_price(self, layer: Layer) -> Decimal:
        return marked(self._last_price, layer)

    def last_prices(self) -> dict[str, Decimal]:
        """Each instrument's last price as of now (a copy): `last_price` at this moment is
        the layer's instrument's, else its entry."""
        return dict(self._last_price)

    @property
    def config(self) -> PortfolioConfig:
        """The portfolio configuration the engine decides under."""
        return self._config

    def price_of(self, instrument: str) -> Decimal | None:
        """The instrument's last price, in the held contract's terms (None: none seen)."""
        return self._last_price.get(instrument)

    async def exposure(self) -> Exposure:
        """Return the book's exposure at the last prices the engine has seen."""
        return await self._exposure.exposure()

    async def book_snapshot(self) -> BookSnapshot:
        """Return what sizing needs: equities, free margin, open risk and volatility —
        counting the entries decided but not filled yet."""
        book = await self.exposure()
        sizing = sizing_equity(self._config, book.equity.closed, book.equity.blended,
                               book.equity.high)
        pending = list(self._inflight.values())
        risk = book.risk + sum((r for r, _, _ in pending), Decimal(0))
        vol = book.volatility + sum((v for _, v, _ in pending), Decimal(0))
        used = book.margin_used + sum((m for _, _, m in pending), Decimal(0))
        margin = await self._broker.available_margin(sizing, used)
        return BookSnapshot(sizing, book.equity.blended, margin, risk, vol, used)


class _EntryRefused(Exception):
    """The trading state or the day's entry cap refused an entry in its intent's
    transaction."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def merged(outcomes: list[SignalOutcome]) -> SignalOutcome:
    """One answer for a signal whose exit took one order per contract: executed if any filled."""
    if len(outcomes) == 1:
        return outcomes[0]
    filled = [o for o in outcomes if o.outcome is Outcome.EXECUTED]
    if not filled:
        return outcomes[-1]
    total = sum((Decimal(o.result["pnl"]) for o in filled), Decimal(0))
    closed = [i for o in filled for i in o.result.get("positions_closed", [])]
    reasons = [o.reason for o in outcomes if o.reason]
    return SignalOutcome(filled[0].signal_id, Outcome.EXECUTED, "; ".join(reasons) or None,
                         {**filled[-1].result, "pnl": money_text(total),
                          "positions_closed": closed})
