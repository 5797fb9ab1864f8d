"""Rows onto records: the one place stored text becomes enums and typed intent purposes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from psycopg import sql
from psycopg.rows import BaseRowFactory, class_row, kwargs_row

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


def columns(model: type) -> sql.Composed:
    """Return the column list that maps a table's rows onto `model`."""
    return sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(model))


def _layer(**row: Any) -> Layer:
    return Layer(**{**row, "status": LayerStatus(row["status"])})


def _intent(**row: Any) -> OrderIntent:
    return OrderIntent(**{**row, "status": IntentStatus(row["status"]), "side": Side(row["side"]),
                          "purpose": purpose_from_json(row["purpose"])})


def _signal(**row: Any) -> SignalRecord:
    outcome = row["outcome"]
    return SignalRecord(**{**row, "status": SignalStatus(row["status"]),
                           "outcome": None if outcome is None else Outcome(outcome)})


def _trading_state(**row: Any) -> StateRecord:
    return StateRecord(**{**row, "state": TradingState(row["state"]),
                          "actor": Actor(row["actor"])})


_CONVERTERS: dict[type, Callable[..., Any]] = {
    Layer: _layer, OrderIntent: _intent, SignalRecord: _signal, StateRecord: _trading_state}


def row_factory(model: type) -> BaseRowFactory[Any]:
    """Return the row factory that builds `model` records from its table's columns."""
    convert = _CONVERTERS.get(model)
    return kwargs_row(convert) if convert is not None else class_row(model)
