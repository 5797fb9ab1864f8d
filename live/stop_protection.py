"""Which open layers have no broker stop resting for them (DOMAIN.md §12, visibility).

Each is an `/ready` reason `unprotected:<instrument> <layer>` and an error log line, logged
once per change of why and cleared when the layer is protected again. An MCX layer outside
its session is not unprotected but waiting: its SL order goes in at the open.
"""

from __future__ import annotations

from typing import Any

import structlog

from live.readiness import Readiness

UNPROTECTED = "unprotected:"
log = structlog.get_logger(__name__)


class Protection:
    def __init__(self, readiness: Readiness):
        self._readiness = readiness
        self._shown: dict[str, str] = {}  # /ready key → why the layer has no stop
        self._waiting: set[str] = set()

    def show(self, instrument: str, missing: dict[str, str], waiting: set[str]) -> None:
        """Say what is now true of `instrument`'s layers: `missing` ("<instrument> <layer>"
        → why) have no stop, `waiting` have none until the session opens."""
        prefix = f"{instrument} "
        self._waiting = {w for w in self._waiting if not w.startswith(prefix)} | waiting
        wanted = {UNPROTECTED + name: why for name, why in missing.items()}
        for key in [k for k in self._shown if k.startswith(UNPROTECTED + prefix)]:
            if key not in wanted:
                del self._shown[key]
                self._readiness.clear_warning(key)
                log.info("broker_stop_protected", layer=key.removeprefix(UNPROTECTED))
        for key, why in wanted.items():
            if self._shown.get(key) != why:
                self._shown[key] = why
                self._readiness.warn(key, key)
                log.error("broker_stop_unprotected", layer=key.removeprefix(UNPROTECTED),
                          reason=why)

    def report(self) -> dict[str, Any]:
        return {"unprotected": {k.removeprefix(UNPROTECTED): why
                                for k, why in sorted(self._shown.items())},
                "waiting_for_session": sorted(self._waiting)}

    def unprotected(self) -> list[str]:
        return sorted(self._shown)
