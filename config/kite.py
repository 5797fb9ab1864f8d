"""Kite Connect adapter settings: contracts, order policy and tracking, from `config/kite.json`."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.domain_files import read_json_object
from config.errors import ConfigError, describe_validation_error, dotted


class KiteOrderPolicy(BaseModel):
    """How an order is worked: a LIMIT chased with the market, then MARKET; or MARKET."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order_type: Literal["LIMIT", "MARKET"] = "LIMIT"
    limit_buffer_ticks: int = Field(default=5, ge=0)
    max_modifications: int = Field(default=3, ge=0, le=20)
    chase_interval_s: float = Field(default=2.0, gt=0)
    # Percent band for MARKET orders; -1 lets Zerodha choose. Never 0 (refused since 2026-04).
    market_protection: Decimal = Decimal("2")


class KiteContract(BaseModel):
    """Where an instrument trades at Kite: exchange and the dump's underlying `name`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exchange: Literal["NFO", "MCX"]
    name: str = Field(min_length=1)
    # NFO only: the exchange's single-order cap in units; larger orders are sliced.
    freeze_quantity: int | None = Field(default=None, gt=0)
    policy: KiteOrderPolicy = KiteOrderPolicy()


class KiteConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    product: Literal["NRML", "MIS"] = "NRML"
    variety: Literal["regular"] = "regular"
    request_timeout_s: float = Field(default=5.0, gt=0)
    poll_interval_s: float = Field(default=0.5, gt=0)
    # Working orders are chased no faster than they are polled: keep this below the policies'
    # chase_interval_s.
    poll_interval_max_s: float = Field(default=1.0, gt=0)
    partial_fill_wait_s: float = Field(default=30.0, ge=0)
    max_entry_divergence_percent: Decimal = Field(default=Decimal("2"), gt=0)
    max_pyramid_divergence_percent: Decimal = Field(default=Decimal("1"), gt=0)
    token_expiry_warning_minutes: int = Field(default=30, ge=0)
    # Each open layer also rests a stop at Zerodha (a GTT on NFO, an SL order on MCX) so it
    # stays protected while the daemon is down (DOMAIN.md §12).
    broker_stops: bool = True
    instruments: dict[str, KiteContract]

    def policy(self, instrument: str) -> KiteOrderPolicy:
        return self.instruments[instrument].policy


def load_kite_config(path: Path) -> KiteConfig:
    """Return the adapter settings at `path`; errors name the file and the field."""
    document = read_json_object(path)
    try:
        config = KiteConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + describe_validation_error(
            exc, lambda loc: dotted(*loc))) from None
    for name, contract in config.instruments.items():
        if contract.policy.market_protection == 0:
            raise ConfigError(f"{path}: {name}.policy.market_protection: must not be 0")
    return config
