"""The first-time work, done once after install: compile the kernels, simulate the demo night.

``ccdred prepare`` runs it (README's quick start does), and the dashboard runs
it in the background when it finds it not done, showing a "preparing" page
meanwhile. Numba keeps the compiled kernels next to the package, so a run
after this one starts in about a second.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from . import config
from ._version import __version__

__all__ = ["STACK_DTYPES", "is_prepared", "prepare", "prepare_in_background"]

#: The types a stack of raw frames takes: 16-bit raw frames, overscan-corrected
#: frames (float32), float frames; each is a compiled kernel of its own.
STACK_DTYPES = (np.uint16, np.float32, np.float64)


def _marker(cache: Path) -> Path:
    return cache / f".prepared-{__version__}"


def is_prepared(cache: Path | None = None) -> bool:
    """Whether :func:`prepare` has finished for this version of ccdred."""
    return _marker(cache or config.cache_dir()).exists()


def prepare(cache: Path | None = None, demo_size: int | None = None, report=None) -> Path:
    """Compile the kernels for every stack type and simulate the demo night.

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
    for dtype in STACK_DTYPES:
        report(f"compiling the kernels for {np.dtype(dtype).name} stacks (10-20 s, once)")
        _exercise(dtype)
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


def _exercise(dtype) -> None:
    """Run every kernel once on a tiny stack of this type, so that numba compiles it."""
    from .calibrate import DarkCurrentCombiner, FlatCombiner, StackCombiner

    stack = (np.arange(2 * 4 * 600) % 97 + 1000).reshape(2, 4, 600).astype(dtype)
    # offsets are masters as the products hold them (float32 by default; see as_written)
    offset = np.ones(stack.shape[1:], dtype=np.float32)
    StackCombiner()(stack)
    DarkCurrentCombiner().combine(stack, [1.0, 2.0], offsets=offset)
    FlatCombiner()(stack, offsets=offset)
