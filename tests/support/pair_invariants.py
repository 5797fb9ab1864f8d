"""What must hold for a pair after any failure: one leader, and every order of its term."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import psycopg

from tests.support.invariants import protection_violations

TAG = re.compile(r"^PM(\d+)E(\d+)$")  # an intent's tag in a pair: PM<id>E<epoch>
PROTECT_WITHIN_S = 10  # a new layer's broker stop is placed within this


def pair_violations(conninfo: str, broker_orders: list[dict[str, Any]],
                    nodes: dict[str, tuple[dict[str, Any], bool]]) -> list[str]:
    """Return every broken promise of the pair, as readable lines (empty: all hold).

    `broker_orders`: every order the broker holds, each with its `tag` and `quantity`;
    `nodes`: each node's `/status` body and whether it is ready.
    """
    problems: list[str] = []
    with psycopg.connect(conninfo) as conn:
        intents = {tag: (epoch, int(quantity)) for tag, epoch, quantity in conn.execute(
            "SELECT tag, fencing_epoch, quantity FROM order_intents").fetchall()}
        by_tag: dict[str, list[int]] = defaultdict(list)
        for order in broker_orders:
            tag = order.get("tag") or ""
            if tag.startswith("PM"):
                by_tag[tag].append(int(order["quantity"]))
        for tag, quantities in sorted(by_tag.items()):
            match = TAG.match(tag)
            if match is None:
                problems.append(f"broker order {tag} carries no epoch")
                continue
            if tag not in intents:
                continue  # book_violations says so
            epoch, quantity = intents[tag]
            if int(match.group(2)) != epoch:
                problems.append(f"broker order {tag} carries epoch {match.group(2)}, its "
                                f"intent {epoch}")
            # Slices of one order share its tag, each smaller than the whole.
            if len(quantities) > 1 and max(quantities) >= quantity:
                problems.append(f"{len(quantities)} broker orders share tag {tag} "
                                f"({quantities}, intent for {quantity})")
        epochs = [(i, e) for i, e in conn.execute(
            "SELECT id, fencing_epoch FROM order_intents ORDER BY id").fetchall()]
        for (before_id, before), (after_id, after) in zip(epochs, epochs[1:], strict=False):
            if after < before:
                problems.append(f"intent {after_id} has epoch {after} after intent "
                                f"{before_id}'s {before}")
        acquired = [(i, int(e)) for i, e in conn.execute(
            """SELECT id, details->>'epoch' FROM execution_log
               WHERE event = 'leadership_acquired' ORDER BY id""").fetchall()]
        for (_, before), (row, after) in zip(acquired, acquired[1:], strict=False):
            if after <= before:
                problems.append(f"leadership_acquired row {row}: epoch {after} after {before}")
        terms = {e for _, e in acquired}
        for epoch in sorted({e for _, e in epochs} - terms):
            problems.append(f"intents carry epoch {epoch}, which no leader acquired")
        [(fence,)] = conn.execute("SELECT epoch FROM leader_fence").fetchall()
    leaders = [(name, status) for name, (status, ready) in nodes.items()
               if ready and status.get("role") == "leader"]
    if len(leaders) != 1:
        problems.append(f"{len(leaders)} nodes lead and are ready: "
                        f"{ {n: (s.get('role'), r) for n, (s, r) in nodes.items()} }")
    for name, status in leaders:
        if status["ha"]["epoch"] != fence:
            problems.append(f"the fence is at epoch {fence}, leader {name} at "
                            f"{status['ha']['epoch']}")
    return problems


def protection_problems(conninfo: str, status: Callable[[], dict[str, Any] | None]
                        ) -> list[str]:
    """Open layers with no broker stop and not named by the leader's `/status`: a layer
    entered just before the check gets its stop a moment after its fill, so a few seconds
    are given."""
    deadline = time.monotonic() + PROTECT_WITHIN_S
    while True:
        found = protection_violations(conninfo, status() or {})
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
