"""Why the daemon cannot trade now: each cause is set and cleared by the part that owns it.

`/ready` lists the reasons; entry decisions ask `entry_block` whether an instrument's entries
are blocked. Exits are never blocked here: they are carried out whatever else is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROCESSING_ERROR = "processing_error"
DATABASE_UNAVAILABLE = "database_unavailable"
MISMATCH = "mismatch:"  # keys of entry blocks set by reconciliation


@dataclass(frozen=True, slots=True)
class EntryBlock:
    reason: str
    instrument: str | None  # None: every instrument's entries


@dataclass
class Readiness:
    stage: str | None = "load"  # the startup stage still running; None once started
    stalled: bool = False  # that stage has run past its timeout
    database_available: bool = True
    _blocks: dict[str, EntryBlock] = field(default_factory=dict)
    # Reasons `/ready` names that block nothing (an open layer with no broker stop).
    _warnings: dict[str, str] = field(default_factory=dict)

    # -- startup --------------------------------------------------------------------------
    def starting(self, stage: str) -> None:
        self.stage, self.stalled = stage, False

    def stage_stalled(self, stage: str) -> None:
        if self.stage == stage:
            self.stalled = True

    def started(self) -> None:
        self.stage, self.stalled = None, False

    # -- entry blocks ---------------------------------------------------------------------
    def block_entries(self, key: str, reason: str, instrument: str | None = None) -> None:
        """Block entries (of one instrument, or all) until `unblock(key)`."""
        self._blocks[key] = EntryBlock(reason, instrument)

    def unblock(self, key: str) -> None:
        self._blocks.pop(key, None)

    def unblock_prefix(self, prefix: str) -> None:
        for key in [k for k in self._blocks if k.startswith(prefix)]:
            del self._blocks[key]

    def entry_block(self, instrument: str) -> str | None:
        """Return why this instrument's entries are blocked, or None."""
        reasons = [b.reason for b in self._blocks.values()
                   if b.instrument is None or b.instrument == instrument]
        return "; ".join(reasons) or None

    def blocks(self, prefix: str = "") -> dict[str, EntryBlock]:
        """Return the entry blocks whose keys start with `prefix`, by key."""
        return {key: b for key, b in self._blocks.items() if key.startswith(prefix)}

    def block_reasons(self, prefix: str = "") -> list[str]:
        return [b.reason for key, b in self._blocks.items() if key.startswith(prefix)]

    def warn(self, key: str, reason: str) -> None:
        """Name `reason` in /ready until `clear_warning(key)`, blocking nothing."""
        self._warnings[key] = reason

    def clear_warning(self, key: str) -> None:
        self._warnings.pop(key, None)

    def unresolved_intent(self, instrument: str, tag: str) -> None:
        """Name an order intent that could not be booked: the broker may hold its order."""
        key = f"unresolved_intent:{tag}"
        self.block_entries(key, f"{key} ({instrument})", instrument)

    def processing_failed(self, instrument: str) -> None:
        """Block an instrument whose signal processing failed unexpectedly."""
        self.block_entries(f"{PROCESSING_ERROR}:{instrument}",
                           f"{PROCESSING_ERROR}:{instrument}", instrument)

    # -- all of it ------------------------------------------------------------------------
    def reasons(self, broker_reason: str | None = None) -> list[str]:
        """Return every reason not to trade now (empty: ready)."""
        reasons = []
        if self.stage is not None:
            reasons.append(f"{'stalled' if self.stalled else 'starting'}:{self.stage}")
        reasons += [b.reason for b in self._blocks.values()]
        reasons += list(self._warnings.values())
        if not self.database_available:
            reasons.append(DATABASE_UNAVAILABLE)
        if broker_reason is not None:
            reasons.append(broker_reason)
        return reasons
