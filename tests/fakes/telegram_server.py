"""A fake Telegram Bot API for tests: `getMe`, `sendMessage`, `getUpdates` (long poll with
offsets), and faults on `sendMessage` (429 with retry_after, 400 parse error, 502, a hang).

In-process:  async with running_fake_telegram() as fake: ...  (fake.url, fake.state)
Own thread:  FakeTelegramThread().start() from a synchronous test (its own event loop);
             drive it through its methods, which call the control API under /_fake/.
The daemon is pointed at it with PM_TELEGRAM_API_URL=fake.url and PM_TELEGRAM_BOT_TOKEN=
fake.token; only that token is accepted, as Telegram would.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456:fake-bot-token-ABCdef"
CHAT_ID = "424242"
ALLOWED_TAGS = {"b", "i", "u", "s", "code", "pre", "a"}
TAG = re.compile(r"<(/?)([a-zA-Z]+)[^>]*>")


@dataclass
class Fault:
    kind: str  # "429", "parse", "502", "hang"
    count: int  # how many sendMessage calls it answers; -1: until cleared
    retry_after: int = 1
    seconds: float = 30.0  # how long a hang holds the request


@dataclass
class FakeTelegramState:
    token: str = TOKEN
    messages: list[dict[str, Any]] = field(default_factory=list)  # delivered, in order
    attempts: list[dict[str, Any]] = field(default_factory=list)  # every sendMessage call
    updates: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    hanging: int = 0  # sendMessage requests being held right now
    next_update_id: int = 1000
    new_update: asyncio.Event = field(default_factory=asyncio.Event)

    def push_text(self, chat_id: str, text: str, date: int | None = None) -> int:
        update_id = self.next_update_id
        self.next_update_id += 1
        self.updates.append({"update_id": update_id, "message": {
            "message_id": update_id, "date": int(date if date is not None else time.time()),
            "chat": {"id": int(chat_id), "type": "private"}, "text": text}})
        self.new_update.set()
        return update_id

    def take_fault(self) -> Fault | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault.count > 0:
            fault.count -= 1
            if fault.count == 0:
                self.faults.pop(0)
        return fault


def html_parses(text: str) -> bool:
    """Telegram's HTML rule, as far as tests need it: known tags, properly nested."""
    stack: list[str] = []
    for closing, name in TAG.findall(text):
        name = name.lower()
        if name not in ALLOWED_TAGS:
            return False
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack and "<" not in TAG.sub("", text)


STATE = web.AppKey("state", FakeTelegramState)


def _answer(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _failure(code: int, description: str, **extra: Any) -> web.Response:
    return web.json_response({"ok": False, "error_code": code, "description": description,
                              **extra}, status=code)


async def _payload(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        body = await request.json()
        return body if isinstance(body, dict) else {}
    return dict(await request.post()) | dict(request.query)


async def bot_method(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if request.match_info["token"] != state.token:
        return _failure(401, "Unauthorized")
    method = request.match_info["method"]
    payload = await _payload(request)
    if method == "getMe":
        return _answer({"id": 1, "is_bot": True, "first_name": "PM", "username": "pm_test_bot"})
    if method == "sendMessage":
        return await _send_message(state, payload)
    if method == "getUpdates":
        return await _get_updates(state, payload)
    return _failure(404, "Not Found: method not found")


async def _send_message(state: FakeTelegramState, payload: dict[str, Any]) -> web.Response:
    state.attempts.append(dict(payload))
    fault = state.take_fault()
    if fault is not None:
        if fault.kind == "429":
            return _failure(429, f"Too Many Requests: retry after {fault.retry_after}",
                            parameters={"retry_after": fault.retry_after})
        if fault.kind == "502":
            return web.Response(status=502, text="<html>Bad Gateway</html>")
        if fault.kind == "hang":
            state.hanging += 1
            try:
                await asyncio.sleep(fault.seconds)
            finally:
                state.hanging -= 1
            return _failure(504, "Gateway Timeout")
        if fault.kind == "parse":
            return _failure(400, "Bad Request: can't parse entities: unsupported start tag")
    chat_id, text = payload.get("chat_id"), payload.get("text")
    if not chat_id or not text:
        return _failure(400, "Bad Request: message text is empty")
    if payload.get("parse_mode") == "HTML" and not html_parses(str(text)):
        return _failure(400, "Bad Request: can't parse entities: unexpected tag")
    message = {"message_id": len(state.messages) + 1, "chat_id": str(chat_id), "text": text,
               "parse_mode": payload.get("parse_mode"), "date": int(time.time())}
    state.messages.append(message)
    return _answer({"message_id": message["message_id"], "date": message["date"],
                    "chat": {"id": int(chat_id)}, "text": text})


async def _get_updates(state: FakeTelegramState, payload: dict[str, Any]) -> web.Response:
    offset = int(payload.get("offset") or 0)
    wait_s = min(float(payload.get("timeout") or 0), 50.0)
    if offset:  # an offset confirms every update before it, as Telegram does
        state.updates = [u for u in state.updates if u["update_id"] >= offset]
    if not state.updates and wait_s > 0:
        state.new_update.clear()
        try:
            await asyncio.wait_for(state.new_update.wait(), wait_s)
        except TimeoutError:
            pass
    return _answer(list(state.updates))


# -- the control API (tests only) ---------------------------------------------------------
async def control_messages(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"messages": state.messages, "attempts": len(state.attempts),
                              "hanging": state.hanging, "pending_updates": len(state.updates)})


async def control_command(request: web.Request) -> web.Response:
    body = await request.json()
    update_id = request.app[STATE].push_text(str(body["chat_id"]), str(body["text"]),
                                             body.get("date"))
    return web.json_response({"update_id": update_id})


async def control_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "DELETE":
        state.faults.clear()
    else:
        body = await request.json()
        state.faults.append(Fault(str(body["kind"]), int(body.get("count", 1)),
                                  int(body.get("retry_after", 1)),
                                  float(body.get("seconds", 30.0))))
    return web.json_response({"faults": len(state.faults)})


def build_fake_telegram(state: FakeTelegramState | None = None) -> web.Application:
    app = web.Application()
    app[STATE] = state or FakeTelegramState()
    app.router.add_route("*", "/bot{token}/{method}", bot_method)
    app.router.add_get("/_fake/messages", control_messages)
    app.router.add_post("/_fake/command", control_command)
    app.router.add_route("*", "/_fake/faults", control_faults)
    return app


@dataclass
class FakeTelegramHandle:
    url: str
    state: FakeTelegramState
    token: str = TOKEN


@asynccontextmanager
async def running_fake_telegram(host: str = "127.0.0.1") -> AsyncIterator[FakeTelegramHandle]:
    """Serve the fake on this event loop, on a free port, until the block ends."""
    app = build_fake_telegram()
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, 0).start()
        port = runner.addresses[0][1]
        yield FakeTelegramHandle(f"http://{host}:{port}", app[STATE])
    finally:
        await runner.cleanup()


class FakeTelegramThread:
    """The fake on a thread of its own, for synchronous tests of a daemon process."""

    def __init__(self) -> None:
        self.url = ""
        self.token = TOKEN
        self.chat_id = CHAT_ID
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="fake-telegram", daemon=True)

    def start(self) -> FakeTelegramThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake Bot API did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        async def serve() -> None:
            self._stop = asyncio.Event()
            async with running_fake_telegram() as fake:
                self.url = fake.url
                self._ready.set()
                await self._stop.wait()
        try:
            self._loop.run_until_complete(serve())
        finally:
            self._loop.close()

    # -- control ------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def messages(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/messages")["messages"])

    def report(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_fake/messages"))

    def command(self, text: str, chat_id: str | None = None, date: int | None = None) -> int:
        body: dict[str, Any] = {"chat_id": chat_id or self.chat_id, "text": text}
        if date is not None:
            body["date"] = date
        return int(self._call("POST", "/_fake/command", body)["update_id"])

    def fault(self, kind: str, count: int = 1, **params: Any) -> None:
        self._call("POST", "/_fake/faults", {"kind": kind, "count": count, **params})

    def clear_faults(self) -> None:
        self._call("DELETE", "/_fake/faults")

    def wait_for(self, predicate: Any, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """Poll the delivered messages until `predicate(messages)` holds; return them."""
        deadline = time.monotonic() + timeout_s
        while True:
            messages = self.messages()
            if predicate(messages):
                return messages
            if time.monotonic() > deadline:
                texts = "\n".join(m["text"] for m in messages)
                raise AssertionError(f"the fake Bot API did not get what was awaited; "
                                     f"it has:\n{texts}")
            time.sleep(0.1)
