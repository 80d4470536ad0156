"""The workarounds of other libraries' private APIs, each run on the installed library:
an upgrade that removes or changes what one relies on fails here."""

from __future__ import annotations

import argparse
import gc
import gzip
import shutil
import weakref
from pathlib import Path

import numpy as np
import panel as pn
import pytest
from astropy.io import fits
from bokeh.models import Div, ImportedStyleSheet, InlineStyleSheet
from panel.io.resources import CDN_DIST, Resources
from panel.links import Link
from panel.theme import Fast
from panel.viewable import Viewable

from ccdred import compat
from ccdred.cli import build_parser


def test_numpy_huge_pages_are_switched_off_and_on():
    ask = np._core.multiarray._get_madvise_hugepage
    before = ask()
    try:
        assert compat.set_madvise_hugepage(not before) is True
        assert ask() is (not before)
        assert compat.set_madvise_hugepage(before) is True
        assert ask() is before
    finally:
        compat.set_madvise_hugepage(before)


@pytest.fixture
def raw_file(tmp_path, rng) -> Path:
    """A camera's 16-bit frame in an extension, after a primary HDU with a long header."""
    primary = fits.PrimaryHDU()
    for number in range(60):  # the data then start beyond the first 2880-byte blocks
        primary.header[f"NOTE{number}"] = "x" * 40
    data = rng.integers(0, 65535, (7, 9)).astype(np.uint16)
    fits.HDUList([primary, fits.ImageHDU(data)]).writeto(tmp_path / "raw.fits")
    return tmp_path / "raw.fits"


def test_the_raw_data_offset_is_where_astropy_reads_the_data(raw_file):
    with fits.open(raw_file, do_not_scale_image_data=True) as hdus:
        offset = compat.raw_data_offset(hdus[1])
        stored = hdus[1].data.astype(">i2").tobytes()  # astropy's read, as stored on disk
    assert offset > 2 * 2880
    assert raw_file.read_bytes()[offset:offset + len(stored)] == stored


def test_no_raw_data_offset_in_a_compressed_file_or_without_a_file(raw_file):
    packed = raw_file.with_suffix(".fits.gz")
    with raw_file.open("rb") as source, gzip.open(packed, "wb") as target:
        shutil.copyfileobj(source, target)
    with fits.open(packed) as hdus:
        assert hdus[1].fileinfo()["datLoc"] > 0  # astropy gives an offset: in the gzip stream
        assert compat.raw_data_offset(hdus[1]) is None
    assert compat.raw_data_offset(fits.ImageHDU(np.zeros((2, 2)))) is None


def test_argparse_options_are_listed_with_the_sub_commands_ones():
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("files", nargs="*")
    parser.add_subparsers().add_parser("run").add_argument("--fast")
    assert sorted(compat.option_strings(parser)) == sorted(
        ["-h", "--help", "-v", "--verbose", "-h", "--help", "--fast"])


def test_the_commands_options_are_listed():
    listed = set(compat.option_strings(build_parser()))
    assert {"--version", "--threshold", "--upperlimit", "--cache", "--size", "--solutions"} <= listed
    assert all(string.startswith("-") for string in listed)


def _editable_slider(forget: bool) -> pn.widgets.EditableFloatSlider:
    slider = pn.widgets.EditableFloatSlider()
    parts = slider.select(pn.widgets.Widget)
    assert any(part in Link.registry for part in parts)  # its text field's link: what is edited
    if forget:
        compat.forget_links(parts)
        assert not any(part in Link.registry for part in parts)
    return slider


def test_an_editable_slider_is_released_once_its_links_are_forgotten():
    """It links its own text field, so Panel's registry keeps it alive until forgotten."""
    kept, released = (weakref.ref(_editable_slider(forget)) for forget in (False, True))
    gc.collect()
    assert kept() is not None and released() is None
    compat.forget_links(kept().select(pn.widgets.Widget))


def test_a_render_hook_sees_every_rendered_tree():
    seen = []

    def hook(viewable, root):
        seen.append((viewable, root))

    try:
        compat.add_render_hook(hook)
        compat.add_render_hook(hook)
        pane = pn.pane.Markdown("a")
        root = pane.get_root()
        assert seen == [(pane, root)]
    finally:
        Viewable._preprocessing_hooks.remove(hook)


def test_panels_stylesheets_are_put_inline():
    css = Path(pn.__file__).parent / "dist" / "css" / "loading.css"
    model = Div(stylesheets=[ImportedStyleSheet(url=f"{CDN_DIST}css/loading.css"), "p {}"])
    compat.patch_inline_stylesheets(model)
    inline, kept = model.stylesheets
    assert isinstance(inline, InlineStyleSheet) and inline.css == css.read_text(encoding="utf-8")
    assert kept == "p {}"


def test_the_design_without_its_font_asks_no_font():
    design = compat.design_without(Fast, "font", "doc")
    assert design.__name__ == "Fast" and design.__doc__ == "doc" and issubclass(design, Fast)
    for kind, fonts in ((Fast, ["https://fonts.googleapis.com/css?family=Open+Sans"]),
                        (design, [])):
        with pn.config.set(design=kind):
            assert [f for f in Resources(mode="server").css_files if "font" in f] == fonts


def test_held_models_walk_the_graph_again_only_when_models_change(monkeypatch):
    """New data for existing models: no walk of the graph; a new model, or a new root, is
    attached to the document at the end (and nested freezes, as HoloViews makes, do not
    walk it either)."""
    from bokeh.document import Document
    from bokeh.document.models import DocumentModelManager
    from bokeh.models import ColumnDataSource, Plot, Scatter

    walks = []
    recompute = DocumentModelManager.recompute
    monkeypatch.setattr(DocumentModelManager, "recompute",
                        lambda self: walks.append(1) or recompute(self))
    document, source = Document(), ColumnDataSource({"x": [1, 2]})
    plot = Plot()
    document.add_root(plot)
    walks.clear()
    with compat.held_models(document):
        with document.models.freeze():  # as HoloViews' hold_render
            plot.title.text = "new"
    assert walks == []
    with compat.held_models(document):
        plot.add_glyph(source, Scatter(x="x", y="x"))
        source.data = {"x": [3, 4]}
    assert walks == [1] and source.document is document
    with compat.held_models(document):
        document.add_root(other := ColumnDataSource({"y": [0]}))
    assert other.document is document and document.get_model_by_id(other.id) is other
    with compat.held_models(None):  # no page: nothing held
        pass
    assert "invalidate" not in vars(document.models)  # the manager is as it was


def test_only_an_editable_slider_has_a_slider_and_a_text_box_inside():
    assert compat.editable_slider_parts(pn.widgets.FloatInput()) is None
    slider, text_box = compat.editable_slider_parts(pn.widgets.EditableFloatSlider(value=2.5))
    assert isinstance(slider, pn.widgets.FloatSlider) and isinstance(text_box, pn.widgets.FloatInput)
    assert (slider.value, text_box.value) == (2.5, 2.5)
    assert text_box.value_throttled != 2.5  # Panel's stale last value typed, which Field mends
