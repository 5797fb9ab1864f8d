"""The daemon's one frozen Settings object: flags > environment (PM_*) > defaults."""

from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from config.domain_files import DEFAULT_CONFIG_DIR, load_instruments, load_portfolio_config
from config.errors import ConfigError, Loc, describe_validation_error
from core.specs import InstrumentSpec, PortfolioConfig

ENV_PREFIX = "PM_"
PORTFOLIO_ENV_PREFIX = f"{ENV_PREFIX}PORTFOLIO__"

class Settings(BaseSettings):
    """Process settings; units in names. Read from PM_* variables, overridden by flags."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    state_dir: Path = Path("state")
    broker: Literal["paper", "zerodha"] = "paper"
    capital: Decimal | None = Field(default=None, gt=0)
    db_config: Path | None = None
    db_env: str = "local"
    # A pair (DESIGN.md §10): two daemons on one --db-config and one Redis. None: single.
    redis_url: SecretStr | None = None
    lease_ttl_ms: int = Field(default=5000, ge=500)
    webhook_secret: SecretStr | None = None
    # Operator access (DESIGN.md §9): the admin token authorises every operator action, the
    # view token (or the admin token) the read-only views. In paper mode without an admin
    # token one is generated into the state dir. Views are open only on a loopback listener
    # unless views_require_token says otherwise.
    admin_token: SecretStr | None = None
    view_token: SecretStr | None = None
    views_require_token: bool | None = None
    # Comma-separated addresses or networks allowed to call /webhook (empty: any), and the
    # proxies whose X-Forwarded-For names the client.
    webhook_allow_ips: str = ""
    trusted_proxies: str = ""
    decision_wait_ms: int = Field(default=2000, ge=0)
    webhook_max_bytes: int = Field(default=16384, gt=0)
    rate_limit_per_min: int = Field(default=120, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    config_dir: Path = DEFAULT_CONFIG_DIR
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    # Each startup stage (open database, migrate, load, resolve intents, reconcile, resume)
    # past this is named in /ready (or, before serving, stops the start).
    startup_stage_timeout_s: float = Field(default=60.0, gt=0)
    db_watch_interval_s: float = Field(default=1.0, gt=0)
    # During each instrument's session the broker's positions are compared with the book this
    # often (and soon after every fill).
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    # An exit the broker refused or filled partly is tried again after this, doubling each
    # time up to the max (and at the next session open when outside hours): never dropped.
    exit_retry_first_s: float = Field(default=5.0, gt=0)
    exit_retry_max_s: float = Field(default=300.0, gt=0)
    # How often the venue is asked about each broker-resident stop (fired? lapsed?), and a
    # refused or lapsed one placed again; postbacks and prices prompt a check sooner.
    broker_stop_check_s: float = Field(default=15.0, gt=0)
    # How often the roll schedule is checked (a roll starts at the first check from roll_at).
    roll_check_interval_s: float = Field(default=30.0, gt=0)
    kite_api_key: str | None = None
    kite_api_secret: SecretStr | None = None
    kite_access_token: SecretStr | None = None
    kite_root: str = "https://api.kite.trade"
    # Telegram (DESIGN.md §11): alerts to one chat and commands from it, both off without a
    # token. `telegram_events`: the kinds that notify, comma-separated (None: all of them;
    # see live/notification_text.py). A message not delivered within its ttl is given up.
    telegram_bot_token: SecretStr | None = None
    telegram_chat_id: str | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_events: str | None = None
    telegram_message_ttl_s: float = Field(default=3600.0, gt=0)
    telegram_pace_s: float = Field(default=1.0, ge=0)  # per chat: Telegram allows one a second
    failpoint: str | None = None  # crash tests only: see live/failpoints.py
    # Drills and crash campaigns only: the daemon's clock starts here (timezone required)
    # and runs at real speed, so that a roll day or a closed session can be met on demand.
    clock_start: AwareDatetime | None = None
    # PM_PORTFOLIO__<FIELD>=value, collected here so load_domain never reads the environment.
    portfolio: dict[str, str] = Field(default_factory=dict)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No .env or secrets-dir sources: a file nobody remembers must not change a live daemon.
        return init_settings, env_settings


def build_settings(flags: Mapping[str, Any]) -> Settings:
    """Return Settings from flags (None = not given), then PM_* variables, then defaults.

    Raises ConfigError naming the flag or variable.
    """
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        # Not chained: the pydantic text echoes inputs, which may be secrets.
        message = describe_validation_error(exc, lambda loc: _setting_source(loc, given))
        raise ConfigError(f"settings: {message}") from None
    except SettingsError as exc:
        # Raised when a PM_* value meant as JSON (PM_PORTFOLIO) does not parse.
        raise ConfigError(f"settings: {exc}") from None


def load_domain(settings: Settings) -> tuple[dict[str, InstrumentSpec], PortfolioConfig]:
    """Return the instrument table and portfolio config from `settings.config_dir`.

    PM_PORTFOLIO__<FIELD> variables override single fields of portfolio.json, and
    `settings.capital`, when set, overrides initial_capital.
    """
    instruments = load_instruments(settings.config_dir / "instruments.json")
    portfolio_path = settings.config_dir / "portfolio.json"
    from_file = load_portfolio_config(portfolio_path)
    portfolio = _apply_overrides(from_file, settings.portfolio, portfolio_path)
    if settings.capital is not None:
        portfolio = portfolio.model_copy(update={"initial_capital": settings.capital})
    return instruments, portfolio


def _apply_overrides(
    base: PortfolioConfig, overrides: Mapping[str, str], path: Path
) -> PortfolioConfig:
    return portfolio_with(base, overrides, _portfolio_env_name, f" (overriding {path})")


def portfolio_with(base: PortfolioConfig, overrides: Mapping[str, str | None],
                   name_of: Callable[[Loc], str], where: str = "") -> PortfolioConfig:
    """`base` with single fields overridden, the merged whole checked exactly like a file
    value; a bad one raises ConfigError naming it by `name_of` (the variable, the flag)."""
    if not overrides:
        return base
    try:
        return PortfolioConfig.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        message = describe_validation_error(exc, name_of)
        raise ConfigError(f"{message}{where}") from exc


def _portfolio_env_name(loc: Loc) -> str:
    return f"{PORTFOLIO_ENV_PREFIX}{str(loc[0]).upper()}" if loc else "PM_PORTFOLIO__*"


def _setting_source(loc: Loc, flags: Mapping[str, Any]) -> str:
    if not loc:
        return "settings"
    field = str(loc[0])
    if field in flags:
        return f"flag {field}"
    return ENV_PREFIX + "__".join(str(part) for part in loc).upper()
