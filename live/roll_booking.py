"""Booking a roll leg's outcome inside its fill transaction (DOMAIN.md §9).

The close leg accumulates on the roll row until the whole old quantity is sold; then each
layer's old leg is booked (a closed row with reason ROLL and its TRADING_PNL), and the open
leg's intent is committed in the same transaction — so no crash can leave the book between
the legs without a durable intent to resolve. The open leg accumulates likewise; once the
lots are bought, the layers continue in the new contract with every price shifted by the
spread. What a leg leaves unfilled (refused, partly filled) becomes its next attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.accounting import money_text
from core.book_store import BookTransaction
from core.intents import ExitPurpose, RollPurpose
from core.models import (
    ContractRef,
    Layer,
    LayerStatus,
    LedgerType,
    NewIntent,
    OrderIntent,
    PyramidingState,
    Side,
)
from core.rollover import (
    DONE,
    OPENING,
    ROLL_EXIT_REASON,
    Roll,
    carried,
    carried_pyramiding,
    close_progress,
    old_legs,
    open_progress,
)
from core.specs import InstrumentSpec


@dataclass(frozen=True, slots=True)
class RollState:
    """What booking a leg reads before its transaction: the roll, its layers, the pyramid."""

    roll: Roll
    layers: list[Layer]
    pyramiding: PyramidingState | None


async def book_roll_leg(tx: BookTransaction, intent: OrderIntent, purpose: RollPurpose,
                        state: RollState, quantity: int, price: Decimal | None,
                        spec: InstrumentSpec, now: datetime
                        ) -> tuple[dict[str, Any], list[OrderIntent]]:
    """Book `quantity` filled at `price` (0 and None: refused) on one leg; return the result
    and the intents committed to carry the roll on."""
    roll = state.roll
    if purpose.leg == "close":
        progress = close_progress(roll, quantity, price or Decimal(0))
        counters = {"closed_quantity": progress.quantity, "close_notional": progress.notional}
    else:
        progress = open_progress(roll, quantity, price or Decimal(0))
        counters = {"opened_quantity": progress.quantity, "open_notional": progress.notional}
    result: dict[str, Any] = {"roll_id": roll.id, "leg": purpose.leg}
    if not progress.complete:
        if quantity:
            await tx.update_roll(roll, **counters)
        retry = await _leg_intent(tx, intent, purpose.retried(intent.id, purpose.position_ids),
                                  progress.left, spec)
        result["roll_pending"] = retry.tag
        return result, [retry]
    if purpose.leg == "close":
        return await _close_done(tx, intent, state, counters, progress.average, spec, now)
    return await _open_done(tx, state, counters, progress.average, spec, now)


async def _close_done(tx: BookTransaction, intent: OrderIntent, state: RollState,
                      counters: dict[str, Any], close_price: Decimal, spec: InstrumentSpec,
                      now: datetime) -> tuple[dict[str, Any], list[OrderIntent]]:
    """The old contract is sold: book each layer's old leg, then commit the open leg."""
    roll = state.roll
    note = f"roll {roll.old_tradingsymbol} -> {roll.new_tradingsymbol}"
    legs = old_legs(state.layers, close_price, spec)
    for leg in legs:
        part = await tx.insert_closed_part(
            leg.layer, leg.layer.lots, leg.layer.quantity, exit_price=close_price,
            exit_timestamp=now, exit_reason=ROLL_EXIT_REASON, realized_pnl=leg.pnl)
        await tx.append_ledger(LedgerType.TRADING_PNL, leg.pnl, position_id=part, note=note)
        # Booked: until the new leg fills, the layer stands at the price it was sold at, so
        # its old-contract gain is not counted again as open P&L.
        await tx.update_layer_later(leg.layer, entry_price=close_price)
    pnl = sum((leg.pnl for leg in legs), Decimal(0))
    await tx.update_roll(roll, status=OPENING, close_price=close_price, pnl=pnl, closed_at=now,
                         **counters)
    ids = tuple(roll.position_ids)
    opening = await tx.insert_intent(NewIntent(
        signal_id=None, instrument=roll.instrument, side=Side.BUY, lots=roll.lots,
        quantity=roll.new_quantity, order_type="MARKET",
        price=close_price + roll.quoted_spread, tradingsymbol=roll.new_tradingsymbol,
        exchange=roll.new_exchange, expiry=roll.new_expiry, position_ids=ids,
        purpose=RollPurpose(roll_id=roll.id, leg="open", position_ids=ids)))
    await tx.log_event("roll_closed", intent_id=intent.id, instrument=roll.instrument,
                       roll_id=roll.id, close_price=close_price, pnl=pnl,
                       open_intent=opening.tag)
    return ({"roll_id": roll.id, "leg": "close", "close_price": str(close_price),
             "pnl": money_text(pnl), "roll_pending": opening.tag}, [opening])


async def _open_done(tx: BookTransaction, state: RollState, counters: dict[str, Any],
                     open_price: Decimal, spec: InstrumentSpec,
                     now: datetime) -> tuple[dict[str, Any], list[OrderIntent]]:
    """The new contract is bought: the layers continue in it, shifted by the spread."""
    roll = state.roll
    assert roll.close_price is not None  # the close leg was done first
    spread = open_price - roll.close_price
    new = ContractRef(roll.new_tradingsymbol, roll.new_exchange, roll.new_expiry)
    # An exit asked for while the roll ran is carried out now, in the new contract.
    exiting_ids = set(roll.exit_position_ids) if roll.exit_reason else set()
    for layer in state.layers:
        status = LayerStatus.CLOSING if layer.id in exiting_ids else LayerStatus.OPEN
        await tx.update_layer_later(layer, status=status,
                                    **carried(layer, new, open_price, spread, spec))
    shifted = carried_pyramiding(state.pyramiding, spread)
    if shifted is not None:
        await tx.save_pyramiding(shifted)
    await tx.update_roll(roll, status=DONE, open_price=open_price, spread=spread,
                         completed_at=now, **counters)
    await tx.log_event("roll_done", instrument=roll.instrument, roll_id=roll.id,
                       old=roll.old_tradingsymbol, new=roll.new_tradingsymbol,
                       close_price=roll.close_price, open_price=open_price, spread=spread,
                       pnl=roll.pnl)
    result = {"roll_id": roll.id, "leg": "open", "open_price": str(open_price),
              "spread": str(spread)}
    leaving = [layer for layer in state.layers if layer.id in exiting_ids]
    if not leaving or not roll.exit_reason:
        return result, []
    ids = tuple(layer.id for layer in leaving)
    exiting = await tx.insert_intent(NewIntent(
        signal_id=None, instrument=roll.instrument, side=Side.SELL,
        lots=sum(layer.lots for layer in leaving),
        quantity=sum(spec.broker_quantity(layer.lots) for layer in leaving),
        order_type="MARKET", price=open_price, tradingsymbol=new.tradingsymbol,
        exchange=new.exchange, expiry=new.expiry, position_ids=ids,
        purpose=ExitPurpose(reason=roll.exit_reason, position_ids=ids)))
    return {**result, "exit_pending": exiting.tag}, [exiting]


async def _leg_intent(tx: BookTransaction, intent: OrderIntent, purpose: RollPurpose,
                      quantity: int, spec: InstrumentSpec) -> OrderIntent:
    """The next attempt at what a leg left unfilled: same side, contract and price."""
    per_lot = intent.quantity // intent.lots
    retry = await tx.insert_intent(NewIntent(
        signal_id=None, instrument=intent.instrument, side=intent.side,
        lots=max(quantity // per_lot, 1), quantity=quantity, order_type=intent.order_type,
        price=intent.price, tradingsymbol=intent.tradingsymbol, exchange=intent.exchange,
        expiry=intent.expiry, position_ids=purpose.position_ids, purpose=purpose))
    await tx.log_event("roll_leg_retry_scheduled", intent_id=retry.id,
                       instrument=intent.instrument, tag=retry.tag, retry_of=intent.id,
                       attempt=purpose.attempt, quantity=quantity)
    return retry


def roll_layers(live: Sequence[Layer], roll: Roll) -> list[Layer]:
    """The roll's layers among the instrument's live ones, in the roll's order."""
    by_id = {layer.id: layer for layer in live}
    missing = [i for i in roll.position_ids if i not in by_id]
    if missing:
        raise LookupError(f"{roll.instrument}: roll {roll.id} of layers {missing} not live")
    return [by_id[i] for i in roll.position_ids]
