"""The one error configuration loading raises, and how validation failures are worded."""

from collections.abc import Callable

from pydantic import ValidationError

Loc = tuple[int | str, ...]


class ConfigError(Exception):
    """A configuration source is missing or invalid; the message names the source and field."""


def describe_validation_error(exc: ValidationError, name_field: Callable[[Loc], str]) -> str:
    """Return one line per error, `<field>: <message>`, joined with "; ".

    Only pydantic's message is used, never the input, so secrets cannot leak into logs.
    """
    return "; ".join(
        f"{name_field(error['loc'])}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    )


def dotted(*parts: int | str) -> str:
    """Return the non-empty parts joined with dots (`GOLD_MINI.lot_size`)."""
    return ".".join(str(part) for part in parts if part != "")
