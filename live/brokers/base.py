"""The broker port: what the engine needs from any venue, and the errors it must tell apart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, TypeVar

import structlog

from core.models import ContractRef, Side

T = TypeVar("T")
log = structlog.get_logger(__name__)


class OrderStatus(StrEnum):
    OPEN = "OPEN"
    COMPLETE = "COMPLETE"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


FINAL_STATUSES = frozenset({OrderStatus.COMPLETE, OrderStatus.REJECTED, OrderStatus.CANCELLED})


class BrokerError(Exception):
    """Base of what a broker adapter raises."""


class BrokerUnavailable(BrokerError):
    """The call may or may not have reached the venue: resolve by tag before anything else."""


class OrderRejected(BrokerError):
    """The venue refused the order; nothing was placed."""


class BrokerAuthExpired(BrokerError):
    """The session token is no longer valid."""


async def read_through_outages(call: Callable[[], Awaitable[T]], first_s: float,
                               max_s: float) -> T:
    """Repeat a broker read while the broker is unreachable (backing off from `first_s`
    to `max_s`); anything else it raises — an expired session — goes to the caller."""
    delay = first_s
    while True:
        try:
            return await call()
        except BrokerUnavailable as exc:
            log.warning("broker_unavailable", error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_s)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    tag: str
    instrument: str
    tradingsymbol: str
    side: Side
    quantity: int  # in the venue's units (MCX lots, NFO units)
    order_type: str
    price: Decimal | None  # reference price: the limit, or the price a paper fill takes
    quoted: bool = False  # `price` is the venue's quote, fetched when the entry was checked
    # Out now, at the market (a flatten): a live venue sends a protected MARKET order rather
    # than a LIMIT it prices from a quote and chases.
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class BrokerTrade:
    trade_id: str
    quantity: int
    price: Decimal
    traded_at: datetime


@dataclass(frozen=True, slots=True)
class VenueTrade:
    """A trade in the venue's trade book, ours or not (the broker's square-off, a manual
    trade in the broker's app); `tag` is its order's tag, "" when it has none."""

    trade_id: str
    order_id: str
    tag: str
    tradingsymbol: str
    side: Side
    quantity: int  # in the venue's units, as positions count them
    price: Decimal
    traded_at: datetime


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    order_id: str
    tag: str
    tradingsymbol: str
    side: str
    quantity: int
    status: OrderStatus
    filled_quantity: int
    average_price: Decimal | None
    message: str | None
    trades: tuple[BrokerTrade, ...] = ()
    order_type: str = "MARKET"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class StopOrder:
    """A protective SELL to rest at the venue (DOMAIN.md §12): `kind` gtt or sl."""

    tag: str  # an SL order's tag; a GTT carries none
    kind: str
    instrument: str
    tradingsymbol: str
    quantity: int  # in the venue's units
    trigger: Decimal
    limit: Decimal


class StopState(StrEnum):
    ACTIVE = "active"  # resting, not fired
    TRIGGERED = "triggered"  # fired: `order_id` is the order selling the layer
    GONE = "gone"  # cancelled, deleted, expired or lapsed at the session's end
    REFUSED = "refused"  # rejected, or disabled (too close to the last price)


@dataclass(frozen=True, slots=True)
class VenueStop:
    ref: str  # the GTT's trigger id, or the SL order's id
    state: StopState
    trigger: Decimal
    quantity: int
    order_id: str | None = None
    message: str | None = None


class Broker(Protocol):
    """A trading venue. Adapters translate their client's errors into the ones above."""

    name: str
    price_check: bool  # whether entries are checked against the venue's quote before placing

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def unavailable_reason(self) -> str | None:
        """Why no new entry can be placed now (e.g. `token_expired`), or None."""
        ...

    async def wait_available(self) -> None:
        """Return once the venue can take orders again."""
        ...

    def contract(self, instrument: str, now: datetime) -> ContractRef:
        """Return the contract a new entry in `instrument` buys at `now` (later orders of its
        layer trade the layer's own contract, whatever this says then)."""
        ...

    def contracts(self, instrument: str, now: datetime) -> list[ContractRef]:
        """Return the contracts listed for `instrument` at `now`, nearest expiry first."""
        ...

    async def roll_quotes(self, old: ContractRef, new: ContractRef,
                          alert_price: Decimal) -> tuple[Decimal, Decimal]:
        """Return the reference prices of a roll's legs (old contract, new contract)."""
        ...

    async def place(self, request: OrderRequest) -> list[str]:
        """Place an order (several when sliced) with the request's tag; return the order ids."""
        ...

    async def find_by_tag(self, tag: str) -> list[BrokerOrder]:
        """Return every order the venue holds with this tag."""
        ...

    async def order(self, order_id: str) -> BrokerOrder:
        """Return an order's current state with its trades."""
        ...

    async def manage(self, order: BrokerOrder, request: OrderRequest) -> BrokerOrder:
        """Work a resting order per the venue's policy (chase, convert, cancel a partial
        remainder) and return its current state."""
        ...

    async def wait_for_update(self, timeout_s: float) -> None:
        """Sleep until the venue reports an order change, at most `timeout_s`."""
        ...

    async def resting_orders(self) -> list[BrokerOrder]:
        """Return the orders placed under the daemon's tags that are not final yet."""
        ...

    async def cancel(self, order: BrokerOrder) -> None:
        """Ask the venue to cancel a resting order (its final state is read with `order`)."""
        ...

    async def positions(self) -> dict[str, int]:
        """Return the net quantity per tradingsymbol, in the venue's units."""
        ...

    def stop_kind(self, instrument: str) -> str | None:
        """Return the kind of broker stop a layer of `instrument` rests (gtt or sl), or None
        when this venue keeps none (or they are switched off)."""
        ...

    async def place_stop(self, stop: StopOrder) -> str:
        """Rest a protective stop at the venue; return its reference."""
        ...

    async def modify_stop(self, ref: str, stop: StopOrder) -> None:
        """Move a resting stop to `stop`'s trigger and limit."""
        ...

    async def cancel_stop(self, kind: str, ref: str) -> None:
        """Ask the venue to cancel a resting stop; OrderRejected when it cannot (it fired)."""
        ...

    async def stop_state(self, kind: str, ref: str) -> VenueStop:
        """Return what the venue says of a stop."""
        ...

    async def find_stop(self, stop: StopOrder, known: frozenset[str]) -> VenueStop | None:
        """Return the stop a placement whose answer was lost left at the venue, if any: by
        tag for an SL order, by contract, quantity and trigger (not one of `known`) for a
        GTT."""
        ...

    async def observe(self, tradingsymbol: str, price: Decimal) -> None:
        """Show the venue a price (only a venue without a market feed of its own uses it):
        a resting stop it reaches fires."""
        ...

    def quiet_at(self, tradingsymbol: str, price: Decimal) -> bool:
        """Whether `observe` would do nothing at `price` (known without I/O)."""
        ...

    async def position(self, tradingsymbol: str) -> int:
        """Return the net quantity held in one contract, in the venue's units."""
        ...

    async def trades(self) -> list[VenueTrade]:
        """Return the venue's trades of the day (the paper venue: all of them), oldest first."""
        ...

    async def quote(self, tradingsymbol: str) -> Decimal | None:
        """Return the last traded price of a contract, or None when the venue has none."""
        ...

    async def available_margin(self, equity: Decimal, used_margin: Decimal) -> Decimal:
        """Return the margin free for new positions."""
        ...
