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
from holoviews.operation.datashader import rasterize

__all__ = [
    "before_after",
    "clip_map",
    "frame_levels_plot",
    "frame_table",
    "image",
    "master_preview",
    "rejected_per_frame",
    "zscale_limits",
]

_IMAGE_OPTS = {"cmap": "gray", "colorbar": True, "tools": ["hover"], "data_aspect": 1,
               "frame_height": 320, "xlabel": "column", "ylabel": "row"}

#: Images with more pixels than this are rasterized with datashader.
RASTERIZE_ABOVE = 512 * 512


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
    options = {**_IMAGE_OPTS, "cmap": cmap, "clim": clim or zscale_limits(data), "title": title}
    if data.size > RASTERIZE_ABOVE:
        return rasterize(element, precompute=True).opts(**options)
    return element.opts(**options)


def before_after(raw, calibrated, name: str):
    """Raw and calibrated frame side by side; pan and zoom are linked."""
    return (image(raw, f"{name}: raw") + image(calibrated, f"{name}: calibrated")).opts(
        shared_axes=True)


def clip_map(n_rejected, n_frames: int, title: str, max_pixels: int = 512):
    """Fraction of samples rejected per pixel of a master, block-averaged to ``max_pixels``.

    A static image (no server round trip on zoom), so that it follows the
    sliders quickly; each displayed pixel is the mean over its block.
    """
    fraction = np.asarray(n_rejected, dtype=np.float32) / max(n_frames, 1)
    rows, cols = fraction.shape
    factor = max(1, -(-max(rows, cols) // max_pixels))
    binned = block_mean(fraction, factor)
    element = hv.Image(np.flipud(binned), bounds=(-0.5, -0.5, cols - 0.5, rows - 0.5),
                       kdims=["x", "y"], vdims=["rejected fraction"], label=title)
    limit = max(float(binned.max()), 1e-3)
    return element.opts(**{**_IMAGE_OPTS, "cmap": "viridis", "clim": (0.0, limit), "title": title})


def block_mean(data, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks (edges padded by repeating the last pixels)."""
    if factor == 1:
        return np.asarray(data)
    rows, cols = data.shape
    padded = np.pad(data, ((0, -rows % factor), (0, -cols % factor)), mode="edge")
    return padded.reshape(padded.shape[0] // factor, factor, -1, factor).mean(axis=(1, 3))


def rejected_per_frame(counts, names, title: str):
    """Bars: how many samples of each frame the clipping rejected (``n_rejected_per_frame``)."""
    counts = np.asarray(counts, dtype=np.int64)
    return hv.Bars(list(zip(names, counts.tolist(), strict=True)), kdims=["frame"],
                   vdims=["rejected samples"]).opts(
        title=title, xrotation=60, tools=["hover"], responsive=True, height=300,
        color="#d95f02")


def frame_levels_plot(rows, upper_limit: float, lower_limit: float | None = None):
    """Per-frame medians coloured by type and filter, limits as lines, rejected flats marked."""
    if not rows:
        return hv.Points([], kdims=["frame", "median"]).opts(title="no frames")
    table = [{**row, "frame": i, "group": _group(row)} for i, row in enumerate(rows)]
    vdims = ["file", "group", "exptime", "status"]
    points = hv.Points(table, kdims=["frame", "median"], vdims=vdims).opts(
        color="group", cmap="Category10", size=9, tools=["hover"], legend_position="right",
        responsive=True, height=380, title="Per-frame median (flats dark-subtracted)",
        ylabel="median (ADU)", logy=True)
    rejected = [row for row in table if row["status"].startswith("rejected")]
    marks = hv.Points(rejected, kdims=["frame", "median"], vdims=vdims, label="rejected").opts(
        marker="x", size=16, color="red", line_width=3, tools=["hover"])
    overlay = points * marks * hv.HLine(upper_limit, label="upper limit").opts(
        color="red", line_dash="dashed")
    if lower_limit is not None:
        overlay *= hv.HLine(lower_limit, label="lower limit").opts(color="orange",
                                                                   line_dash="dashed")
    return overlay


def _group(row) -> str:
    if row["type"] == "dark":
        return f"dark {row['exptime']:g} s"
    return f"{row['type']} {row['filter']}"


def frame_table(rows):
    """The night's frames as a table."""
    columns = ["file", "type", "exptime", "filter", "median", "status"]
    data = [{key: row.get(key, "") for key in columns} for row in rows]
    return hv.Table(data, kdims=columns[:1], vdims=columns[1:]).opts(height=400, width=900)


def master_preview(data, title: str, *, label="ADU"):
    """A master image beside the histogram of its pixel values (within zscale-ish range)."""
    finite = np.asarray(data)[np.isfinite(data)]
    low, high = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    counts, edges = np.histogram(finite, bins=80, range=(low, high if high > low else low + 1))
    histogram = hv.Histogram((edges, counts), kdims=[label], vdims=["pixels"]).opts(
        title=f"{title}: histogram", width=380, height=300, tools=["hover"])
    return image(data, title, label=label) + histogram
