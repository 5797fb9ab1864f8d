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
        # By instrument (each instrument's round says all of its own; a whole-book round
        # says each of thousands): /ready key → why the layer has no stop.
        self._shown: dict[str, dict[str, str]] = {}
        self._waiting: dict[str, set[str]] = {}

    def show(self, instrument: str, missing: dict[str, str], waiting: set[str]) -> None:
        """Say what is now true of `instrument`'s layers: `missing` ("<instrument> <layer>"
        → why) have no stop, `waiting` have none until the session opens."""
        if waiting:
            self._waiting[instrument] = set(waiting)
        else:
            self._waiting.pop(instrument, None)
        wanted = {UNPROTECTED + name: why for name, why in missing.items()}
        shown = self._shown.get(instrument, {})
        for key in [k for k in shown if k not in wanted]:
            del shown[key]
            self._readiness.clear_warning(key)
            log.info("broker_stop_protected", layer=key.removeprefix(UNPROTECTED))
        for key, why in wanted.items():
            if shown.get(key) != why:
                shown[key] = why
                self._readiness.warn(key, key)
                log.error("broker_stop_unprotected", layer=key.removeprefix(UNPROTECTED),
                          reason=why)
        if shown:
            self._shown[instrument] = shown
        else:
            self._shown.pop(instrument, None)

    def report(self) -> dict[str, Any]:
        return {"unprotected": {k.removeprefix(UNPROTECTED): why
                                for k, why in sorted(self._all().items())},
                "waiting_for_session": sorted(w for held in self._waiting.values()
                                              for w in held)}

    def unprotected(self) -> list[str]:
        return sorted(self._all())

    def _all(self) -> dict[str, str]:
        return {key: why for shown in self._shown.values() for key, why in shown.items()}
