from dataclasses import replace

import holoviews as hv
import numpy as np
import pytest
from bokeh.model import Model

from ccdred import plots

hv.extension("bokeh", logo=False)


def test_block_max_keeps_the_largest_of_each_block_and_pads_edges():
    data = np.arange(30, dtype=float).reshape(5, 6)
    binned = plots.block_max(data, 2)
    assert binned.shape == (3, 3)
    assert binned[0, 0] == 7
    assert binned[2, 2] == 29  # last row repeated
    np.testing.assert_array_equal(plots.block_max(data, 1), data)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_block_max_equals_the_maximum_of_each_block_found_one_by_one(factor):
    data = np.random.default_rng(factor).integers(0, 1000, (37, 53))
    rows, cols = -(-37 // factor), -(-53 // factor)
    edge = np.pad(data, ((0, rows * factor - 37), (0, cols * factor - 53)), mode="edge")
    expected = [[edge[r * factor:(r + 1) * factor, c * factor:(c + 1) * factor].max()
                 for c in range(cols)] for r in range(rows)]
    np.testing.assert_array_equal(plots.block_max(data, factor), expected)


def test_a_single_rejected_pixel_stays_visible_in_a_binned_clip_map():
    n_rejected = np.zeros((2048, 2048), dtype=np.int16)
    n_rejected[1001, 77] = 1
    element = plots.clip_map(n_rejected, 10, "dark")
    assert element.data.max() == pytest.approx(0.1)


def test_clip_map_is_binned_to_the_display_size():
    n_rejected = np.zeros((2048, 1024), dtype=np.int16)
    n_rejected[:4, :4] = 10
    element = plots.clip_map(n_rejected, 10, "dark")
    assert element.data.shape == (512, 256)
    assert element.bounds.lbrt() == (-0.5, -0.5, 1023.5, 2047.5)
    assert element.data.max() == pytest.approx(1.0)


def test_images_keep_orientation_and_zscale():
    data = np.zeros((4, 6), dtype=np.float32)
    data[0, :] = 100.0  # first row of the array: the bottom of the image
    element = plots.image(data, "frame")
    assert element[0, 0] == 100.0 and element[0, 3] == 0.0
    low, high = plots.zscale_limits(np.random.default_rng(0).normal(100, 5, (50, 50)))
    assert 80 < low < 100 < high < 120


@pytest.mark.parametrize("n,threshold,cenfunc,rejection,said", [
    (5, 2.0, "mean", "sigclip", True),    # sqrt(5 - 1) = 2
    (5, 1.9, "mean", "sigclip", False),
    (5, 2.0, "median", "sigclip", False),
    (12, 2.5, "mean", "sigclip", False),  # 3.32
    (5, 2.0, "mean", "minmax", False),    # no sigma clipping: the bound says nothing
    (5, 2.0, "mean", "pclip", False),
])
def test_samuelson_note_says_when_clipping_around_the_mean_cannot_reject(n, threshold, cenfunc,
                                                                         rejection, said, rng):
    from ccdred.combine import ClipOptions

    clip = ClipOptions(threshold=threshold, cenfunc=cenfunc, rejection=rejection)
    note = plots.samuelson_note(n, clip)
    assert bool(note) == said
    if said:  # it speaks of the combination, as the summary beside it names its count
        assert "the combination rejects nothing" in note
    if said:  # the oracle: no sample of any data set lies beyond the bound
        samples = rng.normal(size=(10_000, n))
        z = np.abs(samples - samples.mean(axis=1, keepdims=True)) / samples.std(axis=1, keepdims=True)
        assert z.max() <= np.sqrt(n - 1) + 1e-9 <= threshold + 1e-9
        assert f"{np.sqrt(n - 1):.2f} σ" in note
        stack = rng.normal(size=(n, 40, 30))
        from ccdred.combine import sigma_clip_combine
        assert sigma_clip_combine(stack, threshold=threshold, cenfunc="mean").n_used.min() == n


def _described(value) -> str:
    """An option's value as repr; a Bokeh model (a formatter) as its type and settings."""
    if isinstance(value, Model):
        return repr((type(value).__name__, value.properties_with_values(include_defaults=False)))
    return repr(value)


#: Options that follow the data a plot shows, not its structure.
_DATA_OPTIONS = {"title", "clim", "xticks", "xlim"}


def _structure(plot) -> list:
    """Each layer's type, label (an overlay's layers: their legend entries) and options (but
    those that follow the data), as repr."""
    overlay = isinstance(plot, hv.Overlay)
    layers = [plot, *plot] if overlay else [plot]
    return [(type(layer).__name__, layer.label if overlay else "", {
        name: _described(value) for kind in ("plot", "style")
        for name, value in hv.Store.lookup_options("bokeh", layer, kind).kwargs.items()
        if name not in _DATA_OPTIONS}) for layer in layers]


def test_each_empty_plot_is_the_plot_it_stands_in_for_with_no_data():
    """A DynamicMap keeps the layers, legend and options of the first thing it showed: an
    empty plot (a master that cannot be made, e.g. every flat outside the limits) drawn
    otherwise than the real one left the flat's clip map transparent and the pixel plot
    without its legend once the master could be made again, until a reload."""
    from ccdred.steps import PixelStack

    pixel = PixelStack("flat_V.fits", 1, 2, ("a.fits", "b.fits", "c.fits"), np.array([1.0, 2.0, 9.0]),
                       np.zeros(3, bool), np.array([False, False, True]), np.array([0, 0, 1]),
                       ((0.0, 2.0, 4.0),), 1.5, 1.02)
    sweep = {"threshold": np.array([1.0, 2.0]), "rejected_fraction": np.array([0.2, 0.1]),
             "noise": np.array([1.0, 0.9]), "change": np.array([0.1, 0.0]), "row_step": 1}
    pairs = [(plots.pixel_samples(pixel), plots.empty_samples()),
             (plots.threshold_sweep_plot(("flat_V.fits", sweep, 2.0)), plots.empty_sweep()),
             (plots.threshold_sweep_plot(("flat_V.fits", sweep, 2.0), "noise"),
              plots.empty_sweep("noise")),
             (plots.clip_map(np.zeros((4, 4)), 3, "dark"), plots.empty_image()),
             (plots.rejected_per_frame([1, 2], ["a", "b"], "dark"), plots.empty_bars())]
    for plot, empty in pairs:
        assert _structure(empty) == _structure(plot)
        assert plots.NOTHING_TO_SHOW in hv.Store.lookup_options("bokeh", empty, "plot").kwargs[
            "title"]


def test_pixel_summary_names_each_rejected_sample_and_its_iteration():
    from ccdred.steps import PixelStack

    pixel = PixelStack("flat_V.fits", 1, 2, ("a.fits", "b.fits", "c.fits"), np.array([1.0, 2.0, 9.0]),
                       np.array([True, False, False]), np.array([True, False, True]),
                       np.array([0, 0, 2]), ((0.0, 2.0, 4.0), (1.5, 2.0, 2.5)), 2.0, 1.02)
    lines = plots.pixel_summary(pixel).splitlines()
    assert lines[0] == "**flat_V.fits pixel (x=1, y=2)**: 1 of 3 samples used, combined 2"
    assert lines[1].startswith("- a.fits: 1, left out before the combination")
    assert lines[2] == "- c.fits: 9, rejected by the combination, in iteration 2"
    with_error = replace(pixel, uncertainty=0.0123456)
    assert plots.pixel_summary(with_error).splitlines()[0].endswith("combined 2 ± 0.0123")


def test_a_new_pixel_changes_no_bokeh_model_of_its_plot(monkeypatch):
    """Moving to another pixel (other iterations, other kinds of sample) updates the plot's
    data in place: no Bokeh model is added or taken away, each of which makes Bokeh walk a
    served page's whole model graph again (a legend outside the plot is taken off and put
    back at every update; a colour mapper per update would be another model)."""
    from bokeh.document import Document

    from ccdred.steps import PixelStack

    names = ("a.fits", "b.fits", "c.fits", "d.fits")
    pixels = [
        PixelStack("flat_V.fits", 1, 2, names, np.array([1.0, 2.0, 1.5, 1.2]), np.zeros(4, bool),
                   np.zeros(4, bool), np.zeros(4, int), ((0.0, 1.4, 3.0),), 1.4, 1.0),
        PixelStack("flat_V.fits", 3, 4, names, np.array([1.0, 2.0, 9.0, np.nan]),
                   np.array([False, False, False, True]), np.array([False, False, True, True]),
                   np.array([0, 0, 2, 0]), ((0.0, 2.0, 4.0), (1.0, 1.5, 2.0), (1.2, 1.5, 1.8)),
                   1.5, 1.02),
    ]
    pick = hv.streams.Stream.define("Pick", index=0)()
    plot_map = hv.DynamicMap(lambda index: plots.pixel_samples(pixels[index]), streams=[pick])
    document = Document()
    plot = hv.renderer("bokeh").get_plot(plot_map, doc=document)
    document.add_root(plot.state)
    changes = []
    monkeypatch.setattr(document.models, "invalidate", lambda: changes.append(1))
    for index in (1, 0, 1):
        pick.event(index=index)
    assert plot.state.title.text.startswith("flat_V.fits pixel (x=3, y=4)")  # it did update
    assert changes == []


def test_the_pixel_plot_draws_both_sigmas_bounds_labelled():
    """The plot's "noise model" and "measured σ" lines are the pixel's bounds, each named in
    the legend; a pixel without them draws the same layers, empty."""
    from ccdred.steps import PixelStack

    pixel = PixelStack("flat_V.fits", 1, 2, ("a.fits", "b.fits", "c.fits"),
                       np.array([100.0, 104.0, 160.0]), np.zeros(3, bool),
                       np.array([False, False, True]), np.array([0, 0, 1]),
                       ((70.0, 104.0, 138.0),), 102.0, 1.0, 2.0, 2.0, 13.6, (97.0, 107.0),
                       (70.0, 138.0))
    lines = {element.label: element for element in plots.pixel_samples(pixel)
             if isinstance(element, hv.Segments)}
    assert sorted(lines[plots.MODEL_LABEL].dimension_values("value")) == [70.0, 138.0]
    assert sorted(lines[plots.MEASURED_LABEL].dimension_values("value")) == [97.0, 107.0]
    nothing = {element.label: len(element) for element in plots.empty_samples()
               if isinstance(element, hv.Segments)}
    assert nothing[plots.MODEL_LABEL] == nothing[plots.MEASURED_LABEL] == 0


@pytest.mark.parametrize("pixel", ["empty", "real"])
def test_the_pixel_plot_colours_no_glyph_per_sample(pixel):
    """Every glyph of the pixel plot has one colour, marker and size: a colour per sample is
    read by the browser's legend before the new samples' colours arrive ("Offset is outside
    the bounds of the DataView", and the rest of that update lost), and an empty column of
    colours is numbers, which Bokeh refuses ("invalid color array")."""
    from bokeh.core.property.vectorization import Field
    from bokeh.models import GlyphRenderer

    from ccdred.steps import PixelStack

    shown = plots.empty_samples() if pixel == "empty" else plots.pixel_samples(PixelStack(
        "flat_V.fits", 3, 4, ("a.fits", "b.fits", "c.fits"), np.array([1.0, 9.0, np.nan]),
        np.array([False, False, True]), np.array([False, True, True]), np.array([0, 2, 0]),
        ((0.0, 2.0, 4.0), (1.0, 1.5, 2.0)), 1.0, 1.0))
    glyphs = [renderer.glyph for renderer in hv.render(shown).select(GlyphRenderer)]
    visuals = {f"{type(glyph).__name__}.{name}": getattr(glyph, name) for glyph in glyphs
               for name in ("line_color", "fill_color", "marker", "size")
               if name in glyph.properties()}
    assert len(glyphs) == 9  # three kinds of sample, five kinds of line, the combined value
    assert not [name for name, value in visuals.items() if isinstance(value, Field)], visuals


# -- issue 27, defect 7: plot details -------------------------------------------------------


def _numeric_axes(figure) -> list:
    """A rendered plot's axes and colour bars that label numbers with a formatter (not a log
    axis, not one whose ticks are named, e.g. frames by file)."""
    from bokeh.models import ColorBar, FixedTicker, LogAxis

    axes = [axis for axis in (*figure.xaxis, *figure.yaxis)
            if not isinstance(axis, LogAxis) and not isinstance(axis.ticker, FixedTicker)]
    return axes + list(figure.select(ColorBar))


def _some_plots() -> dict:
    from ccdred.steps import PixelStack

    sweep = {"threshold": np.array([1.0, 2.5, 4.0]), "rejected_fraction": np.array([0.2, 0.1, 0.0]),
             "noise": np.array([0.0106, 0.0102, 0.0102]), "change": np.array([0.0025, 0.0, 1e-4]),
             "row_step": 1}
    pixel = PixelStack("flat_V.fits", 1, 2, ("a.fits", "b.fits"), np.array([150_000.0, 151_000.0]),
                       np.zeros(2, bool), np.zeros(2, bool), np.zeros(2, int),
                       ((149_000.0, 150_500.0, 152_000.0),), 150_500.0, 1.0)
    histogram = plots.master_preview(np.random.default_rng(1).normal(1e6, 1e3, (400, 400)), "dark")
    return {
        "clip map": plots.clip_map(np.zeros((40, 40), int), 7, "flat V: samples not used"),
        "empty clip map": plots.empty_image(),
        "difference": plots.difference_image("flat_V.fits", np.full((8, 8), 2.5e-3)),
        "bars": plots.rejected_per_frame([150_000, 0], ["a.fits", "b.fits"], "flat V"),
        "master": histogram[0], "histogram": histogram[1],
        "pixel": plots.pixel_samples(pixel),
        **{f"sweep {q}": plots.threshold_sweep_plot(("flat_V.fits", sweep, 2.5), q)
           for q in plots.SWEEP_QUANTITIES},
        "levels": plots.frame_levels_plot([{"file": "a.fits", "type": "flat", "filter": "V",
                                            "exptime": 5.0, "median": 150_000.0,
                                            "status": "used"}], 200_000.0),
    }


@pytest.mark.parametrize("name", list(_some_plots()))
def test_numbers_on_axes_and_colour_bars_are_plain(name):
    """Bokeh's default labels turn to scientific notation at 1e5 and below 1e-3: '1.500e+5'
    rejected samples, '2.500e-3' of change, and a clip map's colour bar cut at '1.000e-'."""
    from bokeh.models import BasicTickFormatter

    axes = _numeric_axes(hv.render(_some_plots()[name]))
    assert axes
    for axis in axes:
        assert isinstance(axis.formatter, BasicTickFormatter), (name, axis)
        assert not axis.formatter.use_scientific, (name, axis)


#: The widest a character of a title is drawn, in pixels (bold 12 px sans-serif, measured on
#: the page: 'change from the master on s' took 205 px), and a plot's width beside its frame.
TITLE_CHARACTER_PX, BESIDE_FRAME_PX = 7.5, 80
#: The width a responsive plot of the Explore tab's three gets on a 1400 px wide page.
SWEEP_WIDTH = 300


@pytest.mark.parametrize("name", ["histogram", *(f"sweep {q}" for q in plots.SWEEP_QUANTITIES),
                                  "empty sweep", "clip map"])
def test_titles_fit_their_plots(name):
    """Bokeh cuts a title at the plot's edge: 'master dark 5 s (dark_00005000.fits): histog',
    'change from the master on s'."""
    as_shown = {  # as the dashboard titles them
        "histogram": plots.master_preview(np.ones((4, 4)),
                                          "master dark 5 s (dark_00005000.fits)")[1],
        "clip map": plots.clip_map(np.zeros((512, 512), int), 5,
                                   "dark_00005000.fits: samples not used"),
        "empty sweep": plots.empty_sweep()}
    shown = as_shown.get(name) or _some_plots()[name]
    options = hv.Store.lookup_options("bokeh", shown, "plot").kwargs
    # a clip map's frame is 300 px high and as wide, with its colour bar beside it
    width = options.get("width") or (SWEEP_WIDTH if options.get("responsive") else 300 + 80)
    title = hv.render(shown).title.text
    assert "\n" not in title  # two lines pushed the image beside it down, cutting its label
    assert len(title) * TITLE_CHARACTER_PX <= width - BESIDE_FRAME_PX, title


def test_a_clip_map_s_colour_bar_has_finite_limits_on_its_first_drawing():
    """The colour bar is ticked from the colour mapper's limits: NaN limits draw no tick."""
    from bokeh.models import ColorBar

    for shown in (plots.clip_map(np.zeros((40, 40), int), 7, "dark"), plots.empty_image()):
        figure = hv.render(hv.DynamicMap(lambda shown=shown: shown).opts(framewise=True))
        (bar,) = figure.select(ColorBar)
        assert np.isfinite([bar.color_mapper.low, bar.color_mapper.high]).all()
        assert bar.color_mapper.high > bar.color_mapper.low


def test_frames_are_numbered_from_one_and_rejected_and_suspect_flats_marked():
    """The plot's frame numbers are the table's rows counted from 1; a rejected flat is
    marked with a cross, a used flat far from its filter's level with a ring."""
    rows = [{"file": name, "type": "flat", "filter": "V", "exptime": 5.0, "median": median,
             "status": status}
            for name, median, status in (("a.fits", 45_000.0, "rejected: above upper limit"),
                                         ("b.fits", 22_000.0, "used"),
                                         ("c.fits", 300.0, "used, suspect: median 300, 73x "
                                                           "below the filter's 22000"))]
    overlay = plots.frame_levels_plot(rows, 38_000.0)
    points = {element.label: element.dframe() for element in overlay
              if isinstance(element, hv.Points)}
    assert points[""]["frame"].tolist() == [1, 2, 3]
    assert points["rejected"]["file"].tolist() == ["a.fits"]
    assert points["suspect (used)"][["frame", "file"]].values.tolist() == [[3, "c.fits"]]


def test_the_frames_log_axis_keeps_a_power_of_ten_near_its_levels(night_files):
    """After a low flat was ignored, the levels (biases and darks at 1,000 ADU, flats at
    15,000-26,000) spanned less than two decades, which Bokeh's LogTicker ticks linearly:
    10000, 20000, ... 60000, no label near the biases and darks."""
    from bokeh.models import LogScale

    from ccdred.pipeline import Pipeline

    pipeline = Pipeline(night=str(night_files[0].parent))
    flats = [row for row in pipeline.frame_levels() if row["type"] == "flat"]
    lowest = min(flats, key=lambda row: row["median"])
    pipeline.frame_types = {lowest["file"]: "ignore"}
    levels = [row["median"] for row in pipeline.frame_levels() if row["median"] is not None]
    assert np.log10(max(levels) / min(levels)) < 2  # the case that was labelled far away
    figure = hv.render(plots.frame_levels_plot(pipeline.frame_levels(), pipeline.upper_limit))
    low, high = figure.y_range.start, figure.y_range.end
    assert isinstance(figure.y_scale, LogScale)
    assert low < min(levels) and max(levels) < high
    # Bokeh's LogTicker (log_ticker.ts) ticks powers of ten from two decades on
    assert np.log10(high / low) >= 2
    decades = np.arange(np.ceil(np.log10(low)), np.floor(np.log10(high)) + 1)
    assert all(np.min(np.abs(decades - np.log10(level))) <= 1 for level in levels)


def test_masked_pixels_mark_each_pixel_once_for_its_first_reason():
    """A pixel both hot and without a value is marked as hot; the legend counts each
    reason's pixels, and a reason past ``max_points`` shows an even subset and says so."""
    from ccdred.planes import MaskBit

    mask = np.zeros((40, 50), dtype=np.uint8)
    mask[3, 4] = MaskBit.HOT | MaskBit.NOT_FINITE
    mask[10, 20] = MaskBit.NOT_FINITE
    mask[20:30, 0:10] = MaskBit.SATURATED  # 100 pixels
    points = {p.label: p for p in plots.masked_pixels(mask, max_points=30)
              if isinstance(p, hv.Points) and p.label}
    assert set(points) == {"hot pixel (1)", "no value (1)", "saturated (100, 25 shown)"}
    assert points["hot pixel (1)"].array().tolist() == [[4, 3]]  # (x, y): column, row
    assert points["no value (1)"].array().tolist() == [[20, 10]]
    saturated = points["saturated (100, 25 shown)"].array()
    assert ((saturated[:, 0] < 10) & (saturated[:, 1] >= 20) & (saturated[:, 1] < 30)).all()


def test_before_after_marks_the_mask_on_the_calibrated_frame_only():
    from ccdred.planes import MaskBit

    raw = np.ones((8, 8))
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2, 5] = MaskBit.COSMIC_RAY
    before, after = plots.before_after(raw, raw, "f", mask)
    assert isinstance(before, hv.Image)
    assert [p.label for p in after if isinstance(p, hv.Points) and p.label] == ["cosmic ray (1)"]
    assert isinstance(plots.before_after(raw, raw, "f")[1], hv.Image)


@pytest.mark.parametrize("name", ["image", "levels", "samples"])
def test_the_mouse_wheel_scrolls_the_page_until_a_plot_is_clicked(name):
    """With the dashboard's extensions loaded, no plot takes the wheel at once (students
    scrolled the page and zoomed a plot instead): Bokeh's 'auto' gives it the wheel once
    clicked."""
    from ccdred.serve import load_extensions

    load_extensions()
    element = {"image": lambda: plots.image(np.arange(12.0).reshape(3, 4), "frame"),
               "levels": lambda: hv.Curve([1, 2, 3]) * hv.Scatter([1, 2, 3]),
               "samples": lambda: hv.Spikes([(0, 1), (1, 2)])}[name]()
    toolbar = hv.render(element).toolbar
    assert toolbar.active_scroll == "auto"
    assert any(type(tool).__name__ == "WheelZoomTool" for tool in toolbar.tools)
