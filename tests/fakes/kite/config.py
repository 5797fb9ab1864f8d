"""What the fake is started with: its futures series, prices, cash and switches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]  # this file is tests/fakes/kite/config.py
FIXTURE_INSTRUMENTS = REPO / "tests" / "fakes" / "kite_fixtures" / "instruments_all.csv"
LAST_THURSDAY = "last_thursday"
FIFTH_OF_MONTH = "fifth_of_month"


@dataclass(frozen=True, slots=True)
class FutureSpec:
    """A monthly futures series listed in the fake's instruments dump."""

    name: str
    exchange: str
    segment: str
    lot_size: int
    tick_size: Decimal
    expiry_rule: str  # LAST_THURSDAY or FIFTH_OF_MONTH
    exchange_token_base: int
    freeze_quantity: int | None = None  # max units per order (§4.2); None: no cap


DEFAULT_FUTURES = (
    FutureSpec("BANKNIFTY", "NFO", "NFO-FUT", 30, Decimal("0.05"), LAST_THURSDAY, 910_000, 600),
    FutureSpec("GOLDM", "MCX", "MCX-FUT", 100, Decimal("1.0"), FIFTH_OF_MONTH, 920_000),
    FutureSpec("SILVERM", "MCX", "MCX-FUT", 5, Decimal("1.0"), FIFTH_OF_MONTH, 930_000),
    FutureSpec("COPPER", "MCX", "MCX-FUT", 2500, Decimal("0.05"), FIFTH_OF_MONTH, 940_000),
)


def _default_prices() -> dict[str, Decimal]:
    # Keyed by series name; a tradingsymbol or "EXCH:SYMBOL" key overrides it for one contract.
    return {"BANKNIFTY": Decimal("52000"), "GOLDM": Decimal("72000"),
            "SILVERM": Decimal("88000"), "COPPER": Decimal("850")}


def _default_cash() -> dict[str, Decimal]:
    return {"equity": Decimal("5000000"), "commodity": Decimal("5000000")}


def _default_fixture_csv() -> Path | None:
    return FIXTURE_INSTRUMENTS


@dataclass(frozen=True)
class FakeKiteConfig:
    """Everything the fake is started with; controls change the running state, not this."""

    api_key: str = "fake_api_key"
    api_secret: str = "fake_api_secret"
    access_token: str | None = "fake_access_token"  # valid from the start; None: log in first
    user_id: str = "AB1234"
    user_name: str = "Fake Kite"
    app_id: int = 1234
    today: date | None = None  # contracts are listed relative to it; None: today in IST
    futures: tuple[FutureSpec, ...] = DEFAULT_FUTURES
    default_prices: Mapping[str, Decimal] = field(default_factory=_default_prices)
    fixture_instruments_csv: Path | None = field(default_factory=_default_fixture_csv)
    available_cash_inr: Mapping[str, Decimal] = field(default_factory=_default_cash)
    margin_rate: Decimal = Decimal("0.12")  # margin blocked per rupee of notional
    circuit_percent: Decimal = Decimal("10")  # circuit limits: close ± this
    auto_market_protection_percent: Decimal = Decimal("2")  # what market_protection=-1 means
    accept_any_request_token: bool = False
    single_session: bool = True  # a new login kills the older access tokens
    require_kite_version: bool = True  # 400 without `X-Kite-Version: 3` (§6.1 item 2)
    enforce_rate_limits: bool = False
    fault_timeout_s: float = 8.0  # the `timeout` fault; above the client's 7 s default
    postback_url: str | None = None
    postback_timeout_s: float = 2.0
    state_file: Path | None = None
