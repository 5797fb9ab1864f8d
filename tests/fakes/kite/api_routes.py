"""The Kite Connect v3 routes the client calls, each a thin call into `FakeKite`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.kite.gateway import Handler, state_of


async def handle_login(request: web.Request) -> Any:
    return state_of(request).login(await request.post())


async def handle_logout(request: web.Request) -> Any:
    return state_of(request).logout(request.query)


async def handle_profile(request: web.Request) -> Any:
    return state_of(request).profile()


async def handle_margins(request: web.Request) -> Any:
    return state_of(request).margins(request.match_info.get("segment"))


async def handle_place(request: web.Request) -> Any:
    return state_of(request).place(request.match_info["variety"], await request.post())


async def handle_modify(request: web.Request) -> Any:
    return state_of(request).modify(request.match_info["order_id"], await request.post())


async def handle_cancel(request: web.Request) -> Any:
    return state_of(request).cancel(request.match_info["order_id"])


async def handle_gtt_place(request: web.Request) -> Any:
    return state_of(request).place_gtt(await request.post())


async def handle_gtt_modify(request: web.Request) -> Any:
    return state_of(request).modify_gtt(request.match_info["trigger_id"], await request.post())


async def handle_gtt_delete(request: web.Request) -> Any:
    return state_of(request).delete_gtt(request.match_info["trigger_id"])


async def handle_gtt(request: web.Request) -> Any:
    return state_of(request).get_gtt(request.match_info["trigger_id"])


async def handle_gtts(request: web.Request) -> Any:
    return state_of(request).gtts()


async def handle_orders(request: web.Request) -> Any:
    return state_of(request).orders()


async def handle_order_history(request: web.Request) -> Any:
    return state_of(request).order_history(request.match_info["order_id"])


async def handle_order_trades(request: web.Request) -> Any:
    return state_of(request).order_trades(request.match_info["order_id"])


async def handle_trades(request: web.Request) -> Any:
    return state_of(request).trades()


async def handle_positions(request: web.Request) -> Any:
    return state_of(request).positions()


async def handle_holdings(request: web.Request) -> Any:
    return []  # the daemon trades futures only; holdings are always empty here


async def handle_instruments(request: web.Request) -> Any:
    text = state_of(request).instruments_csv(request.match_info.get("exchange"))
    return web.Response(text=text, content_type="text/csv")


def quote_handler(kind: str) -> Handler:
    async def handle(request: web.Request) -> Any:
        return state_of(request).quote(request.query.getall("i", []), kind)
    return handle
