"""The test-control routes: JSON under /_test/, no auth, each a call into `FakeKite`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from typing import Any

from aiohttp import web

from tests.fakes.kite.gateway import state_of
from tests.fakes.kite.wire import input_error, parse_int


async def control_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise input_error("control bodies are JSON objects") from None
    if not isinstance(body, dict):
        raise input_error("control bodies are JSON objects")
    return body


def need(body: Mapping[str, Any], name: str) -> Any:
    if body.get(name) is None:
        raise input_error(f"`{name}` is required")
    return body[name]


async def control_state(request: web.Request) -> Any:
    return state_of(request).snapshot()


async def control_price(request: web.Request) -> Any:
    body = await control_body(request)
    state_of(request).set_price(need(body, "tradingsymbol"), need(body, "price"),
                                body.get("exchange"))
    return state_of(request).snapshot()["prices"]


async def control_fill_mode(request: web.Request) -> Any:
    body = await control_body(request)
    state_of(request).set_fill_mode(need(body, "mode"), body.get("fraction"))
    return state_of(request).snapshot()["fill_mode"]


async def control_fault(request: web.Request) -> Any:
    body = await control_body(request)
    state_of(request).add_fault(need(body, "endpoint"), need(body, "fault"),
                                parse_int(body.get("count", 1), "count"))
    return state_of(request).snapshot()["faults"]


async def control_rms_reject(request: web.Request) -> Any:
    count = parse_int((await control_body(request)).get("count", 1), "count")
    state_of(request).reject_next_for_margin(count)
    return {"rms_reject_next": count}


async def control_margin_error(request: web.Request) -> Any:
    count = parse_int((await control_body(request)).get("count", 1), "count")
    state_of(request).fail_next_with_margin_error(count)
    return {"margin_error_next": count}


async def control_expire_token(request: web.Request) -> Any:
    state_of(request).expire_token()
    return True


async def control_request_token(request: web.Request) -> Any:
    body = await control_body(request)
    return {"request_token": state_of(request).register_request_token(body.get("request_token"))}


async def control_rate_limits(request: web.Request) -> Any:
    body = await control_body(request)
    state_of(request).enforce_rate_limits(bool(need(body, "enforce")))
    return state_of(request).snapshot()["rate_limits"]


async def control_fill(request: web.Request) -> Any:
    body = await control_body(request)
    quantity = body.get("quantity")
    return state_of(request).fill(str(need(body, "order_id")),
                                  None if quantity is None else parse_int(quantity, "quantity"),
                                  body.get("price"))


async def control_square_off(request: web.Request) -> Any:
    body = await control_body(request)
    return state_of(request).square_off(str(need(body, "tradingsymbol")), body.get("price"),
                                        body.get("exchange"))


async def control_today(request: web.Request) -> Any:
    text = str(need(await control_body(request), "date"))
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise input_error("date must be YYYY-MM-DD") from None
    state_of(request).set_today(day)
    return {"today": day.isoformat()}


async def control_cash(request: web.Request) -> Any:
    body = await control_body(request)
    state_of(request).set_cash(need(body, "segment"), need(body, "cash"))
    return state_of(request).margins(None)


async def control_postback_url(request: web.Request) -> Any:
    url = (await control_body(request)).get("url")
    state_of(request).set_postback_url(url)
    return {"url": url}


async def control_reset(request: web.Request) -> Any:
    state_of(request).reset()
    return True


async def control_expire_day_orders(request: web.Request) -> Any:
    body = await control_body(request)
    return state_of(request).expire_day_orders(body.get("exchange"))


async def control_gtts(request: web.Request) -> Any:
    return state_of(request).gtts()
