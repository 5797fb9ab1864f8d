"""The book's trading state (DOMAIN.md §11) and what it lets through. Pure: standard library.

ACTIVE trades; REDUCING lets exits through and blocks entries; HALTED blocks both, except the
exits of a flatten (the kill switch halts first, then exits everything). The state is one
row, read in the same transaction as every order intent it could refuse, so a change and an
intent never race.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class Actor(StrEnum):
    OPERATOR = "operator"
    LIMIT = "limit"
    SYSTEM = "system"


MANUAL = "MANUAL"
FLATTEN = "FLATTEN"  # the one exit reason HALTED lets through
EOD_SQUARE_OFF = "EOD_SQUARE_OFF"

_ENTRY_BLOCKS = {TradingState.REDUCING: "trading paused", TradingState.HALTED: "trading halted"}


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The `trading_state` row."""

    state: TradingState
    reason: str | None
    actor: Actor
    since: datetime
    breach_day: date | None = None  # a latched daily-loss breach, until an operator resumes
    breach_pnl: Decimal | None = None
    breach_at: datetime | None = None
    resumed_breach_day: date | None = None  # the day's loss an operator accepted by resuming
    entries_day: date | None = None
    entries_count: int = 0
    version: int = 1

    @property
    def breached(self) -> bool:
        return self.breach_day is not None

    def entries_on(self, day: date) -> int:
        """Entries sent to the broker in trading day `day`."""
        return self.entries_count if self.entries_day == day else 0


def entry_refusal(record: StateRecord, day: date, max_entries_per_day: int | None) -> str | None:
    """Why a new entry (base or pyramid) may not be sent now, or None."""
    blocked = _ENTRY_BLOCKS.get(record.state)
    if blocked is not None:
        return blocked
    if max_entries_per_day is not None and record.entries_on(day) >= max_entries_per_day:
        return f"daily entry limit {max_entries_per_day} reached"
    return None


def exit_refusal(record: StateRecord, reason: str | None) -> str | None:
    """Why a new exit may not be sent now, or None: only HALTED refuses, and never a
    flatten's. `reason`: the exit's reason when the daemon itself decided it (an alert's
    own text is passed as None, so no alert can pass for a flatten)."""
    if record.state is TradingState.HALTED and reason != FLATTEN:
        return "trading halted"
    return None


@dataclass(frozen=True, slots=True)
class StateChange:
    """What an operator or a limit asked for: the row to write, or None if nothing changes."""

    state: TradingState
    reason: str | None
    actor: Actor
    clears_breach: bool


def change(record: StateRecord, wanted: TradingState, reason: str | None, actor: Actor
           ) -> StateChange | None:
    """Return the change that moves `record` to `wanted`, or None when there is none to
    record: the state is already `wanted` (and a resume has no breach to clear).

    Resume (ACTIVE from an operator) also clears a latched daily-loss breach.
    """
    clears = wanted is TradingState.ACTIVE and actor is Actor.OPERATOR and record.breached
    if record.state is wanted and not clears:
        return None
    return StateChange(wanted, reason, actor, clears)


@dataclass(frozen=True, slots=True)
class Flatten:
    """A `flattens` row: the kill switch, from the request until the broker confirms flat."""

    id: int
    status: str  # "flattening" | "flat"
    reason: str
    actor: str
    requested_at: datetime
    finished_at: datetime | None
    layers_closed: int
    orders_cancelled: int
