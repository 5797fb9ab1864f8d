"""The webhook body as a JSON object, or the 400 detail that says why it is not one.

Pure (standard library only) so it can be tested without a server. Whatever the bytes, the
answer is a dict or `BadBody`: never another exception, which the server would turn into a 500.
Every detail starts with "Invalid JSON" (tests and clients match on that prefix); a plain
syntax error is exactly "Invalid JSON", as it always was.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from decimal import Decimal, DecimalException
from typing import Any

INVALID_JSON = "Invalid JSON"
# An alert is one flat object. A few levels leave room for clients that nest extra fields;
# anything deeper is not an alert, and refusing it early bounds the work of walking it.
MAX_DEPTH = 32
# Python's own default for int(str): fixed here so that a process-wide change
# (sys.set_int_max_str_digits, PYTHONINTMAXSTRDIGITS) cannot make parsing quadratic.
MAX_INTEGER_DIGITS = 4300
# PostgreSQL's jsonb refuses U+0000, and psycopg cannot encode a lone surrogate to UTF-8:
# either would fail at the insert (a 500) after the request had been judged valid.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class BadBody(ValueError):
    """A body that is not a storable JSON object; `detail` is the exact 400 detail."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def parse_body(body: bytes) -> dict[str, Any]:
    """Return the JSON object in `body`; raise BadBody with the 400 detail otherwise.

    The body must be strict UTF-8 (a leading byte-order mark is allowed) holding one JSON
    object, nested at most MAX_DEPTH levels, with no duplicate keys, no NaN or Infinity, and no
    string or key containing U+0000 or a lone surrogate. Fractions become `Decimal`, exactly as
    written; integers stay `int`. Field rules (types, ranges) are not checked here.
    """
    try:
        # utf-8-sig is strict UTF-8 that also drops a leading BOM, which json.loads(bytes)
        # has always accepted. Encoded surrogates (b"\xed\xa0\x80") are invalid UTF-8.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadBody(f"{INVALID_JSON}: not UTF-8") from None
    try:
        payload = json.loads(text, parse_float=_decimal, parse_int=_integer,
                             parse_constant=_constant, object_pairs_hook=_object)
    except BadBody:
        raise
    except RecursionError:
        # The C scanner counts its own recursion: a deep enough array exhausts it long before
        # MAX_DEPTH could be checked on the result.
        raise BadBody(f"{INVALID_JSON}: nested too deeply") from None
    except ValueError:  # JSONDecodeError: a syntax error
        raise BadBody(INVALID_JSON) from None
    if not isinstance(payload, dict):
        raise BadBody(f"{INVALID_JSON}: expected an object")
    _check_tree(payload)
    return payload


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except DecimalException:
        # An exponent beyond the decimal module's range (1e1000000000000000000) raises
        # InvalidOperation, an ArithmeticError that json.loads does not turn into ValueError.
        raise BadBody(f"{INVALID_JSON}: number out of range") from None


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise BadBody(f"{INVALID_JSON}: number too long")
    try:
        return int(text)
    except ValueError:  # a lower process-wide digit limit
        raise BadBody(f"{INVALID_JSON}: number too long") from None


def _constant(name: str) -> None:
    # json.loads accepts NaN, Infinity and -Infinity, which are not JSON and not prices.
    raise BadBody(f"{INVALID_JSON}: {name} is not a number")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A plain dict keeps the last of two equal keys, so a payload could pass one value to
    # validation and show another to whoever reads the raw text: refuse the ambiguity.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise BadBody(f"{INVALID_JSON}: duplicate key")
    return result


def _check_tree(payload: dict[str, Any]) -> None:
    # Iterative, so that walking a tree cannot itself exhaust the stack.
    pending: list[tuple[Any, int]] = [(payload, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            _check_string(value)
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise BadBody(f"{INVALID_JSON}: nested too deeply")
            children: Iterable[Any]
            if isinstance(value, dict):
                for key in value:
                    _check_string(key)
                children = value.values()
            else:
                children = value
            pending.extend((child, depth + 1) for child in children)


def _check_string(text: str) -> None:
    bad = _UNSTORABLE.search(text)
    if bad is None:
        return
    if bad.group() == "\x00":
        raise BadBody(f"{INVALID_JSON}: string contains U+0000")
    raise BadBody(f"{INVALID_JSON}: string contains a lone surrogate "
                  f"U+{ord(bad.group()):04X}")
