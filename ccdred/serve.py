"""Serving the dashboard: its options, the nights under the data root, the path jail, and
its plotting libraries loaded so that a page asks no host but the server for anything."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from . import config
from .compat import add_render_hook, design_without, patch_inline_stylesheets, set_madvise_hugepage
from .errors import InputError, InputProblem
from .frames import fits_files

__all__ = ["PANEL_EXTENSIONS", "app_options", "list_nights", "load_extensions",
           "page_design", "resolve_under", "use_small_pages"]

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
    threshold move makes about 120 MB of new arrays (masters, counts, the normalised
    flat); on the 2-core benchmark machine, faulting them in as huge pages made every
    other stretch of moves 1.7x slower, with three times the operating system's time
    (``benchmarks/README.md``: one session's moves p50 0.73-0.76 s with huge pages,
    0.58-0.59 s without).
    """
    if config.numpy_decides_huge_pages():
        return False
    return set_madvise_hugepage(False)


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
