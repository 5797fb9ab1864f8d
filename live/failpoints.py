"""Named fail points in the money path, for crash tests: the process SIGKILLs itself there.

Disabled unless armed (`PM_FAILPOINT=name` or `name:N` for the Nth hit; with `name:N:pause`
it SIGSTOPs instead, for the pair's tests: a leader frozen mid-transition, thawed after its
term has passed to the standby); disabled, a fail point costs one comparison.
The points, in the order a signal meets them:

- `after_signal_durable`   the signal is committed to the inbox; the webhook has not answered
- `after_intent_commit`    the order intent is committed; the broker has not been called
- `after_broker_accept`    the broker accepted the order; nothing of its answer is recorded
- `after_fill_recorded`    the fill transaction committed; the waiter has not been told
- `during_exit_allocation` inside the fill transaction of a multi-layer exit, between layers
                           (the layer update and its ledger row share that one transaction,
                           so there is no point between them: they cannot be separated)
- `during_recovery`        after recovery resolved its first intent
- `after_exit_refused`     an exit's refusal and its retry intent are committed; the retry
                           has not been attempted
- `before_exit_retry`      a pending exit (or roll leg) is about to be attempted again
- `after_roll_close_intent` a roll and its close leg's intent are committed; nothing placed
- `after_roll_close_fill`  the close leg's fill is booked and, in the same transaction, the
                           open leg's intent committed (no point between them: they cannot
                           be separated); the open leg has not been placed
- `after_roll_open_fill`   the open leg is booked: the layers are in the new contract
- `after_flatten_halted`   a flatten is recorded and the state is HALTED; nothing cancelled
- `after_flatten_exit`     one instrument's flatten exit is booked; others may be open still
- `after_stop_placed`      the venue accepted a broker stop; its id is not recorded
- `before_stop_modify`     a stop's move is recorded as pending; the venue was not asked
- `after_stop_modified`    the venue moved the stop and the book says so
- `after_stop_cancelled`   a layer's stop is cancelled and that confirmed; the daemon's own
                           sale of the layer is not placed yet
- `after_broker_stop_adopted` a fired stop's exit intent is committed; its fill not booked
"""

from __future__ import annotations

import os
import signal

# On every signal's path (and recovery's).
SIGNAL_POINTS = frozenset({"after_signal_durable", "after_intent_commit",
                           "after_broker_accept", "after_fill_recorded",
                           "during_exit_allocation", "during_recovery"})
# Reached only where an exit is refused, or a roll runs.
RETRY_POINTS = frozenset({"after_exit_refused", "before_exit_retry"})
ROLL_POINTS = ("after_roll_close_intent", "after_roll_close_fill", "after_roll_open_fill")
FLATTEN_POINTS = ("after_flatten_halted", "after_flatten_exit")
STOP_POINTS = ("after_stop_placed", "before_stop_modify", "after_stop_modified",
               "after_stop_cancelled", "after_broker_stop_adopted")
POINTS = (SIGNAL_POINTS | RETRY_POINTS | frozenset(ROLL_POINTS) | frozenset(FLATTEN_POINTS)
          | frozenset(STOP_POINTS))

_armed: str | None = None
_at_hit = 1
_hits = 0
_signal = signal.SIGKILL


def arm(spec: str | None) -> None:
    """Arm one fail point from `name` or `name:N`; None disarms."""
    global _armed, _at_hit, _hits, _signal
    if not spec:
        _armed, _hits = None, 0
        return
    name, _, rest = spec.partition(":")
    nth, _, action = rest.partition(":")
    if name not in POINTS:
        raise ValueError(f"unknown fail point {name!r}; known: {', '.join(sorted(POINTS))}")
    if action not in ("", "pause"):
        raise ValueError(f"unknown fail point action {action!r}; known: pause")
    _armed, _at_hit, _hits = name, int(nth or 1), 0
    _signal = signal.SIGSTOP if action else signal.SIGKILL


def reached(name: str) -> None:
    """Die here (SIGKILL, no cleanup; or freeze) if this is the armed point's chosen hit."""
    global _hits
    if name != _armed:
        return
    _hits += 1
    if _hits == _at_hit:
        os.kill(os.getpid(), _signal)
