"""Portfolio manager CLI: parse arguments, build settings, call into `live/`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

# structlog loads its Twisted integration whenever Twisted is installed (kiteconnect's ticker
# brings it): 40 ms of every start, for an integration nothing here logs through.
sys.modules.setdefault("structlog.twisted", None)  # type: ignore[arg-type]
# The imports below build a few hundred thousand objects that live as long as the process
# and leave next to no garbage: run as a program, the collector stays out of them (~0.1 s of
# every start) and what they built is frozen out of its later full scans.
if __name__ == "__main__":
    gc.disable()

import structlog  # noqa: E402
import uvloop  # noqa: E402

from config.errors import ConfigError  # noqa: E402
from config.settings import Settings, build_settings  # noqa: E402
from live.book_claim import AlreadyRunning  # noqa: E402
from live.daemon import StartupStalled, run_live  # noqa: E402
from live.logging_setup import configure_logging  # noqa: E402
from live.operator_verbs import NOT_ASKED, VERBS, run_verb  # noqa: E402

if __name__ == "__main__":
    gc.freeze()
    gc.enable()


def _database_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db-config", type=Path, help="database_config.json (default: embedded)")
    parser.add_argument("--db-env", help="environment block of the config file (default: local)")
    parser.add_argument("--state-dir", type=Path, help="state directory (default: ./state)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="portfolio_manager.py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    live = commands.add_parser("live", help="run the trading daemon")
    _database_flags(live)
    live.add_argument("--broker", choices=["paper", "zerodha"])
    live.add_argument("--host")
    live.add_argument("--port", type=int)
    live.add_argument("--capital", type=Decimal, help="opening balance of an empty ledger")
    live.add_argument("--kite-root", help="Kite Connect API root (default: Zerodha's)")
    live.add_argument("--redis-url", help="redis://HOST:PORT/DB: run as one node of a pair "
                                          "(with a shared --db-config)")

    migrate = commands.add_parser("migrate", help="apply (or roll back) schema migrations")
    _database_flags(migrate)
    migrate.add_argument("--rollback", type=int, metavar="N",
                         help="roll back the newest N migrations")

    login = commands.add_parser("kite-login", help="store today's Kite session")
    login.add_argument("--state-dir", type=Path, help="state directory (default: ./state)")
    login.add_argument("--kite-root", help="Kite Connect API root (default: Zerodha's)")
    login.add_argument("--request-token", help="the request_token from Kite's login redirect")

    reconcile = commands.add_parser("reconcile", help="compare broker positions with the book")
    _database_flags(reconcile)
    reconcile.add_argument("--broker", choices=["paper", "zerodha"])
    reconcile.add_argument("--kite-root", help="Kite Connect API root (default: Zerodha's)")
    reconcile.add_argument("--accept", choices=["book", "broker"],
                           help="resolve the differences by accepting one side")
    _operator_verbs(commands)
    _replay_commands(commands)
    return parser.parse_args(argv)


def _replay_commands(commands: Any) -> None:
    """Export a daemon's signals; replay a signals file on an isolated paper book (§13)."""
    export = commands.add_parser("export-signals",
                                 help="write the daemon's signal_log as JSONL (replay's input)")
    _database_flags(export)
    export.add_argument("--out", type=Path, required=True, metavar="FILE.jsonl")
    replay = commands.add_parser("replay", help="run a signals file through the engine on an "
                                                "isolated paper book; write a report")
    replay.add_argument("signals", type=Path, metavar="SIGNALS.jsonl")
    replay.add_argument("--out", type=Path, required=True, metavar="DIR")
    replay.add_argument("--set", action="append", default=[], metavar="portfolio.FIELD=VALUE",
                        dest="overrides", help="override a portfolio field (repeatable)")
    replay.add_argument("--capital", type=Decimal, help="opening capital")


def _operator_verbs(commands: Any) -> None:
    """The verbs that ask a running daemon over its admin API (DESIGN.md §9)."""

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        parser.add_argument("--url",
                            help="the daemon (default: http://127.0.0.1:8080, or PM_PORT's port)")
        parser.add_argument("--state-dir", type=Path,
                            help="state directory holding admin_token (default: ./state)")
        return parser

    verb("pause", "stop new entries (exits still run)").add_argument("--reason", required=True)
    verb("resume", "trade again (also clears a daily-loss breach)").add_argument("--reason")
    verb("halt", "stop entries and exits").add_argument("--reason", required=True)
    verb("flatten", "close every layer now").add_argument("--reason")
    exit_ = verb("exit", "exit one layer, or all of an instrument, now")
    exit_.add_argument("instrument")
    exit_.add_argument("position", nargs="?", default="ALL", help="e.g. Long_2 (default: ALL)")
    exit_.add_argument("--reason")
    capital = verb("capital", "deposit or withdraw capital")
    capital.add_argument("kind", choices=["deposit", "withdraw"])
    capital.add_argument("amount", metavar="AMOUNT", help="e.g. 100000.00")
    capital.add_argument("--note")
    verb("status", "one line: trading state, layers, equity, day P&L, readiness")
    imports = verb("import-positions", "bring an existing book of open layers in "
                                       "(a JSON list of objects or a CSV with a header)")
    imports.add_argument("file", type=Path, metavar="FILE")
    imports.add_argument("--dry-run", action="store_true",
                         help="show the layers, their risk and the book after; write nothing")
    imports.add_argument("--reason")


def settings_from(args: argparse.Namespace) -> Settings:
    names = ["db_config", "db_env", "state_dir", "broker", "host", "port", "capital",
             "kite_root", "redis_url"]
    flags: dict[str, Any] = {name: getattr(args, name, None) for name in names}
    return build_settings(flags)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run a one-shot operator command; print its report."""
    code = 0
    if args.command in VERBS:  # asked of a running daemon: no database, no domain files
        reply = run_verb(args.command, vars(args), settings)
        print(reply.line, file=sys.stderr if reply.code == NOT_ASKED else sys.stdout)
        return reply.code
    if args.command == "replay":
        from live.replay import ReplayRequest, replay_command

        return replay_command(settings, ReplayRequest(args.signals, args.out,
                                                      tuple(args.overrides), args.capital))
    if args.command == "export-signals":
        from live.signal_export import export_signals

        lines = asyncio.run(export_signals(settings, args.out))
    elif args.command == "migrate":
        from live.migrate_command import run_migrate

        lines = asyncio.run(run_migrate(settings, args.rollback))
    elif args.command == "kite-login":
        from live.operator_commands import kite_login

        lines = kite_login(settings, args.request_token)
    else:
        from live.operator_commands import run_reconcile

        lines, code = asyncio.run(run_reconcile(settings, args.accept))
    for line in lines:
        print(line)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    log = structlog.get_logger("portfolio_manager")
    try:
        if args.command == "live":
            # libuv's loop: the daemon spends a third of its time in the loop's own work
            # (sockets, readiness, callbacks); uvloop does it in C (~10 % less CPU a signal).
            uvloop.run(run_live(settings))
            return 0
        return run_command(args, settings)
    except ConfigError as exc:
        log.error("configuration_error", error=str(exc))
        return 2
    except AlreadyRunning as exc:
        log.error("already_running", error=str(exc))
        return 1
    except StartupStalled as exc:
        log.error("startup_stalled", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
