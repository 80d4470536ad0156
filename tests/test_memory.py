"""A dashboard server's memory (:func:`ccdred.serve.prepare_memory`): freed memory is reused
and the reserve is faulted in once, counted by the page faults a fresh process takes
(each test runs in a new interpreter: the C library's settings are for the whole process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ccdred.serve import free_pages_go_to_host

#: In a new interpreter: run the setup given as the first argument (after making
#: ``free_pages_go_to_host`` answer the second, if given), then fill a 64 MB array, free it
#: and fill another; print as JSON the setup's result and the page faults of each array.
_FILLS = """
import json, resource, sys
import numpy as np
from ccdred import serve

if len(sys.argv) > 2:
    serve.free_pages_go_to_host = lambda *_: sys.argv[2] == "True"
result = eval(sys.argv[1])
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    array = np.ones(8 << 20)  # 64 MB, filled
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del array
print(json.dumps([repr(result), *faults]))
"""

#: Pages of 64 MB
_PAGES = (64 << 20) // os.sysconf("SC_PAGE_SIZE")


def _fills(setup: str, host_takes_free_pages: bool | None = None, **env) -> tuple[str, int, int, str]:
    """The setup's result, the page faults of the first and of the second 64 MB array, and
    what was said on stderr, in a new process (with these environment variables more;
    None: one unset)."""
    env = {name: value for name, value in {**os.environ, **env}.items() if value is not None}
    forced = [] if host_takes_free_pages is None else [str(host_takes_free_pages)]
    done = subprocess.run([sys.executable, "-c", _FILLS, setup, *forced], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    result, first, second = json.loads(done.stdout)
    return result, first, second, done.stderr


def test_a_server_reuses_the_memory_it_frees():
    """By default a freed 64 MB array is given back and the next one faulted in page by
    page (in ordinary pages, as the server makes them); after keep_freed_memory the next one
    reuses it."""
    _, _, by_default, _ = _fills("serve.use_small_pages()")
    kept, _, reused, _ = _fills("(serve.use_small_pages(), serve.keep_freed_memory())")
    assert by_default > _PAGES // 2
    assert kept == "(True, True)"
    assert reused < _PAGES // 20


def test_the_reserve_is_faulted_in_once_and_the_first_arrays_reuse_it():
    """prepare_memory reserves CCDRED_RESERVE_MB in a thread, once per process; the first
    array made after it takes no new pages (without the reserve it takes them all)."""
    setup = "(lambda t: (t.join(), t.name, serve.prepare_memory() is t))(serve.prepare_memory())"
    result, first, _, _ = _fills(setup, CCDRED_RESERVE_MB="256")
    assert result == "(None, 'ccdred-reserve', True)"
    assert first < _PAGES // 20
    _, first_without, _, _ = _fills("serve.prepare_memory()", CCDRED_RESERVE_MB="0")
    assert first_without > _PAGES // 2


def test_no_reserve_and_glibc_s_defaults_when_told_none():
    result, _, second, _ = _fills("serve.prepare_memory()", True, CCDRED_RESERVE_MB="0")
    assert result == "None"
    assert second > _PAGES // 2  # the freed array given back: glibc's defaults


@pytest.mark.parametrize(("features", "reported"), [
    ("0110010000000000000000000000000010000000", True),   # this benchmark machine's balloon
    ("0110000000000000000000000000000010000000", False),  # a balloon without the reporting
    (None, False)])                                        # no balloon
def test_a_machine_hands_free_pages_to_its_host_when_its_balloon_reports_them(
        tmp_path, features, reported):
    drivers = tmp_path / "bus/virtio/drivers"
    (drivers / "virtio_console/virtio1").mkdir(parents=True)
    (drivers / "virtio_console/virtio1/features").write_text("1" * 64)
    if features is not None:
        (drivers / "virtio_balloon/virtio0").mkdir(parents=True)
        (drivers / "virtio_balloon/virtio0/features").write_text(features + "\n")
    assert free_pages_go_to_host(tmp_path) is reported


@pytest.mark.parametrize(("host_takes_free_pages", "expected"),
                         [(True, "(None, 'ccdred-reserve')"), (False, "None")])
def test_without_a_setting_the_reserve_is_made_where_free_pages_go_to_the_host(
        host_takes_free_pages, expected):
    """CCDRED_RESERVE_MB unset: a reserve of the master cache's size (here made small) on a
    machine whose balloon reports free pages, none elsewhere; the first array then takes
    no new pages, or all of them."""
    result, first, _, _ = _fills("(lambda t: t and (t.join(), t.name))(serve.prepare_memory())",
                                 host_takes_free_pages, CCDRED_RESERVE_MB=None,
                                 CCDRED_MASTER_CACHE_MB="128")
    assert result == expected
    assert (first < _PAGES // 20) if host_takes_free_pages else (first > _PAGES // 2)


def test_a_reserve_that_is_not_a_number_is_said_and_the_server_decides():
    """Said in the server's log (``panel serve`` logs to stderr, as basicConfig does here)."""
    setup = ("(__import__('logging').basicConfig(),"
             " (lambda t: t and t.name)(serve.prepare_memory()))[1]")
    result, _, _, said = _fills(setup, True, CCDRED_RESERVE_MB="lots", CCDRED_MASTER_CACHE_MB="64")
    assert "CCDRED_RESERVE_MB must be a whole number, got 'lots'; the server decides" in said
    assert "Traceback" not in said
    assert result == "'ccdred-reserve'"
