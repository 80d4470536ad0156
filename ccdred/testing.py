"""Driving the dashboard in a real browser, for the tests and the benchmarks.

``panel serve app.py`` on a free local port, Debian's Chromium through
Playwright (imported where used), and the few page actions both need.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "clip_summary", "free_port", "rejected_counts",
           "is_running", "process_status", "serve_app", "set_threshold", "stop_server", "threshold_field", "wait_for"]

#: Debian's Chromium (``apt-get install chromium``); Playwright's own download is not used.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
APP = Path(__file__).resolve().parents[1] / "app.py"
_SUMMARY = re.compile(r"([\d,]+) of [\d,]+ samples")


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process=None, timeout=90.0) -> None:
    """Wait until ``url`` answers 200; RuntimeError if ``process`` (a server run as a
    subprocess; None for one in this process) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"panel serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def serve_app(app_args=(), *, env=None, log=subprocess.DEVNULL, timeout=90.0,
              panel_options=()) -> Iterator[tuple[subprocess.Popen, str]]:
    """``panel serve app.py --args APP_ARGS`` on a free port, as a context: the process and
    the app's URL inside it; on leaving, the server is stopped with every process it started.

    The server runs in a process group of its own (``--num-procs`` forks worker processes
    into it), and :func:`stop_server` ends the whole group, also when the body raised.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", str(APP), "--port", str(port),
         "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
         *panel_options, *(["--args", *map(str, app_args)] if app_args else [])],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/app"
    try:
        wait_for(url, process, timeout)
        yield process, url
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen, grace: float = 30.0) -> None:
    """Stop a server started by :func:`serve_app` and every process of its group: SIGTERM,
    then SIGKILL for whatever is still there after ``grace`` seconds."""
    group = process.pid  # start_new_session: the server leads its own group
    _signal_group(group, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_group(group, signal.SIGKILL)
    process.wait()


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass


def _group_alive(group: int) -> bool:
    """Whether a process of the group is still running (not merely waiting to be reaped)."""
    for folder in Path("/proc").glob("[0-9]*"):
        fields = process_status(int(folder.name))
        if fields and int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def process_status(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, parent, group, ...);
    None when there is no such process (Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    fields = process_status(pid)
    return fields is not None and fields[0] != "Z"


def sidebar_field(page, label: str):
    """The text field of the sidebar widget labelled ``label`` (e.g. 'Upper limit')."""
    return page.locator(".bk-input-group", has_text=label).locator("input").first


def threshold_field(page):
    """The sidebar's threshold field."""
    return page.locator(".ccdred-threshold input").first


def set_threshold(page, value: float) -> None:
    """Type a threshold into the sidebar's threshold field."""
    field = threshold_field(page)
    field.fill(str(value))
    field.press("Enter")


def clip_summary(page) -> str:
    """The clipping tab's summary: samples rejected per master, one line each."""
    return page.get_by_text("samples rejected").first.inner_text()


def rejected_counts(text: str) -> list[int]:
    """The rejected-sample counts a clip summary states."""
    return [int(n.replace(",", "")) for n in _SUMMARY.findall(text)]
