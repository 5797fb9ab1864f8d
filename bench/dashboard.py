"""`make bench`: the dashboard's first render (issue 14: under 200 ms on this machine) and
the size of the page's own assets (under 300 KB).

Measured against the benchmark's daemon after its load phases, on the book they left:
- the server: `GET /` to the last byte of the page, over `runs` requests;
- a real headless Chromium (when one is found): navigation start to first contentful paint,
  and to the page's `load`, each in a fresh browser context (no cache).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from typing import Any

from bench.harness import percentile, settle

PAGE_ASSETS = re.compile(r'(?:src|href)="(/static/[^"]+)"')


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 0.5), "p99_ms": percentile(values, 0.99),
            "max_ms": max(values), "n": len(values)}


def measure_dashboard(url: str, runs: int) -> dict[str, Any]:
    settled_s = settle(url)  # the page is measured alone, not against the load's tail
    page = _get(url + "/")
    assets = sorted(set(PAGE_ASSETS.findall(page.decode())))
    sizes = {asset: len(_get(url + asset)) for asset in assets}
    status = json.loads(_get(url + "/status"))
    server = []
    for _ in range(runs):
        started = time.perf_counter()
        _get(url + "/")
        server.append((time.perf_counter() - started) * 1000)
    return {"open_layers": status["open_positions"], "settled_s": settled_s,
            "page_bytes": len(page),
            "assets_bytes": sum(sizes.values()), "assets": sizes,
            "server_render": _percentiles(server), "browser": _in_browser(url, runs)}


def _in_browser(url: str, runs: int) -> dict[str, Any] | None:
    from tests.support.chromium import find_chromium, launch_args

    path = find_chromium()
    if path is None:
        return None
    from playwright.sync_api import sync_playwright

    paint, loaded = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=launch_args())
        for _ in range(runs):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            tab = context.new_page()
            tab.goto(url + "/", wait_until="load")
            # The paint entry can come after `load`: wait for it (buffered), a second at most.
            timing = tab.evaluate("""() => new Promise(done => {
                const nav = performance.getEntriesByType("navigation")[0];
                const give = fcp => done({fcp: fcp, load: nav.loadEventEnd});
                new PerformanceObserver(list => {
                    for (const e of list.getEntries()) {
                        if (e.name === "first-contentful-paint") give(e.startTime);
                    }
                }).observe({type: "paint", buffered: true});
                setTimeout(() => give(null), 1000);
            })""")
            if timing["fcp"] is not None:
                paint.append(timing["fcp"])
            loaded.append(timing["load"])
            context.close()
        browser.close()
    return {"first_contentful_paint": _percentiles(paint) if paint else None,
            "load": _percentiles(loaded)}


if __name__ == "__main__":
    import sys

    print(json.dumps(measure_dashboard(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2
                                       else 20), indent=2))
