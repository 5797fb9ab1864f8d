"""The paper venue and the ledger as a test sees them: trades no intent of ours placed, and
the P&L rows booked."""

from __future__ import annotations

import uuid
from decimal import Decimal


def venue_trade(postgresql, symbol: str, side: str, quantity: int, price: str) -> str:  # type: ignore[no-untyped-def]
    """A trade at the paper venue that no intent of ours placed (untagged, as the broker's
    square-off or a manual trade in its app); return its trade id."""
    order_id = f"EXT{uuid.uuid4().hex[:12]}"
    postgresql.execute(
        "INSERT INTO paper_orders (order_id, tag, tradingsymbol, side, quantity, order_type, "
        "price, status, filled_quantity, average_price) "
        "VALUES (%s, '', %s, %s, %s, 'MARKET', %s, 'COMPLETE', %s, %s)",
        (order_id, symbol, side, quantity, price, quantity, price))
    postgresql.execute(
        "INSERT INTO paper_trades (trade_id, order_id, tradingsymbol, side, quantity, price) "
        "VALUES (%s, %s, %s, %s, %s, %s)", (order_id + "T1", order_id, symbol, side, quantity,
                                            price))
    return order_id + "T1"


def pnl_rows(postgresql) -> list[Decimal]:  # type: ignore[no-untyped-def]
    """The TRADING_PNL ledger amounts, oldest first."""
    return [row[0] for row in postgresql.execute(
        "SELECT amount FROM capital_transactions WHERE txn_type = 'TRADING_PNL' ORDER BY id"
    ).fetchall()]
