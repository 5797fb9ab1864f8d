"""The aiohttp application: routes and handlers, nothing else."""

from __future__ import annotations

from aiohttp import web

from core.db_state_manager import DatabaseStateManager

DB_KEY = web.AppKey("db", DatabaseStateManager)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def db_status(request: web.Request) -> web.Response:
    status = await request.app[DB_KEY].status()
    return web.json_response(status, status=200 if status["status"] == "connected" else 503)


def build_app(db: DatabaseStateManager) -> web.Application:
    """Return the daemon's HTTP application bound to its state manager."""
    app = web.Application()
    app[DB_KEY] = db
    app.router.add_get("/health", health)
    app.router.add_get("/db/status", db_status)
    return app
