"""Shared fixtures: seeded generators and small simulated nights on disk."""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdred.demo import NightSpec, make_night
from ccdred.testing import is_running

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CCDRED_SHARED", REPO.parent / "shared"))
REFERENCE_SCRIPT = SHARED / "reference" / "nimccdred.py"

#: Small and not square, so that a swapped row/column shows.
SMALL_SPEC = NightSpec(shape=(48, 64), seed=7)


_PR_SET_CHILD_SUBREAPER = 36
#: Processes of this interpreter's multiprocessing (Dask's local clusters start them): they
#: end when the test run's interpreter does, not before.
_INTERPRETER_HELPERS = ("from multiprocessing.resource_tracker import main",
                        "from multiprocessing.forkserver import main")


def pytest_sessionstart(session):
    """Adopt orphans: a process whose parent a test stopped (a server's forked worker, say)
    becomes this run's child, so the session-end check below still sees it."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a process started by the tests outlives them (and stop it)."""
    left = _running_descendants(os.getpid())
    if not left:
        return
    for pid, command in left:
        print(f"\nleft running by the tests: pid {pid}: {command}", file=sys.stderr)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _running_descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every running (not zombie) descendant of ``pid`` (Linux)."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            for child in map(int, task.read_text().split()):
                queue.append(child)
                command = _command_line(child)
                if command is not None and is_running(child) and not any(h in command for h in _INTERPRETER_HELPERS):
                    found.append((child, command))
    return found


def _command_line(pid: int, wait: float = 2.0) -> str | None:
    """A process's command line; None once it has gone. A process forked but not yet
    started (its command line still empty, on a loaded machine) is given ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return None
        if command.strip() or time.monotonic() > deadline:
            return command.decode().strip()
        time.sleep(0.05)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def night_files(tmp_path_factory) -> list[Path]:
    """A small simulated night, written once per test session (read-only!)."""
    return make_night(tmp_path_factory.mktemp("night"), SMALL_SPEC)


def write_nights(root: Path, specs: dict) -> Path:
    """Simulated nights, one folder per name under ``root``; returns ``root``."""
    for name, spec in specs.items():
        make_night(root / name, spec)
    return root


@pytest.fixture
def night_copy(night_files, tmp_path) -> Path:
    """A private, writable copy of the small night's folder."""
    folder = tmp_path / "raw"
    shutil.copytree(night_files[0].parent, folder)
    return folder


@pytest.fixture
def write_fits(tmp_path):
    """Write a raw frame: ``write_fits(name, data, **cards)`` -> path."""

    def write(name, data=None, folder=None, **cards):
        path = Path(folder or tmp_path) / name
        data = np.full((8, 10), 1000, dtype=np.uint16) if data is None else data
        header = fits.Header()
        for key, value in cards.items():
            header[key] = value
        fits.PrimaryHDU(data, header).writeto(path)
        return path

    return write


@pytest.fixture(scope="session")
def client():
    """A local Dask cluster of two worker processes, shared by the session's tests."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def unavailable(message: str, required_by: str):
    """Skip a test whose tool or data is missing, or fail it where the environment variable
    ``required_by`` is set (CI sets each: there, a missing piece is an error, not a skip)."""
    if os.environ.get(required_by):
        pytest.fail(f"{message} ({required_by} is set)")
    pytest.skip(message)


@pytest.fixture
def reference_script() -> Path:
    if not REFERENCE_SCRIPT.exists():
        unavailable(f"reference script not found at {REFERENCE_SCRIPT} (../shared is absent)",
                    "CCDRED_REQUIRE_REFERENCE")
    return REFERENCE_SCRIPT


def frame_files(night_files, imagetyp):
    return [p for p in night_files if fits.getheader(p)["IMAGETYP"] == imagetyp]


def expected_products(spec: NightSpec, files, intermediate=True) -> set[str]:
    """The files a course-shaped night makes: the course script's names, and the log."""
    names = {"dark_%08d.fits" % (t * 1000) for t in spec.dark_exptimes}
    names |= {f"flat_{f}.fits" for f in spec.filters}
    lights = frame_files(files, spec.imagetyp["object"])
    names |= {p.stem + "_df.fits" for p in lights}
    if intermediate:
        names |= {p.stem + "_d.fits" for p in lights + frame_files(files, spec.imagetyp["flat"])}
    return names | {"ccdred.log"}


def assert_same_products(expected: Path, actual: Path) -> None:
    """Two output folders hold the same FITS products with identical data (some at least)."""
    want = {p.name: fits.getdata(p) for p in sorted(expected.glob("*.fits"))}
    got = {p.name: fits.getdata(p) for p in sorted(actual.glob("*.fits"))}
    assert want.keys() == got.keys() and any(name.endswith("_df.fits") for name in want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
