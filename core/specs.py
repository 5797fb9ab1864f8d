"""Instrument and portfolio parameters: the one table every sizing rule reads from.

Pure: standard library, decimal and pydantic only. Loading from files lives in `config/`.
"""

from datetime import time
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Percent = Annotated[Decimal, Field(gt=0, le=100)]
Positive = Annotated[Decimal, Field(gt=0)]


class InstrumentSpec(BaseModel):
    """Contract parameters of one logical market (DOMAIN.md §2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    exchange: Literal["NFO", "MCX"]
    lot_size: int = Field(gt=0)
    point_value: Positive
    quantity_unit: Literal["units", "lots"]
    margin_per_lot: Positive
    initial_risk_percent: Percent
    initial_vol_percent: Percent
    ongoing_risk_percent: Percent
    ongoing_vol_percent: Percent
    initial_atr_mult: Positive
    trailing_atr_mult: Positive
    max_pyramids: int = Field(ge=0)
    tick_size: Positive
    session_open: time
    session_close: time
    freeze_quantity: int | None = Field(default=None, gt=0)
    # The most lots one order may carry, whatever the equity says: no sizing figure, however
    # large, can make an order the exchange or the book cannot take.
    max_lots_per_order: int = Field(default=100, gt=0, le=10_000_000)
    # Roll schedule (DOMAIN.md §9): cut-off = expiry - cutoff_days_before_expiry calendar days;
    # roll day = cut-off moved back roll_lead_trading_days trading days; roll at roll_at IST.
    cutoff_days_before_expiry: int = Field(default=0, ge=0, le=31)
    roll_lead_trading_days: int = Field(default=2, ge=0, le=20)
    roll_at: time = time(10, 0)
    alerts_follow: Literal["continuous_front", "traded_contract"] = "continuous_front"
    # Intraday users: at this IST time each trading day every open layer is exited
    # (reason EOD_SQUARE_OFF, DOMAIN.md §10). None: never.
    square_off_at: time | None = None

    @field_validator("session_open", "session_close", "roll_at", "square_off_at")
    @classmethod
    def _naive_ist(cls, value: time | None) -> time | None:
        # Sessions are IST wall-clock times; an offset would make them incomparable with
        # the naive times the rest of the table uses.
        if value is not None and value.tzinfo is not None:
            raise ValueError("give session times as IST wall-clock time without an offset")
        return value

    @model_validator(mode="after")
    def _session_order(self) -> Self:
        if self.session_close <= self.session_open:
            raise ValueError("session_close must be after session_open")
        if not self.session_open <= self.roll_at < self.session_close:
            raise ValueError("roll_at must be within the session (session_open to session_close)")
        if self.square_off_at is not None and not (
                self.session_open <= self.square_off_at < self.session_close):
            raise ValueError("square_off_at must be within the session "
                             "(session_open to session_close)")
        return self

    def broker_quantity(self, lots: int) -> int:
        """Return the order quantity the broker expects for this many lots."""
        if lots < 0:
            raise ValueError(f"lots must be >= 0, got {lots}")
        if self.quantity_unit == "units":
            return lots * self.lot_size
        return lots

    def lots_of(self, quantity: int) -> int:
        """Return the whole lots in a broker quantity (the inverse of `broker_quantity`)."""
        if quantity < 0:
            raise ValueError(f"quantity must be >= 0, got {quantity}")
        if self.quantity_unit == "units":
            return quantity // self.lot_size
        return quantity


class PortfolioConfig(BaseModel):
    """Portfolio-wide limits and signal rules (DOMAIN.md §2 and §3)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_portfolio_risk_percent: Percent = Decimal("15")
    max_portfolio_vol_percent: Percent = Decimal("5")
    max_margin_utilization_percent: Percent = Decimal("60")
    pyramid_risk_block: Percent = Decimal("12")
    pyramid_vol_block: Percent = Decimal("4")
    atr_pyramid_spacing: Decimal = Field(default=Decimal("0.5"), ge=0)
    use_1r_gate: bool = True
    sizing_equity: Literal["equity_high", "closed", "blended"] = "equity_high"
    paper_margin_fraction: Decimal = Field(default=Decimal("0.6"), gt=0, le=1)
    use_volatility_constraint: bool = False
    stop_source: Literal["signal", "atr"] = "signal"
    initial_capital: Positive = Decimal("5000000")
    paper_slippage_ticks: int = Field(default=0, ge=0)
    paper_enforce_sessions: bool = False
    max_signal_age_s: int = Field(default=300, gt=0)
    max_future_skew_s: int = Field(default=60, ge=0)
    max_entry_delay_s: int = Field(default=120, gt=0)
    # How much the risk per lot may grow between the alert and the quote (DOMAIN.md §10).
    max_base_risk_increase_percent: Decimal = Field(default=Decimal("50"), ge=0)
    max_pyramid_risk_increase_percent: Decimal = Field(default=Decimal("20"), ge=0)
    dedup_window_s: int = Field(default=60, ge=0)
    # Synthetic monthly contracts for the paper broker, priced this much above the front month
    # per month of distance (DOMAIN.md §9).
    paper_contracts: Literal["none", "monthly"] = "none"
    paper_monthly_basis_percent: Decimal = Field(default=Decimal("0.5"), ge=0, le=10)
    # Risk limits beyond sizing (DOMAIN.md §10); None: off.
    daily_loss_limit_percent: Percent | None = None
    daily_loss_action: Literal["reduce", "flatten"] = "reduce"
    max_entries_per_day: int | None = Field(default=None, gt=0)
    # The portfolio_snapshots time series is taken this often (and at each day's start).
    snapshot_interval_s: int = Field(default=60, gt=0)
    # Broker-resident stops (DOMAIN.md §12): the LIMIT a triggered stop places sits this far
    # below its trigger; the paper venue rests them too unless switched off.
    stop_limit_band_percent: Decimal = Field(default=Decimal("1.0"), gt=0, le=20)
    paper_broker_stops: bool = True
