"""With the database down the webhook answers 503 — never a 2xx without durability."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer

from core.db_state_manager import DatabaseStateManager
from live.rate_limit import RateLimiter
from live.schema_migrations import apply_migrations
from live.server import Context, WebhookPolicy, build_app
from tests.support.alerts import alert, ist
from tests.support.trading import INSTRUMENTS, Trading


async def test_webhook_answers_503_while_the_database_is_down(own_server):
    conninfo = own_server.address().conninfo()
    apply_migrations(conninfo)
    db = DatabaseStateManager(conninfo, pool_timeout_s=1, retry_window_s=1)
    await db.open()
    trading = await Trading(db, conninfo).start()
    trading.inbox.start_processing()
    ctx = Context(db=db, inbox=trading.inbox, engine=trading.engine, instruments=INSTRUMENTS,
                  metrics=trading.metrics, readiness=trading.readiness, broker=trading.broker,
                  limiter=RateLimiter(1000),
                  policy=WebhookPolicy("s3cret", 16384, 2000, 1000))
    client = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    try:
        body = {"secret": "s3cret", **alert("BASE_ENTRY", "GOLD_MINI", "Long_1", 78500,
                                            ist(5), stop=77800)}
        await asyncio.to_thread(own_server.stop)
        response = await client.post("/webhook", data=json.dumps(body))
        assert response.status == 503
        assert (await response.json())["error"] == "unavailable"
        assert (await client.get("/db/status")).status == 503
        assert (await client.get("/positions")).status == 503

        await asyncio.to_thread(own_server.start)
        for _ in range(150):  # the same process recovers: no restart, no new pool
            if (await client.get("/db/status")).status == 200:
                break
            await asyncio.sleep(0.1)
        response = await client.post("/webhook", data=json.dumps(body))
        assert response.status == 200
        assert (await response.json())["status"] == "executed"  # nothing was half-written
    finally:
        await client.close()
        await trading.close()
        await db.close()
