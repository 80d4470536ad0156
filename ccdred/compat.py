"""Every workaround of another library's private API, each in one small function.

Each function names the library version it was written for and why no public
API does its job; ``tests/test_compat.py`` runs each on the installed library,
so that an upgrade that removes or changes the private thing fails there, not in
a classroom. Libraries are imported inside the functions: importing this module
loads none of them, and it imports nothing of ccdred, so any module may use it.
"""

from __future__ import annotations

import contextlib

__all__ = ["add_render_hook", "design_without", "editable_slider_parts", "forget_links",
           "held_models", "option_strings", "parser_options", "patch_inline_stylesheets",
           "raw_data_offset", "set_madvise_hugepage"]


# -- numpy ---------------------------------------------------------------------------------

def set_madvise_hugepage(enabled: bool) -> bool:
    """Turn numpy's request for transparent huge pages on or off; False if numpy has no switch.

    numpy 2.4 (also 1.x as ``numpy.core``): ``numpy._core.multiarray._set_madvise_hugepage``.
    numpy's only public control is the ``NUMPY_MADVISE_HUGEPAGE`` environment variable,
    read once when numpy is imported, which a server has done before ccdred runs.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2, numpy 1
    switch = getattr(core.multiarray, "_set_madvise_hugepage", None)
    if switch is None:
        return False
    switch(enabled)
    return True


# -- astropy ---------------------------------------------------------------------------------

def raw_data_offset(hdu) -> int | None:
    """Where an HDU's data start in its file, if the file's bytes there are the data as
    stored; None for an HDU of no file or of a compressed file (gzip, bzip2, ...).

    astropy 8.0: ``HDU.fileinfo()`` gives the offset (``datLoc``), but in the stream
    astropy reads, which is the decompressed one for a compressed file; only its
    private ``_File.compression`` (``fileinfo()['file']``) tells the two apart. With
    the offset, a 16-bit image is read straight into its final array (astropy's own
    read makes two copies).
    """
    info = hdu.fileinfo()
    if info is None or info["file"].compression:
        return None
    return info["datLoc"]


# -- argparse -----------------------------------------------------------------------------

def option_strings(parser) -> list[str]:
    """Every option string of an argument parser and of its sub-commands' parsers.

    Python 3.11-3.13 argparse: ``ArgumentParser._actions``; argparse has no public
    list of the options it was given.
    """
    return [option for options in parser_options(parser).values() for option in options]


def parser_options(parser) -> dict[str, list[str]]:
    """The option strings of an argument parser and of each of its sub-commands' parsers,
    by the parser's ``prog`` (e.g. ``'ccdred export'``); see :func:`option_strings`."""
    options = {parser.prog: []}
    for action in parser._actions:  # noqa: SLF001
        options[parser.prog] += action.option_strings
        if isinstance(action.choices, dict):
            for sub in action.choices.values():
                options |= parser_options(sub)
    return options


# -- Bokeh ----------------------------------------------------------------------------------

@contextlib.contextmanager
def held_models(document):
    """Hold a Bokeh document's model graph through a batch of changes, and walk it again
    afterwards only if a change added or replaced models.

    Bokeh 3.9: ``Document.models.freeze()`` ends with a walk of every model reachable from
    the roots (``DocumentModelManager.recompute``: 0.1-0.2 s for the dashboard's ~450
    models), also when the changes only sent new data to existing models; HoloViews 1.23
    freezes around each plot's update (``hold_render``), so each update of the page paid
    one walk. Bokeh itself signals a change of the graph: a property set to models calls
    the manager's ``invalidate()`` (which does nothing while frozen), and a change of the
    roots goes through the manager's ``freeze``. This records those signals on the
    manager instance for the duration and walks the graph at the end only after one.
    No public API defers or skips the walk. ``document`` None: nothing to hold.
    """
    if document is None:
        yield
        return
    models, roots = document.models, list(document.roots)
    invalidated = []

    def recompute_if_changed():
        if invalidated or list(document.roots) != roots:
            type(models).recompute(models)

    models.invalidate = lambda: invalidated.append(True)
    models.recompute = recompute_if_changed
    try:
        with models.freeze():
            yield
    finally:
        del models.invalidate, models.recompute


# -- Panel ----------------------------------------------------------------------------------

def forget_links(widgets) -> None:
    """Drop the JavaScript links of these widgets from Panel's class-wide registry.

    Panel 1.9.4: ``panel.links.Link.registry``, a weak-key dictionary whose values
    (the links) hold their targets; a widget linked to its own parts (an editable
    slider's text field) is then never released. Panel has no public way to remove
    a link.
    """
    from panel.links import Link

    held = {id(widget) for widget in widgets}
    for source in [source for source in Link.registry if id(source) in held]:
        del Link.registry[source]


def editable_slider_parts(widget):
    """The slider and the text box inside an editable slider; None for any other widget.

    Panel 1.9.4: ``_EditableContinuousSlider._slider`` and ``._value_edit``, which no
    public parameter exposes. Two of their ways need mending from outside: the text box
    widens the slider's range in the browser to a value typed outside it (a JavaScript
    callback), and the new ``start`` or ``end`` reaches the inner slider only; and the
    text box's ``value_throttled`` changes only when a value is typed, so it keeps the last
    one typed (0 at first) while the slider moves or a refused value is put back, and
    typing that value again sends no change.
    """
    from panel.widgets.slider import _EditableContinuousSlider

    if not isinstance(widget, _EditableContinuousSlider):
        return None
    return widget._slider, widget._value_edit


def add_render_hook(hook) -> None:
    """Run ``hook(viewable, root_model)`` on every model tree Panel renders (once added).

    Panel 1.9.4: ``Viewable._preprocessing_hooks``, Panel's own list of the steps run
    on every rendered tree (links, axes); no public way to add one.
    """
    from panel.viewable import Viewable

    if hook not in Viewable._preprocessing_hooks:
        Viewable._preprocessing_hooks.append(hook)


def patch_inline_stylesheets(model) -> None:
    """Put a Bokeh model's imported stylesheets inline, as Panel does in a notebook.

    Panel 1.9.4: ``panel.io.notebook.patch_inline_stylesheets``, in that module's
    private part; Panel calls it only for what it shows itself.
    """
    from panel.io.notebook import patch_inline_stylesheets as patch

    patch(model)


def design_without(design, kind: str, doc: str | None = None) -> type:
    """A subclass of a Panel design whose resources leave out those of one kind (``'font'``).

    Panel 1.9.4: ``Design._resources``, the only place a design names its files (the
    template and Panel's page head each add its entries); no parameter leaves one out.
    The subclass keeps the design's name: Panel finds a design's own files under its
    class's name (``bundled/fast/``).
    """
    resources = {name: entries for name, entries in design._resources.items() if name != kind}
    return type(design.__name__, (design,), {"_resources": resources, "__doc__": doc})
