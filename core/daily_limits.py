"""The daily loss limit (DOMAIN.md §10): the trading day of a moment, the day's P&L, and
whether it breaches the limit. Pure: standard library and `core` only.

The trading day is the IST calendar date, whatever the exchange: one day for the whole book,
so one baseline and one count of entries.

Day P&L = realised P&L booked since the day began (00:00 IST) + (unrealised now − unrealised
at the day's first snapshot). A layer open at the day's start and closed since books its
whole P&L from entry as realised, and its share of the baseline cancels what it had gained
before today; a layer opened today has no baseline, so all its unrealised P&L is today's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal

from core.calendar import india_time
from core.signals import INDIA

_HUNDRED = Decimal(100)


def trading_day(moment: datetime) -> date:
    """Return the trading day `moment` (timezone-aware) falls in: its IST date."""
    return india_time(moment).date()


def day_began(day: date) -> datetime:
    """Return the moment trading day `day` began: 00:00 IST."""
    return datetime.combine(day, time(0), tzinfo=INDIA)


@dataclass(frozen=True, slots=True)
class DayStart:
    """The day's first snapshot: the baseline of the day's P&L and of its loss limit."""

    day: date
    sizing_equity: Decimal
    unrealised: Decimal


@dataclass(frozen=True, slots=True)
class DayLoss:
    """The day's P&L against its loss limit."""

    day: date
    pnl: Decimal
    limit: Decimal | None  # rupees the day may lose; None: no limit
    start_equity: Decimal

    @property
    def breached(self) -> bool:
        # Exactly at the limit is a breach: the limit is what the day may lose, not more.
        return self.limit is not None and self.pnl <= -self.limit


def day_pnl(realised_today: Decimal, unrealised_now: Decimal,
            unrealised_at_start: Decimal) -> Decimal:
    """Return the day's P&L: realised today plus the change in unrealised P&L since the
    day's first snapshot."""
    return realised_today + unrealised_now - unrealised_at_start


def loss_limit(limit_percent: Decimal | None, start_equity: Decimal) -> Decimal | None:
    """Return the rupees a day may lose: `limit_percent` of sizing equity at the day's
    start; None when the limit is off or there is no equity to measure it against (a
    limit of zero would call any flat day a breach)."""
    if limit_percent is None or start_equity <= 0:
        return None
    return start_equity * limit_percent / _HUNDRED


def day_loss(start: DayStart, realised_today: Decimal, unrealised_now: Decimal,
             limit_percent: Decimal | None) -> DayLoss:
    """Return the day's P&L and limit, measured from the day's first snapshot."""
    return DayLoss(day=start.day,
                   pnl=day_pnl(realised_today, unrealised_now, start.unrealised),
                   limit=loss_limit(limit_percent, start.sizing_equity),
                   start_equity=start.sizing_equity)
