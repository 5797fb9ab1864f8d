"""Serving the fake: the aiohttp app, in-process on a test's loop, or as its own process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.fakes.kite import api_routes as api
from tests.fakes.kite import control_routes as control
from tests.fakes.kite.config import FakeKiteConfig
from tests.fakes.kite.fake import FakeKite
from tests.fakes.kite.gateway import FAKE_KITE, Handler, kite_middleware

SHUTDOWN_TIMEOUT_S = 2.0

ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("POST", "/session/token", "session.create", api.handle_login),
    ("DELETE", "/session/token", "session.delete", api.handle_logout),
    ("GET", "/user/profile", "profile", api.handle_profile),
    ("GET", "/user/margins", "margins", api.handle_margins),
    ("GET", "/user/margins/{segment}", "margins.segment", api.handle_margins),
    ("POST", "/orders/{variety}", "place", api.handle_place),
    ("PUT", "/orders/{variety}/{order_id}", "modify", api.handle_modify),
    ("DELETE", "/orders/{variety}/{order_id}", "cancel", api.handle_cancel),
    ("GET", "/orders", "orders", api.handle_orders),
    ("GET", "/orders/{order_id}", "order_history", api.handle_order_history),
    ("GET", "/orders/{order_id}/trades", "order_trades", api.handle_order_trades),
    ("GET", "/trades", "trades", api.handle_trades),
    ("POST", "/gtt/triggers", "gtt_place", api.handle_gtt_place),
    ("GET", "/gtt/triggers", "gtts", api.handle_gtts),
    ("GET", "/gtt/triggers/{trigger_id}", "gtt", api.handle_gtt),
    ("PUT", "/gtt/triggers/{trigger_id}", "gtt_modify", api.handle_gtt_modify),
    ("DELETE", "/gtt/triggers/{trigger_id}", "gtt_delete", api.handle_gtt_delete),
    ("GET", "/portfolio/positions", "positions", api.handle_positions),
    ("GET", "/portfolio/holdings", "holdings", api.handle_holdings),
    ("GET", "/instruments", "instruments", api.handle_instruments),
    ("GET", "/instruments/{exchange}", "instruments.exchange", api.handle_instruments),
    ("GET", "/quote", "quote", api.quote_handler("full")),
    ("GET", "/quote/ltp", "quote.ltp", api.quote_handler("ltp")),
    ("GET", "/quote/ohlc", "quote.ohlc", api.quote_handler("ohlc")),
    ("GET", "/_test/state", "control.state", control.control_state),
    ("POST", "/_test/price", "control.price", control.control_price),
    ("POST", "/_test/fill_mode", "control.fill_mode", control.control_fill_mode),
    ("POST", "/_test/fault", "control.fault", control.control_fault),
    ("POST", "/_test/rms_reject", "control.rms_reject", control.control_rms_reject),
    ("POST", "/_test/margin_error", "control.margin_error", control.control_margin_error),
    ("POST", "/_test/expire_token", "control.expire_token", control.control_expire_token),
    ("POST", "/_test/request_token", "control.request_token", control.control_request_token),
    ("POST", "/_test/rate_limits", "control.rate_limits", control.control_rate_limits),
    ("POST", "/_test/fill", "control.fill", control.control_fill),
    ("POST", "/_test/square_off", "control.square_off", control.control_square_off),
    ("POST", "/_test/today", "control.today", control.control_today),
    ("POST", "/_test/cash", "control.cash", control.control_cash),
    ("POST", "/_test/postback_url", "control.postback_url", control.control_postback_url),
    ("POST", "/_test/reset", "control.reset", control.control_reset),
    ("POST", "/_test/expire_day_orders", "control.expire_day_orders",
     control.control_expire_day_orders),
    ("GET", "/_test/gtts", "control.gtts", control.control_gtts),
)


async def postback_sender(app: web.Application) -> AsyncIterator[None]:
    """Own the postback task and its HTTP session for the app's lifetime."""
    state = app[FAKE_KITE]
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(state.deliver_postbacks(session), name="fake-kite-postbacks")
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def wake_sleepers(app: web.Application) -> None:
    app[FAKE_KITE].close()


def build_fake_kite(config: FakeKiteConfig, state: FakeKite | None = None) -> web.Application:
    """Return the fake's aiohttp application (its `FakeKite` is `app[FAKE_KITE]`)."""
    app = web.Application(middlewares=[kite_middleware])
    app[FAKE_KITE] = state or FakeKite(config)
    for method, path, name, handler in ROUTES:
        app.router.add_route(method, path, handler, name=name)
    app.cleanup_ctx.append(postback_sender)
    app.on_shutdown.append(wake_sleepers)
    return app


@dataclass(frozen=True, slots=True)
class FakeKiteHandle:
    url: str
    state: FakeKite


@asynccontextmanager
async def running_fake_kite(config: FakeKiteConfig | None = None, *, host: str = "127.0.0.1",
                            port: int = 0) -> AsyncIterator[FakeKiteHandle]:
    """Serve the fake on this event loop (a free port unless given) until the block ends."""
    app = build_fake_kite(config or FakeKiteConfig())
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = runner.addresses[0][1]
        yield FakeKiteHandle(f"http://{host}:{bound_port}", app[FAKE_KITE])
    finally:
        await runner.cleanup()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake Kite Connect v3 server for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--access-token")
    parser.add_argument("--today", type=date.fromisoformat)
    parser.add_argument("--state-file", type=Path)
    parser.add_argument("--postback-url")
    parser.add_argument("--user-id", default="AB1234")
    parser.add_argument("--accept-any-request-token", action="store_true")
    parser.add_argument("--enforce-rate-limits", action="store_true")
    parser.add_argument("--fault-timeout-s", type=float, default=8.0)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> FakeKiteConfig:
    return FakeKiteConfig(api_key=args.api_key, api_secret=args.api_secret,
                          access_token=args.access_token, user_id=args.user_id, today=args.today,
                          state_file=args.state_file, postback_url=args.postback_url,
                          accept_any_request_token=args.accept_any_request_token,
                          enforce_rate_limits=args.enforce_rate_limits,
                          fault_timeout_s=args.fault_timeout_s)


async def serve(config: FakeKiteConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running_fake_kite(config, host=host, port=port) as fake:
        print(f"fake kite listening on {fake.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Run the fake as its own process."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(config_from_args(args), args.host, args.port))
