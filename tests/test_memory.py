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

#: Page faults of filling a new 64 MB array after freeing another, in a new interpreter that
#: first runs the setup given as its argument; printed as JSON with the setup's result.
_REFILL = """
import json, resource, sys
import numpy as np
from ccdred import serve

result = eval(sys.argv[1])
first = np.ones(8 << 20)  # 64 MB, filled
del first
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = np.ones(8 << 20)
print(json.dumps([repr(result), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before]))
"""

#: 64 MB in pages of 4 kB
_PAGES = (64 << 20) // 4096


def _refill_faults(setup: str, **env) -> tuple[str, int, str]:
    """The setup's result, the page faults of the second 64 MB array and what was said on
    stderr, in a new process (with these environment variables more; None: one unset)."""
    env = {name: value for name, value in {**os.environ, **env}.items() if value is not None}
    done = subprocess.run([sys.executable, "-c", _REFILL, setup], capture_output=True,
                          text=True, check=True, env=env)
    result, faults = json.loads(done.stdout)
    return result, faults, done.stderr


def test_a_server_reuses_the_memory_it_frees():
    """By default a freed 64 MB array is given back and the next one faulted in page by
    page (in ordinary pages, as the server makes them); after keep_freed_memory the next one
    reuses it."""
    _, faults_by_default, _ = _refill_faults("serve.use_small_pages()")
    kept, faults_kept, _ = _refill_faults("(serve.use_small_pages(), serve.keep_freed_memory())")
    assert faults_by_default > _PAGES // 2
    assert kept == "(True, True)"
    assert faults_kept < _PAGES // 20


def test_the_reserve_is_faulted_in_once_and_reused():
    """prepare_memory reserves CCDRED_RESERVE_MB in a thread, once per process; the arrays
    made after it take no new pages."""
    setup = ("(lambda t: (t.join(), t.name, serve.prepare_memory() is t))(serve.prepare_memory())")
    result, faults, _ = _refill_faults(setup, CCDRED_RESERVE_MB="256")
    assert result == "(None, 'ccdred-reserve', True)"
    assert faults < _PAGES // 20


def test_no_reserve_when_told_none():
    result, _, _ = _refill_faults("serve.prepare_memory()", CCDRED_RESERVE_MB="0")
    assert result == "None"


def test_a_reserve_that_is_not_a_number_is_said_and_the_server_decides():
    """Said in the server's log (``panel serve`` logs to stderr, as basicConfig does here)."""
    setup = ("(__import__('logging').basicConfig(),"
             " (lambda t: t and t.name)(serve.prepare_memory()))[1]")
    result, _, said = _refill_faults(setup, CCDRED_RESERVE_MB="lots", CCDRED_MASTER_CACHE_MB="64")
    assert "CCDRED_RESERVE_MB must be a whole number, got 'lots'; the server decides" in said
    assert "Traceback" not in said
    assert result == ("'ccdred-reserve'" if free_pages_go_to_host() else "None")


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


def test_without_a_setting_the_reserve_is_made_where_free_pages_go_to_the_host():
    """CCDRED_RESERVE_MB unset: a reserve (of the master cache's size, here made small) on
    a machine whose balloon reports free pages, none elsewhere."""
    result, _, _ = _refill_faults("(lambda t: t and (t.join(), t.name))(serve.prepare_memory())",
                                  CCDRED_RESERVE_MB=None, CCDRED_MASTER_CACHE_MB="128")
    assert result == ("(None, 'ccdred-reserve')" if free_pages_go_to_host() else "None")
