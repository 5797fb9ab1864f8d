"""What must hold after any crash and restart: the book, the ledger and the broker agree."""

from __future__ import annotations

from decimal import Decimal

import psycopg

from core.models import UNRESOLVED_INTENT_STATUSES

STOP_ORDER = "order:"  # what stands for the tag of an order the venue placed untagged


def book_violations(conninfo: str, broker_positions: dict[str, int],
                    broker_orders: list[tuple[str, int]]) -> list[str]:
    """Return every broken promise, as readable lines (empty: all hold).

    `broker_positions`: net quantity per contract at the broker; `broker_orders`: (tag,
    quantity) of every order the broker holds. An intent's orders (one, or the slices of one
    order) never add up to more than the intent's quantity.
    """
    problems: list[str] = []
    with psycopg.connect(conninfo) as conn:
        def rows(query: str) -> list[tuple]:
            return conn.execute(query).fetchall()

        for (signal_id, decisions) in rows(
                """SELECT signal_id, count(*) FROM execution_log
                   WHERE event IN ('signal_decided', 'order_filled', 'order_rejected')
                     AND coalesce(details->>'decided', 'true') = 'true'
                     AND signal_id IS NOT NULL
                   GROUP BY signal_id HAVING count(*) > 1"""):
            problems.append(f"signal {signal_id} decided {decisions} times")
        intents = {tag: (status, quantity) for tag, status, quantity in
                   rows("SELECT tag, status, quantity FROM order_intents")}
        placed: dict[str, int] = {}
        for tag, quantity in broker_orders:
            placed[tag] = placed.get(tag, 0) + quantity
        stops = {tag: quantity for tag, quantity in
                 rows("SELECT tag, quantity FROM broker_stops")}
        adopted = {order_id for (order_id,) in rows(
            """SELECT broker_order_id FROM order_intents
               WHERE purpose->>'reason' = 'BROKER_STOP' AND broker_order_id IS NOT NULL""")}
        for tag in sorted(set(placed) - set(intents)):
            if tag in stops:  # an SL order resting for a layer: never more than it holds
                if placed[tag] > stops[tag]:
                    problems.append(f"broker stop {tag} for {stops[tag]} has {placed[tag]}")
            elif tag.startswith(STOP_ORDER):  # a GTT's order: some adopted exit owns it
                if tag.removeprefix(STOP_ORDER) not in adopted:
                    problems.append(f"untagged broker order {tag} belongs to no exit")
            else:
                problems.append(f"broker order {tag} has no intent")
        for tag, quantity in placed.items():
            if tag in intents and quantity > intents[tag][1]:
                problems.append(f"intent {tag} for {intents[tag][1]} has {quantity} at the "
                                "broker")
        for tag, (status, _) in intents.items():
            if status in UNRESOLVED_INTENT_STATUSES:
                problems.append(f"intent {tag} left {status}")
        book: dict[str, int] = {}
        for symbol, quantity in rows(
                """SELECT coalesce(tradingsymbol, instrument), sum(quantity)
                   FROM portfolio_positions WHERE status <> 'closed' GROUP BY 1"""):
            book[symbol] = int(quantity)
        for symbol in sorted(set(book) | set(broker_positions)):
            if book.get(symbol, 0) != broker_positions.get(symbol, 0):
                problems.append(f"{symbol}: book {book.get(symbol, 0)}, "
                                f"broker {broker_positions.get(symbol, 0)}")
        for (layer_id,) in rows("SELECT id FROM portfolio_positions WHERE status = 'closing'"):
            problems.append(f"layer {layer_id} left closing")
        problems += _stop_violations(rows)
        problems += _roll_violations(rows)
        problems += _ledger_violations(rows)
    return problems


def _stop_violations(rows) -> list[str]:  # type: ignore[no-untyped-def]
    """A layer has at most one stop working and is sold by at most one fired stop; a fired
    stop's order is owned by exactly one exit intent."""
    problems = []
    for position_id, working in rows(
            """SELECT position_id, count(*) FROM broker_stops
               WHERE status IN ('placing', 'active', 'modifying', 'cancelling')
               GROUP BY 1 HAVING count(*) > 1"""):
        problems.append(f"layer {position_id} has {working} broker stops working")
    for position_id, fired in rows(
            """SELECT position_id, count(*) FROM broker_stops WHERE status = 'triggered'
               AND exit_intent_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1"""):
        problems.append(f"layer {position_id} sold by {fired} fired broker stops")
    for (order_id, owners) in rows(
            """SELECT broker_order_id, count(*) FROM order_intents
               WHERE purpose->>'reason' = 'BROKER_STOP' AND broker_order_id IS NOT NULL
               GROUP BY 1 HAVING count(*) > 1"""):
        problems.append(f"broker stop order {order_id} adopted by {owners} exits")
    for (position_id,) in rows(
            """SELECT s.position_id FROM broker_stops s
               JOIN portfolio_positions p ON p.id = s.position_id
               WHERE p.status = 'closed'
                 AND s.status IN ('active', 'modifying', 'cancelling')"""):
        problems.append(f"closed layer {position_id} still has a broker stop working")
    return problems


def _roll_violations(rows) -> list[str]:  # type: ignore[no-untyped-def]
    """A roll is finished, whole: no roll left under way, no instrument in two contracts
    once its roll is done, and each done roll's P&L is the ROLL rows of its layers."""
    problems = [f"roll {roll_id} of {instrument} left {status}" for roll_id, instrument, status
                in rows("SELECT id, instrument, status FROM rolls WHERE status <> 'done'")]
    for instrument, held in rows(
            """SELECT p.instrument, array_agg(DISTINCT p.tradingsymbol ORDER BY p.tradingsymbol)
               FROM portfolio_positions p
               WHERE p.status <> 'closed'
                 AND EXISTS (SELECT 1 FROM rolls r WHERE r.instrument = p.instrument)
               GROUP BY 1 HAVING count(DISTINCT p.tradingsymbol) > 1"""):
        problems.append(f"{instrument} holds {held} after its roll")
    for roll_id, pnl, booked in rows(
            """SELECT r.id, r.pnl, (SELECT sum(c.amount) FROM capital_transactions c
                                   JOIN portfolio_positions p ON p.id = c.position_id
                                   WHERE p.exit_reason = 'ROLL'
                                     AND p.tradingsymbol = r.old_tradingsymbol
                                     AND p.instrument = r.instrument
                                     AND p.exit_timestamp = r.closed_at)
               FROM rolls r WHERE r.status = 'done'"""):
        if pnl != booked:
            problems.append(f"roll {roll_id}: P&L {pnl}, ledger {booked}")
    return problems


def _ledger_violations(rows) -> list[str]:  # type: ignore[no-untyped-def]
    [(initial, closed, high)] = rows(
        "SELECT initial_capital, closed_equity, equity_high FROM portfolio_state")
    [(realised,)] = rows("SELECT coalesce(sum(realized_pnl), 0) FROM portfolio_positions "
                         "WHERE status = 'closed'")
    [(flows,)] = rows("""SELECT coalesce(sum(CASE txn_type WHEN 'DEPOSIT' THEN amount
                                                       WHEN 'WITHDRAW' THEN -amount END), 0)
                         FROM capital_transactions WHERE txn_type <> 'TRADING_PNL'""")
    [(booked,)] = rows("SELECT coalesce(sum(amount), 0) FROM capital_transactions "
                       "WHERE txn_type = 'TRADING_PNL'")
    problems = []
    if Decimal(booked) != Decimal(realised):
        problems.append(f"ledger P&L {booked} != realised {realised} (roll legs included)")
    expected = Decimal(flows) + Decimal(realised)
    if Decimal(closed) != expected:
        problems.append(f"closed equity {closed} != capital {flows} + realised {realised}")
    if Decimal(high) < Decimal(closed):
        problems.append(f"equity_high {high} < closed equity {closed}")
    if Decimal(initial) != Decimal(flows) and not rows(
            "SELECT 1 FROM capital_transactions WHERE note IS DISTINCT FROM 'opening balance' "
            "AND txn_type <> 'TRADING_PNL'"):
        problems.append(f"initial capital {initial} != deposits {flows}")
    return problems


def paper_broker(conninfo: str) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Return the paper venue's net positions and its orders (tag, quantity)."""
    with psycopg.connect(conninfo) as conn:
        positions = {s: int(q) for s, q in conn.execute(
            """SELECT tradingsymbol, sum(CASE side WHEN 'BUY' THEN quantity ELSE -quantity END)
               FROM paper_trades GROUP BY 1""").fetchall() if q}
        orders = [(t or STOP_ORDER + o, int(q)) for t, q, o in conn.execute(
            "SELECT tag, quantity, order_id FROM paper_orders").fetchall()]
    return positions, orders


def kite_broker(state: dict) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Return the fake Kite venue's net positions and its orders (tag, quantity)."""
    positions = {p["tradingsymbol"]: int(p["quantity"]) for p in state["positions"]["net"]
                 if int(p["quantity"])}
    # An untagged order the venue placed for a GTT must be owned by an adopted exit; other
    # untagged ones (the broker's square-off) are the reconciler's business.
    return positions, [(o.get("tag") or STOP_ORDER + str(o["order_id"]), int(o["quantity"]))
                       for o in state["orders"]
                       if o.get("tag") or "gtt" in str(o.get("meta") or "")]


def protection_violations(conninfo: str, status: dict) -> list[str]:
    """Every open layer has a stop resting at the broker, or `/status` names it (unprotected,
    or waiting for its session to open)."""
    report = status.get("broker_stops") or {}
    if not report.get("enabled"):
        return []
    named = set(report["unprotected"]) | set(report["waiting_for_session"])
    with psycopg.connect(conninfo) as conn:
        bare = conn.execute(
            """SELECT p.instrument || ' ' || p.layer FROM portfolio_positions p
               WHERE p.status = 'open' AND NOT EXISTS (
                 SELECT 1 FROM broker_stops s WHERE s.position_id = p.id
                   AND s.status IN ('active', 'modifying'))""").fetchall()
    return [f"open layer {name} has no broker stop and is not named unprotected"
            for (name,) in bare if name not in named]
