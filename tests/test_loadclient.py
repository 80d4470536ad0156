"""The load benchmark's protocol client against a real ``panel serve app.py``."""

from __future__ import annotations

import asyncio

import pytest

from ccdred.demo import NightSpec, make_night
from ccdred.loadclient import ProtocolSession
from ccdred.prepare import prepare
from ccdred.testing import serve_app


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("data-root")
    make_night(root / "night1", NightSpec(shape=(96, 96), seed=5))
    prepare(root.parent)
    process, url = serve_app(["--data-root", root, "--output-root",
                              tmp_path_factory.mktemp("out")],
                             env=None)
    yield url
    process.terminate()
    process.wait(timeout=30)


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
