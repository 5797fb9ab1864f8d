"""structlog JSON lines on stdout; the standard library's loggers go through the same renderer."""

from __future__ import annotations

import logging
import sys

import structlog

SHARED_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
]


def configure_logging(level: str = "INFO") -> None:
    """Send every log event, ours and the libraries', to stdout as one JSON object per line."""
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*SHARED_PROCESSORS, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries are chatty at INFO (every pg_ctl command line); their warnings still show.
    root.setLevel(max(numeric, logging.WARNING))
