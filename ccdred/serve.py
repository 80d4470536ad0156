"""Serving the dashboard: its options, the nights under the data root, the path jail, and
its plotting libraries loaded so that a page asks no host but the server for anything."""

from __future__ import annotations

import argparse
import ctypes
import functools
import logging
import os
import threading
from pathlib import Path

from . import config
from .compat import add_render_hook, design_without, patch_inline_stylesheets, set_madvise_hugepage
from .errors import InputError, InputProblem
from .frames import fits_files

__all__ = ["PANEL_EXTENSIONS", "app_options", "free_pages_go_to_host", "keep_freed_memory",
           "list_nights", "load_extensions", "page_design", "prepare_memory", "reserve_memory",
           "resolve_under", "use_small_pages"]

logger = logging.getLogger(__name__)

#: Panel's extensions the dashboard's widgets need, loaded before a dashboard is made.
PANEL_EXTENSIONS = ("tabulator",)


def app_options(argv=None) -> argparse.Namespace:
    """Options of ``panel serve app.py --args ...`` (environment variables as defaults).

    Without a data root, the demo night is simulated (once) under the cache folder.
    """
    from .demo import NightSpec, demo_night

    parser = argparse.ArgumentParser(prog="app.py")
    parser.add_argument("--data-root", default=config.data_root(),
                        help="folder whose sub-folders are nights (default: the demo night)")
    parser.add_argument("--output-root", default=config.output_root(),
                        help="folder under which 'Reduce night' writes products")
    parser.add_argument("--demo-size", type=int, default=config.demo_size(),
                        help="width and height of the demo night's frames "
                             f"(default {config.DEMO_SIZE})")
    parser.add_argument("--cache", default=config.cache_dir(), type=Path,
                        help="where the demo night is generated")
    options = parser.parse_args(argv)
    if options.data_root is None:
        night = demo_night(options.cache, NightSpec(shape=(options.demo_size, options.demo_size)))
        options.data_root = night.parent
        options.night = night.name
    else:
        options.night = None
    return options


def use_small_pages() -> bool:
    """Stop numpy asking Linux for transparent huge pages in this (server) process, unless
    the ``NUMPY_MADVISE_HUGEPAGE`` environment variable decides; True if it was stopped.

    numpy marks every array of 4 MB or more for huge pages, and reads
    ``NUMPY_MADVISE_HUGEPAGE`` only when it is imported, which ``panel serve`` does
    before ``app.py`` runs: so this turns it off through numpy's own switch. A
    threshold move makes about 130 MB of new arrays (masters, counts, the normalised
    flat); on the 2-core benchmark machine, faulting them in as huge pages made every
    other stretch of moves 1.7x slower, with three times the operating system's time
    (``benchmarks/README.md``: one session's moves p50 0.73-0.76 s with huge pages,
    0.58-0.59 s without).
    """
    if config.numpy_decides_huge_pages():
        return False
    return set_madvise_hugepage(False)


@functools.cache
def prepare_memory() -> threading.Thread | None:
    """Set up a dashboard server's memory, once per process (``app.py`` calls it before
    anything else of a session runs).

    Arrays go in ordinary pages (:func:`use_small_pages`). On a machine that hands its
    free memory to a host (:func:`free_pages_go_to_host`), or when ``CCDRED_RESERVE_MB``
    says how much, the memory the process frees is kept for its next arrays
    (:func:`keep_freed_memory`) and as much as the master cache may hold
    (:func:`ccdred.config.master_cache_mb`) is faulted in at once (:func:`reserve_memory`).
    A process forked after it (``panel serve --num-procs`` with ``--warm``) prepares its
    own.

    Returns
    -------
    threading.Thread or None
        The thread faulting the reserve in, if there is one.
    """
    use_small_pages()
    try:
        megabytes = config.reserve_mb()
    except ValueError as err:  # a speed setting that is not a number: said, not fatal
        logger.warning("%s; the server decides the reserve", err)
        megabytes = None
    if megabytes is None:
        megabytes = config.master_cache_mb() if free_pages_go_to_host() else 0
    if megabytes <= 0 or not keep_freed_memory():
        return None
    return reserve_memory(megabytes)


os.register_at_fork(after_in_child=prepare_memory.cache_clear)

#: The virtio balloon's feature "free page reporting" (VIRTIO_BALLOON_F_REPORTING)
_FREE_PAGE_REPORTING = 5


def free_pages_go_to_host(sysfs: Path | str = Path("/sys")) -> bool:
    """Whether this machine is a virtual machine that reports its free memory to its host.

    A virtio balloon with free page reporting (its feature bit 5, read from Linux's
    ``sysfs``): the host takes the guest's free pages back, and each one is faulted in
    from the host when it is used again.

    Parameters
    ----------
    sysfs : path-like, optional
        Where sysfs is mounted.
    """
    for device in (Path(sysfs) / "bus/virtio/drivers/virtio_balloon").glob("virtio*"):
        try:
            features = (device / "features").read_text()
        except OSError:
            continue
        if features[_FREE_PAGE_REPORTING:_FREE_PAGE_REPORTING + 1] == "1":
            return True
    return False


#: glibc's ``mallopt`` parameters (``malloc.h``)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
    """Make this (server) process reuse the memory it frees rather than give it back to the
    operating system.

    glibc serves each block of 32 MB or more (a 2048x2048 float64 image) by a mapping of
    its own, unmapped when freed, and gives back the free top of its heaps. A virtual
    machine that returns its free pages to the host (virtio-balloon free page reporting,
    as the benchmark machine does) then faults every page of the next array in from the
    host: there a new 32 MB array took 90-110 ms to fill, a reused one 1 ms, and a
    threshold move makes about 130 MB of new arrays. With one arena, no mappings and no
    trimming, the next arrays reuse what was freed. Threads that allocated before keep
    their own arenas (whose blocks over 64 MB are still mapped apart), so it is set
    before a server's threads start. The process's resident memory stays at its peak:
    the caches (:func:`ccdred.config.master_cache_mb`, :func:`ccdred.config.raw_cache_mb`)
    and what a change makes for a moment, in one heap that is never trimmed.

    Returns
    -------
    bool
        True if the C library took every setting (glibc), False elsewhere.
    """
    libc = _glibc()
    if libc is None:
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))  # -1: never
    return all([libc.mallopt(parameter, value) == 1 for parameter, value in settings])


def reserve_memory(megabytes: int) -> threading.Thread:
    """Fault memory in and free it, in a thread of the lowest priority: after
    :func:`keep_freed_memory`, the masters a server makes first reuse it instead of
    faulting fresh pages in.

    Parameters
    ----------
    megabytes : int
        How much; at most a quarter of the memory free now is taken.

    Returns
    -------
    threading.Thread
        The thread, started.
    """
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    size = min(megabytes << 20, free // 4)
    thread = threading.Thread(target=_fault_in, args=(size,), name="ccdred-reserve", daemon=True)
    thread.start()
    return thread


def _fault_in(size: int) -> None:
    """Touch each page of a new block of ``size`` bytes, then free it (this thread at the
    lowest priority: it takes only idle time)."""
    import numpy as np

    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # Linux: this thread
    page = os.sysconf("SC_PAGE_SIZE")
    block = np.empty(size, dtype=np.uint8)
    for start in range(0, size, 64 << 20):  # a piece at a time: others' Python runs between
        block[start:start + (64 << 20):page] = 0
    del block


def _glibc() -> ctypes.CDLL | None:
    """The process's C library, if it is glibc (the one whose ``mallopt`` this sets)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def list_nights(root, exclude=()) -> list[str]:
    """Sub-folders of the data root (and the root itself, '.', if it holds FITS files).

    Folders in ``exclude`` (e.g. the output root, when it lies under the data
    root) and hidden ones are not listed.
    """
    root = Path(root).resolve()
    excluded = {Path(p).resolve() for p in exclude}
    names = [p.name for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
             and p.resolve() not in excluded]
    return (["."] if fits_files(root) else []) + names


def resolve_under(root, path) -> Path:
    """``path`` (relative to ``root``, or absolute) resolved, if it is a folder inside ``root``.

    Symbolic links are followed before the check, so a link pointing out of
    the root is refused too. Messages name paths relative to the root only.

    Raises
    ------
    InputError
        When the resolved path is outside ``root`` or is not an existing folder.
    """
    root = Path(root).resolve()
    resolved = (root / Path(path)).resolve()
    if resolved != root and root not in resolved.parents:
        raise InputError([InputProblem(Path(path), "outside the data root; refused")])
    if not resolved.is_dir():
        raise InputError([InputProblem(Path(path), "no such folder under the data root")])
    return resolved


# -- nothing from another host -------------------------------------------------------------
# A classroom server may have no internet, and every request to another host tells that host
# who is in the class: the served page and an exported notebook load every file from the
# server, or carry it inline.


#: The HoloViews elements ccdred's plots are made of (see :mod:`ccdred.plots`).
_PLOT_KINDS = ("Curve", "Histogram", "Image", "Points", "Scatter", "Segments", "Spikes",
               "Overlay")


def load_extensions(*, notebook: bool = False, **options) -> None:
    """Load HoloViews' Bokeh backend and Panel with the dashboard's extensions (before a
    dashboard or a plot is made), so that a page asks no other host for anything.

    Served (``panel serve app.py``), Bokeh and Panel send their own code and stylesheets. In a
    notebook (``notebook=True``) these are put into the notebook itself, the stylesheets of
    HoloViews' plots too, so that a notebook exported to HTML shows its plots with no network.
    The dashboard's page design leaves out its web font: see :func:`page_design`.

    Parameters
    ----------
    notebook : bool, optional
        For a Jupyter kernel rather than a server.
    **options
        Panel's other settings (``pn.extension``), e.g. ``nthreads=2``.
    """
    import holoviews as hv
    import panel as pn

    hv.extension("bokeh", logo=False, inline=notebook)
    # the mouse wheel scrolls the page, as a reader expects; a plot zooms with its wheel
    # tool once chosen in its toolbar (students scrolled, and a plot zoomed instead)
    hv.opts.defaults(*(getattr(hv.opts, kind)(active_tools=["pan"]) for kind in _PLOT_KINDS))
    pn.extension(*PANEL_EXTENSIONS, inline=notebook, **options)
    if notebook:
        add_render_hook(_inline_stylesheets)


def _inline_stylesheets(_viewable, root) -> None:
    """Panel's stylesheets of a rendered model tree put inline, when Panel's resources are.

    Panel 1.9.4 does this itself for what it shows in a notebook, but HoloViews 1.23's
    renderer shows a plot through Panel's models without it: each plot then asks
    cdn.holoviz.org for four stylesheets (loading, listpanel, default and native theme).
    """
    import panel as pn
    from bokeh.models import UIElement

    if pn.config.inline:
        for model in root.select({"type": UIElement}):
            patch_inline_stylesheets(model)


@functools.cache
def page_design():
    """Panel's Fast design (the dashboard template's) without its web font.

    Fast asks fonts.googleapis.com for Open Sans on every page; without it, the page keeps
    the font's name first (a browser that has Open Sans uses it) and falls back to the
    browser's sans-serif.
    """
    from panel.theme import Fast

    return design_without(Fast, "font", page_design.__doc__)
