"""Load generator: alerts POSTed to a webhook, open loop or all at once.

Open loop: request i is due at t0 + i/rate whatever happened to earlier ones, and its latency
is measured from that due time — a stalled server shows up as latency, not as fewer requests.

It shares the machine with the server it measures, so it is lean: HTTP/1.1 keep-alive over
raw asyncio connections, each request's bytes built before the clock starts, one scheduler
instead of a task per request. (An aiohttp client spent about 0.25 ms of CPU per request:
at 1,500/s, a third of a core taken from the server under test.)

Prints one JSON object on stdout: per request (in the order answered) its latency, its
`code:status` (`code:error` for a refusal, `0:<why>` for no answer), whether it carried
`Retry-After` and whether it reported a fill; the signal ids of the 2xx answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from bench.stream import BenchInstrument, alert_body, bench_instruments

# Past TradingView's 3 s, so that "no answer within 3 s" is the server's, not this client's.
TIMEOUT_S = 10.0
MAX_CONNECTIONS = 10_000  # as TradingView, one per alert in flight


@dataclass(slots=True)
class Answer:
    latency_s: float  # from the request's due time
    code: int  # HTTP status, 0: no answer
    key: str  # "200:executed", "503:overloaded", "0:timeout"
    retry_after: bool = False
    signal_id: int | None = None  # of a 2xx answer
    order: bool = False  # a 2xx answer with a fill (an entry's or an exit's)


def _key(code: int, body: bytes) -> tuple[str, int | None, bool]:
    """The answer's `code:status` (or `code:error`), a 2xx answer's signal id, and whether
    it carries a fill."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return f"{code}:-", None, False
    ok = 200 <= code < 300
    label = (None if ok else answer.get("error")) or answer.get("status") or "-"
    signal_id = answer.get("signal_id") if ok else None
    result = answer.get("result")
    order = ok and isinstance(result, dict) and "fill_price" in result
    return f"{code}:{label}", signal_id if isinstance(signal_id, int) else None, order


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, client: Client):
        self._client = client
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._due = 0.0
        self._busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def send(self, request: bytes, due: float) -> None:
        assert self._transport is not None
        self._due, self._busy = due, True
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self._buffer[:head_end]).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head[1:])}
        length = int(headers.get("content-length", "0"))
        if len(self._buffer) < head_end + 4 + length:
            return
        body = bytes(self._buffer[head_end + 4:head_end + 4 + length])
        del self._buffer[:head_end + 4 + length]
        code = int(head[0].split(" ", 2)[1])
        key, signal_id, order = _key(code, body)
        self._busy = False
        self._client.answered(self, Answer(time.perf_counter() - self._due, code, key,
                                           "retry-after" in headers, signal_id, order),
                              keep=headers.get("connection", "").lower() != "close")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self._busy:
            self._busy = False
            self._client.answered(self, Answer(time.perf_counter() - self._due, 0,
                                               "0:connection_lost"), keep=False)
        else:
            self._client.lost_idle(self)

    def abort(self) -> None:
        self.closed = True  # counted out by whoever aborts it
        if self._transport is not None:
            self._transport.abort()


class Client:
    """Sends prepared requests over a pool of connections; a request waits for a free one."""

    def __init__(self, url: str, timeout_s: float, max_connections: int = MAX_CONNECTIONS):
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._path = parts.path or "/"
        self._timeout_s = timeout_s
        self._max = max_connections
        self._idle: list[_Connection] = []
        self._opening = 0
        self._open = 0
        self._waiting: deque[tuple[bytes, float]] = deque()
        self._in_flight: dict[_Connection, float] = {}
        self.results: list[Answer] = []
        self.outstanding = 0

    def request(self, body: bytes) -> bytes:
        return (f"POST {self._path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body

    def submit(self, request: bytes, due: float) -> None:
        self.outstanding += 1
        if self._idle:
            self._send(self._idle.pop(), request, due)
            return
        self._waiting.append((request, due))
        if self._open + self._opening < self._max:
            self._opening += 1
            asyncio.get_running_loop().create_task(self._connect())

    def _send(self, connection: _Connection, request: bytes, due: float) -> None:
        self._in_flight[connection] = due
        connection.send(request, due)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # A server past its accept backlog may leave a connect hanging for minutes.
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self._host, self._port),
                self._timeout_s)
        except (OSError, TimeoutError):
            self._opening -= 1
            return  # what waits for it is given up by `expire`, in time
        self._opening -= 1
        self._open += 1
        self._free(connection)

    def _free(self, connection: _Connection) -> None:
        if self._waiting:
            request, due = self._waiting.popleft()
            self._send(connection, request, due)
        else:
            self._idle.append(connection)

    def _record(self, answer: Answer) -> None:
        self.results.append(answer)
        self.outstanding -= 1

    def answered(self, connection: _Connection, answer: Answer, keep: bool) -> None:
        self._in_flight.pop(connection, None)
        self._record(answer)
        if keep and not connection.closed:
            self._free(connection)
            return
        self._open -= 1
        if not connection.closed:
            connection.abort()
        if self._waiting and self._open + self._opening < self._max:
            self._opening += 1
            asyncio.get_running_loop().create_task(self._connect())

    def lost_idle(self, connection: _Connection) -> None:
        """The server closed a connection that carried nothing: forget it."""
        if connection in self._idle:
            self._idle.remove(connection)
            self._open -= 1

    def expire(self, now: float) -> None:
        """Give up the requests past the timeout: in flight (their connections are dropped)
        or still waiting for a connection."""
        for connection, due in list(self._in_flight.items()):
            if now - due > self._timeout_s:
                self._in_flight.pop(connection)
                connection._busy = False
                self._open -= 1
                connection.abort()
                self._record(Answer(now - due, 0, "0:timeout"))
        while self._waiting and now - self._waiting[0][1] > self._timeout_s:
            _, due = self._waiting.popleft()
            self._record(Answer(now - due, 0, "0:no_connection"))
        if self._waiting and self._open + self._opening < self._max:
            self._opening += 1
            asyncio.get_running_loop().create_task(self._connect())

    async def drain(self) -> None:
        while self.outstanding:
            self.expire(time.perf_counter())
            await asyncio.sleep(0.01)
        for connection in self._idle:
            connection.abort()


async def open_loop(url: str, rate: float, duration_s: float, start: int,
                    instruments: list[BenchInstrument], secret: str,
                    timeout_s: float = TIMEOUT_S) -> dict[str, object]:
    now = datetime.now(UTC)
    client = Client(url, timeout_s)
    count = int(rate * duration_s)
    requests = [client.request(json.dumps(alert_body(start + i, instruments, secret,
                                                     now)).encode())
                for i in range(count)]
    t0 = time.perf_counter() + 0.2
    sent = 0
    while sent < count:
        current = time.perf_counter()
        while sent < count and t0 + sent / rate <= current:
            client.submit(requests[sent], t0 + sent / rate)
            sent += 1
        client.expire(current)
        if sent < count:
            await asyncio.sleep(max(0.0, min(t0 + sent / rate - time.perf_counter(), 0.002)))
    await client.drain()
    return _summary(client.results, time.perf_counter() - t0)


async def storm(url: str, count: int, body: bytes) -> dict[str, object]:
    """`count` copies of one alert at once, each on a connection of its own."""
    client = Client(url, TIMEOUT_S, max_connections=count)
    request = client.request(body)
    started = time.perf_counter()
    for _ in range(count):
        client.submit(request, started)
    await client.drain()
    return _summary(client.results, time.perf_counter() - started)


def _summary(results: list[Answer], elapsed: float) -> dict[str, object]:
    statuses: dict[str, int] = {}
    for result in results:
        statuses[result.key] = statuses.get(result.key, 0) + 1
    return {"latencies_ms": [round(r.latency_s * 1000, 3) for r in results],
            "status_of": [r.key for r in results],
            "retry_after": "".join("1" if r.retry_after else "0" for r in results),
            "orders": "".join("1" if r.order else "0" for r in results),
            "signal_ids": [r.signal_id for r in results if r.signal_id is not None],
            "statuses": statuses,
            "errors": sum(1 for r in results if not 200 <= r.code < 300),
            "elapsed_s": elapsed, "requests": len(results)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["open", "storm"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--body", default="")
    parser.add_argument("--instruments", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help="client timeout per request, s (keep it past 3)")
    args = parser.parse_args()
    instruments = bench_instruments(args.instruments)
    if args.mode == "open":
        result = asyncio.run(open_loop(args.url, args.rate, args.duration, args.start,
                                       instruments, args.secret, args.timeout))
    else:
        result = asyncio.run(storm(args.url, args.count, args.body.encode()))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
