import json
import traceback
from pathlib import Path

import pytest

from config.database import DatabaseConfig, load_database_config
from config.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "database_config.json.example"
PASSWORD = "s3cr3t-p@ss"


def write_config(tmp_path: Path, blocks: dict[str, object]) -> Path:
    path = tmp_path / "database_config.json"
    path.write_text(json.dumps(blocks))
    return path


def local_block(**changes: object) -> dict[str, object]:
    block: dict[str, object] = {
        "host": "localhost",
        "database": "portfolio_manager",
        "user": "pm",
        "password": "${PM_DB_PASSWORD}",
    }
    block.update(changes)
    return {key: value for key, value in block.items() if value is not None}


def load_error(path: Path, env: str, environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_database_config(path, env, environ)
    return info.value


def full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_example_file_loads_both_environments() -> None:
    environ = {"PM_DB_PASSWORD": PASSWORD, "PM_DB_HOST": "db.internal"}

    local = load_database_config(EXAMPLE, "local", environ)
    production = load_database_config(EXAMPLE, "production", environ)

    assert (local.host, local.port, local.database, local.user) == (
        "localhost", 5432, "portfolio_manager", "pm",
    )
    assert local.password is not None and local.password.get_secret_value() == PASSWORD
    assert production.host == "db.internal"
    assert production.sslmode == "require"
    assert production.pool_max_size > local.pool_max_size


def test_defaults_apply_to_absent_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"local": local_block(password=None)})

    config = load_database_config(path, "local", {})
    assert config == DatabaseConfig(host="localhost", database="portfolio_manager", user="pm")
    assert (config.port, config.sslmode, config.password) == (5432, "prefer", None)
    assert (config.pool_min_size, config.pool_max_size, config.connect_timeout_s) == (2, 10, 10)
    assert config.application_name == "portfolio_manager"


def test_placeholders_expand_inside_strings(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"local": local_block(host="db-${REGION}.${ZONE}.example")})

    environ = {"REGION": "in", "ZONE": "b", "PM_DB_PASSWORD": "x"}
    config = load_database_config(path, "local", environ)
    assert config.host == "db-in.b.example"


def test_expanded_values_are_not_expanded_again(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"local": local_block()})

    config = load_database_config(path, "local", {"PM_DB_PASSWORD": "${HOME}"})
    assert config.password is not None and config.password.get_secret_value() == "${HOME}"


def test_environ_defaults_to_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PM_DB_PASSWORD", PASSWORD)
    path = write_config(tmp_path, {"local": local_block()})

    config = load_database_config(path, "local")
    assert config.password is not None and config.password.get_secret_value() == PASSWORD


def test_missing_environment_lists_available_ones(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"local": local_block(), "production": local_block()})

    error = load_error(path, "staging", {})
    assert str(error) == (
        f"{path}: environment 'staging' not found (available: local, production)"
    )


def test_unset_variable_names_key_and_variable_but_no_values(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"production": local_block(host="${PM_DB_HOST}")})

    error = load_error(path, "production", {"PM_DB_PASSWORD": PASSWORD})
    message = str(error)
    assert message.startswith(f"{path}: environment 'production': ")
    assert "key 'host'" in message and "${PM_DB_HOST}" in message and "not set" in message
    assert PASSWORD not in full_text(error)


def test_missing_key_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"local": local_block(database=None)})

    error = load_error(path, "local", {"PM_DB_PASSWORD": PASSWORD})
    assert str(error) == f"{path}: environment 'local': key 'database': Field required"


def test_invalid_and_unknown_keys_are_named_without_the_password(tmp_path: Path) -> None:
    block = local_block(port="${PM_DB_PORT}", sslmode="always", pool_size=3)
    path = write_config(tmp_path, {"local": block})

    error = load_error(path, "local", {"PM_DB_PASSWORD": PASSWORD, "PM_DB_PORT": "five"})
    message = str(error)
    assert "key 'port': Input should be a valid integer" in message
    assert "key 'sslmode'" in message
    assert "key 'pool_size': Extra inputs are not permitted" in message
    # The chained pydantic error would echo every input, the password among them.
    assert PASSWORD not in full_text(error)


def test_literal_password_is_not_echoed_on_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"local": local_block(password=PASSWORD, port=0)})

    error = load_error(path, "local", {})
    assert "key 'port'" in str(error)
    assert PASSWORD not in full_text(error)


def test_pool_bounds_are_checked_without_echoing_the_block(tmp_path: Path) -> None:
    # Password first: pydantic truncates the echoed input, keeping its head.
    block = {"password": PASSWORD, **local_block(password=None, pool_min_size=5, pool_max_size=2)}
    path = write_config(tmp_path, {"local": block})

    error = load_error(path, "local", {})
    assert "settings: Value error, pool_max_size must be >= pool_min_size" in str(error)
    # A model-level pydantic error carries the whole input block, password included.
    assert PASSWORD not in full_text(error)


def test_missing_file_and_invalid_json_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    assert str(load_error(missing, "local", {})) == f"{missing}: file not found"

    broken = tmp_path / "broken.json"
    broken.write_text('{"local": {"host": ')
    assert str(load_error(broken, "local", {})).startswith(f"{broken}: invalid JSON at line 1")


def test_environment_block_must_be_an_object(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"local": "postgres://pm@localhost"})

    assert str(load_error(path, "local", {})).startswith(f"{path}: environment 'local': expected")


def test_conninfo_has_password_and_redacted_does_not(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"local": local_block(sslmode="require")})
    config = load_database_config(path, "local", {"PM_DB_PASSWORD": PASSWORD})

    assert f"password={PASSWORD}" in config.conninfo()
    assert "dbname=portfolio_manager" in config.conninfo()
    assert "sslmode=require" in config.redacted()
    assert "connect_timeout=10" in config.redacted()
    assert PASSWORD not in config.redacted()
    assert "password" not in config.redacted()
    assert PASSWORD not in repr(config)
