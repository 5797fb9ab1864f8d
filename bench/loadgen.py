"""Load generator, run as its own process: open-loop rate, or a storm of identical alerts.

Open loop: request i is due at t0 + i/rate whatever happened to earlier ones, and its latency
is measured from that due time — a stalled server shows up as latency, not as fewer requests.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime

import aiohttp

from bench.stream import BenchInstrument, alert_body, bench_instruments

TIMEOUT_S = 30


async def _send(session: aiohttp.ClientSession, url: str, body: bytes, due: float,
                results: list[tuple[float, int, str, float]]) -> None:
    delay = due - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        async with session.post(url, data=body,
                                headers={"Content-Type": "application/json"}) as response:
            answer = await response.json()
            results.append((time.perf_counter() - due, response.status, answer.get("status"),
                            due))
    except (aiohttp.ClientError, TimeoutError) as exc:
        results.append((time.perf_counter() - due, 0, type(exc).__name__, due))


async def open_loop(url: str, rate: float, duration_s: float, start: int,
                    instruments: list[BenchInstrument], secret: str) -> dict[str, object]:
    now = datetime.now(UTC)
    count = int(rate * duration_s)
    bodies = [json.dumps(alert_body(start + i, instruments, secret, now)).encode()
              for i in range(count)]
    results: list[tuple[float, int, str, float]] = []
    connector = aiohttp.TCPConnector(limit=2000)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter() + 0.2
        await asyncio.gather(*(_send(session, url, body, t0 + i / rate, results)
                               for i, body in enumerate(bodies)))
        elapsed = time.perf_counter() - t0
    return _summary(results, elapsed)


async def storm(url: str, count: int, body: bytes) -> dict[str, object]:
    results: list[tuple[float, int, str, float]] = []
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(_send(session, url, body, t0, results) for _ in range(count)))
        elapsed = time.perf_counter() - t0
    return _summary(results, elapsed)


def _summary(results: list[tuple[float, int, str, float]], elapsed: float) -> dict[str, object]:
    first = min((r[3] for r in results), default=0.0)
    statuses: dict[str, int] = {}
    for _, code, status, _ in results:
        key = f"{code}:{status}"
        statuses[key] = statuses.get(key, 0) + 1
    return {"latencies_ms": [r[0] * 1000 for r in results], "statuses": statuses,
            "status_of": [f"{r[1]}:{r[2]}" for r in results],
            "due_s": [r[3] - first for r in results],
            "errors": sum(1 for r in results if not 200 <= r[1] < 300),
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
    args = parser.parse_args()
    instruments = bench_instruments(args.instruments)
    if args.mode == "open":
        result = asyncio.run(open_loop(args.url, args.rate, args.duration, args.start,
                                       instruments, args.secret))
    else:
        result = asyncio.run(storm(args.url, args.count, args.body.encode()))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
