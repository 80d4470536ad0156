"""Load test: N concurrent dashboard sessions moving the threshold on the demo night.

Usage: python benchmarks/load.py [--sessions 8] [--moves 6] [--size 512]

Starts ``panel serve app.py`` on a free local port, opens N pages in one
headless Chromium, and has every session change the threshold ``moves`` times
at once. Reports latency percentiles (threshold entered -> new clipped-pixel
summary shown) and the server's memory (resident set) before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from dashboard import serve  # noqa: E402

from ccdred.testing import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
SUMMARY = re.compile(r"([\d,]+) of [\d,]+ samples rejected")


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


async def session(browser, url, index, moves, latencies):
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await page.goto(url)
    await page.wait_for_selector("text=Reduce night", timeout=300_000)
    await page.get_by_text("Clipping", exact=True).first.click()
    await page.wait_for_selector("text=samples rejected", timeout=300_000)
    field = page.locator("input").nth(1)
    for move in range(moves):
        before = await page.get_by_text("samples rejected").first.inner_text()
        threshold = 1.5 + 0.1 * ((index * 7 + move * 3) % 20)
        start = time.perf_counter()
        await field.fill(f"{threshold:.1f}")
        await field.press("Enter")
        while True:
            text = await page.get_by_text("samples rejected").first.inner_text()
            if text != before and len(SUMMARY.findall(text)) == 2:
                break
            await asyncio.sleep(0.02)
        latencies.append(time.perf_counter() - start)
    return page


async def load(url, sessions, moves):
    from playwright.async_api import async_playwright

    latencies = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        await asyncio.gather(*(session(browser, url, i, moves, latencies) for i in range(sessions)))
        await browser.close()
    return sorted(latencies)


def percentile(values, q):
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--moves", type=int, default=6)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--num-threads", type=int, default=0,
                        help="panel serve --num-threads (0: callbacks on the event loop)")
    args = parser.parse_args(argv)
    process, url = serve(args.size, "--num-threads", str(args.num_threads))
    try:
        idle = rss_mb(process.pid)
        latencies = asyncio.run(load(url, args.sessions, args.moves))
        loaded = rss_mb(process.pid)
        again = asyncio.run(load(url, args.sessions, args.moves))
        after = rss_mb(process.pid)
    finally:
        process.terminate()
    print(f"| {args.sessions} sessions x {args.moves} threshold moves, demo {args.size}x{args.size} "
          "| p50 (s) | p90 (s) | max (s) |\n| --- | ---: | ---: | ---: |")
    for label, values in (("first round", latencies), ("second round", again)):
        print(f"| {label} | {percentile(values, 0.5):.2f} | {percentile(values, 0.9):.2f} | "
              f"{values[-1]:.2f} |")
    print(f"\nserver RSS: {idle:.0f} MB idle, {loaded:.0f} MB after the first round, "
          f"{after:.0f} MB after the second")


if __name__ == "__main__":
    main()
