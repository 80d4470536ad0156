"""HoloViews builders for the dashboard and the notebooks.

Arrays and rows in, HoloViews elements out; nothing here knows about files,
the pipeline or Panel. Images are shown the astronomer's way: column ``x``,
row ``y``, origin at the lower left, a zscale stretch (astropy's
``ZScaleInterval``) and a colour bar; large images are rasterized with
datashader so that a 2048x2048 frame stays responsive.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
from astropy.visualization import ZScaleInterval
from bokeh.models import BasicTickFormatter
from holoviews.operation.datashader import rasterize

from .errors import InputError, InputProblem
from .planes import MaskBit
from .steps import PixelStack

__all__ = [
    "before_after",
    "clip_map",
    "frame_levels_plot",
    "image",
    "master_preview",
    "rejected_per_frame",
    "dark_clip_map", "flat_clip_map", "dark_rejections", "flat_rejections", "summary_line",
    "empty_image", "empty_bars",
    "zscale_limits", "decades_around", "plain_numbers",
    "pixel_samples", "threshold_sweep_plot", "difference_image", "difference_summary",
    "empty_sweep", "empty_samples", "SWEEP_QUANTITIES", "pixel_summary", "sweep_summary",
    "REJECTED", "LEFT_OUT", "WHY_LEFT_OUT", "MODEL_LABEL", "MEASURED_LABEL",
    "photon_transfer_plot", "detector_summary", "hot_pixel_map",
]

_IMAGE_OPTS = {"cmap": "gray", "colorbar": True, "tools": ["hover"], "data_aspect": 1,
               "frame_height": 270, "xlabel": "column", "ylabel": "row"}

#: Images with more pixels than this are rasterized with datashader.
RASTERIZE_ABOVE = 512 * 512


def plain_numbers(*axes: str) -> dict:
    """Options that label ``axes`` ('x', 'y'; 'c': the colour bar) with plain numbers.

    Bokeh's default labels turn to scientific notation at 1e5 and below 1e-3
    ('1.500e+5' rejected samples, '2.500e-3' of change), which a colour bar
    also cuts. A new formatter each time: a Bokeh model belongs to one page,
    and an update only copies its settings onto the one already shown.
    """
    return {f"{axis}formatter": BasicTickFormatter(use_scientific=False) for axis in axes}


def zscale_limits(data) -> tuple[float, float]:
    """Display limits from astropy's ZScaleInterval, ignoring non-finite pixels."""
    finite = np.asarray(data)[np.isfinite(data)]
    if finite.size == 0:
        return (0.0, 1.0)
    low, high = ZScaleInterval().get_limits(finite)
    return (float(low), float(high) if high > low else float(low) + 1.0)


def image(data, title: str, *, clim=None, label="ADU", cmap="gray"):
    """An image with pixel coordinates, zscale limits, colour bar and hover values."""
    data = np.asarray(data, dtype=np.float32)
    rows, cols = data.shape
    element = hv.Image(np.flipud(data), bounds=(-0.5, -0.5, cols - 0.5, rows - 0.5),
                       kdims=["x", "y"], vdims=[label], label=title)
    options = {**_IMAGE_OPTS, **plain_numbers("x", "y", "c"), "cmap": cmap,
               "clim": clim or zscale_limits(data), "title": title}
    if data.size > RASTERIZE_ABOVE:
        return rasterize(element, precompute=True).opts(**options)
    return element.opts(**options)


def before_after(raw, calibrated, name: str, mask=None):
    """Raw and calibrated frame side by side; pan and zoom are linked. With ``mask`` (the
    calibrated product's ``MASK`` plane), its pixels are marked on the calibrated frame by
    reason (see :func:`masked_pixels`)."""
    after = image(calibrated, f"{name}: calibrated")
    if mask is not None:
        after = (after * masked_pixels(mask)).opts(legend_position="bottom")
    return (image(raw, f"{name}: raw") + after).opts(shared_axes=True)


#: How :func:`masked_pixels` marks each reason of a mask plane, in this order (a pixel
#: masked for several reasons is marked for the first).
MASK_MARKS = {MaskBit.COSMIC_RAY: ("cosmic ray", "red"), MaskBit.HOT: ("hot pixel", "orange"),
              MaskBit.DEFECT: ("flat defect", "magenta"), MaskBit.USER: ("your mask", "cyan"),
              MaskBit.SATURATED: ("saturated", "yellow"), MaskBit.NOT_FINITE: ("no value", "lime")}


def masked_pixels(mask, max_points: int = 20_000):
    """The pixels of a mask plane (uint8 :class:`~ccdred.planes.MaskBit` bits) as open
    squares, one colour and legend entry per reason (:data:`MASK_MARKS`) with its count
    of pixels; a reason with more than ``max_points`` pixels shows an even subset, and
    its legend says so.

    Parameters
    ----------
    mask : array_like of uint8, shape (rows, columns)
    max_points : int, optional

    Returns
    -------
    holoviews.Overlay
        Of :class:`holoviews.Points` in pixel coordinates (x: column, y: row), to lay
        over :func:`image` of the same frame.
    """
    unmarked = np.array(mask, dtype=np.uint8)
    overlay = [hv.Points(([], []), kdims=["x", "y"])]  # an empty mask: an empty overlay
    for bit, (reason, colour) in MASK_MARKS.items():
        rows, cols = np.nonzero(unmarked & np.uint8(bit))
        unmarked[rows, cols] = 0
        if rows.size == 0:
            continue
        step = -(-rows.size // max_points)
        shown = "" if step == 1 else f", {rows[::step].size} shown"
        overlay.append(hv.Points((cols[::step], rows[::step]), kdims=["x", "y"],
                                 label=f"{reason} ({rows.size}{shown})").opts(
            color=colour, marker="square", fill_alpha=0.0, size=6, line_width=1))
    return hv.Overlay(overlay)


def clip_map(n_rejected, n_frames: int, title: str, max_pixels: int = 512):
    """Fraction of samples not used per pixel of a master (``n_rejected``: left out before the
    combination, or rejected by it; see :class:`~ccdred.steps.SampleCounts`), at most
    ``max_pixels`` a side.

    A larger map is reduced by the maximum over each block, so that a single
    rejected pixel (a cosmic ray, a hot pixel) stays visible. A static image
    (no server round trip on zoom), so that it follows the sliders quickly.
    """
    n_rejected = np.asarray(n_rejected)
    rows, cols = n_rejected.shape
    factor = max(1, -(-max(rows, cols) // max_pixels))
    # the counts' block maximum, then the fraction: half the time of the other way round
    binned = block_max(n_rejected, factor).astype(np.float32) / max(n_frames, 1)
    return _fraction_image(binned, (rows, cols), title, blocks=factor > 1)


def _fraction_image(binned, shape, title: str, blocks: bool):
    """A clip map's image: ``binned`` fractions over a master of ``shape`` (NaN: no data)."""
    rows, cols = shape
    element = hv.Image(np.flipud(binned), bounds=(-0.5, -0.5, cols - 0.5, rows - 0.5),
                       kdims=["x", "y"], vdims=[hv.Dimension("not_used", label=_NOT_USED)],
                       label=title)
    limit = max(float(np.nanmax(binned)) if np.isfinite(binned).any() else 0.0, 1e-3)
    return element.opts(**{**_IMAGE_OPTS, **plain_numbers("x", "y", "c"), "cmap": "viridis",
                           "clim": (0.0, limit), "title": title,
                           "colorbar_opts": {"title": f"{_NOT_USED} (block maximum)"
                                             if blocks else _NOT_USED}})


#: What a clip map shows: samples left out before the combination or rejected by it.
_NOT_USED = "fraction not used"


def block_max(data, factor: int) -> np.ndarray:
    """Maximum over ``factor`` x ``factor`` blocks (edges padded by repeating the last pixels)."""
    if factor == 1:
        return np.asarray(data)
    rows, cols = data.shape
    padded = np.pad(data, ((0, -rows % factor), (0, -cols % factor)), mode="edge") \
        if rows % factor or cols % factor else data
    # the maximum of strided views, rows then columns: 9x faster than a reshaped max
    by_rows = np.maximum.reduce([padded[offset::factor] for offset in range(factor)])
    return np.maximum.reduce([by_rows[:, offset::factor] for offset in range(factor)])


def rejected_per_frame(counts, names, title: str):
    """How many samples of each frame were not used (``n_rejected_per_frame``: left out
    before the combination, or rejected by it).

    Drawn as spikes at the frames' positions, named on the axis and in the
    hover: unlike ``hv.Bars``, they update in place when the number of
    frames changes (a limit move), which Bokeh's categorical bars do not.
    """
    counts = np.asarray(counts, dtype=np.int64)
    return hv.Spikes([(i, int(n), name) for i, (n, name) in enumerate(zip(counts, names, strict=True))],
                     kdims=["frame"],
                     vdims=[hv.Dimension("rejected", label="samples not used"), "file"]).opts(
        title=title, xticks=list(enumerate(names)) or [(0, "")], xrotation=60, xlim=(-0.6, max(len(names), 1) - 0.4),
        tools=["hover"], responsive=True, height=300, color="#d95f02", line_width=14,
        framewise=True, xlabel="frame", **plain_numbers("y"))


def combination_of(name: str, made):
    """The combination behind a master on show (a master flat's, before normalising);
    InputError for a master read from the calibration library: none of its samples are here."""
    if made.combination is None or made.combination.n_frames == 0:
        raise InputError([InputProblem(None, f"{name} was read from the calibration library: "
                                             f"this night holds none of its samples")])
    return made.combination


def dark_clip_map(shown):
    """Clip map of a bias, dark or dark-current master: ``shown`` is (name, CombineResult)."""
    name, result = shown
    combination = combination_of(name, result)
    return clip_map(combination.n_rejected, combination.n_frames, f"{name}: samples not used")


def flat_clip_map(shown):
    """Clip map of a master flat: ``shown`` is (filter, MasterFlat)."""
    name, flat = shown
    combination = combination_of(f"flat {name}", flat)
    return clip_map(combination.n_rejected, combination.n_frames, f"flat {name}: samples not used")


def dark_rejections(shown, frames):
    """Samples not used per frame of a bias, dark or dark-current master."""
    name, result = shown
    return rejected_per_frame(combination_of(name, result).n_rejected_per_frame,
                              [f.path.name for f in frames], name)


def flat_rejections(shown, frames):
    """Samples not used per accepted flat of a master flat."""
    name, flat = shown
    used = [f.path.name for f, ok in zip(frames, flat.accepted, strict=True) if ok]
    return rejected_per_frame(combination_of(f"flat {name}", flat).n_rejected_per_frame, used,
                              f"flat {name}")


def samuelson_note(n_frames: int, clip) -> str:
    """Why sigma clipping around the mean of ``n_frames`` samples can reject nothing, or ''.

    No sample lies more than sqrt(n - 1) standard deviations (the population
    standard deviation, as the clipping uses) from the mean of n samples
    (Samuelson's inequality; (n - 1) / sqrt(n) with the sample standard
    deviation), so thresholds at or above that reject nothing, whatever the data.
    Said only where it applies: sigma clipping (``clip``, a
    :class:`~ccdred.combine.ClipOptions`) around the mean. It speaks of the
    combination: samples left out before it (:data:`LEFT_OUT`) are not its doing.
    """
    bound = np.sqrt(n_frames - 1) if n_frames else 0.0
    threshold = min(clip.sigma_lower, clip.sigma_upper)
    if clip.rejection != "sigclip" or clip.cenfunc != "mean" or threshold < bound:
        return ""
    return (f" — with {n_frames} frames no sample can lie more than {bound:.2f} σ from the "
            f"mean (Samuelson's bound), so at a threshold of {threshold:g} the combination "
            f"rejects nothing")


def summary_line(counts, title: str) -> str:
    """'**title**: N of M samples rejected by the combination (p %)', and the samples left
    out before it, when there are any (``counts``: :class:`~ccdred.steps.SampleCounts`).

    Examples
    --------
    >>> from ccdred.steps import SampleCounts
    >>> summary_line(SampleCounts(samples=1000, left_out=20, rejected=49), "dark.fits")
    '**dark.fits**: 49 of 980 samples rejected by the combination (5.00 %); 20 (2.00 % of all \
1,000) left out before it (not finite, or clipped in their own frame)'
    """
    return (f"**{title}**: {counts.rejected:,} of {counts.entered:,} {REJECTED} "
            f"({100 * counts.rejected_fraction:.2f} %)" + (
                f"; {counts.left_out:,} ({100 * counts.left_out_fraction:.2f} % of all "
                f"{counts.samples:,}) {LEFT_OUT} ({WHY_LEFT_OUT})" if counts.left_out else ""))


#: The two counts of :class:`~ccdred.steps.SampleCounts`, named alike wherever they are shown
#: (:func:`summary_line`, :func:`sweep_summary`, the sweep's axis, the pixel's samples).
REJECTED = "samples rejected by the combination"
LEFT_OUT = "left out before it"
WHY_LEFT_OUT = "not finite, or clipped in their own frame"


#: The title of a plot with nothing to show; the reason is said once, above the plots.
NOTHING_TO_SHOW = "nothing to show (see above)"


def empty_image(_message: str = ""):
    """A clip map with no data, for a master that cannot be made.

    The same plot as :func:`clip_map`'s, every pixel NaN (drawn transparent): a
    DynamicMap keeps the options and structure of what it showed, so an empty map
    drawn otherwise stayed blank once the master could be made again.
    """
    return _fraction_image(np.full((1, 1), np.nan, np.float32), (1, 1), NOTHING_TO_SHOW,
                           blocks=False)


def empty_bars(_message: str = ""):
    """Bars with none, for a master that cannot be made."""
    return rejected_per_frame([], [], NOTHING_TO_SHOW)


def frame_levels_plot(rows, upper_limit: float, lower_limit: float | None = None):
    """Per-frame medians coloured by type and filter, the limits as lines, rejected and
    suspect flats marked.

    Frames are numbered from 1, in the order of ``rows`` (the frame table's); rows without
    a median (frames not used) are left out.
    """
    table = [{**row, "frame": i, "group": _group(row)} for i, row in enumerate(rows, start=1)
             if row.get("median") is not None and np.isfinite(row["median"])]
    vdims = ["file", "group", "exptime", "status"]
    points = hv.Points(table, kdims=["frame", "median"], vdims=vdims).opts(
        color="group", cmap="Category10", size=9, tools=["hover"], legend_position="right",
        responsive=True, height=380, title="Per-frame median (flats less their dark)",
        ylabel="median (ADU)", logy=True)

    def marked(status: str, label: str, **style):
        chosen = [row for row in table if row["status"].startswith(status)]
        return hv.Points(chosen, kdims=["frame", "median"], vdims=vdims, label=label).opts(
            size=16, line_width=3, tools=["hover"], **style)

    marks = (marked("rejected", "rejected", marker="x", color="black")
             * marked("used, suspect", "suspect (used)", marker="circle", fill_alpha=0.0,
                      line_color="#d62728"))
    span = (0.5, max(len(rows), 1) + 0.5)
    overlay = points * marks * _level_line(upper_limit, span, "upper limit", "#444444")
    if lower_limit is not None:
        overlay *= _level_line(lower_limit, span, "lower limit", "#999999")
    levels = [row["median"] for row in table] + [upper_limit, lower_limit]
    return overlay.opts(ylim=decades_around(levels), **plain_numbers("x"))


def decades_around(values, margin: float = 0.15) -> tuple[float, float]:
    """A log axis' range around the positive ``values``, ``margin`` decades wider on each side
    and two decades at least.

    Bokeh ticks a log axis of less than two decades as a linear one, whose ticks may all lie
    far from the data: after a low flat was ignored, frames at 1,000 to 26,000 ADU had their
    axis labelled 10000 to 60000 only. Over two decades, every power of ten is a candidate
    tick, and the data lie within a decade of one.
    """
    positive = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    low, high = (np.log10(min(positive)), np.log10(max(positive))) if positive else (0.0, 0.0)
    widen = margin + max(0.0, _LOG_TICKS_FROM - (high - low + 2 * margin)) / 2
    return float(10 ** (low - widen)), float(10 ** (high + widen))


#: Decades a log axis spans at least for Bokeh's LogTicker to tick it in powers of ten (and a
#: little more, for rounding).
_LOG_TICKS_FROM = 2.02


def _level_line(level, span, label, color):
    """A horizontal line that the legend names (an HLine is not in legends)."""
    return hv.Curve([(span[0], level), (span[1], level)], "frame", "median", label=label).opts(
        color=color, line_dash="dashed", line_width=2)


def _group(row) -> str:
    if row["type"] == "dark":
        return f"dark {row['exptime']:g} s"
    if row["type"] in ("flat", "object"):
        return f"{row['type']} {row['filter']}"
    return row["type"]


def master_preview(data, title: str, *, label="ADU"):
    """A master image beside the histogram of its pixel values (within zscale-ish range).

    The image's title names the master; the histogram's is short, to fit its plot (Bokeh
    cuts a title at the plot's edge: '...(dark_00005000.fits): histog'; a title of two
    lines pushed the image's frame down to align with it, and cut the image's axis label).
    """
    finite = np.asarray(data)[np.isfinite(data)]
    low, high = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    counts, edges = np.histogram(finite, bins=80, range=(low, high if high > low else low + 1))
    histogram = hv.Histogram((edges, counts), kdims=[label], vdims=["pixels"]).opts(
        title="histogram", width=380, height=300, tools=["hover"], **plain_numbers("x", "y"))
    return image(data, title, label=label) + histogram


# -- exploring the rejection ---------------------------------------------------------------


def pixel_samples(pixel, title: str | None = None):
    """One pixel's samples across the frames (a :class:`~ccdred.steps.PixelStack`): used,
    rejected by the combination and left out before it told apart by colour and marker (the
    hover says in which iteration a sample went); the last iteration's bounds and centre, the
    earlier bounds fainter; the bounds of the noise model's sigma and of the measured one
    (see :func:`_sigma_lines`); the combined value. ``title``: the pixel in words by default."""
    n = len(pixel.frames)
    statuses = [_sample_status(masked, rejected, it) for masked, rejected, it in
                zip(pixel.premasked, pixel.rejected, pixel.iteration, strict=True)]
    rows = list(zip(range(n), np.asarray(pixel.values, dtype=np.float64), pixel.frames, statuses,
                    np.asarray(pixel.iteration), strict=True))
    kinds = np.where(pixel.premasked, "left out", np.where(pixel.rejected, "rejected", "used"))
    span = (-0.5, max(n, 1) - 0.5)
    # framewise on each element: an overlay's own option does not reach its elements' ranges
    overlay = _bound_lines(pixel.bounds, span) * _sigma_lines(pixel, span)
    for kind, (colour, marker, size) in _SAMPLE_STYLES.items():
        overlay *= hv.Scatter(
            _columns([row for row, its in zip(rows, kinds, strict=True) if its == kind],
                     _SAMPLE_COLUMNS, text=("file", "status")),
            "frame", _SAMPLE_COLUMNS[1:], label=kind).opts(
            tools=["hover"], framewise=True, color=colour, marker=marker, size=size,
            line_width=2)
    overlay *= hv.Curve([(span[0], pixel.combined), (span[1], pixel.combined)], "frame", "value",
                        label="combined").opts(color="#1b9e77", line_width=2, framewise=True)
    used = int(np.count_nonzero(~pixel.rejected))
    title = title or (f"{pixel.master} pixel (x={pixel.x}, y={pixel.y}): {used} of {n} samples "
                      f"used, combined {pixel.combined:.6g}")
    return overlay.opts(
        title=title, width=900, height=380,
        xticks=list(enumerate(pixel.frames)) or [(0, "")], xrotation=60, xlim=span,
        ylabel="sample as combined", padding=(0.05, (0.05, 0.4)), **_INNER_LEGEND,
        **plain_numbers("y"))


#: Each kind of sample: (colour, marker, size). One element per kind, each of one colour,
#: marker and size: a colour per sample (a vector) can be read by the legend before Bokeh
#: has it for new samples ("Offset is outside the bounds of the DataView" in the browser,
#: and the rest of that update is lost: seen when a tab is shown again, Bokeh 3.9).
_SAMPLE_STYLES = {"used": ("#1f78b4", "circle", 10), "rejected": ("#e31a1c", "x", 14),
                  "left out": ("#999999", "triangle", 12)}
_SAMPLE_COLUMNS = ["frame", "value", "file", "status", "iteration"]


# A legend inside the plot, in one row above the samples (the top padding keeps them
# clear of it): HoloViews takes one outside the plot off and puts it back at every
# update, which makes Bokeh walk the page's whole model graph again.
_INNER_LEGEND = {"legend_position": "top_left",
                 "legend_opts": {"orientation": "horizontal", "background_fill_alpha": 0.8}}


def pixel_summary(pixel) -> str:
    """Markdown: the inspected pixel in words (which samples were rejected, and when; the
    measured sigma beside the noise model's)."""
    used = int(np.count_nonzero(~pixel.rejected))
    error = f" ± {pixel.uncertainty:.3g}" if np.isfinite(pixel.uncertainty) else ""
    lines = [f"**{pixel.master} pixel (x={pixel.x}, y={pixel.y})**: {used} of "
             f"{len(pixel.frames)} samples used, combined {pixel.combined:.6g}{error}"
             f"{'' if np.isfinite(pixel.combined) else ' (none left: the master takes its mean)'}"]
    sigmas = _sigmas_line(pixel)
    lines += [sigmas] if sigmas else []
    for name, value, status in zip(pixel.frames, pixel.values, (
            _sample_status(m, r, i) for m, r, i in zip(pixel.premasked, pixel.rejected,
                                                        pixel.iteration, strict=True)),
            strict=True):
        if status != "used":
            lines.append(f"- {name}: {value:.6g}, {status}")
    return "\n".join(lines)


def _sigmas_line(pixel) -> str:
    """The inspected pixel's measured sigma beside the noise model's, in words ('' when the
    rejection has no sigma)."""
    if not np.isfinite(pixel.measured_sigma):
        return ""
    model = (f"noise model σ {pixel.model_sigma:.4g}" if np.isfinite(pixel.model_sigma)
             else "noise model unknown (no gain and read noise)")
    return (f"- spread: measured σ {pixel.measured_sigma:.4g}, {model} (bounds: "
            f"{_pair(pixel.measured_bounds)} measured, {_pair(pixel.model_bounds)} model)")


def _pair(bounds) -> str:
    """``low … high``, or 'none' when unknown."""
    return "none" if not np.isfinite(bounds).all() else f"{bounds[0]:.6g} … {bounds[1]:.6g}"


def sweep_summary(shown) -> str:
    """Markdown: the sweep at the threshold nearest the current one (the current one, as
    :meth:`~ccdred.pipeline.Pipeline.threshold_sweep` sweeps by default), its numbers named
    as :func:`summary_line` names them."""
    name, sweep, threshold = shown
    nearest = int(np.argmin(np.abs(np.asarray(sweep["threshold"]) - threshold)))
    step = int(sweep.get("row_step", 1))
    left_out = sweep.get("left_out_fraction", 0.0)
    rows = f", on 1 row in {step}" if step > 1 else ""
    return (f"**{name}** at threshold {sweep['threshold'][nearest]:.3g}: {REJECTED} "
            f"{100 * sweep['rejected_fraction'][nearest]:.2f} % (of those that entered it{rows}), "
            f"pixel noise {sweep['noise'][nearest]:.4g}" + (
                f"; {LEFT_OUT} {100 * left_out:.2f} % (of all samples{rows}: {WHY_LEFT_OUT})"
                if left_out else ""))


def empty_samples(_message: str = ""):
    """A samples plot with no samples, for a pixel that cannot be shown: the same plot as
    :func:`pixel_samples`' (a DynamicMap keeps the layers and legend of what it showed)."""
    nothing = np.zeros(0)
    return pixel_samples(PixelStack("", 0, 0, (), nothing, nothing.astype(bool),
                                    nothing.astype(bool), nothing.astype(int), (), np.nan, np.nan),
                         title=NOTHING_TO_SHOW)


def _columns(rows, names, text=()) -> dict:
    """``rows`` as named columns; the ``text`` ones are arrays of text even when there are no
    rows (an empty column is otherwise numbers, which Bokeh refuses as colours: "invalid color
    array" in the browser, and the rest of that update is lost)."""
    columns = dict(zip(names, map(list, zip(*rows)), strict=True)) if rows else dict.fromkeys(names, [])
    return {name: np.array(column, dtype=str) if name in text else np.asarray(column)
            for name, column in columns.items()}


def _sample_status(premasked, rejected, iteration) -> str:
    if premasked:
        return "left out before the combination (not finite, or clipped in its own frame)"
    if rejected:
        return f"rejected by the combination, in iteration {iteration}"
    return "used"


def _bound_lines(bounds, span):
    """The last iteration's low and high bounds (dashed) and centre (dotted); the earlier
    iterations' bounds fainter. Each line of one colour (see ``_SAMPLE_STYLES``)."""
    last = len(bounds)

    def bound(i, value, line):
        return (span[0], value, span[1], value, i, line)

    earlier = [bound(i, value, line) for i, (low, _centre, high) in enumerate(bounds[:-1], start=1)
               for value, line in ((low, "low bound"), (high, "high bound"))]
    final = [bound(last, value, line) for value, line in
             ((bounds[-1][0], "low bound"), (bounds[-1][2], "high bound"))] if bounds else []
    centre = [bound(last, bounds[-1][1], "centre")] if bounds else []
    return (_lines(earlier, "earlier bounds", "#fdae6b", "dashed", width=1)
            * _lines(final, "bounds", "#d94801", "dashed")
            * _lines(centre, "centre", "#7f2704", "dotted"))


def _sigma_lines(pixel, span):
    """The last centre -/+ the thresholds times the noise model's sigma (dashed; with
    ``ccdclip`` the rejection's own bounds) and times the samples' measured sigma
    (dash-dotted), where known: whether the samples scatter as the detector predicts."""
    def rows(bounds, sigma, what):
        return [(span[0], value, span[1], value, len(pixel.bounds),
                 f"{what} {side} bound (σ {sigma:.4g})")
                for value, side in zip(bounds, ("low", "high"), strict=True)
                if np.isfinite(value)]

    return (_lines(rows(pixel.model_bounds, pixel.model_sigma, "noise model"), MODEL_LABEL,
                   "#6a3d9a", "dashed")
            * _lines(rows(pixel.measured_bounds, pixel.measured_sigma, "measured"),
                     MEASURED_LABEL, "#1f78b4", "dashdot", width=1))


#: The legend's names of the bounds of the noise model's sigma and of the measured one.
MODEL_LABEL, MEASURED_LABEL = "noise model", "measured σ"


def _lines(rows, label, colour, dash, width=2):
    """Horizontal segments of one colour and dash, ``rows`` as ``_SEGMENT_COLUMNS``."""
    return hv.Segments(_columns(rows, _SEGMENT_COLUMNS, text=("line",)), _SEGMENT_COLUMNS[:4],
                       _SEGMENT_COLUMNS[4:], label=label).opts(
        color=colour, line_width=width, line_dash=dash, framewise=True, tools=["hover"],
        hover_tooltips=["line", "iteration", "value"])


_SEGMENT_COLUMNS = ["frame", "value", "frame_end", "value_end", "iteration", "line"]


#: What a threshold sweep plot can show: (axis label, title, colour). The titles fit a third of
#: the page (Bokeh cuts a title at the plot's edge); the change is from the master on show.
SWEEP_QUANTITIES = {
    "rejected_fraction": ("rejected (%)", "rejected by the combination", "#d95f02"),
    "noise": ("pixel noise", "pixel-to-pixel noise", "#7570b3"),
    "change": ("mean |Δ|", "change from the master", "#1b9e77"),
}


def threshold_sweep_plot(shown, quantity: str = "rejected_fraction"):
    """One quantity of a threshold sweep against the threshold, the current threshold marked.

    ``shown`` is (master name, sweep, current threshold), as
    :meth:`~ccdred.pipeline.Pipeline.shown_sweep` gives it.
    """
    _name, sweep, threshold = shown  # the name is in the sweep's summary, above the plots
    label, title, color = SWEEP_QUANTITIES[quantity]
    values = np.asarray(sweep[quantity]) * (100 if quantity == "rejected_fraction" else 1)
    step = int(sweep.get("row_step", 1))
    rows_note = f", on 1 row in {step}" if step > 1 else ""
    # framewise on each element: an overlay's own option does not reach its elements' ranges
    curve = hv.Curve((sweep["threshold"], values), "threshold", label).opts(
        color=color, line_width=2, framewise=True)
    points = hv.Scatter(curve).opts(color=color, size=7, tools=["hover", "tap"], framewise=True)
    return (curve * points * hv.VLine(threshold).opts(color="black", line_dash="dashed")).opts(
        title=title + rows_note,
        responsive=True, height=230, xlabel="threshold (σ)", **plain_numbers("x", "y"))


def empty_sweep(quantity: str = "rejected_fraction"):
    """A sweep plot with no points, for a master that cannot be made: the same plot as
    :func:`threshold_sweep_plot`'s (a DynamicMap keeps the layers of what it showed)."""
    nothing = {"threshold": np.zeros(0), quantity: np.zeros(0)}
    return threshold_sweep_plot(("", nothing, np.nan), quantity).opts(title=NOTHING_TO_SHOW)


def difference_image(name: str, difference):
    """B - A of a master, on a diverging scale centred on zero."""
    finite = np.asarray(difference)[np.isfinite(difference)]
    extent = float(np.max(np.abs(finite))) if finite.size else 0.0
    return image(difference, f"{name}: B − A", clim=(-extent or -1e-12, extent or 1e-12),
                 cmap="RdBu_r", label="B − A")


def difference_summary(name: str, difference) -> str:
    """Markdown: how much a master changed between A and B."""
    difference = np.asarray(difference, dtype=np.float64)
    changed = np.count_nonzero(difference)
    return (f"**{name}**: {changed:,} of {difference.size:,} pixels changed; "
            f"mean {np.nanmean(difference):.4g}, max |B − A| {np.nanmax(np.abs(difference)):.4g}")


# -- the detector ----------------------------------------------------------------------------

def photon_transfer_plot(curve):
    """The photon transfer curve: each pair's per-frame variance against its signal, and the
    fitted line ``variance = signal / gain + read_noise_adu**2``
    (a :class:`~ccdred.noise.PhotonTransferCurve`)."""
    top = float(curve.signal.max()) * 1.05
    line = np.linspace(0.0, top, 50)
    dimensions = {"kdims": [hv.Dimension("signal", label="signal above the bias (ADU)")],
                  "vdims": [hv.Dimension("variance", label="variance per frame (ADU²)")]}
    points = hv.Scatter((curve.signal, curve.variance), **dimensions, label="pairs of frames")
    fit = hv.Curve((line, line / curve.gain + curve.read_noise_adu ** 2), **dimensions,
                   label=f"fit: {curve.gain:.3g} e-/ADU, {curve.read_noise:.3g} e- read noise")
    return (fit.opts(color="#1b9e77") * points.opts(size=9, color="#d95f02", tools=["hover"])).opts(
        title="Photon transfer curve (biases at 0; flats in pairs)", responsive=True, height=340,
        legend_position="top_left", **plain_numbers("x", "y"))


def detector_summary(header, noise, curve) -> str:
    """The gain and read noise a night's header states, those measured by its photon
    transfer curve (``curve``, or why there is none), and those the reduction uses
    (``noise``: a :class:`~ccdred.noise.DetectorNoise`, None when unknown), as a table.

    Examples
    --------
    >>> from ccdred.noise import DetectorNoise
    >>> print(detector_summary(((1.5, "GAIN"), None), DetectorNoise(1.5, 9.0, "header GAIN",
    ...       "measured from 2 biases"), "too few flats"))
    | | gain (e-/ADU) | read noise (e-) |
    | --- | ---: | ---: |
    | header | 1.5 (GAIN) | none |
    | photon transfer curve | — | — |
    | used by the reduction | 1.5 (header GAIN) | 9 (measured from 2 biases) |
    <BLANKLINE>
    No photon transfer curve: too few flats.
    """
    def stated(value):
        return "none" if value is None else f"{value[0]:.4g} ({value[1]})"

    measured = ("—", "—") if isinstance(curve, str) else (f"{curve.gain:.4g}",
                                                         f"{curve.read_noise:.4g}")
    used = (("unknown", "unknown") if noise is None else
            (f"{noise.gain:.4g} ({noise.gain_source})",
             f"{noise.read_noise:.4g} ({noise.read_noise_source})"))
    rows = [("header", stated(header[0]), stated(header[1])),
            ("photon transfer curve", *measured), ("used by the reduction", *used)]
    table = "\n".join(["| | gain (e-/ADU) | read noise (e-) |", "| --- | ---: | ---: |",
                       *(f"| {name} | {gain} | {read_noise} |" for name, gain, read_noise in rows)])
    return table + (f"\n\nNo photon transfer curve: {curve}." if isinstance(curve, str) else "")


def hot_pixel_map(rate, hot):
    """The dark current (ADU/s, from the raw darks) with its hot pixels circled (``hot``:
    bool map, :func:`~ccdred.badpix.hot_pixels`)."""
    rows, cols = np.nonzero(hot)
    title = f"dark current: {rows.size:,} hot pixels ({100 * rows.size / hot.size:.3f} %)"
    points = hv.Points((cols, rows), kdims=["x", "y"]).opts(
        marker="circle", fill_alpha=0.0, line_color="#e7298a", size=8, line_width=1.5)
    return (image(rate, title, label="ADU/s") * points).opts(show_legend=False)
