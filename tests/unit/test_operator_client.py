"""The operator verbs against a stand-in daemon on a real socket: what they send, the one line
they print and the exit code a script can rely on (0 done, 1 refused, 2 not asked)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from portfolio_manager import parse_args, run_command, settings_from
from tests.support.daemon import REPO, free_port

TOKEN = "s3cret-admin-token"
ACTIVE = {"state": "ACTIVE", "reason": None, "actor": "system", "since": "2026-11-20T05:00:00Z"}
STATUS = {"trading_state": ACTIVE, "ready": True, "not_ready_reasons": [], "open_positions": 3,
          "equity": {"closed": "5000000.00", "open": "5012000.00"}, "exits_pending": [],
          "daily": {"pnl": "-1200.00", "loss_limit": None, "entries": 2, "entries_limit": None,
                    "breached": False}, "config_sha256": "ab" * 32}


@dataclass
class StandIn:
    """Answers each path as scripted and remembers every request."""

    url: str = ""
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append({"method": request.method, "path": request.path,
                              "auth": request.headers.get("Authorization"),
                              "body": json.loads(raw) if raw else None})
        if request.path not in self.answers:
            raise web.HTTPNotFound()  # aiohttp's own text page, as a daemon without the route
        status, body = self.answers[request.path]
        return web.json_response(body, status=status)

    def posted(self) -> list[tuple[str, Any]]:
        return [(r["path"], r["body"]) for r in self.requests if r["method"] == "POST"]


@pytest.fixture
async def daemon():
    stand_in = StandIn(answers={"/status": (200, STATUS)})
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stand_in.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stand_in.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield stand_in
    await runner.cleanup()


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch) -> Path:
    """A state dir holding the paper daemon's token; no PM_* variable leaks in."""
    for name in ("PM_ADMIN_TOKEN", "PM_PORT", "PM_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "state"
    path.mkdir()
    (path / "admin_token").write_text(TOKEN + "\n")
    return path


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


async def cli(capsys, daemon: StandIn, state_dir: Path, *argv: str) -> Run:
    """Run a verb as portfolio_manager.py does (blocking, so beside the stand-in's loop)."""
    args = parse_args([*argv, "--url", daemon.url, "--state-dir", str(state_dir)])
    code = await asyncio.to_thread(run_command, args, settings_from(args))
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    return Run(code, captured.out, captured.err)


def one_line(run: Run) -> str:
    """The only line of the run: on stdout when the daemon answered, on stderr when not."""
    stream, other = (run.err, run.out) if run.code == 2 else (run.out, run.err)
    assert other == "" and stream.endswith("\n") and stream.count("\n") == 1, run
    return stream.rstrip("\n")


def state_answer(state: str, changed: bool, reason: str | None) -> tuple[int, Any]:
    return 200, {"status": "ok", "changed": changed, "trading_state": {
        "state": state, "reason": reason, "actor": "operator", "since": "2026-11-20T05:01:00Z"}}


async def test_pause_sends_the_reason_with_the_token_from_the_state_dir(capsys, daemon, state_dir):
    daemon.answers["/admin/pause"] = state_answer("REDUCING", True, "lunch")
    run = await cli(capsys, daemon, state_dir, "pause", "--reason", "lunch")
    assert run.code == 0
    assert one_line(run) == 'trading state REDUCING (was ACTIVE): reason "lunch" by operator'
    assert daemon.posted() == [("/admin/pause", {"reason": "lunch"})]
    assert {r["auth"] for r in daemon.requests} == {f"Bearer {TOKEN}"}


async def test_a_resume_that_changes_nothing_says_so(capsys, daemon, state_dir):
    daemon.answers["/admin/resume"] = state_answer("ACTIVE", False, None)
    run = await cli(capsys, daemon, state_dir, "resume")
    assert (run.code, one_line(run)) == (
        0, "trading state ACTIVE (unchanged): no reason by operator")
    assert daemon.posted() == [("/admin/resume", {})]


async def test_the_configured_token_wins_over_the_state_dir(capsys, daemon, state_dir,
                                                            monkeypatch):
    monkeypatch.setenv("PM_ADMIN_TOKEN", "from-the-environment")
    daemon.answers["/admin/halt"] = state_answer("HALTED", True, "exchange outage")
    run = await cli(capsys, daemon, state_dir, "halt", "--reason", "exchange outage")
    assert one_line(run) == ('trading state HALTED (was ACTIVE): reason "exchange outage" '
                             'by operator')
    assert {r["auth"] for r in daemon.requests} == {"Bearer from-the-environment"}
    assert "from-the-environment" not in run.out + run.err


async def test_flatten_reports_flat_or_still_flattening(capsys, daemon, state_dir):
    daemon.answers["/admin/flatten"] = (200, {"status": "flat", "layers_closed": 20,
                                              "orders_cancelled": 0, "elapsed_ms": 812})
    run = await cli(capsys, daemon, state_dir, "flatten", "--reason", "news")
    assert (run.code, one_line(run)) == (0, "flat: 20 layers closed, 0 orders cancelled in 812 ms")
    assert daemon.posted() == [("/admin/flatten", {"reason": "news"})]

    daemon.answers["/admin/flatten"] = (202, {"status": "flattening", "flatten_id": 7})
    run = await cli(capsys, daemon, state_dir, "flatten")
    assert run.code == 0
    assert one_line(run).startswith("flattening: still under way (flatten 7)")


async def test_exit_executed_blocked_and_not_found(capsys, daemon, state_dir):
    daemon.answers["/admin/exit"] = (200, {"status": "executed", "signal_id": None, "reason": None,
                                           "result": {"pnl": "12500.00",
                                                      "positions_closed": ["Long_2"]}})
    run = await cli(capsys, daemon, state_dir, "exit", "GOLD_MINI", "Long_2", "--reason", "news")
    assert (run.code, one_line(run)) == (0, "exit GOLD_MINI Long_2: executed, P&L 12500.00")
    assert daemon.posted() == [("/admin/exit", {"instrument": "GOLD_MINI", "position": "Long_2",
                                                "reason": "news"})]

    daemon.answers["/admin/exit"] = (200, {"status": "blocked", "signal_id": None,
                                           "reason": "broker unavailable", "result": {}})
    run = await cli(capsys, daemon, state_dir, "exit", "GOLD_MINI")
    assert (run.code, one_line(run)) == (1, "exit GOLD_MINI ALL: blocked (broker unavailable)")
    assert daemon.posted()[-1] == ("/admin/exit", {"instrument": "GOLD_MINI", "position": "ALL"})

    daemon.answers["/admin/exit"] = (404, {"status": "error", "error": "not_found",
                                           "detail": "no open layer Long_2 in GOLD_MINI"})
    run = await cli(capsys, daemon, state_dir, "exit", "GOLD_MINI", "Long_2")
    assert (run.code, one_line(run)) == (
        1, "exit GOLD_MINI Long_2 refused: no open layer Long_2 in GOLD_MINI")


async def test_capital_deposit_and_a_refused_withdrawal(capsys, daemon, state_dir):
    daemon.answers["/admin/capital"] = (200, {"status": "ok", "entry": {
        "id": 2, "txn_type": "DEPOSIT", "amount": "100000.00", "equity_before": "5000000.00",
        "equity_after": "5100000.00", "note": "top-up", "created_at": "2026-11-20T05:00:00Z"}})
    run = await cli(capsys, daemon, state_dir, "capital", "deposit", "100000.00",
                    "--note", "top-up")
    assert (run.code, one_line(run)) == (
        0, "DEPOSIT 100000.00: closed equity 5000000.00 -> 5100000.00")
    assert daemon.posted() == [("/admin/capital", {"type": "DEPOSIT", "amount": "100000.00",
                                                   "note": "top-up"})]

    detail = "withdrawal of 9000000.00 exceeds closed equity 5100000.00"
    daemon.answers["/admin/capital"] = (409, {"status": "error", "error": "refused",
                                              "detail": detail})
    run = await cli(capsys, daemon, state_dir, "capital", "withdraw", "9000000")
    assert (run.code, one_line(run)) == (1, f"WITHDRAW 9000000 refused: {detail}")


@pytest.mark.parametrize("amount", ["abc", "0", "0.00", "NaN", "Infinity", "1,000"])
async def test_an_amount_that_is_not_positive_is_refused_before_asking(capsys, daemon,
                                                                       state_dir, amount):
    run = await cli(capsys, daemon, state_dir, "capital", "deposit", amount)
    assert run.code == 2
    assert "AMOUNT must be a positive amount" in one_line(run)
    assert daemon.requests == []


async def test_status_in_one_line(capsys, daemon, state_dir):
    run = await cli(capsys, daemon, state_dir, "status")
    assert (run.code, one_line(run)) == (
        0, "status: ACTIVE, 3 open layers, closed equity 5000000.00, day P&L -1200.00, ready")

    daemon.answers["/status"] = (200, {
        **STATUS, "trading_state": {**ACTIVE, "state": "REDUCING", "actor": "limit"},
        "daily": {**STATUS["daily"], "breached": True}, "exits_pending": [{"layer": "Long_1"}],
        "ready": False, "not_ready_reasons": ["broker unavailable"], "open_positions": 1})
    run = await cli(capsys, daemon, state_dir, "status")
    assert one_line(run) == ("status: REDUCING, 1 open layer, closed equity 5000000.00, day P&L "
                             "-1200.00, daily loss limit breached, 1 exit pending, not ready "
                             "(broker unavailable)")


async def test_status_needs_no_token_but_sends_one_it_has(capsys, daemon, state_dir):
    (state_dir / "admin_token").unlink()
    run = await cli(capsys, daemon, state_dir, "status")
    assert run.code == 0 and daemon.requests[-1]["auth"] is None


async def test_a_wrong_token_is_not_a_refusal(capsys, daemon, state_dir):
    daemon.answers["/admin/pause"] = (401, {"status": "error", "error": "unauthorized",
                                            "detail": "admin token required"})
    run = await cli(capsys, daemon, state_dir, "pause", "--reason", "lunch")
    assert run.code == 2
    assert one_line(run).startswith("pause: not authorised (admin token required)")


async def test_no_token_means_nothing_is_asked(capsys, daemon, state_dir):
    (state_dir / "admin_token").unlink()
    run = await cli(capsys, daemon, state_dir, "halt", "--reason", "x")
    assert run.code == 2 and "PM_ADMIN_TOKEN" in one_line(run)
    assert daemon.requests == []


async def test_an_answer_that_is_not_the_api_is_not_a_refusal(capsys, daemon, state_dir):
    del daemon.answers["/status"]  # an older daemon: no such routes, aiohttp's text 404
    run = await cli(capsys, daemon, state_dir, "flatten")
    assert run.code == 2 and "did not answer with a JSON object" in one_line(run)


def test_no_daemon_listening_from_the_command_line(state_dir):
    # The real entry point, as an operator runs it.
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "portfolio_manager.py", "pause", "--reason", "lunch", "--url", url,
         "--state-dir", str(state_dir)], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"pause: cannot reach the daemon at {url}")
    assert result.stderr.count("\n") == 1 and TOKEN not in result.stderr


def test_a_missing_argument_is_a_usage_error(state_dir):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["pause"])  # --reason is required
    assert stopped.value.code == 2
