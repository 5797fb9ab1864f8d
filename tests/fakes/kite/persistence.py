"""The state file: the book, sessions and prices, saved after each change and read at start."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.fakes.kite.book import OrderBook
from tests.fakes.kite.gtt import Gtt, GttBook
from tests.fakes.kite.market import Market, PriceState
from tests.fakes.kite.orders import Order, Trade
from tests.fakes.kite.sessions import Sessions


def to_state(record: Any) -> dict[str, Any]:
    """Return a dataclass record as JSON-ready values (Decimals as text)."""
    return {f.name: _encode(getattr(record, f.name)) for f in fields(record)}


def _encode(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def from_state(cls: Any, data: Mapping[str, Any]) -> Any:
    """Rebuild a record saved by `to_state`; a field newer than the file keeps its default."""
    values = {f.name: Decimal(data[f.name]) if data[f.name] is not None and "Decimal" in str(f.type)
              else data[f.name] for f in fields(cls) if f.name in data}
    return cls(**values)


def write_state(path: Path, book: OrderBook, sessions: Sessions, market: Market,
                gtts: GttBook) -> None:
    """Write the book, sessions, prices and GTTs to `path`, atomically."""
    scratch = path.with_name(path.name + ".tmp")
    document = state_document(book, sessions, market)
    document["gtts"] = {"last_id": gtts.last_id, "triggers": [to_state(g) for g in
                                                              gtts.gtts.values()]}
    scratch.write_text(json.dumps(document))
    os.replace(scratch, path)


def state_document(book: OrderBook, sessions: Sessions, market: Market) -> dict[str, Any]:
    """Return what the state file holds."""
    return {"version": 1,
            "orders": [to_state(order) for order in book.orders.values()],
            "trades": [to_state(trade) for trade in book.trades],
            "sequences": {"order_id": book.last_order_id, "trade": book.trade_seq,
                          "exchange": book.exchange_seq},
            "sessions": {"valid": sorted(sessions.valid),
                         "known": sorted(sessions.known),
                         "request_tokens": sorted(sessions.request_tokens)},
            "prices": {key: to_state(state) for key, state in market.prices.items()}}


def read_state(path: Path, book: OrderBook, sessions: Sessions, market: Market,
               access_token: str | None, gtts: GttBook) -> None:
    """Restore the book, sessions and prices from the state file at `path`."""
    document = json.loads(path.read_text())
    book.orders = {data["order_id"]: from_state(Order, data) for data in document["orders"]}
    book.trades = [from_state(Trade, data) for data in document["trades"]]
    sequences = document["sequences"]
    book.last_order_id = sequences["order_id"]
    book.trade_seq, book.exchange_seq = sequences["trade"], sequences["exchange"]
    saved = document["sessions"]
    sessions.valid = set(saved["valid"])
    sessions.known = set(saved["known"])
    sessions.request_tokens = set(saved["request_tokens"])
    if access_token and access_token not in sessions.known:
        sessions.admit(access_token)  # a token never seen before is new
    market.prices.update({key: from_state(PriceState, data)
                          for key, data in document["prices"].items()})
    saved_gtts = document.get("gtts", {"last_id": gtts.last_id, "triggers": []})
    gtts.last_id = saved_gtts["last_id"]
    gtts.gtts = {data["id"]: from_state(Gtt, data) for data in saved_gtts["triggers"]}
