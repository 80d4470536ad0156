"""Dashboard latency on the demo night: first load, and threshold moves to new values.

Usage: python benchmarks/dashboard.py [--sizes 512,1024,2048] [--moves 10]

For each size, starts ``panel serve app.py`` on the demo night of that size (simulated once
into the cache) on a free local port, drives Debian's Chromium with Playwright and moves the
Clipping tab's threshold by the keyboard to a new value each time. Each move is timed in the
page, from the Enter key's press to the Bokeh data sources changing: the first clip map's
image, and the last plot's data of the tab (the page quiet for 1.5 s after it). Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from ccdred.testing import CHROMIUM, CHROMIUM_ARGS, serve_app, threshold_field

#: New thresholds, none visited twice (the first move after the page loads is timed apart)
THRESHOLDS = (2.05, 2.15, 2.25, 2.35, 2.45, 2.55, 2.65, 2.75, 2.85, 2.95, 3.05, 3.15, 3.25,
              3.35, 3.45, 3.55, 3.65, 3.75, 3.85, 3.95, 4.05)

#: The thresholds of the session that warms the server's caches first: none of the timed ones
WARM_THRESHOLDS = (1.95, 1.85)

#: Records, in the page, the Enter key's press and each change of a Bokeh data source
#: (whether an image glyph draws it) arriving from the server.
_RECORDER = """() => {
  window.__moves = {pressed: null, changes: []};
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { window.__moves.pressed = performance.now();
                             window.__moves.changes = []; }
  }, true);
  const images = (doc) => new Set([...doc.all_models]
      .filter((m) => m.type === "GlyphRenderer" && m.glyph.type === "Image")
      .map((m) => m.data_source.id));
  for (const doc of Bokeh.documents) {
    doc.on_change((event) => {
      const model = event.model;
      if (model === undefined || model.type !== "ColumnDataSource") return;
      window.__moves.changes.push([performance.now(), images(doc).has(model.id)]);
    });
  }
}"""


def serve(size: int, *panel_options: str):
    """``panel serve app.py`` on the demo night of this size (``panel_options``: more of
    ``panel serve``'s options)."""
    cache = Path(os.environ.get("CCDRED_CACHE", tempfile.gettempdir())) / "ccdred-bench"
    return serve_app(["--demo-size", size, "--cache", cache], timeout=900,
                     panel_options=panel_options)


def move(page, threshold: float, quiet: float = 1.5) -> tuple[float, float]:
    """Type a new threshold; seconds from Enter to the first clip map's new image, and to
    the last data source's change."""
    field = threshold_field(page)
    field.fill(str(threshold))
    field.press("Enter")
    last, count = time.perf_counter(), 0
    while time.perf_counter() - last < quiet:
        time.sleep(0.05)
        now = page.evaluate("window.__moves.changes.length")
        if now != count:
            last, count = time.perf_counter(), now
    pressed, changes = page.evaluate("[window.__moves.pressed, window.__moves.changes]")
    if not any(change[1] for change in changes):
        raise RuntimeError(f"threshold {threshold}: no clip map changed")
    first_map = min(change[0] for change in changes if change[1])
    return (first_map - pressed) / 1000, (max(change[0] for change in changes) - pressed) / 1000


def measure(url: str, thresholds: tuple[float, ...]) -> dict:
    """Load the page and move the threshold to each of ``thresholds`` (the first move after
    the load timed apart)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("canvas", timeout=300_000)
        first_load = time.perf_counter() - start
        page.get_by_text("Clipping", exact=True).first.click()
        page.wait_for_selector("text=samples rejected", timeout=300_000)
        time.sleep(2.0)
        page.evaluate(_RECORDER)
        first_move = move(page, thresholds[0])
        timed = [move(page, threshold) for threshold in thresholds[1:]]
        browser.close()
    return {"first_load": first_load, "first_move": first_move, "moves": timed}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--moves", type=int, default=10,
                        help=f"timed moves (at most {len(THRESHOLDS) - 1})")
    parser.add_argument("--each", action="store_true", help="also print each move's seconds")
    args = parser.parse_args(argv)
    if not 0 < args.moves < len(THRESHOLDS):
        parser.error(f"--moves: 1 to {len(THRESHOLDS) - 1}")
    print("| demo night | first page load | first move after load: map, all | "
          f"{args.moves} moves to new thresholds: first map, median (range) | "
          "every plot, median (range) |\n| --- | ---: | ---: | ---: | ---: |")
    for size in map(int, args.sizes.split(",")):
        with serve(size) as (_process, url):
            measure(url, WARM_THRESHOLDS)  # the shared caches warm, as the second user finds them
            result = measure(url, THRESHOLDS[:args.moves + 1])
        maps, plots = (sorted(column) for column in zip(*result["moves"]))
        print(f"| {size}x{size} | {result['first_load']:.2f} s | "
              f"{result['first_move'][0]:.2f}, {result['first_move'][1]:.2f} s | "
              f"{statistics.median(maps):.2f} s ({maps[0]:.2f}-{maps[-1]:.2f}) | "
              f"{statistics.median(plots):.2f} s ({plots[0]:.2f}-{plots[-1]:.2f}) |", flush=True)
        if args.each:
            print("each move (first map, every plot):",
                  ", ".join(f"{t}: {m:.2f} {a:.2f}" for t, (m, a) in
                            zip(THRESHOLDS[1:], result["moves"])), flush=True)


if __name__ == "__main__":
    main()
