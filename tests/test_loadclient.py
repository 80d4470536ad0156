"""The load benchmark's protocol client against a real ``panel serve app.py``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccdred.demo import NightSpec, make_night
from ccdred.loadclient import ProtocolSession
from ccdred.prepare import prepare
from ccdred.testing import is_running, serve_app


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("data-root")
    make_night(root / "night1", NightSpec(shape=(384, 384), seed=5))
    prepare(root.parent)
    # the server on the cache just prepared (else it prepares its own first: the sessions
    # would meet the "preparing" page)
    with serve_app(["--data-root", root, "--output-root", tmp_path_factory.mktemp("out")],
                   env={**os.environ, "CCDRED_CACHE": str(root.parent)}) as (_process, url):
        yield url


def test_sessions_over_the_protocol_see_their_own_threshold_moves(app_url):
    async def two_sessions():
        first, second = ProtocolSession(app_url), ProtocolSession(app_url)
        for session in (first, second):
            await session.open()
            await session.show_tab("Clipping")
        moved = await first.set_threshold(1.7)
        again = await second.set_threshold(2.1)
        for session in (first, second):
            await session.close()
        return moved, again

    moved, again = asyncio.run(two_sessions())
    assert 0 < moved < 60 and 0 < again < 60  # each got its new summary and clip-map data


def test_a_move_that_changes_nothing_is_not_awaited_forever(app_url):
    async def same_value():
        session = ProtocolSession(app_url)
        await session.open()
        await session.show_tab("Clipping")
        try:
            await session.set_threshold(2.5, timeout=3.0)  # the value it has: no new summary
        finally:
            await session.close()

    with pytest.raises(TimeoutError):
        asyncio.run(same_value())


def test_a_second_sessions_change_is_taken_while_the_first_computes(app_url):
    """One session's recomputation does not hold up another's page: the server takes (OKs)
    the second session's change before the first session's new clip maps have come back."""
    async def overlapping_moves():
        first, second = ProtocolSession(app_url), ProtocolSession(app_url)
        for session in (first, second):
            await session.open()
            await session.show_tab("Clipping")
        results = []
        for value in (1.7, 2.2, 3.1):
            moving = asyncio.ensure_future(first.set_threshold(value))
            await asyncio.sleep(0.01)
            sent = await second.send_threshold(value + 0.35)
            while len(second.acknowledged) < len(results) + 1:
                await asyncio.sleep(0.005)
            taken = second.acknowledged[-1]
            results.append((taken, sent, await moving))
        for session in (first, second):
            await session.close()
        return results

    for taken, _sent, first_move in asyncio.run(overlapping_moves()):
        assert taken < first_move, (taken, first_move)


def test_sessions_are_served_by_several_processes_with_num_procs(tmp_path):
    """``panel serve --num-procs 2`` (README, 'serving a class'): two server processes, and
    sessions opened on either move their threshold and get their own clip maps back."""
    root = tmp_path / "data-root"
    make_night(root / "night1", NightSpec(shape=(256, 256), seed=6))
    prepare(tmp_path)
    with serve_app(["--data-root", root, "--output-root", tmp_path / "out"],
                   env={**os.environ, "CCDRED_CACHE": str(tmp_path)},
                   panel_options=["--num-procs", "2"]) as (process, url):
        servers = _children(process.pid)

        async def sessions():
            opened = [ProtocolSession(url) for _ in range(4)]
            for session in opened:
                await session.open()
                await session.show_tab("Clipping")
            moves = [await session.set_threshold(1.6 + 0.35 * i)  # never the default 2.5
                     for i, session in enumerate(opened)]
            for session in opened:
                await session.close()
            return moves

        moves = asyncio.run(sessions())
    assert len(servers) == 2, servers
    assert not [pid for pid in servers if is_running(pid)], "a server process outlived its test"
    assert all(0 < seconds < 60 for seconds in moves), moves


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


@pytest.mark.parametrize(("setting", "huge_pages_before", "stopped", "huge_pages_after"),
                         [(None, True, True, False), ("1", True, False, True),
                          ("0", False, False, False)])
def test_the_server_stops_numpy_asking_for_huge_pages_unless_told(setting, huge_pages_before,
                                                                 stopped, huge_pages_after):
    """``app.py`` calls :func:`ccdred.serve.use_small_pages` after ``panel serve`` imported
    numpy; a ``NUMPY_MADVISE_HUGEPAGE`` the user set is left to decide."""
    code = ("import numpy as np; from ccdred.serve import use_small_pages; "
            "before = np._core.multiarray._get_madvise_hugepage(); stopped = use_small_pages(); "
            "print(before, stopped, np._core.multiarray._get_madvise_hugepage())")
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if setting is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = setting
    said = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()
    assert said == [str(huge_pages_before), str(stopped), str(huge_pages_after)]
