"""How the dashboard writes money, prices and times: rupees with Indian digit grouping
(₹12,34,567.89) and India time, whatever the server's zone."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")
CENT = Decimal("0.01")


def indian_grouping(digits: str) -> str:
    """Group an integer's digits the Indian way: the last three, then pairs (12,34,567)."""
    if len(digits) <= 3:
        return digits
    head, tail = digits[:-3], digits[-3:]
    pairs: list[str] = []
    while len(head) > 2:
        head, pair = head[:-2], head[-2:]
        pairs.insert(0, pair)
    return ",".join([head, *pairs, tail])


def number(value: Decimal | int | None, places: int = 2) -> str:
    """A number in Indian grouping with `places` decimals; an em dash for none."""
    if value is None:
        return "—"
    exact = Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    sign = "-" if exact < 0 else ""
    whole, _, fraction = f"{abs(exact):f}".partition(".")
    return f"{sign}{indian_grouping(whole)}{'.' + fraction if fraction else ''}"


def rupees(value: Decimal | int | None, places: int = 2) -> str:
    """Money as ₹ with Indian grouping, the sign before the symbol (-₹1,250.00)."""
    if value is None:
        return "—"
    text = number(value, places)
    return f"-₹{text[1:]}" if text.startswith("-") else f"₹{text}"


def signed_rupees(value: Decimal | None) -> str:
    """P&L: a plus sign on gains, so a glance tells the direction."""
    if value is None:
        return "—"
    return ("+" if value > 0 else "") + rupees(value)


def ist(moment: datetime | None, with_date: bool = True) -> str:
    """A moment in India time (`03 Dec 14:05:09 IST`)."""
    if moment is None:
        return "—"
    local = moment.astimezone(IST)
    return local.strftime("%d %b %H:%M:%S IST" if with_date else "%H:%M:%S IST")


def percent(value: Decimal | None, places: int = 2) -> str:
    return "—" if value is None else f"{number(value, places)}%"
