"""The first-time work, done once after install: compile the kernels, simulate the demo night.

``ccdred prepare`` runs it (README's quick start does), and the dashboard runs
it in the background when it finds it not done, showing a "preparing" page
meanwhile. Numba keeps the compiled kernels next to the package (or in
``NUMBA_CACHE_DIR``), so a run after this one starts in about a second.

Each kernel has a few fixed versions (``kernels.SIGNATURES``): :mod:`ccdred.combine`
converts every stack type, byte order and memory layout to its input type at
the boundary, so the versions compiled here are all that a run ever loads
(``tests/test_compile.py`` holds that no run compiles another).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from . import config
from ._version import __version__

__all__ = ["compile_kernels", "is_prepared", "prepare", "prepare_in_background"]


def _marker(cache: Path) -> Path:
    """The file that says :func:`prepare` has finished for this version of ccdred installed
    here: numba keeps the compiled kernels beside the package (or in ``NUMBA_CACHE_DIR``),
    so another clone or install of the same version has compiled nothing yet."""
    installed = f"{Path(__file__).resolve().parent}|{os.environ.get('NUMBA_CACHE_DIR', '')}"
    return cache / f".prepared-{__version__}-{hashlib.sha1(installed.encode()).hexdigest()[:12]}"


def is_prepared(cache: Path | None = None) -> bool:
    """Whether :func:`prepare` has finished for this version of ccdred, installed here."""
    return _marker(cache or config.cache_dir()).exists()


def prepare(cache: Path | None = None, demo_size: int | None = None, report=None) -> Path:
    """Compile the kernels (the versions of each that runs use) and simulate the demo
    night.

    Parameters
    ----------
    cache : path-like, optional
        Where the demo night goes (:func:`ccdred.config.cache_dir`).
    demo_size : int, optional
        Width and height of the demo night (:func:`ccdred.config.demo_size`).
    report : callable, optional
        Called with a line of text as each step starts and ends.

    Returns
    -------
    pathlib.Path
        The demo night's folder.
    """
    from .demo import NightSpec, demo_night

    cache = Path(cache or config.cache_dir())
    size = demo_size or config.demo_size()
    report = report or (lambda line: None)
    started = time.perf_counter()
    report(f"simulating the {size}x{size} demo night into {cache} (a few seconds)")
    night = demo_night(cache, NightSpec(shape=(size, size)))
    report("compiling the kernels (2-3 minutes on 2 cores, once)")
    compile_kernels(lambda done, total, name: report(
        f"  {done} of {total} compiled ({name}), {time.perf_counter() - started:.0f} s"))
    cache.mkdir(parents=True, exist_ok=True)
    _marker(cache).touch()
    report(f"ready in {time.perf_counter() - started:.0f} s")
    return night


_BACKGROUND: dict = {}
_BACKGROUND_LOCK = threading.Lock()


def prepare_in_background(cache: Path | None = None, report=None) -> threading.Event:
    """Start :func:`prepare` in a thread (once per process); the event is set when it is done."""
    with _BACKGROUND_LOCK:
        if "done" not in _BACKGROUND:
            done = _BACKGROUND["done"] = threading.Event()

            def work():
                try:
                    prepare(cache, report=report)
                finally:
                    done.set()

            threading.Thread(target=work, name="ccdred-prepare", daemon=True).start()
        return _BACKGROUND["done"]


def compile_kernels(progress=None) -> list[str]:
    """Compile (or load from numba's cache) the version of each kernel that ccdred calls,
    for any stack type, and LACosmic's (:mod:`ccdred.lacosmic`, compiled as it is
    imported); returns the combination kernels' names.

    ``progress(done, total, name)`` is called after LACosmic's and after each version.
    """
    from . import kernels

    versions = [(name, signature) for name, signatures in kernels.SIGNATURES.items()
                for signature in signatures]
    report = progress or (lambda done, total, name: None)
    from . import lacosmic  # noqa: F401  (its kernels compile as it is imported)

    report(1, len(versions) + 1, "LACosmic")
    for done, (name, signature) in enumerate(versions, start=2):
        getattr(kernels, name).compile(signature)
        report(done, len(versions) + 1, name)
    return list(kernels.SIGNATURES)
