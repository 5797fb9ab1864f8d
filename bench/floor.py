"""The durable-ack floor: the least a webhook ack can do, served like the daemon serves one.

Run as its own process (`python -m bench.floor --conninfo … --port N`) on the daemon's own
PostgreSQL: parse the JSON body, one `INSERT … RETURNING id` with synchronous commit from a
pool, answer `{"status": "ok", "signal_id": id}`. No dedup, no validation, no engine, no
logging: whatever the daemon's ack costs above this is the daemon's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
from aiohttp import web
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

POOL_SIZE = 8
TABLE = "bench_floor"
POOL = web.AppKey("pool", AsyncConnectionPool)


async def ack(request: web.Request) -> web.Response:
    try:
        payload = json.loads(await request.read())
    except ValueError:
        return web.json_response({"status": "error", "error": "validation_error"}, status=400)
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(f"INSERT INTO {TABLE} (payload) VALUES (%s) RETURNING id",
                                    (Jsonb(payload),))
        row = await cursor.fetchone()
    assert row is not None
    return web.json_response({"status": "ok", "signal_id": row[0]})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _configure(conn: psycopg.AsyncConnection[object]) -> None:
    await conn.set_autocommit(True)  # each INSERT is its own transaction: one commit


async def serve(conninfo: str, port: int) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
        assert row == ("on",), f"synchronous_commit is {row}"
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, "
                           "payload jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now())")
    pool = AsyncConnectionPool(conninfo, min_size=POOL_SIZE, max_size=POOL_SIZE,
                               configure=_configure, open=False)
    await pool.open(wait=True)
    app = web.Application()
    app[POOL] = pool
    app.router.add_post("/webhook", ack)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # The daemon's accept queue: alerts arrive in bursts.
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await pool.close()


class FloorServer:
    """The floor as a process of its own, on `conninfo`, for the load generator."""

    secret = "floor"  # it checks none: the body is stored as it came

    def __init__(self, conninfo: str, port: int, log: Path, pgdata: Path):
        self.url = f"http://127.0.0.1:{port}"
        self.pgdata = pgdata  # its server's, for the CPU it costs
        self._command = [sys.executable, "-m", "bench.floor", f"--conninfo={conninfo}",
                         f"--port={port}"]
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FloorServer:
        repo = Path(__file__).resolve().parent.parent
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(self._command, cwd=repo, stdout=log,
                                             stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the floor server did not start (log: {self._log})")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            self._process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conninfo", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.conninfo, args.port))


if __name__ == "__main__":
    main()
