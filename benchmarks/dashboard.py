"""Dashboard latency on the 2048x2048 demo night: first load, and threshold -> clip map.

Usage: python benchmarks/dashboard.py [--size 2048] [--repeats 5]

Starts ``panel serve app.py`` on a free local port, drives Debian's Chromium
with Playwright, and prints a Markdown table of the measured latencies.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ccdred.testing import (CHROMIUM, CHROMIUM_ARGS, clip_summary, rejected_counts, serve_app,
                            set_threshold)


def serve(size: int, *panel_options: str):
    """``panel serve app.py`` on the demo night of this size (simulated once into the cache)."""
    cache = Path(os.environ.get("CCDRED_CACHE", tempfile.gettempdir())) / "ccdred-bench"
    return serve_app(["--demo-size", size, "--cache", cache], timeout=600,
                     panel_options=panel_options)


def measure(url: str, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("canvas", timeout=120_000)
        first_load = time.perf_counter() - start
        page.get_by_text("Clipping", exact=True).first.click()
        page.wait_for_selector("text=samples rejected", timeout=120_000)
        latencies = []
        for threshold in [2.0, 3.0, 2.2, 2.8, 2.5][:repeats]:
            before = clip_summary(page)
            start = time.perf_counter()
            set_threshold(page, threshold)
            while clip_summary(page) == before or len(rejected_counts(clip_summary(page))) != 2:
                time.sleep(0.02)
            page.wait_for_selector("canvas")
            latencies.append(time.perf_counter() - start)
        browser.close()
    return {"first_load": first_load, "threshold": latencies}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with serve(args.size) as (_process, url):
        measure(url, 1)  # warm the shared caches, as the second user of the night would find them
        result = measure(url, args.repeats)
    latencies = sorted(result["threshold"])
    print("| dashboard, demo night %dx%d | seconds |\n| --- | ---: |" % (args.size, args.size))
    print(f"| first page load (to first plot) | {result['first_load']:.2f} |")
    print(f"| threshold change -> clip map and summary, median of {len(latencies)} | "
          f"{latencies[len(latencies) // 2]:.2f} |")
    print(f"| threshold change, worst | {latencies[-1]:.2f} |")


if __name__ == "__main__":
    main()
