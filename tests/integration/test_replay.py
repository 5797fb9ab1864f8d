"""Replay (DESIGN.md §13): a signals file through the engine on an isolated paper book, and
`export-signals`, which writes one from a daemon's inbox. Real embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal

import pytest

from config.config_hash import config_sha256, effective_config
from config.domain_files import DEFAULT_CONFIG_DIR, load_holidays
from config.errors import ConfigError
from config.settings import build_settings
from core.signals import parse_signal
from live.replay import ReplayRequest, run_replay
from live.replay_config import with_overrides
from live.signal_export import export_signals
from tests.support.daemon import REPO
from tests.support.trading import INSTRUMENTS, PORTFOLIO, Trading

# The trade of tests/e2e/test_trading.py, whose book the daemon is known to keep: a base
# entry, a pyramid the 1R gate blocks, one it takes, an exit of the base, a trail, and a bar
# through the pyramid's stop (its broker stop sells it) — and a line the webhook refuses.
GOLD = [
    {"type": "BASE_ENTRY", "position": "Long_1", "price": 78500, "stop": 77800},
    {"type": "PYRAMID", "position": "Long_2", "price": 79000, "stop": 78500},
    {"type": "PYRAMID", "position": "Long_2", "price": 80000, "stop": 79500},
    {"type": "EXIT", "position": "Long_1", "price": 80500, "stop": 0, "reason": "trend reversal"},
    {"type": "MARKET_DATA", "price": 81000, "atr": 500},
    {"type": "MARKET_DATA", "price": "79900.00", "atr": 500},
]


def stream_lines() -> list[str]:
    lines = []
    for n, fields in enumerate(GOLD):
        body = {"instrument": "GOLD_MINI", "atr": 700, "supertrend": 1,
                "timestamp": f"2026-11-20T10:{n:02d}:{n:02d}", **fields}
        if body["type"] != "MARKET_DATA":
            body.update(lots=1, er=1)
        lines.append(json.dumps(body))
    return [*lines, "not json"]


@pytest.fixture
def signals(tmp_path):
    path = tmp_path / "signals.jsonl"
    path.write_text("\n".join(stream_lines()) + "\n")
    return path


async def until(condition, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def as_sent(fields: dict) -> dict:
    """`Trading.send`'s arguments for one of GOLD's alerts."""
    sent = {"kind": fields["type"], "position": fields.get("position"),
            "price": str(fields["price"])}
    for name in ("stop", "atr"):
        if name in fields:
            sent[name] = Decimal(str(fields[name]))
    if "reason" in fields:
        sent["reason"] = fields["reason"]
    return sent


def layers(report: dict) -> list[tuple]:
    return [(t["instrument"], t["layer"], t["lots"], t["entry_price"], t["exit_price"],
             t["exit_reason"], t["pnl"]) for t in report["trades"]]


async def test_the_report_tells_the_book_the_daemon_keeps(signals, tmp_path):
    run = await run_replay(build_settings({}), ReplayRequest(signals, tmp_path / "out"))

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report == json.loads(json.dumps(run.to_json()))
    assert layers(report) == [
        ("GOLD_MINI", "Long_1", 7, "78500.0000", "80500.0000", "trend reversal", "140000.00"),
        ("GOLD_MINI", "Long_2", 3, "80000.0000", "79900.0000", "BROKER_STOP", "-3000.00")]
    assert (report["closed_equity"], report["equity_high"]) == ("5137000.00", "5140000.00")
    assert (report["max_drawdown"], report["max_drawdown_percent"]) == ("3000.00", "0.06")
    assert report["outcomes"] == {"blocked": 1, "executed": 4, "ignored": 1, "invalid": 1}
    assert report["reasons"] == {"blocked: Price not > 1R (moved 500, need 700)": 1,
                                 "ignored: no open layers": 1}
    assert report["invalid_lines"] == [{"line": 7, "detail": "Invalid JSON"}]
    assert report["signals"] == 7 and report["open_layers"] == 0
    # The ledger's curve: the opening balance, then each layer's P&L at its exit.
    curve = [(p["equity"], p["drawdown"]) for p in report["equity_curve"]]
    assert curve == [("5000000.00", "0.00"), ("5140000.00", "0.00"), ("5137000.00", "3000.00")]
    assert report["equity_curve"][-1]["at"] == report["trades"][1]["exit_time"]
    assert Decimal(report["initial_capital"]) + sum(
        Decimal(t["pnl"]) for t in report["trades"]) == Decimal(report["closed_equity"])
    assert report["trades"][0]["entry_time"] == "2026-11-20T04:30:00+00:00"  # naive = IST
    calendar = load_holidays(DEFAULT_CONFIG_DIR / "holidays.json")
    assert report["config_sha256"] == config_sha256(effective_config(INSTRUMENTS, PORTFOLIO,
                                                                     calendar))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<svg" in html and "5137000.00" in html and "BROKER_STOP" in html
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")  # offline


async def test_set_and_capital_change_the_sizing(signals, tmp_path):
    tight = (await run_replay(build_settings({}), ReplayRequest(
        signals, tmp_path / "tight", ("portfolio.paper_margin_fraction=0.1",)))).to_json()
    half = (await run_replay(build_settings({}), ReplayRequest(
        signals, tmp_path / "half", capital=Decimal("2500000")))).to_json()

    # Margin for 4 lots (0.1 × 5,000,000 at 105,000 a lot): the base is smaller, and the
    # pyramid finds no margin left.
    assert layers(tight) == [
        ("GOLD_MINI", "Long_1", 4, "78500.0000", "80500.0000", "trend reversal", "80000.00")]
    assert tight["reasons"]["blocked: Zero lots (limited by margin)"] == 1
    assert tight["closed_equity"] == "5080000.00"
    assert half["initial_capital"] == "2500000.00"
    assert [t["lots"] for t in half["trades"]] == [3, 1]  # sized on half the equity
    # Each names the configuration it decided under.
    assert len({tight["config_sha256"], half["config_sha256"]}) == 2


@pytest.mark.parametrize(("flag", "says"), [
    ("portfolio.max_portfolio_risk_pct=10", "--set portfolio.max_portfolio_risk_pct: unknown "
     "portfolio field (did you mean portfolio.max_portfolio_risk_percent?)"),
    ("portfolio.max_portfolio_risk_percent=150",
     "--set portfolio.max_portfolio_risk_percent: Input should be less than or equal to 100"),
])
def test_a_bad_set_is_refused_and_writes_nothing(signals, tmp_path, flag, says):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(REPO / "portfolio_manager.py"), "replay",
                           str(signals), "--out", str(out), "--set", flag], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and done.stderr.startswith("replay refused: ")
    assert not out.exists()


@pytest.mark.parametrize(("flag", "says"), [
    ("portfolio.use_1r_gate=maybe", "--set portfolio.use_1r_gate: Input should be a valid "
                                    "boolean"),
    ("portfolio.max_entries_per_day=0", "--set portfolio.max_entries_per_day: Input should "
                                        "be greater than 0"),
    ("instruments.GOLD_MINI.lot_size=1", "expected portfolio.FIELD=VALUE"),
    ("portfolio.use_1r_gate", "expected portfolio.FIELD=VALUE"),
])
def test_every_override_is_checked_as_a_file_value_is(flag, says):
    with pytest.raises(ConfigError) as refused:
        with_overrides(PORTFOLIO, [flag])
    assert says in str(refused.value)


def test_an_optional_rule_is_switched_on_and_off():
    on = with_overrides(PORTFOLIO, ["portfolio.daily_loss_limit_percent=2.5"])
    assert on.daily_loss_limit_percent == Decimal("2.5")
    assert with_overrides(on, ["portfolio.daily_loss_limit_percent=null"]) == PORTFOLIO


async def test_export_writes_the_inbox_replay_reads(db, dsn, postgresql, tmp_path, signals):
    trading = await Trading(db, dsn).start()
    try:
        trading.keep_stops()
        for fields in GOLD:  # as the webhook hands them over, each a minute apart
            await trading.send(**as_sent(fields), secret="never stored")
            await until(lambda: trading.stops.in_step)  # its keeper runs between alerts
    finally:
        await trading.close()
    config = tmp_path / "database_config.json"
    info = postgresql.info
    config.write_text(json.dumps({"local": {"host": info.host, "port": info.port,
                                            "user": info.user, "database": info.dbname}}))
    exported = tmp_path / "exported.jsonl"
    lines = await export_signals(build_settings({"db_config": config}), exported)

    assert lines == [f"exported 6 signals to {exported}"]
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    stored = postgresql.execute("SELECT payload FROM signal_log ORDER BY id").fetchall()
    assert rows == [payload for (payload,) in stored]
    assert all("secret" not in row for row in rows)
    assert [parse_signal(row, INSTRUMENTS).signal_type.value for row in rows] == [
        "BASE_ENTRY", "PYRAMID", "PYRAMID", "EXIT", "MARKET_DATA", "MARKET_DATA"]
    # Replayed, the exported inbox gives the book its daemon kept.
    replayed = (await run_replay(build_settings({}), ReplayRequest(
        exported, tmp_path / "replayed"))).to_json()
    book = postgresql.execute(
        "SELECT layer, lots, entry_price::text, exit_price::text, realized_pnl::text "
        "FROM portfolio_positions ORDER BY id").fetchall()
    assert [(t["layer"], t["lots"], t["entry_price"], t["exit_price"], t["pnl"])
            for t in replayed["trades"]] == [tuple(row) for row in book]
    closed = postgresql.execute("SELECT closed_equity::text FROM portfolio_state").fetchone()
    assert replayed["closed_equity"] == closed[0]
