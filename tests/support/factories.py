"""Builders of valid records for the tests; each test states only what it cares about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.db_state_manager import DatabaseStateManager
from core.models import Layer, NewLayer, NewSignal
from core.signals import fingerprint, normalise_timestamp

T0 = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)


def new_layer(trade_id: int, instrument: str = "GOLD_MINI", layer: str = "Long_1",
              **overrides: Any) -> NewLayer:
    values: dict[str, Any] = {
        "trade_id": trade_id, "instrument": instrument, "layer": layer, "lots": 3,
        "quantity": 3, "entry_price": Decimal("78500"), "entry_timestamp": T0,
        "initial_stop": Decimal("77800"), "atr": Decimal("700"), "limiter": "risk",
        "tradingsymbol": "GOLDM26JANFUT",
    }
    values.update(overrides)
    return NewLayer(**values)


async def open_layer(db: DatabaseStateManager, instrument: str = "GOLD_MINI",
                     layer: str = "Long_1", **overrides: Any) -> Layer:
    async with db.transaction() as tx:
        trade_id = await tx.next_trade_id()
        return await tx.insert_layer(new_layer(trade_id, instrument, layer, **overrides))


def new_signal(signal_type: str = "BASE_ENTRY", instrument: str = "GOLD_MINI",
               position: str | None = "Long_1", at: datetime = T0,
               delta_s: float = 0) -> NewSignal:
    moment = normalise_timestamp(at + timedelta(seconds=delta_s))
    return NewSignal(
        fingerprint=fingerprint(instrument, signal_type, position, moment),
        signal_type=signal_type, instrument=instrument, position=position,
        signal_timestamp=moment,
        payload={"type": signal_type, "instrument": instrument, "position": position,
                 "price": Decimal("78500"), "timestamp": moment.isoformat()},
        received_at=moment,
    )
