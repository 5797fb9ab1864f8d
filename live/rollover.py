"""Rolling open layers out of an expiring contract (DOMAIN.md §9).

From `roll_at` on an instrument's roll day (or the first session moment after it), the layers
held in the expiring contract are rolled: one roll per instrument, started in one transaction
with its close leg's intent; every later step is booked by the leg's fill (see
`live.roll_booking`) and driven like an exit, so it resumes after any crash and is never
dropped. A position still in a contract past its cut-off blocks the instrument's entries and
is reported on every check until it is rolled or closed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog

from core.book_store import BookStore
from core.calendar import TradingCalendar, india_time
from core.intents import RollPurpose
from core.models import ContractRef, Layer, LayerStatus, NewIntent, Side
from core.roll_schedule import cutoff_date, next_contract, roll_day, roll_due
from core.rollover import Roll, alert_basis, new_roll
from core.specs import InstrumentSpec
from core.trading_state import TradingState
from live import failpoints
from live.brokers.base import Broker, BrokerError
from live.every import every
from live.exit_retries import ExitRetries
from live.instrument_locks import InstrumentLocks
from live.readiness import Readiness

ROLL_OVERDUE = "roll_overdue:"
log = structlog.get_logger(__name__)


class Rollover:
    def __init__(self, db: BookStore, broker: Broker, instruments: dict[str, InstrumentSpec],
                 calendar: TradingCalendar, readiness: Readiness, locks: InstrumentLocks,
                 pending: ExitRetries, *, clock: Callable[[], datetime],
                 last_price: Callable[[str], Decimal | None], interval_s: float = 30.0):
        self._db = db
        self._broker = broker
        self._instruments = instruments
        self._calendar = calendar
        self._readiness = readiness
        self._locks = locks
        self._pending = pending
        self._clock = clock
        self._last_price = last_price
        self._interval_s = interval_s
        self._rolls: list[Roll] = []
        self._generation, self._loaded = 1, 0  # bookings move it on; loads catch up
        # Any booking of a roll leg may move a roll on: read them again before the next use.
        # Only an instrument with a roll has legs: the others' fills (nearly all) keep the
        # list, which every alert reads for its basis.
        pending.flow.booking.retry_listeners.append(lambda i: self._mark_stale(i.instrument))
        pending.flow.fill_listeners.append(self._mark_stale)

    def _mark_stale(self, instrument: str | None = None) -> None:
        if instrument is None or any(r.instrument == instrument for r in self._rolls):
            self._generation += 1

    async def rolls(self) -> list[Roll]:
        """The rolls under way and those whose old contract has not expired yet."""
        if self._loaded != self._generation:
            generation = self._generation  # a booking during the read makes it stale again
            today = india_time(self._clock()).date()
            self._rolls = await self._db.load_rolls(since=today - timedelta(days=1))
            self._loaded = generation
        return self._rolls

    def without_rolls(self, instrument: str) -> bool:
        """Whether the instrument surely has no roll to reckon with (no I/O): none in a
        list that is up to date."""
        return self._loaded == self._generation and not any(
            r.instrument == instrument for r in self._rolls)

    async def live_roll(self, instrument: str) -> Roll | None:
        return next((r for r in await self.rolls() if r.instrument == instrument and r.live),
                    None)

    async def basis(self, instrument: str, now: datetime) -> Decimal:
        """What converts an alert's prices into the held contract's terms (DOMAIN.md §9)."""
        return alert_basis(self._instruments[instrument], await self.rolls(),
                           india_time(now).date())

    # -- the check ------------------------------------------------------------------------
    async def run(self) -> None:
        await every(self._interval_s, self.check, "rollover_check_failed")

    async def check(self) -> list[int]:
        """Start every roll that is due; flag positions past their cut-off. Returns the ids
        of the rolls started."""
        started: list[int] = []
        now = self._clock()
        for instrument, spec in self._instruments.items():
            layers = await self._db.live_layers(instrument)
            self._flag_overdue(instrument, spec, layers, now)
            expiring = self._due(spec, layers, now)
            if expiring is None or await self.live_roll(instrument) is not None:
                continue
            if not self._calendar.in_session(spec, now):
                continue  # the first session moment after roll_at
            roll = await self.start(instrument, expiring)
            if roll is not None:
                started.append(roll)
        return started

    def _due(self, spec: InstrumentSpec, layers: list[Layer],
             now: datetime) -> ContractRef | None:
        """The contract whose layers are due to roll now, if every layer is at rest."""
        if any(layer.status is not LayerStatus.OPEN for layer in layers):
            return None  # an exit or a roll is under way: it goes first
        if self._pending.has_pending(spec.name):
            return None
        for layer in layers:
            if layer.expiry is None:  # never rolled (and no contract to build, per layer)
                continue
            contract = layer.contract
            if contract is not None and roll_due(spec, self._calendar, contract, now):
                return contract
        return None

    def _flag_overdue(self, instrument: str, spec: InstrumentSpec, layers: list[Layer],
                      now: datetime) -> None:
        today = india_time(now).date()
        late = sorted({layer.tradingsymbol or instrument for layer in layers
                       if layer.expiry is not None and today >= cutoff_date(spec, layer.expiry)})
        key = ROLL_OVERDUE + instrument
        if not late:
            self._readiness.unblock(key)
            return
        self._readiness.block_entries(key, key, instrument)
        # Said on every check, until it is rolled or closed: the broker may square it off.
        log.error("roll_overdue", instrument=instrument, contracts=late,
                  detail="position held past the broker's cut-off")

    async def start(self, instrument: str, old: ContractRef) -> int | None:
        """Start rolling the layers held in `old`: the roll row and its close leg's intent,
        in one transaction; the leg is then carried out like an exit."""
        spec = self._instruments[instrument]
        now = self._clock()
        async with self._locks(instrument):
            layers = [layer for layer in await self._db.live_layers(instrument)
                      if layer.contract == old]
            if not layers or any(layer.status is not LayerStatus.OPEN for layer in layers):
                return None
            new = next_contract(self._broker.contracts(instrument, now), old)
            if new is None:
                log.error("roll_without_next_contract", instrument=instrument,
                          tradingsymbol=old.tradingsymbol)
                return None
            reference = self._last_price(instrument) or layers[0].highest_close
            try:
                old_quote, new_quote = await self._broker.roll_quotes(old, new, reference)
            except BrokerError as exc:
                log.warning("roll_quotes_unavailable", instrument=instrument, error=str(exc))
                return None
            ids = tuple(layer.id for layer in layers)
            async with self._db.transaction() as tx:
                # A roll sells and buys: HALTED stops it from starting (one under way
                # finishes — its layers are half sold). Read with the roll's own writes.
                if (await tx.trading_state()).state is TradingState.HALTED:
                    log.warning("roll_waits_trading_halted", instrument=instrument,
                                tradingsymbol=old.tradingsymbol)
                    return None
                roll = await tx.insert_roll(new_roll(instrument, old, new, layers, spec,
                                                     new_quote - old_quote, now))
                for layer in layers:
                    await tx.update_layer_later(layer, status=LayerStatus.CLOSING)
                closing = await tx.insert_intent(NewIntent(
                    signal_id=None, instrument=instrument, side=Side.SELL, lots=roll.lots,
                    quantity=roll.quantity, order_type="MARKET", price=old_quote,
                    tradingsymbol=old.tradingsymbol, exchange=old.exchange, expiry=old.expiry,
                    position_ids=ids,
                    purpose=RollPurpose(roll_id=roll.id, leg="close", position_ids=ids)))
                await tx.log_event("roll_started", intent_id=closing.id, instrument=instrument,
                                   roll_id=roll.id, old=old.tradingsymbol,
                                   new=new.tradingsymbol, lots=roll.lots,
                                   quoted_spread=new_quote - old_quote)
        self._mark_stale()
        log.info("roll_started", instrument=instrument, roll_id=roll.id,
                 old=old.tradingsymbol, new=new.tradingsymbol, lots=roll.lots)
        failpoints.reached("after_roll_close_intent")
        self._pending.schedule(closing, "roll")
        return roll.id

    async def request_exit(self, roll: Roll, reason: str, position_ids: list[int]) -> bool:
        """Note an exit of some of `roll`'s layers asked for while it runs: carried out as
        soon as it is done. False if the roll is done already (the layers are open)."""
        current = await self._db.roll(roll.id)
        if current is None or not current.live:
            return False
        ids = sorted({*current.exit_position_ids, *position_ids})
        async with self._db.transaction() as tx:
            await tx.update_roll(current, exit_reason=current.exit_reason or reason,
                                 exit_position_ids=ids)
        self._mark_stale()
        return True

    # -- what /status shows ---------------------------------------------------------------
    async def report(self) -> dict[str, Any]:
        """Each instrument's held contract, next roll day and cut-off, any roll under way, and
        the alert basis in force."""
        now = self._clock()
        today = india_time(now).date()
        shown: dict[str, Any] = {}
        for instrument, spec in self._instruments.items():
            held = sorted({layer.contract for layer in await self._db.live_layers(instrument)
                           if layer.contract is not None},
                          key=lambda c: (c.expiry or date.max, c.tradingsymbol))
            try:
                entering: ContractRef | None = self._broker.contract(instrument, now)
            except (LookupError, BrokerError):
                entering = None
            contract = held[0] if held else entering
            view: dict[str, Any] = {
                "held": [_contract_view(c) for c in held],
                "entry_contract": _contract_view(entering) if entering else None,
                "alerts_follow": spec.alerts_follow,
                "alert_basis": str(await self.basis(instrument, now)),
            }
            if contract is not None and contract.expiry is not None:
                view["next_roll_day"] = roll_day(spec, self._calendar, contract.expiry)
                view["roll_at"] = spec.roll_at.isoformat(timespec="minutes")
                view["cutoff"] = cutoff_date(spec, contract.expiry)
                view["past_cutoff"] = bool(held) and today >= view["cutoff"]
            roll = await self.live_roll(instrument)
            if roll is not None:
                view["roll"] = {"id": roll.id, "status": roll.status,
                                "old": roll.old_tradingsymbol, "new": roll.new_tradingsymbol,
                                "lots": roll.lots}
            shown[instrument] = view
        return shown


def _contract_view(contract: ContractRef) -> dict[str, Any]:
    return {"tradingsymbol": contract.tradingsymbol, "exchange": contract.exchange,
            "expiry": contract.expiry}

