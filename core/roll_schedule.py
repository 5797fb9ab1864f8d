"""When a futures contract stops taking entries and when its layers roll (DOMAIN.md §9).

Pure: standard library and `core` only; time is passed in and must be timezone-aware.

Cut-off date = expiry - `cutoff_days_before_expiry` calendar days: the last day the broker lets
the position be held. Roll day = the cut-off date moved back `roll_lead_trading_days` trading
days of the instrument's exchange; the roll is due from `roll_at` (IST) on the roll day. From
the roll day on, no new entry goes into the expiring contract.
"""

from collections.abc import Sequence
from datetime import date, datetime, timedelta

from core.calendar import TradingCalendar, india_time
from core.models import ContractRef
from core.signals import INDIA
from core.specs import InstrumentSpec


def cutoff_date(spec: InstrumentSpec, expiry: date) -> date:
    """Return the cut-off date of a contract of `spec` expiring on `expiry` (calendar days)."""
    return expiry - timedelta(days=spec.cutoff_days_before_expiry)


def roll_day(spec: InstrumentSpec, calendar: TradingCalendar, expiry: date) -> date:
    """Return the day the layers of a contract of `spec` expiring on `expiry` are rolled.

    A cut-off date that is not a trading day (a weekend or holiday) is first moved to the
    previous trading day — the last day the position can actually be closed — and the lead is
    counted from there: a cut-off on Sunday with a lead of 2 rolls on Wednesday, not Thursday.
    """
    cutoff = cutoff_date(spec, expiry)
    if not calendar.is_trading_day(spec.exchange, cutoff):
        cutoff = calendar.previous_trading_day(spec.exchange, cutoff)
    return calendar.trading_days_back(spec.exchange, cutoff, spec.roll_lead_trading_days)


def roll_moment(spec: InstrumentSpec, calendar: TradingCalendar, expiry: date) -> datetime:
    """Return the moment (aware, IST) from which a contract expiring on `expiry` is rolled."""
    return datetime.combine(roll_day(spec, calendar, expiry), spec.roll_at, tzinfo=INDIA)


def entry_contract(
    contracts: Sequence[ContractRef],
    spec: InstrumentSpec,
    calendar: TradingCalendar,
    now: datetime,
) -> ContractRef:
    """Return the contract a new entry of `spec` buys at `now`.

    That is the nearest contract whose roll day is after today's IST date, so an expiring
    contract takes no entry from its roll day on. A contract without an expiry never rolls and
    counts as farther than any dated one. Contracts of another exchange are ignored (one with no
    exchange is taken as the instrument's). Raises LookupError if no contract qualifies.
    """
    today = india_time(now).date()
    candidates = [c for c in contracts if c.exchange in (spec.exchange, None)]
    for contract in sorted(candidates, key=_expiry_order):
        if contract.expiry is None or roll_day(spec, calendar, contract.expiry) > today:
            return contract
    listed = ", ".join(
        f"{c.tradingsymbol} (expiry {c.expiry}, roll day {roll_day(spec, calendar, c.expiry)})"
        for c in sorted(candidates, key=_expiry_order)
        if c.expiry is not None
    )
    raise LookupError(
        f"no {spec.name} contract on {spec.exchange} has its roll day after {today}; "
        f"listed: {listed or 'none'}"
    )


def next_contract(contracts: Sequence[ContractRef], held: ContractRef) -> ContractRef | None:
    """Return the contract of `held`'s exchange with the next expiry after `held`'s, or None.

    None also for a held contract without an expiry: it is never rolled.
    """
    if held.expiry is None:
        return None
    later = [
        c for c in contracts
        if c.exchange == held.exchange and c.expiry is not None and c.expiry > held.expiry
    ]
    return min(later, key=_expiry_order, default=None)


def roll_due(
    spec: InstrumentSpec, calendar: TradingCalendar, held: ContractRef, now: datetime
) -> bool:
    """Return whether layers held in `held` must be rolled at `now` (never without an expiry)."""
    if held.expiry is None:
        return False
    return india_time(now) >= roll_moment(spec, calendar, held.expiry)


def _expiry_order(contract: ContractRef) -> tuple[bool, date]:
    return (contract.expiry is None, contract.expiry or date.max)
