"""Rows onto records: the one place stored text becomes enums and typed intent purposes."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import fields
from enum import Enum
from typing import Any

from psycopg import sql
from psycopg.rows import BaseRowFactory, RowMaker

from core.broker_stops import StopRecord, StopStatus
from core.intents import purpose_from_json
from core.models import (
    IntentStatus,
    Layer,
    LayerStatus,
    OrderIntent,
    Outcome,
    Side,
    SignalRecord,
    SignalStatus,
)
from core.trading_state import Actor, StateRecord, TradingState


def columns(model: type) -> sql.SQL:
    """Return the column list that maps a table's rows onto `model`, rendered once: a
    composed list is escaped identifier by identifier at every execution (~5 % of the
    daemon's CPU went to rendering its statements)."""
    return _rendered(sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(model)))


@functools.lru_cache(maxsize=256)
def assignments(names: tuple[str, ...]) -> sql.SQL:
    """`"a" = %(a)s, "b" = %(b)s` for an UPDATE of these columns, rendered once."""
    return _rendered(sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
        for name in names))


def json_param(rows: Any) -> str:
    """Many rows as one JSON parameter, dumped in one call: an array per column is adapted
    element by element (~0.1 ms an alert, ~50 ms for ten thousand stops). A price goes as its
    exact decimal text."""
    return json.dumps(rows, default=str)


def _rendered(fragment: sql.Composable) -> sql.SQL:
    return sql.SQL(fragment.as_string(None))


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _member(enum: type[Enum]) -> Callable[[Any], Any]:
    """The enum's member for a stored value: a dict look-up (calling the enum costs a
    microsecond, thousands of times over in a recovery load); anything else is the enum's
    to refuse, as before."""
    members = {member.value: member for member in enum}
    return lambda value: members[value] if value in members else enum(value)


# Per model, the columns whose stored text becomes something else.
_CONVERTERS: dict[type, dict[str, Callable[[Any], Any]]] = {
    Layer: {"status": _member(LayerStatus)},
    OrderIntent: {"status": _member(IntentStatus), "side": _member(Side),
                  "purpose": purpose_from_json},
    SignalRecord: {"status": _member(SignalStatus), "outcome": _optional(_member(Outcome))},
    StateRecord: {"state": _member(TradingState), "actor": _member(Actor)},
    StopRecord: {"status": _member(StopStatus)},
}


def row_factory(model: type) -> BaseRowFactory[Any]:
    """Return the row factory that builds `model` records from its table's columns."""
    names = [f.name for f in fields(model)]
    converters = _CONVERTERS.get(model, {})

    def factory(cursor: Any) -> RowMaker[Any]:
        selected = [column.name for column in cursor.description or ()]
        if selected == names[:len(selected)]:
            # The columns in the model's order (as `columns` lists them): built by position,
            # without a dict per row (a recovery load builds tens of thousands).
            at = [(i, converters[name]) for i, name in enumerate(selected)
                  if name in converters]
            return lambda values: model(*_converted(values, at))
        return lambda values: model(**{name: converters[name](value) if name in converters
                                       else value for name, value in zip(selected, values,
                                                                         strict=True)})

    return factory


def _converted(values: Sequence[Any], at: list[tuple[int, Callable[[Any], Any]]]
               ) -> Sequence[Any]:
    if not at:
        return values
    converted = list(values)
    for i, convert in at:
        converted[i] = convert(converted[i])
    return converted
