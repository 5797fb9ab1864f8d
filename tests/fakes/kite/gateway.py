"""The HTTP gateway in front of the handlers: auth, faults, rate limits and the envelope."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.fakes.kite.fake import FakeKite
from tests.fakes.kite.faults import ANSWERING_FAULTS, rate_category
from tests.fakes.kite.wire import KiteError, input_error

log = logging.getLogger("fake_kite")

TOKEN_MESSAGE = "Incorrect `api_key` or `access_token`."
FAKE_KITE = web.AppKey("fake_kite", FakeKite)
Handler = Callable[[web.Request], Awaitable[Any]]


def state_of(request: web.Request) -> FakeKite:
    return request.app[FAKE_KITE]


def success(data: Any) -> web.Response:
    return web.json_response({"status": "success", "data": data})


def error_response(error: KiteError) -> web.Response:
    return web.json_response(error.body(), status=error.status)


def too_many_requests() -> web.Response:
    return error_response(KiteError(429, "NetworkException", "Too many requests"))


def html_response(status: int) -> web.Response:
    """Return what a proxy in front of Kite answers: an HTML page (§2.3: DataException)."""
    reason = {429: "Too Many Requests", 502: "Bad Gateway"}[status]
    page = (f"<html><head><title>{status} {reason}</title></head><body><center><h1>{status} "
            f"{reason}</h1></center><hr><center>nginx</center></body></html>")
    return web.Response(status=status, text=page, content_type="text/html")


def fault_response(state: FakeKite, fault: str) -> web.Response:
    """Answer a call with an injected fault instead of the real thing."""
    if fault == "rate_limited":
        return too_many_requests()
    if fault == "network_503":
        return error_response(KiteError(503, "NetworkException",
                                        "Couldn't reach the OMS. Please try again."))
    if fault == "token_expired":
        state.expire_token()
        return error_response(KiteError(403, "TokenException", TOKEN_MESSAGE))
    return html_response(502 if fault == "html_502" else 429)


def check_gateway(request: web.Request, state: FakeKite, endpoint: str) -> None:
    """Refuse calls without the version header or (except the login) a valid token."""
    if state.config.require_kite_version and request.headers.get("X-Kite-Version") != "3":
        raise input_error("Missing or invalid `X-Kite-Version` header.")  # text unverified
    if endpoint != "session.create" and \
            not state.sessions.authorized(request.headers.get("Authorization")):
        raise KiteError(403, "TokenException", TOKEN_MESSAGE)


async def answer(request: web.Request, handler: Handler, state: FakeKite,
                 endpoint: str) -> web.StreamResponse:
    """Run an API handler and wrap its result in the envelope (§2.1)."""
    try:
        check_gateway(request, state, endpoint)
        result = await handler(request)
    except KiteError as error:
        return error_response(error)
    except Exception:  # handler boundary: a bug in the fake answers 500, as Kite's would
        log.exception("fake kite failed on %s %s", request.method, request.path)
        return error_response(KiteError(500, "GeneralException", "Internal error in fake kite"))
    return result if isinstance(result, web.StreamResponse) else success(result)


async def api_call(request: web.Request, handler: Handler, endpoint: str) -> web.StreamResponse:
    """Apply what sits in front of Kite's handlers: faults, rate limits, auth, envelope."""
    state = state_of(request)
    category = endpoint.split(".")[0]
    state.calls[category] += 1
    fault = state.take_fault(category)
    if fault in ANSWERING_FAULTS:
        return fault_response(state, fault)
    if not state.limiter.admit(rate_category(category)):
        return too_many_requests()
    response = await answer(request, handler, state, endpoint)
    # For timeout and drop the call has had its effect (an order placed, modified, cancelled);
    # only the answer is lost: the "accepted, then timed out" case.
    if fault == "timeout":
        await state.sleep(state.config.fault_timeout_s)
    elif fault == "drop" and request.transport is not None:
        request.transport.abort()
    return response


async def control_call(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return success(await handler(request))
    except KiteError as error:
        return error_response(error)


@web.middleware
async def kite_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Route every request through the gateway rules; unknown routes answer JSON errors."""
    http_error = request.match_info.http_exception
    if http_error is not None:
        message = "Route not found" if http_error.status == 404 else http_error.reason
        return error_response(KiteError(http_error.status, "GeneralException", message))
    endpoint = request.match_info.route.name or ""
    if endpoint.startswith("control."):
        return await control_call(request, handler)
    return await api_call(request, handler, endpoint)
