"""The first run on a fresh install: the dashboard's first page, and the first CLI night.

Usage: python benchmarks/first_run.py

Deletes numba's cached kernels of this checkout (``ccdred/__pycache__/*.nb[ic]``)
before each measurement, uses an empty cache folder, and times:

* ``panel serve app.py``: server start -> first page with widgets (the
  "preparing" state), -> the Frames tab drawn once the kernels are compiled;
* ``ccdred reduce`` of the demo night with nothing compiled, and after
  ``ccdred prepare`` (README's quick start runs it after install).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ccdred.testing import CHROMIUM, CHROMIUM_ARGS, serve_app

PACKAGE = Path(__file__).resolve().parents[1] / "ccdred"


def forget_kernels() -> None:
    for path in (PACKAGE / "__pycache__").glob("*.nb[ic]"):
        path.unlink()


def dashboard(cache: Path) -> dict:
    from playwright.sync_api import sync_playwright

    forget_kernels()
    started = time.perf_counter()
    with serve_app(env={**os.environ, "CCDRED_CACHE": str(cache)}, timeout=300) as (_process, url):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, timeout=300_000)
            page.wait_for_selector("text=Threshold", timeout=300_000)
            widgets = time.perf_counter() - started
            page.wait_for_selector("text=Change a frame", timeout=300_000)
            views = time.perf_counter() - started
            browser.close()
    return {"widgets": widgets, "views": views}


def cli_night(cache: Path, prepared: bool) -> float:
    forget_kernels()
    env = {**os.environ, "CCDRED_CACHE": str(cache)}
    night = cache / "night"
    subprocess.run([sys.executable, "-m", "ccdred", "demo", night], check=True, env=env,
                   capture_output=True)
    if prepared:
        subprocess.run([sys.executable, "-m", "ccdred", "prepare"], check=True, env=env,
                       capture_output=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ccdred", "reduce", "-q", "-d", cache / "out", night],
                   check=True, env=env, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second, \
            tempfile.TemporaryDirectory() as third:
        page = dashboard(Path(first))
        cold = cli_night(Path(second), prepared=False)
        warm = cli_night(Path(third), prepared=True)
    print("| first run, fresh install | seconds |\n| --- | ---: |")
    print(f"| `panel serve app.py`: first page with widgets ('preparing' state) | {page['widgets']:.1f} |")
    print(f"| `panel serve app.py`: Frames tab drawn (kernels compiled meanwhile) | {page['views']:.1f} |")
    print(f"| first `ccdred reduce` of the demo night, nothing compiled | {cold:.1f} |")
    print(f"| first `ccdred reduce` of the demo night after `ccdred prepare` | {warm:.1f} |")


if __name__ == "__main__":
    main()
