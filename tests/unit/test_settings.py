import json
import os
import re
import shutil
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.domain_files import DEFAULT_CONFIG_DIR
from config.errors import ConfigError
from config.settings import Settings, build_settings, load_domain


def build(flags: Mapping[str, object], environ: Mapping[str, str]) -> Settings:
    """build_settings with exactly `environ` as the PM_* environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("PM_")]:
            patch.delenv(name)
        for name, value in environ.items():
            patch.setenv(name, value)
        return build_settings(flags)


def test_defaults_with_empty_environment() -> None:
    settings = build({}, {})

    assert (settings.host, settings.port, settings.broker) == ("127.0.0.1", 8080, "paper")
    assert settings.state_dir == Path("state")
    assert settings.capital is None
    assert (settings.db_config, settings.db_env) == (None, "local")
    assert settings.webhook_secret is None
    assert (settings.decision_wait_ms, settings.webhook_max_bytes) == (2000, 16384)
    assert (settings.rate_limit_per_min, settings.log_level) == (120, "INFO")
    assert settings.config_dir == DEFAULT_CONFIG_DIR
    assert settings.shutdown_timeout_s == 10.0


def test_environment_overrides_defaults() -> None:
    environ = {
        "PM_PORT": "9001",
        "PM_BROKER": "zerodha",
        "PM_CAPITAL": "2500000.50",
        "PM_WEBHOOK_SECRET": "hook-secret",
        "PM_DB_CONFIG": "/etc/pm/db.json",
        "PM_LOG_LEVEL": "debug",
    }
    settings = build({}, environ)

    assert (settings.port, settings.broker) == (9001, "zerodha")
    assert settings.capital == Decimal("2500000.50") and type(settings.capital) is Decimal
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == "hook-secret"
    assert settings.db_config == Path("/etc/pm/db.json")
    assert settings.log_level == "DEBUG"


def test_flags_override_environment() -> None:
    settings = build({"port": 7000, "host": "0.0.0.0"}, {"PM_PORT": "9001"})

    assert (settings.port, settings.host) == (7000, "0.0.0.0")


def test_none_flags_are_dropped_so_environment_wins() -> None:
    settings = build({"port": None, "db_env": None}, {"PM_PORT": "9001"})

    assert (settings.port, settings.db_env) == (9001, "local")


def test_settings_are_frozen() -> None:
    settings = build({}, {})
    with pytest.raises(ValidationError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        build({}, {"PM_PORT": "eighty"})
    assert str(info.value) == (
        "settings: PM_PORT: Input should be a valid integer, unable to parse string as an integer"
    )


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="flag broker: Input should be 'paper' or 'zerodha'"):
        build({"broker": "ib"}, {})


def test_load_domain_reads_shipped_files() -> None:
    instruments, portfolio = load_domain(build({}, {}))

    assert set(instruments) == {"BANK_NIFTY", "GOLD_MINI", "SILVER_MINI", "COPPER"}
    assert portfolio.max_portfolio_risk_percent == Decimal("15")
    assert portfolio.initial_capital == Decimal("5000000")


def test_portfolio_environment_override_beats_file() -> None:
    environ = {
        "PM_PORTFOLIO__MAX_PORTFOLIO_RISK_PERCENT": "10",
        "PM_PORTFOLIO__USE_1R_GATE": "false",
    }
    _, portfolio = load_domain(build({}, environ))

    assert portfolio.max_portfolio_risk_percent == Decimal("10")
    assert type(portfolio.max_portfolio_risk_percent) is Decimal
    assert portfolio.use_1r_gate is False
    assert portfolio.max_portfolio_vol_percent == Decimal("5")


def test_bad_portfolio_override_names_the_variable_and_file() -> None:
    settings = build({}, {"PM_PORTFOLIO__MAX_PORTFOLIO_RISK_PERCENT": "0"})

    with pytest.raises(ConfigError) as info:
        load_domain(settings)
    message = str(info.value)
    assert message.startswith(
        "PM_PORTFOLIO__MAX_PORTFOLIO_RISK_PERCENT: Input should be greater than 0"
    )
    assert str(DEFAULT_CONFIG_DIR / "portfolio.json") in message


def test_unknown_portfolio_override_is_rejected() -> None:
    settings = build({}, {"PM_PORTFOLIO__MAX_RISK": "10"})

    with pytest.raises(ConfigError, match="PM_PORTFOLIO__MAX_RISK: Extra inputs are not permitted"):
        load_domain(settings)


def test_capital_setting_overrides_initial_capital() -> None:
    environ = {"PM_PORTFOLIO__INITIAL_CAPITAL": "1000000", "PM_CAPITAL": "2000000"}

    _, from_env = load_domain(build({}, environ))
    _, from_flag = load_domain(build({"capital": Decimal("3000000")}, environ))

    assert from_env.initial_capital == Decimal("2000000")
    assert from_flag.initial_capital == Decimal("3000000")


def test_load_domain_uses_config_dir(tmp_path: Path) -> None:
    shutil.copy(DEFAULT_CONFIG_DIR / "instruments.json", tmp_path / "instruments.json")
    (tmp_path / "portfolio.json").write_text(json.dumps({"stop_source": "atr"}))

    _, portfolio = load_domain(build({"config_dir": tmp_path}, {}))
    assert portfolio.stop_source == "atr"


def test_load_domain_missing_file_names_it(tmp_path: Path) -> None:
    settings = build({}, {"PM_CONFIG_DIR": str(tmp_path)})

    expected = f"{tmp_path / 'instruments.json'}: file not found"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_domain(settings)


def test_settings_class_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_DECISION_WAIT_MS", "500")

    assert Settings().decision_wait_ms == 500
