"""Operator commands beside the daemon: `kite-login` and `reconcile`."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import asdict
from decimal import Decimal

from config.errors import ConfigError
from config.settings import Settings, load_domain
from core.booking import book_exit
from core.db_state_manager import DatabaseStateManager
from core.models import Layer, NewLayer
from core.reconciliation import ACCEPTED_EVENT, Discrepancy, book_positions, diff_positions
from core.specs import InstrumentSpec
from live.assembly import build_broker, now_utc
from live.brokers.base import Broker
from live.brokers.kite_session import save_session
from live.daemon import state_dir_lock
from live.database_server import database_target
from live.fill_booking import write_exit
from live.metrics import Metrics
from live.schema_migrations import apply_migrations


def kite_login(settings: Settings, request_token: str | None) -> list[str]:
    """Exchange a request token for today's access token and store it for the daemon."""
    from kiteconnect import KiteConnect

    if not settings.kite_api_key or settings.kite_api_secret is None:
        raise ConfigError("PM_KITE_API_KEY and PM_KITE_API_SECRET must be set")
    kite = KiteConnect(settings.kite_api_key, root=settings.kite_root)
    if not request_token:
        return ["Open this URL, log in, and pass the request_token from the redirect:",
                kite.login_url(),
                "then: python portfolio_manager.py kite-login --request-token TOKEN"]
    session = kite.generate_session(request_token, settings.kite_api_secret.get_secret_value())
    path = save_session(settings.state_dir, session["access_token"], session.get("user_id"),
                        str(session.get("login_time")))
    return [f"logged in as {session.get('user_id')}; session stored in {path} (mode 0600); "
            "a running daemon picks it up within seconds"]


async def run_reconcile(settings: Settings, accept: str | None) -> tuple[list[str], int]:
    """Show book vs broker per contract; optionally accept one side. Returns lines, exit code."""
    instruments, portfolio = load_domain(settings)
    with state_dir_lock(settings.state_dir):
        async with AsyncExitStack() as stack:
            target = await stack.enter_async_context(database_target(settings))
            await asyncio.to_thread(apply_migrations, target.conninfo)
            db = DatabaseStateManager(target.conninfo, min_size=1, max_size=2)
            await db.open()
            stack.push_async_callback(db.close)
            broker = build_broker(settings, instruments, portfolio, target.conninfo,
                                  Metrics()).broker
            await broker.start()
            stack.push_async_callback(broker.close)
            differences = diff_positions(book_positions(await db.load_live_layers()),
                                         await broker.positions())
            lines = [d.describe() for d in differences] or ["book and broker agree"]
            if not differences or accept is None:
                return lines, 1 if differences else 0
            if accept == "book":
                await record_acceptance(db, "book", differences)
                lines.append("accepted the book's side: recorded; entries resume")
            else:
                lines += await adopt_broker_side(db, broker, instruments, differences)
            return lines, 0


async def record_acceptance(db: DatabaseStateManager, side: str,
                            differences: list[Discrepancy]) -> None:
    async with db.transaction() as tx:
        await tx.log_event(ACCEPTED_EVENT, side=side,
                           differences=[asdict(d) for d in differences])


async def adopt_broker_side(db: DatabaseStateManager, broker: Broker,
                            instruments: dict[str, InstrumentSpec],
                            differences: list[Discrepancy]) -> list[str]:
    """Make the book match the broker: close excess layers at the quote, adopt the rest."""
    lines = []
    layers = await db.load_live_layers()
    for difference in differences:
        held = [x for x in layers if (x.tradingsymbol or x.instrument) == difference.tradingsymbol]
        instrument = held[0].instrument if held else _instrument_of(difference, broker,
                                                                    instruments)
        spec = instruments[instrument]
        price = await broker.quote(difference.tradingsymbol)
        if price is None:
            lines.append(f"{difference.tradingsymbol}: no quote; left as is")
            continue
        excess = difference.book - difference.broker
        live_ids = {x.id for x in layers if x.instrument == instrument}
        async with db.transaction() as tx:
            if excess > 0:
                closing = excess_layers(held, excess)
                booking = book_exit(closing, live_ids, sum(x.quantity for x in closing), price,
                                    spec)
                await write_exit(tx, instrument, booking, reason="RECONCILED", price=price,
                                 at=now_utc())
            else:
                taken = {x.layer for x in held}
                name = next(f"Long_{n}" for n in range(1, 7) if f"Long_{n}" not in taken)
                # Unknown stop: 0 counts the whole position as risk until stops trail it up.
                await tx.insert_layer(NewLayer(
                    trade_id=held[0].trade_id if held else await tx.next_trade_id(),
                    instrument=instrument, layer=name, lots=spec.lots_of(-excess),
                    quantity=-excess, entry_price=price, entry_timestamp=now_utc(),
                    initial_stop=Decimal(0), atr=Decimal(0), limiter="reconciled",
                    tradingsymbol=difference.tradingsymbol))
            await tx.log_event(ACCEPTED_EVENT, side="broker", instrument=instrument,
                               difference=asdict(difference), price=price)
        lines.append(f"{difference.tradingsymbol}: book adjusted to the broker at {price}")
    return lines


def excess_layers(held: list[Layer], excess: int) -> list[Layer]:
    """Return the newest whole layers whose quantity the broker no longer holds."""
    closing = []
    for layer in sorted(held, key=lambda x: x.id, reverse=True):
        if excess < layer.quantity:
            break
        closing.append(layer)
        excess -= layer.quantity
    return closing


def _instrument_of(difference: Discrepancy, broker: Broker,
                   instruments: dict[str, InstrumentSpec]) -> str:
    for name in instruments:
        if broker.contract(name, now_utc()).tradingsymbol == difference.tradingsymbol:
            return name
    raise ConfigError(f"{difference.tradingsymbol} is not a configured instrument's contract")
