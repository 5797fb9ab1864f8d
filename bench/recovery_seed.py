"""Seed a book directly in the database: open layers, processed signals, the broker's fills."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import psycopg

LAYERS_PER_INSTRUMENT = 6


def seed_book(conninfo: str, instruments: list[str], layers: int, signals: int) -> None:
    """Write `layers` open layers (six per instrument) and `signals` decided signals."""
    now = datetime.now(UTC)
    with psycopg.connect(conninfo) as conn:
        conn.execute("""INSERT INTO portfolio_state (id, initial_capital, closed_equity,
                        equity_high) VALUES (1, 5000000, 5000000, 5000000)""")
        conn.execute("""INSERT INTO capital_transactions (txn_type, amount, equity_before,
                        equity_after) VALUES ('DEPOSIT', 5000000, 0, 5000000)""")
        with conn.cursor().copy(
                """COPY portfolio_positions (trade_id, instrument, layer, is_base_position,
                   lots, quantity, entry_price, entry_timestamp, initial_stop, current_stop,
                   highest_close, atr, limiter, tradingsymbol) FROM STDIN""") as copy:
            for n in range(layers):
                instrument = instruments[n // LAYERS_PER_INSTRUMENT]
                number = n % LAYERS_PER_INSTRUMENT + 1
                copy.write_row((n // LAYERS_PER_INSTRUMENT + 1, instrument, f"Long_{number}",
                                number == 1, 1, 1, 100 + number, now, 90, 90, 100 + number, 5,
                                "risk", instrument))
        held = sorted({instruments[n // LAYERS_PER_INSTRUMENT] for n in range(layers)})
        with conn.cursor().copy(
                """COPY pyramiding_state (instrument, trade_id, last_pyramid_price,
                   pyramid_count) FROM STDIN""") as copy:
            for trade, instrument in enumerate(held, start=1):
                copy.write_row((instrument, trade, 106, 5))
        with conn.cursor().copy(
                """COPY paper_orders (order_id, tag, tradingsymbol, side, quantity, order_type,
                   price, status, filled_quantity, average_price) FROM STDIN""") as copy:
            for n in range(layers):
                symbol = instruments[n // LAYERS_PER_INSTRUMENT]
                copy.write_row((f"SEED{n}", f"SEED{n}", symbol, "BUY", 1, "MARKET", 100,
                                "COMPLETE", 1, 100))
        with conn.cursor().copy(
                """COPY paper_trades (trade_id, order_id, tradingsymbol, side, quantity, price)
                   FROM STDIN""") as copy:
            for n in range(layers):
                copy.write_row((f"SEED{n}T1", f"SEED{n}",
                                instruments[n // LAYERS_PER_INSTRUMENT], "BUY", 1, 100))
        with conn.cursor().copy(
                """COPY signal_log (fingerprint, signal_type, instrument, position,
                   signal_timestamp, payload, received_at, status, outcome, reason,
                   processed_at, processed_by) FROM STDIN""") as copy:
            for n in range(signals):
                at = now - timedelta(seconds=n)
                instrument = instruments[n % len(instruments)]
                copy.write_row((hashlib.sha256(f"seed{n}".encode()).hexdigest(), "MARKET_DATA",
                                instrument, None, at,
                                json.dumps({"type": "MARKET_DATA", "instrument": instrument}),
                                at, "processed", "ignored", "seeded", at, "seed"))
