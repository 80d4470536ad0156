"""Load test: N concurrent dashboard sessions moving the threshold on the demo night.

Usage::

    python benchmarks/load.py --client protocol --sessions 8 [--same] [--active N] [--size 2048]
        [--num-procs N]
    python benchmarks/load.py --client browser --sessions 2 --size 512

Starts ``panel serve app.py`` on a free local port. ``--client protocol`` (the
default) opens N sessions that speak the Bokeh server protocol without
rendering (:mod:`ccdred.loadclient`), so the numbers are the server's; each
active session moves the threshold every ``--period`` seconds, to values no
other session asks for (``--same``: all to the same values), and a move's
latency runs from the change sent to the new clip summary and clip-map data
received. ``--client browser`` drives pages of one headless Chromium instead
(a check for one or two sessions: the browsers' own work shares the 2 cores).
Ends with one line: ``sessions N: p50 X s, p95 Y s, max Z s, rss N MB``.
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
    """The RSS of a process and its children (``--num-procs``: forked processes share
    pages, so the sum is an upper bound)."""
    status = Path(f"/proc/{pid}/status").read_text()
    own = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    children = " ".join(path.read_text() for path in Path(f"/proc/{pid}/task").glob("*/children"))
    return own + sum(rss_mb(int(child)) for child in children.split())


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


def threshold_for(index: int, move: int, same: bool) -> float:
    """The threshold a session asks for at a move: distinct across sessions unless ``same``,
    never the 2.5 a session starts at, different from its previous one."""
    step = move * 3 if same else index * 7 + move * 3
    return round(1.05 + 0.1 * (step % 20), 2)


async def protocol_session(url, index, moves, same, period, latencies, opened, go):
    from ccdred.loadclient import ProtocolSession

    session = ProtocolSession(url)
    await session.open()
    await session.show_tab("Clipping")
    opened.release()
    await go.wait()
    for move in range(moves):
        started = time.perf_counter()
        latencies.append(await session.set_threshold(threshold_for(index, move, same)))
        await asyncio.sleep(max(0.0, period - (time.perf_counter() - started)))
    return session


async def protocol_load(url, sessions, active, moves, same, period):
    """Open every session, then let the active ones move together; the sessions stay open."""
    latencies, opened, go = [], asyncio.Semaphore(0), asyncio.Event()
    idle = [asyncio.ensure_future(protocol_session(url, i, 0, same, period, [], opened, go))
            for i in range(active, sessions)]
    movers = [asyncio.ensure_future(protocol_session(url, i, moves, same, period, latencies,
                                                     opened, go)) for i in range(active)]
    for _ in range(sessions):
        await opened.acquire()
    go.set()
    opened_sessions = await asyncio.gather(*idle, *movers)
    return sorted(latencies), opened_sessions


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
    parser.add_argument("--client", choices=["protocol", "browser"], default="protocol")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--active", type=int, help="sessions that move (default: all)")
    parser.add_argument("--moves", type=int, default=6)
    parser.add_argument("--period", type=float, default=3.0,
                        help="seconds between a session's moves (protocol client)")
    parser.add_argument("--same", action="store_true", help="every session asks for the same values")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--num-threads", type=int,
                        help="panel serve --num-threads (default: as app.py sets it, 2 threads)")
    parser.add_argument("--num-procs", type=int, default=1,
                        help="panel serve --num-procs (server processes, each with its caches)")
    args = parser.parse_args(argv)
    threads = [] if args.num_threads is None else ["--num-threads", str(args.num_threads)]
    threads += ["--num-procs", str(args.num_procs)]
    # closed sessions are dropped 2 s after their last use, so that "after close" is quick
    with serve(args.size, *threads, "--unused-session-lifetime", "2000",
               "--check-unused-sessions", "1000") as (process, url):
        idle = rss_mb(process.pid)
        if args.client == "protocol":
            latencies, rss = asyncio.run(_protocol_round(url, args, process.pid))
        else:
            latencies = asyncio.run(load(url, args.sessions, args.moves))
            rss = rss_mb(process.pid)
        time.sleep(5)
        closed = rss_mb(process.pid)
    print(f"server RSS {idle:.0f} MB idle, {closed:.0f} MB 5 s after the sessions closed; "
          f"{len(latencies)} moves")
    print(f"sessions {args.sessions}: p50 {percentile(latencies, 0.5):.2f} s, "
          f"p95 {percentile(latencies, 0.95):.2f} s, max {latencies[-1]:.2f} s, rss {rss:.0f} MB")


async def _protocol_round(url, args, pid):
    latencies, sessions = await protocol_load(url, args.sessions, args.active or args.sessions,
                                              args.moves, args.same, args.period)
    rss = rss_mb(pid)  # while every session is still open
    for session in sessions:
        await session.close()
    return latencies, rss


if __name__ == "__main__":
    main()
