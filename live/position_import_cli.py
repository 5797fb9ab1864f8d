"""The `import-positions FILE [--dry-run]` verb: read a book of open layers from a JSON list
of objects or a CSV file with a header row, send the rows to the daemon, print its answer.

Standard library only, like the other verbs. The file is only parsed here (a row the parser
cannot read stops the verb, exit 2, with its row number); every rule about what a row says
is the daemon's, which answers each rejection itself.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from live.operator_client import Answer, CannotAsk, OperatorClient

PATH = "/admin/import-positions"


class UnreadableFile(CannotAsk):
    """The file could not be turned into rows: nothing was sent."""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Return the rows of a .json or .csv file, each a dict of its fields' text."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UnreadableFile(f"cannot read {path} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UnreadableFile(f"{path}: not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_rows(path, text)
    if suffix == ".csv":
        return _csv_rows(path, text)
    raise UnreadableFile(f"{path}: give a .json (a list of objects) or .csv (a header row) file")


def _json_rows(path: Path, text: str) -> list[dict[str, Any]]:
    try:
        # Numbers keep the text they were written as: money never passes through a float.
        data = json.loads(text, parse_float=str, parse_int=str)
    except ValueError as exc:
        raise UnreadableFile(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise UnreadableFile(f"{path}: not a JSON list of objects, one per layer")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise UnreadableFile(f"{path}: row {number} is not an object")
        for key, value in row.items():
            if isinstance(value, (dict, list)):
                raise UnreadableFile(f"{path}: row {number}, {key}: not a single value")
    return data


def _csv_rows(path: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        lines = [(reader.line_num, cells) for cells in reader]
    except csv.Error as exc:
        raise UnreadableFile(f"{path}: line {reader.line_num}: {exc}") from None
    lines = [(line, cells) for line, cells in lines if any(c.strip() for c in cells)]
    if not lines:
        raise UnreadableFile(f"{path}: empty (a header row, then one row per layer)")
    header = [name.strip().lower() for name in lines[0][1]]
    if "" in header or len(set(header)) != len(header):
        raise UnreadableFile(f"{path}: the header row needs distinct, non-empty names")
    rows = []
    for number, (line, cells) in enumerate(lines[1:], start=1):
        if len(cells) != len(header):
            raise UnreadableFile(f"{path}: row {number} (line {line}) has {len(cells)} cells, "
                                 f"the header {len(header)}")
        rows.append(dict(zip(header, (c.strip() for c in cells), strict=True)))
    return rows


def import_positions(client: OperatorClient, path: Path, dry_run: bool,
                     reason: str | None) -> tuple[str, int]:
    """Send the file's rows; return the lines to print and the exit code (0 done, 1 the
    daemon refused)."""
    rows = read_rows(path)
    body: dict[str, Any] = {"rows": rows, "dry_run": dry_run, "file": path.name}
    if reason is not None:
        body["reason"] = reason
    answer = client.post(PATH, body)
    if answer.status in (401, 403):
        raise CannotAsk(f"not authorised ({answer.detail}); check PM_ADMIN_TOKEN or the "
                        "state dir's admin_token")
    if answer.status != 200:
        return _refused(answer), 1
    if answer.body.get("status") == "dry_run":
        return "\n".join(_dry_run(path, answer.body["plan"])), 0
    return "\n".join(_imported(path, answer.body)), 0


def _refused(answer: Answer) -> str:
    lines = [f"import-positions refused: {answer.detail}"]
    lines += [f"  row {r.get('row')}, {r.get('field')}: {r.get('reason')}"
              for r in answer.body.get("rejections") or []]
    return "\n".join(lines)


def _dry_run(path: Path, plan: dict[str, Any]) -> list[str]:
    layers = plan["layers"]
    trades = plan["trades"]
    lines = [f"dry run of {path.name}: {_count(len(layers), 'layer')} in "
             f"{_count(len(trades), 'trade')}; nothing written"]
    lines += [_layer_line(x) for x in layers]
    lines += _totals(plan)
    return lines


def _layer_line(x: dict[str, Any]) -> str:
    stop = x["current_stop"]
    trailed = "" if stop == x["initial_stop"] else f" (initial {x['initial_stop']})"
    lots = _count(int(x["lots"]), "lot")
    return (f"  row {x['row']:>2}  {x['instrument']:<11} {x['layer']}  {lots:>8}  "
            f"entry {x['entry_price']:>10}  stop {stop}{trailed}  {x['tradingsymbol']}  "
            f"risk {x['risk']}")


def _totals(plan: dict[str, Any]) -> list[str]:
    risk, pct, equity = plan["risk"], plan["risk_percent"], plan["equity"]
    lines = [f"open risk {risk['before']} -> {risk['after']} (imported {risk['imported']}): "
             f"{pct['before']}% -> {pct['after']}% of equity {equity['blended_after']} "
             f"(limit {pct['limit']}%); margin {plan['margin_percent_after']}% after"]
    for trade in plan["trades"]:
        lines.append(f"{trade['instrument']}: new trade of {', '.join(trade['layers'])}; "
                     f"{_count(trade['pyramid_count'], 'pyramid')} taken, the next spaced "
                     f"from {trade['last_pyramid_price']}")
    venue = plan.get("venue") or {}
    if not venue.get("available"):
        lines.append(f"broker positions unavailable ({venue.get('detail')})")
    for c in venue.get("contracts") or []:
        said = "agrees" if c["agrees"] else "MISMATCH: entries of it would be blocked"
        lines.append(f"{c['tradingsymbol']}: the broker holds {c['broker']}, the book would "
                     f"hold {c['book_after']} (venue units): {said}")
    state = plan.get("trading_state") or {}
    if state.get("state"):
        lines.append(f"trading state {state['state']} (unchanged by an import)")
    lines += [f"warning: {w}" for w in plan.get("warnings") or []]
    return lines


def _imported(path: Path, body: dict[str, Any]) -> list[str]:
    layers = body["imported"]
    lines = [f"imported {_count(len(layers), 'layer')} from {path.name}"]
    for x in layers:
        stop = x.get("broker_stop")
        at_broker = (f"broker stop {stop['status']} at {stop['trigger']}" if stop
                     else "no broker stop")
        lines.append(f"  {x['instrument']} {x['layer']}: position {x['position_id']}, "
                     f"trade {x['trade_id']}, {_count(int(x['lots']), 'lot')}, "
                     f"stop {x['current_stop']}, "
                     f"{at_broker}")
    lines += _totals(body["plan"])[:1]
    lines.append(_reconciliation(body.get("reconciliation") or {}))
    return lines


def _reconciliation(result: dict[str, Any]) -> str:
    if not result.get("ran"):
        return f"reconciliation: not run ({result.get('detail')})"
    if result.get("agreed"):
        return "reconciliation: book and broker agree"
    found = "; ".join(d["detail"] for d in result.get("differences") or [])
    return (f"reconciliation: MISMATCH, entries blocked until the venue agrees or it is "
            f"resolved: {found}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
