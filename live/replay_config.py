"""`replay --set portfolio.FIELD=VALUE`: what-if changes to the portfolio configuration."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from config.errors import ConfigError, Loc
from config.settings import portfolio_with
from core.specs import PortfolioConfig

PREFIX = "portfolio."
# A value that switches an optional rule off (daily_loss_limit_percent, max_entries_per_day).
NONE_WORDS = frozenset({"null", "none"})


def parse_overrides(pairs: Iterable[str]) -> dict[str, str | None]:
    """Return `--set` pairs as {field: value}; raise ConfigError naming a malformed pair or
    an unknown field."""
    fields = PortfolioConfig.model_fields
    overrides: dict[str, str | None] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.startswith(PREFIX) or not name[len(PREFIX):]:
            raise ConfigError(f"--set {pair!r}: expected portfolio.FIELD=VALUE")
        field = name[len(PREFIX):]
        if field not in fields:
            close = difflib.get_close_matches(field, fields, n=1)
            hint = f" (did you mean portfolio.{close[0]}?)" if close else ""
            raise ConfigError(f"--set {name}: unknown portfolio field{hint}")
        overrides[field] = None if value.strip().lower() in NONE_WORDS else value.strip()
    return overrides


def with_overrides(portfolio: PortfolioConfig, pairs: Iterable[str]) -> PortfolioConfig:
    """Return `portfolio` with the `--set` pairs applied, each checked as a file value is."""
    return portfolio_with(portfolio, parse_overrides(pairs), _flag_name)


def _flag_name(loc: Loc) -> str:
    return f"--set {PREFIX}{loc[0]}" if loc else "--set"
