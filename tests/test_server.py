"""What a served session computes: a real Panel server in this process, driven over the
Bokeh protocol (:class:`ccdred.loadclient.ProtocolSession`), with the plot builders counted."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections import Counter

import holoviews as hv
import panel as pn
import pytest

from ccdred import pipeline as pipeline_module
from ccdred import plots
from ccdred.dashboard import Dashboard
from ccdred.demo import NightSpec, make_night
from ccdred.loadclient import ProtocolSession
from ccdred.pipeline import MASTERS
from ccdred.testing import free_port, wait_for

hv.extension("bokeh", logo=False)

#: What the tabs draw, by the function that builds it
COUNTED = {"frame levels": (plots, "frame_levels_plot"), "clip map": (plots, "dark_clip_map"),
           "sweep": (pipeline_module, "threshold_sweep")}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_night(root / "night1", NightSpec(shape=(128, 128), seed=12))
    return root


@pytest.fixture
def calls(monkeypatch):
    """How often each of :data:`COUNTED` has been called since the test began (and in
    ``threads``, each call's thread, in order)."""
    counts = Counter()
    counts.threads = []

    def counted(name, function):
        def call(*args, **kwargs):
            counts[name] += 1
            counts.threads.append((name, threading.current_thread().name))
            return function(*args, **kwargs)
        return call

    for name, (module, attribute) in COUNTED.items():
        monkeypatch.setattr(module, attribute, counted(name, getattr(module, attribute)))
    return counts


@pytest.fixture
def dashboards() -> weakref.WeakSet:
    """The dashboards the server has made and that are still alive."""
    return weakref.WeakSet()


@pytest.fixture
def app_url(data_root, tmp_path, calls, dashboards):
    """The dashboard served in this process (so its calls are counted) on a free port,
    with Panel's two threads as app.py sets them; a closed session is dropped 0.5 s after
    it was last used."""
    MASTERS.clear()
    pn.config.nthreads = 2

    def session():
        dashboard = Dashboard(data_root, tmp_path)
        dashboards.add(dashboard)
        return dashboard

    port = free_port()
    server = pn.serve({"app": session}, port=port, address="127.0.0.1",
                      websocket_origin=f"127.0.0.1:{port}", show=False, threaded=True,
                      unused_session_lifetime_milliseconds=500,
                      check_unused_sessions_milliseconds=250)
    url = f"http://127.0.0.1:{port}/app"
    wait_for(url)
    yield url
    server.stop()
    pn.config.nthreads = None


def test_only_the_tab_on_show_computes_and_a_tab_shown_again_is_up_to_date(app_url, calls):
    async def visit():
        session = ProtocolSession(app_url)
        await session.open()  # on the Frames tab
        await session.show_tab("Clipping")
        await session.show_tab("Explore")
        await session.show_tab("Clipping")
        await _settled(calls)
        visited = calls.copy()
        await session.set_threshold(1.7)
        await session.set_threshold(2.2)
        await _settled(calls)
        moved = calls.copy()
        await session.show_tab("Explore", shows="at threshold 2.2")  # its sweep caught up
        await _settled(calls)
        explored = calls.copy()
        await session.send_threshold(3.0)
        await session.wait_for_text("at threshold 3:")
        await _settled(calls)
        explored_moved = calls.copy()
        await session.show_tab("Frames", shows=".fits")
        await _settled(calls)
        await session.close()
        return visited, moved, explored, explored_moved, calls.copy()

    visited, moved, explored, explored_moved, back = asyncio.run(visit())
    assert visited["frame levels"] >= 1 and visited["sweep"] >= 1  # the counters count
    # two moves on the Clipping tab: new clip maps, nothing for the tabs not on show
    assert moved["clip map"] >= visited["clip map"] + 2
    assert moved["frame levels"] == visited["frame levels"]
    assert moved["sweep"] == visited["sweep"]
    # shown again, a tab catches up with the parameters, once
    assert explored["sweep"] == moved["sweep"] + 1
    # a move on the Explore tab: a new sweep, no clip map for the hidden Clipping tab
    assert explored_moved["sweep"] == explored["sweep"] + 1
    assert explored_moved["clip map"] == explored["clip map"]
    assert back["frame levels"] == moved["frame levels"] + 1


def test_a_move_reaches_the_page_in_a_few_updates_not_one_per_view(app_url, calls):
    """The Clipping tab's summary, clip maps, rejected-sample bars and pixel view, redrawn
    for one threshold move, come to the page in at most three patches (drawn in Panel's
    threads, shown on the server's loop): each clip map as soon as it is drawn, then the
    other views together (or fewer, when one is drawn before the last is shown): not one
    per view."""
    async def move():
        session = ProtocolSession(app_url)
        await session.open()
        await session.show_tab("Clipping")
        await _settled(calls)
        before, built_before = len(session.patches), len(calls.threads)
        await session.set_threshold(1.7)
        await _settled(calls)
        await asyncio.sleep(1.0)  # and anything the server sends after the counted builds
        await session.close()
        return session.patches[before:], calls.threads[built_before:]

    patches, built = asyncio.run(move())
    # drawn in Panel's threads: HoloViews would run a DynamicMap's drawing on the event loop
    assert [name for name, _ in built] == ["clip map"]
    assert built[0][1].startswith("ThreadPoolExecutor")
    with_views = [patch for patch in patches
                  if any(event in ("ColumnDataChanged data", "ModelChanged text") for event in patch)]
    assert 1 <= len(with_views) <= 3
    assert sum(patch.count("ColumnDataChanged data") for patch in with_views) >= 5  # every plot


async def _settled(calls: Counter, quiet: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until the counted calls have not changed for ``quiet`` seconds."""
    deadline, seen = time.monotonic() + timeout, None
    while seen != calls and time.monotonic() < deadline:
        seen = calls.copy()
        await asyncio.sleep(quiet)


def test_closed_sessions_leave_nothing_of_theirs_behind(app_url, dashboards):
    """Four sessions that moved their threshold on the Clipping tab, then closed: once the
    server has dropped them, no dashboard (nor its pipeline, plots, streams) is left."""
    async def open_move_close():
        sessions = [ProtocolSession(app_url) for _ in range(4)]
        for index, session in enumerate(sessions):
            await session.open()
            await session.show_tab("Clipping")
            await session.set_threshold(1.5 + 0.4 * index)
        opened = _alive(dashboards)  # (and maybe the page fetched to see the server is up)
        for session in sessions:
            await session.close()
        deadline = time.monotonic() + 30
        while _alive(dashboards) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        return opened

    opened = asyncio.run(open_move_close())
    assert opened >= 4
    assert _alive(dashboards) == 0


def _alive(dashboards: weakref.WeakSet) -> int:
    gc.collect()
    return len(dashboards)


def test_the_data_root_is_a_night_only_when_it_holds_fits_files(tmp_path):
    from ccdred.serve import list_nights

    make_night(tmp_path / "night1", NightSpec(shape=(16, 16), seed=3))
    (tmp_path / "prepared").write_text("a marker file, not a frame")
    assert list_nights(tmp_path) == ["night1"]
    (tmp_path / "loose.fits").write_bytes((tmp_path / "night1" / "demo_0001.fits").read_bytes())
    assert list_nights(tmp_path) == [".", "night1"]
