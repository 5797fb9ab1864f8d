"""Postgres connection settings, one block per environment, with `${VAR}` placeholders."""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from psycopg.conninfo import make_conninfo
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from config.domain_files import read_json_object
from config.errors import ConfigError, Loc, describe_validation_error

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class DatabaseConfig(BaseModel):
    """Where and how to connect to Postgres."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(default=5432, ge=1, le=65535)
    database: str = Field(min_length=1)
    user: str = Field(min_length=1)
    password: SecretStr | None = None
    sslmode: SslMode = "prefer"
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    connect_timeout_s: int = Field(default=10, gt=0)
    application_name: str = "portfolio_manager"

    @model_validator(mode="after")
    def _pool_bounds(self) -> Self:
        if self.pool_max_size < self.pool_min_size:
            raise ValueError("pool_max_size must be >= pool_min_size")
        return self

    def conninfo(self) -> str:
        """Return the libpq connection string, password included; never log it."""
        password = self.password.get_secret_value() if self.password is not None else None
        return make_conninfo(**self._params(), password=password)

    def redacted(self) -> str:
        """Return the connection string without the password, for logs."""
        return make_conninfo(**self._params())

    def _params(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "sslmode": self.sslmode,
            "connect_timeout": self.connect_timeout_s,
            "application_name": self.application_name,
        }


def load_database_config(
    path: Path, env: str, environ: Mapping[str, str] | None = None
) -> DatabaseConfig:
    """Return the `env` block of the database config file, with `${VAR}` expanded from environ.

    Error messages name the file, the environment and the key, never a value, and are raised
    without the pydantic error chained, whose text would include the input (the password).
    """
    environ = os.environ if environ is None else environ
    document = read_json_object(path)
    where = f"{path}: environment '{env}'"
    if env not in document:
        available = ", ".join(sorted(document)) or "none"
        raise ConfigError(f"{where} not found (available: {available})")
    block = document[env]
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a JSON object of connection settings")
    expanded = _expand_block(block, environ, where)
    try:
        return DatabaseConfig.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe_validation_error(exc, _key_name)}") from None


def _expand_block(block: dict[str, Any], environ: Mapping[str, str], where: str) -> dict[str, Any]:
    missing = [
        f"key '{key}' uses ${{{name}}}, which is not set"
        for key, value in block.items()
        if isinstance(value, str)
        for name in _PLACEHOLDER.findall(value)
        if name not in environ
    ]
    if missing:
        raise ConfigError(f"{where}: " + "; ".join(missing))
    return {
        key: _PLACEHOLDER.sub(lambda match: environ[match.group(1)], value)
        if isinstance(value, str)
        else value
        for key, value in block.items()
    }


def _key_name(loc: Loc) -> str:
    return f"key '{'.'.join(str(part) for part in loc)}'" if loc else "settings"
