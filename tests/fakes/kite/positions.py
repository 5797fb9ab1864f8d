"""Positions and margins, derived from the fills.

There is no overnight carry (a rule of our own): `net` and `day` positions are the same rows.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.fakes.kite.market import Market
from tests.fakes.kite.orders import Trade
from tests.fakes.kite.wire import json_number


def segment_of(exchange: str) -> str:
    return "commodity" if exchange == "MCX" else "equity"


def positions_payload(trades: list[Trade], market: Market) -> dict[str, list[dict[str, Any]]]:
    """Return `net` and `day` positions from the fills; no overnight carry, so they match."""
    groups: dict[tuple[str, str], list[Trade]] = {}
    for trade in trades:
        groups.setdefault((trade.key, trade.product), []).append(trade)
    rows = [position_row(group, market.last_price(key)) for (key, _), group in groups.items()]
    return {"net": rows, "day": [dict(row) for row in rows]}


def _side_totals(trades: list[Trade], side: str) -> tuple[int, Decimal]:
    mine = [trade for trade in trades if trade.transaction_type == side]
    return (sum(trade.quantity for trade in mine),
            sum((trade.price * trade.quantity * trade.multiplier for trade in mine), Decimal(0)))


def position_row(trades: list[Trade], last_price: Decimal | None) -> dict[str, Any]:
    """Return one position row with the fixture's fields (positions.json)."""
    first, multiplier = trades[0], trades[0].multiplier
    buy_quantity, buy_value = _side_totals(trades, "BUY")
    sell_quantity, sell_value = _side_totals(trades, "SELL")
    buy_price = buy_value / (buy_quantity * multiplier) if buy_quantity else Decimal(0)
    sell_price = sell_value / (sell_quantity * multiplier) if sell_quantity else Decimal(0)
    quantity = buy_quantity - sell_quantity
    last = last_price or Decimal(0)
    value = sell_value - buy_value  # the fixture's sign: cash out is negative
    pnl = value + quantity * last * multiplier
    average = buy_price if quantity > 0 else sell_price if quantity < 0 else Decimal(0)
    money = {"average_price": average, "close_price": Decimal(0), "last_price": last,
             "value": value, "pnl": pnl, "m2m": pnl,
             # The fixture books all of pnl as unrealised, even for flat positions.
             "unrealised": pnl, "realised": Decimal(0)}
    sides = {"buy_quantity": buy_quantity, "buy_price": buy_price, "buy_value": buy_value,
             "buy_m2m": buy_value, "sell_quantity": sell_quantity, "sell_price": sell_price,
             "sell_value": sell_value, "sell_m2m": sell_value}
    day = {"day_buy_quantity": buy_quantity, "day_buy_price": buy_price,
           "day_buy_value": buy_value, "day_sell_quantity": sell_quantity,
           "day_sell_price": sell_price, "day_sell_value": sell_value}
    head = {"tradingsymbol": first.tradingsymbol, "exchange": first.exchange,
            "instrument_token": first.instrument_token, "product": first.product,
            "quantity": quantity, "overnight_quantity": 0, "multiplier": multiplier}
    return {**head, **{k: _out(v) for k, v in {**money, **sides, **day}.items()}}


def _out(value: int | Decimal) -> int | float:
    return json_number(value) if isinstance(value, Decimal) else value


def segment_margins(cash: Decimal, used: Decimal) -> dict[str, Any]:
    """Return one segment of /user/margins (margins_equity.json's shape)."""
    net = cash - used
    return {
        "enabled": True, "net": json_number(net),
        "available": {"adhoc_margin": 0, "cash": json_number(cash),
                      "opening_balance": json_number(cash), "live_balance": json_number(net),
                      "collateral": 0, "intraday_payin": 0},
        "utilised": {"debits": json_number(used), "exposure": 0, "m2m_realised": 0,
                     "m2m_unrealised": 0, "option_premium": 0, "payout": 0,
                     "span": json_number(used), "holding_sales": 0, "turnover": 0,
                     "liquid_collateral": 0, "stock_collateral": 0, "delivery": 0},
    }
