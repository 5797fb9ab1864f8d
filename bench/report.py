"""`make bench`'s table: each figure beside its target, and beside the floor where it has one."""

from __future__ import annotations

from typing import Any

TARGETS = {"sustained_per_s": 1500, "ack_p50_ratio": 1.5, "ack_p99_ratio": 2.0,
           "decision_p99_ms": 20.0, "recovery_s": 1.0, "recovery_growth": 0.10,
           "flatten_p99_ms": 2000.0, "dashboard_render_ms": 200.0, "dashboard_assets_kb": 300,
           "replay_10k_s": 60.0}

Row = tuple[str, str, str]


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def intake_rows(report: dict[str, Any]) -> list[Row]:
    ack, floor = report["ack_200"]["daemon"], report["ack_200"]["floor"]
    ratio = report["ack_200"]["ratios"]
    quiet = report["ack_200"]["daemon_no_order"]
    ladder = report["sustained"]
    rows: list[Row] = [
        ("commit floor p50 / p99 (psql round trip)",
         f"{report['commit_floor']['p50_ms']:.3f} / {report['commit_floor']['p99_ms']:.3f} ms",
         ""),
        ("durable-ack floor @200/s p50 / p99",
         f"{_ms(floor['p50_ms'])} / {_ms(floor['p99_ms'])} ms", ""),
        ("ack @200/s p50 / p99 (all answers)",
         f"{_ms(ack['p50_ms'])} / {_ms(ack['p99_ms'])} ms = {ratio['p50']:.2f}× / "
         f"{ratio['p99']:.2f}× the floor", f"≤ {TARGETS['ack_p50_ratio']}× / "
         f"{TARGETS['ack_p99_ratio']}×"),
        ("  decided with no order",
         f"{_ms(quiet['p50_ms'])} / {_ms(quiet['p99_ms'])} ms = "
         f"{quiet['p50_ms'] / floor['p50_ms']:.2f}× / {quiet['p99_ms'] / floor['p99_ms']:.2f}×"
         f" (n={quiet['n']})", ""),
        ("orders @200/s: received → committed p50 / p99",
         f"{_ms(report['decisions']['p50_ms'])} / {_ms(report['decisions']['p99_ms'])} ms "
         f"(answered {_ms(report['decisions']['client_p50_ms'])} / "
         f"{_ms(report['decisions']['client_p99_ms'])} ms; n={report['decisions']['executed']})",
         f"p99 ≤ {TARGETS['decision_p99_ms']:.0f} ms"),
        ("sustained (p99 < 100 ms, no error, no loss)",
         f"{ladder['daemon_per_s']}/s; floor {ladder['floor_per_s']}/s "
         f"({ladder['daemon_per_s'] / max(ladder['floor_per_s'], 1):.2f}×)",
         f"≥ {TARGETS['sustained_per_s']}/s"),
    ]
    over = report["overload"]
    shed = (f"{over['shed_503_share']:.1%} shed 503 (p99 {_ms(over['shed_p99_ms'])} ms, "
            f"{over['shed_with_retry_after']} with Retry-After)"
            if over["shed_503_share"] else "none shed 503")
    rows.append((f"overload {over['rate_per_s']}/s ({over['requests']} alerts)",
                 f"{over['answered_within_3s']:.1%} answered within 3 s; {shed}; "
                 f"acknowledged but lost {over['lost']['missing'] + over['lost']['undecided']}",
                 "all within 3 s, lost 0"))
    return rows


def step_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for row in report["sustained"]["steps"]:
        parts = []
        for who in ("daemon", "floor"):
            if who in row:
                s = row[who]
                cpu = s["cpu"]["cores"]
                parts.append(f"{who} p50 {_ms(s['p50_ms'])} p99 {_ms(s['p99_ms'])} ms "
                             f"err {s['errors']}" + ("" if s["held"] else " (not held)")
                             + f", cores {cpu['server']:.2f}+{cpu['postgres']:.2f} pg"
                             f"+{cpu['load_generator']:.2f} load")
        lines.append(f"  {row['rate_per_s']}/s: " + "; ".join(parts))
    return lines


def cpu_rows(report: dict[str, Any]) -> list[Row]:
    """What a signal costs each process at 200/s: the daemon's against the floor's."""
    daemon, floor = (report["ack_200"][who]["cpu"]["us_per_signal"] for who in
                     ("daemon", "floor"))
    return [("CPU a signal @200/s: server + PostgreSQL",
             f"daemon {daemon['server']} + {daemon['postgres']} µs; floor {floor['server']} "
             f"+ {floor['postgres']} µs (load generator {daemon['load_generator']} µs)", "")]


def scaling_rows(report: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for item in report["scaling"]:
        target = ""
        if item["open_layers"] == 10_000:
            target = f"≤ {TARGETS['recovery_s']:.0f} s"
        value = f"{item['process_start_to_ready_s']:.2f} s to ready"
        if "first_start_placing_stops_s" in item:
            value += (f" (restart, stops resting; first start placing every stop "
                      f"{item['first_start_placing_stops_s']:.2f} s)")
        stream = item.get("stream")
        if stream is not None:
            value += (f"; stream {stream['rate_per_s']}/s p50 {_ms(stream['p50_ms'])} p99 "
                      f"{_ms(stream['p99_ms'])} ms" + ("" if stream["held"] else " (not held)"))
        rows.append((f"book {item['open_layers']} layers, {item['logged_signals']} signals",
                     value, target))
    growth = report.get("history_growth")
    if growth is not None:
        rows.append(("recovery 1M ÷ 100k signals (10k layers)", f"{growth:.2f}×",
                     f"≤ {1 + TARGETS['recovery_growth']:.2f}×"))
    return rows


def other_rows(report: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    storm = report["duplicate_storm"]
    rows.append(("duplicate storm 1000", f"{storm['answered_all_s']:.2f} s, exactly one "
                 f"executed: {storm['exactly_one_executed']}", ""))
    for item in report["flatten"].values():
        client, daemon = item["request_to_flat_ms"], item["daemon_elapsed_ms"]
        rows.append((f"flatten {item['open_layers']}×{item['instruments']}, {item['venue']} "
                     "p50 / p99", f"{client['p50']:.0f} / {client['p99']:.0f} ms to flat "
                     f"(daemon {daemon['p50']:.0f} / {daemon['p99']:.0f}, {item['runs']} "
                     f"run{'s' if item['runs'] != 1 else ''})",
                     f"p99 ≤ {TARGETS['flatten_p99_ms']:.0f} ms"))
    for ttl, item in report.get("failover", {}).get("by_ttl", {}).items():
        took = item["kill_to_ready_ms"]
        rows.append((f"failover, lease {ttl} ms ({item['trials']} kills) p50 / max",
                     f"{took['p50']:.0f} / {took['max']:.0f} ms kill → standby ready",
                     f"≤ TTL + 1 s = {item['target_ms']} ms"))
    replayed = report["replay"]
    rows.append((f"replay {replayed['signals']} signals", f"{replayed['elapsed_s']:.1f} s "
                 f"({replayed['signals_per_s']:.0f}/s)",
                 f"10k < {TARGETS['replay_10k_s']:.0f} s"))
    board = report["dashboard"]
    paint = (board["browser"] or {}).get("first_contentful_paint")
    rows.append((f"dashboard ({board['open_layers']} layers) p50 / p99",
                 f"server {board['server_render']['p50_ms']:.1f} / "
                 f"{board['server_render']['p99_ms']:.1f} ms; first paint "
                 + (f"{paint['p50_ms']:.0f} / {paint['p99_ms']:.0f} ms" if paint
                    else "not measured (no Chromium)"),
                 f"< {TARGETS['dashboard_render_ms']:.0f} ms"))
    rows.append(("dashboard assets", f"{(board['page_bytes'] + board['assets_bytes']) / 1024:.0f}"
                 " KB", f"< {TARGETS['dashboard_assets_kb']} KB"))
    return rows


def table(report: dict[str, Any]) -> str:
    rows = intake_rows(report) + cpu_rows(report) + scaling_rows(report) + other_rows(report)
    width = max(len(r[0]) for r in rows)
    lines = [f"revision {report['git_revision']}, {report['machine']['cores']} cores, "
             f"{report['machine']['cpu']}, PostgreSQL {report['machine']['postgresql']}"
             + (" (QUICK)" if report["quick"] else ""),
             f"{'metric'.ljust(width)}  value  [target]"]
    lines += [f"{name.ljust(width)}  {value}" + (f"  [{target}]" if target else "")
              for name, value, target in rows]
    lines.append("throughput steps (daemon, then the floor, at each rate):")
    lines += step_lines(report)
    mix = report["ack_200"]["daemon"]["statuses"]
    lines.append("the stream's answers @200/s: " + ", ".join(
        f"{k} {v}" for k, v in sorted(mix.items())))
    lines.append("phases (s): " + ", ".join(
        f"{name} {seconds}" for name, seconds in report.get("phase_s", {}).items()))
    return "\n".join(lines)
