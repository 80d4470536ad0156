"""For the teaching notebooks: their one-line start, and the exercises' checks.

``teaching.start()`` loads the plotting extensions with their code inline (an
exported notebook then shows its plots offline) and returns the night to study:
the demo night, simulated once into the cache folder, or a folder of the
user's own raw frames. ``teaching.check(name, answer, ...)`` tells a student
whether an exercise's answer is right, and gives a hint when it is not.
``teaching.workspace()`` is a temporary folder that the notebook removes at its end, and
``teaching.export_html(notebook)`` writes a notebook for students as one offline HTML file.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from . import config
from .demo import NightSpec, NightTruth, demo_night, night_truth

__all__ = ["APERTURE", "EXERCISES", "Exercise", "Night", "Verdict", "check",
           "export_html", "masked_star", "near_miss", "ray_or_star", "start", "workspace"]


@dataclass(frozen=True)
class Night:
    """The night a notebook studies.

    Attributes
    ----------
    folder : pathlib.Path
        The raw frames.
    truth : NightTruth or None
        What the demo night was simulated from (None for a night of your own).
    spec : NightSpec or None
        The demo night's :class:`~ccdred.demo.NightSpec` (None for a night of your own).
    """

    folder: Path
    truth: NightTruth | None
    spec: NightSpec | None = None


def start(folder=None, *, real: bool = False) -> Night:
    """Set up a notebook: plots that work offline, and the night to study.

    Parameters
    ----------
    folder : path-like, optional
        A folder of your own raw frames. By default ``CCDRED_NIGHT``, else the
        demo night (``CCDRED_DEMO_SIZE`` pixels a side), simulated once into
        ``CCDRED_CACHE`` (defaults in :mod:`ccdred.config`).
    real : bool, optional
        The demo night as real cameras take it (overscan, drifting bias,
        biases, darks at two exposure times only).
    """
    from .serve import load_extensions

    load_extensions(notebook=True)  # plots and the dashboard with their code and styles inline
    folder = folder or config.night_folder()
    if folder:
        return Night(Path(folder), None)
    size = config.demo_size()
    spec = (NightSpec.real if real else NightSpec)(shape=(size, size))
    cache = config.cache_dir()
    return Night(demo_night(cache / ("real" if real else ""), spec), night_truth(spec), spec)


def ray_or_star(night: Night, index: int = 0) -> dict:
    """Two pixels of the demo night's object frame ``index`` (in observing order), named
    'a' and 'b': the brightest cosmic ray that hit it away from the stars, and the centre
    of the star whose light there is nearest the ray's, in an order the night's seed sets
    (for the exercise 'ray-or-star').

    Returns
    -------
    dict
        ``{'a': (x, y), 'b': (x, y)}``.

    Raises
    ------
    ValueError
        For a night of your own (no truth), or a frame no ray hit away from the stars.
    """
    ray, star = _ray_and_star(night, index)
    first, second = (ray, star) if night.spec.seed % 2 else (star, ray)
    return {"a": first, "b": second}


def _ray_and_star(night: Night, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(x, y) of the brightest ray of object frame ``index`` 5 pixels or more from any star
    core, and of the brightest star pixel nearest it in light."""
    from scipy.ndimage import binary_dilation

    from .demo import night_cosmic_rays, night_stars, star_cores

    if night.spec is None:
        raise ValueError("this exercise needs the demo night: it knows where the rays are")
    rays = night_cosmic_rays(night.spec)[index]
    exptimes = [t for t in night.spec.object_exptimes for _ in range(night.spec.n_objects)]
    stars = night_stars(night.spec)
    far = ~binary_dilation(star_cores(night.spec), iterations=5)
    if not (rays > 0)[far].any():
        raise ValueError(f"no cosmic ray hit object frame {index} away from the stars")
    y, x = np.unravel_index(np.argmax(np.where(far, rays, 0.0)), rays.shape)
    cores = np.flatnonzero(star_cores(night.spec))
    # the star light (ADU/s) over the frame's exposure nearest the ray's charge
    core = cores[np.argmin(np.abs(stars.flat[cores] * exptimes[index] - rays[y, x]))]
    star_y, star_x = np.unravel_index(core, rays.shape)
    return (int(x), int(y)), (int(star_x), int(star_y))


def _the_ray(night: Night, positions: dict, index: int = 0) -> str:
    ray, _ = _ray_and_star(night, index)
    return next(name for name, position in positions.items() if tuple(position) == ray)


#: The star-flux exercise's least aperture radius, pixels (the sky: from 2 to 3 radii).
APERTURE = 4.0


def masked_star(night: Night, mask) -> tuple[tuple[int, int], float]:
    """The demo night's star with a pixel of ``mask`` (True: masked; e.g. the hot pixels
    found) nearest its peak, and the aperture radius that holds that pixel (at least
    :data:`APERTURE`), for the exercise 'star-flux'.

    Returns
    -------
    position : (int, int)
        The star's peak, (x, y).
    radius : float
        Pixels.

    Raises
    ------
    ValueError
        For a night of your own (no truth), or a mask of no pixel.
    """
    from scipy import ndimage

    from .demo import night_stars, star_cores

    if night.spec is None:
        raise ValueError("this exercise needs the demo night: it knows where the stars are")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the mask has no pixel")
    stars = night_stars(night.spec)
    labels, n_stars = ndimage.label(star_cores(night.spec))
    peaks = ndimage.maximum_position(stars, labels, range(1, n_stars + 1))
    distance = ndimage.distance_transform_edt(~mask)
    y, x = min(peaks, key=lambda peak: (distance[peak], -stars[peak]))
    return (int(x), int(y)), max(APERTURE, float(np.ceil(distance[y, x])) + 1.0)


def _flux_change(image, mask, position, radius) -> float:
    """Percent by which a star's flux with every pixel exceeds its flux with the masked
    pixels replaced by the mean of their unmasked neighbours (3x3)."""
    from scipy import ndimage

    good = ~np.asarray(mask, dtype=bool)
    image = np.asarray(image, dtype=np.float64)
    box = np.ones((3, 3))
    sums = ndimage.correlate(np.where(good, image, 0.0), box, mode="constant")
    counts = ndimage.correlate(good.astype(np.float64), box, mode="constant")
    filled = np.where(good | (counts == 0), image, sums / np.maximum(counts, 1.0))
    return float(100.0 * (_aperture_flux(image, position, radius)
                          / _aperture_flux(filled, position, radius) - 1.0))


def _aperture_flux(image, position, radius) -> float:
    """The light within ``radius`` of ``position`` less the sky (the median between 2 and 3
    radii)."""
    x, y = position
    rows, cols = np.indices(image.shape)
    distance = np.hypot(cols - x, rows - y)
    sky = np.median(image[(distance >= 2 * radius) & (distance < 3 * radius)])
    return float(np.sum(image[distance <= radius] - sky))


def workspace() -> tempfile.TemporaryDirectory:
    """A temporary folder for a notebook's products (``.name``); ``.cleanup()`` removes it,
    and so does the end of the kernel."""
    return tempfile.TemporaryDirectory(prefix="ccdred-notebook-")


#: The lab template without the scripts it would fetch from the network (require.js,
#: MathJax, mermaid): the plots' own code is inline (see :func:`start`).
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def export_html(notebook, html=None, *, execute: bool = True, solutions: bool = False,
                timeout: int = 600) -> Path:
    """Run a notebook and write it as one HTML file that shows its plots offline.

    Parameters
    ----------
    notebook : path-like
        The ``.ipynb`` file.
    html : path-like, optional
        Where to write; beside the notebook, with ``.html``, by default.
    execute : bool, optional
        Run it first (in its own folder), as a student would see it.
    solutions : bool, optional
        Keep the exercises' solutions (left out by default: the handout is for students).
    timeout : int, optional
        Seconds a cell may take.
    """
    import jinja2
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    node = nbformat.read(notebook, as_version=4)
    if execute:
        NotebookClient(node, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent)}}).execute()
    if not solutions:
        node.cells = [cell for cell in node.cells
                      if "solution" not in cell.metadata.get("tags", [])]
    exporter = HTMLExporter(template_name="lab", template_file="ccdred-offline.html.j2",
                            extra_loaders=[jinja2.DictLoader(
                                {"ccdred-offline.html.j2": _OFFLINE_TEMPLATE})])
    body, _ = exporter.from_notebook_node(node, resources={"metadata": {"name": notebook.stem}})
    html = notebook.with_suffix(".html") if html is None else Path(html)
    html.write_text(body, encoding="utf-8")
    return html


# -- exercises --------------------------------------------------------------------------


@dataclass(frozen=True)
class Exercise:
    """A question with a checkable answer.

    Attributes
    ----------
    question : str
    hint : str
        Said when the answer is wrong.
    expected : callable
        The right answer, from the check's context (the notebook's objects).
    tolerance : float
        Numbers within this (absolute) of the right answer are right.
    fraction : bool
        The answer is a fraction between 0 and 1: a percentage of the right
        answer is told so (see :func:`near_miss`).
    """

    question: str
    hint: str
    expected: Callable
    tolerance: float = 0.0
    fraction: bool = False


@dataclass(frozen=True)
class Verdict:
    """What :func:`check` says: right (True), wrong (False) or not answered (None)."""

    name: str
    correct: bool | None
    message: str

    def __bool__(self) -> bool:
        return bool(self.correct)

    def _repr_markdown_(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message


def check(name: str, answer, **context) -> Verdict:
    """Whether ``answer`` to exercise ``name`` is right, with a hint when it is not.

    Parameters
    ----------
    name : str
        One of :data:`EXERCISES`.
    answer
        The student's answer; None while it is not given.
    **context
        The objects the right answer is computed from (named in the exercise).

    Examples
    --------
    >>> bool(check("gaussian-2sigma", 0.0455))
    True
    >>> print(check("gaussian-2sigma", 0.32))
    ✘ **gaussian-2sigma: not yet.** Hint: ...
    >>> print(check("gaussian-2sigma", 4.55))
    ✘ **gaussian-2sigma: not yet.** 4.55 looks like a percentage: answer a fraction ...
    """
    if name not in EXERCISES:
        msg = f"no exercise named {name!r}; the exercises are {sorted(EXERCISES)}"
        raise ValueError(msg)
    exercise = EXERCISES[name]
    if answer is None:
        return Verdict(name, None, f"✎ **{name}**: not answered yet. {exercise.question}")
    expected = exercise.expected(**context)
    if _same(answer, expected, exercise.tolerance):
        return Verdict(name, True, f"✔ **{name}: right** ({_shown(expected)}).")
    miss = near_miss(exercise, answer, expected)
    return Verdict(name, False, f"✘ **{name}: not yet.** {miss + ' ' if miss else ''}"
                                f"Hint: {exercise.hint}")


def near_miss(exercise: Exercise, answer, expected) -> str | None:
    """What is wrong with a wrong number that is nearly right, or None.

    Said before the exercise's hint: a fraction given as a percentage (when
    ``exercise.fraction``), or the right number rounded to too few digits
    (when the exercise has a tolerance).

    Examples
    --------
    >>> near_miss(EXERCISES["gaussian-2sigma"], 0.05, 0.0455)
    '0.05 is the right answer rounded: give it to within ±0.002.'
    >>> near_miss(EXERCISES["gaussian-2sigma"], 0.32, 0.0455) is None
    True
    """
    number = _number(answer)
    if number is None or exercise.tolerance <= 0 or not isinstance(expected, float | int):
        return None
    if exercise.fraction and (_same(number / 100, expected, exercise.tolerance)
                              or _rounded(number / 100, expected)):
        return (f"{number:g} looks like a percentage: answer a fraction between 0 and 1 "
                "(50 % is 0.5).")
    if _rounded(number, expected):
        return (f"{number:g} is the right answer rounded: give it to within "
                f"±{exercise.tolerance:g}.")
    return None


def _number(answer) -> float | None:
    """The answer as a finite float, or None (a bool is no number here)."""
    if isinstance(answer, bool):
        return None
    try:
        number = float(answer)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _rounded(number: float, expected: float) -> bool:
    """Whether ``number`` is ``expected`` rounded to the digits ``number`` is written with
    (its shortest repr: 0.05 has two decimals, 1200 is rounded to hundreds)."""
    places = -Decimal(repr(number)).normalize().as_tuple().exponent
    return number != expected and float(round(Decimal(repr(float(expected))), places)) == number


def _same(answer, expected, tolerance) -> bool:
    if isinstance(expected, float | int) and not isinstance(expected, bool):
        try:
            return math.isclose(float(answer), expected, rel_tol=0.0, abs_tol=tolerance) \
                or float(answer) == expected
        except (TypeError, ValueError):
            return False
    if isinstance(expected, str):
        return str(answer).strip().lower() == expected.lower()
    return answer == expected


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def _frame_counts(catalogue) -> dict:
    return dict(Counter(frame.frame_type for frame in catalogue.frames))


def _faint_flat(pipeline) -> str:
    flats = [row for row in pipeline.frame_levels() if row["type"] == "flat"]
    return min(flats, key=lambda row: row["median"])["file"]


def _samuelson(n_frames) -> float:
    return float(np.sqrt(n_frames - 1))


def _emptied_pixels(darks) -> int:
    from .calibrate import master_dark

    return int(np.count_nonzero(master_dark(darks, frame_clip=True).n_used == 0))


def _flats_used(pipeline, filter_name) -> int:
    return int(pipeline.master_flat(filter_name).accepted.sum())


def _calibrated_pixel(pipeline, x, y) -> float:
    return float(pipeline.calibrated()[y, x])


def _sky_level(pipeline) -> float:
    return float(np.median(pipeline.calibrated()))


def _products(folder) -> int:
    return len(list(Path(folder).glob("*.fits")))


def _bias_drift(biases) -> float:
    levels = [float(np.median(frame.preprocess.overscan.level(_raw(frame)))) for frame in biases]
    return levels[-1] - levels[0]


def _raw(frame) -> np.ndarray:
    from . import fitsio

    return fitsio.read_image(frame.path, frame.hdu)


def _dark_current(pipeline) -> float:
    current = next(m for m in pipeline.plan.masters.values() if m.kind == "dark_current")
    return float(np.median(pipeline.master(current.name).data))


def _read_noise(bias_a, bias_b) -> float:
    from .noise import read_noise_from_biases

    return read_noise_from_biases(bias_a, bias_b, region=_WHOLE)


def _gain(flat_a, flat_b, bias_a, bias_b) -> float:
    from .noise import gain_from_flats

    return gain_from_flats(flat_a, flat_b, bias_a, bias_b, region=_WHOLE)


def _noise_ratio(bias, master, true_bias) -> float:
    return float(np.std(np.subtract(bias, true_bias, dtype=np.float64))
                 / np.std(np.subtract(master, true_bias, dtype=np.float64)))


#: Every pixel of a frame, as the noise exercises measure them.
_WHOLE = (slice(None), slice(None))


def _surviving_threshold(pipeline, master, x, y) -> float:
    """The lowest threshold (to 0.1) at which the pixel's highest sample is used."""
    kept = pipeline.threshold
    try:
        for threshold in np.round(np.arange(1.0, 8.01, 0.1), 1):
            pipeline.threshold = float(threshold)
            pixel = pipeline.pixel_stack(master, x, y)
            if not pixel.rejected[np.argmax(pixel.values)]:
                return float(threshold)
        return math.inf
    finally:
        pipeline.threshold = kept


def _quietest_method(pipeline) -> str:
    from .steps import pixel_noise

    kept = pipeline.rejection
    try:
        noise = {}
        for method in ("sigclip", "minmax", "pclip"):
            pipeline.rejection = method
            noise[method] = pixel_noise(pipeline.master_dark().data)
        return min(noise, key=noise.get)
    finally:
        pipeline.rejection = kept


#: Every exercise of the notebooks, by name.
EXERCISES = {
    "frame-counts": Exercise(
        "How many frames of each type does the night have? Answer a dict, e.g. "
        "`{'dark': 10, 'flat': 14, 'object': 6}`.",
        "count `frame.frame_type` over `catalogue.frames` (collections.Counter helps).",
        lambda catalogue: _frame_counts(catalogue)),
    "faint-flat": Exercise(
        "Which flat should not be used, although the course script keeps it? Answer its "
        "file name.",
        "look at the flats' medians in `pipeline.frame_levels()`: which one is far below the "
        "others?",
        lambda pipeline: _faint_flat(pipeline)),
    "gaussian-2sigma": Exercise(
        "What fraction of the samples of a Gaussian lies more than 2 of its standard "
        "deviations from its centre? Answer a fraction between 0 and 1, not a percentage.",
        "it is 2 x (1 - Φ(2)), where Φ is the normal distribution's CDF; about 1 in 22.",
        lambda: math.erfc(2 / math.sqrt(2)), tolerance=0.002, fraction=True),
    "samuelson": Exercise(
        "With the darks of this exposure time and `cenfunc='mean'`, from which threshold on "
        "can clipping reject nothing at all? (Clipping uses the population standard "
        "deviation.)",
        "one sample far out, all the others equal: how many σ is it from the mean? Try it "
        "for n = 2 first.",
        lambda n_frames: _samuelson(n_frames), tolerance=0.01),
    "emptied-pixels": Exercise(
        "With `frame_clip=True`, in how many pixels of the master dark was every sample "
        "rejected (so that they took the master's mean)?",
        "`master_dark(darks, frame_clip=True).n_used` counts the samples used per pixel.",
        lambda darks: _emptied_pixels(darks)),
    "lower-limit": Exercise(
        "Choose a `lower_limit` (ADU) that leaves out the faint flat but keeps every other "
        "flat within the upper limit.",
        "it must lie above the faint flat's median and below every other flat's.",
        lambda medians, upper_limit: _LowerLimit(np.asarray(medians, dtype=float), upper_limit)),
    "flats-used": Exercise(
        "How many flats does this filter's master flat combine, with the default limits?",
        "`pipeline.master_flat(name).accepted` says which flats are used.",
        lambda pipeline, filter_name: _flats_used(pipeline, filter_name)),
    "calibrate-by-hand": Exercise(
        "Calibrate the pixel (x, y) of the raw object frame by hand: what is (raw - dark) / flat "
        "there?",
        "use `raw[y, x]` (row first!), the master dark of the frame's exposure time and the "
        "master flat of its filter.",
        lambda pipeline, x, y: _calibrated_pixel(pipeline, x, y), tolerance=1e-3),
    "sky-level": Exercise(
        "What is the sky level of the calibrated frame (ADU)? The median of the whole frame "
        "is a good measure: the stars cover few pixels.",
        "`np.median(calibrated)`.",
        lambda pipeline: _sky_level(pipeline), tolerance=1.0),
    "products": Exercise(
        "How many FITS files did `ccdred reduce` write for this night?",
        "count `*.fits` in the output folder: masters, `_d` and `_df` files.",
        lambda folder: _products(folder)),
    "resume-option": Exercise(
        "Which option of `ccdred reduce` keeps the intact products of an interrupted run and "
        "makes only the rest?",
        "see `ccdred reduce --help`; it is one word.",
        lambda: "--resume"),
    "bias-drift": Exercise(
        "By how many ADU does the overscan level change from the first bias to the last "
        "(last minus first)?",
        "the median of each bias's overscan strip (`frame.preprocess.overscan.level(raw)`).",
        lambda biases: _bias_drift(biases), tolerance=0.5),
    "dark-current": Exercise(
        "What is this camera's typical dark current, in ADU per second (the median of the "
        "dark-current image)?",
        "the plan has a master of kind `dark_current`; `pipeline.master(name).data` is in ADU/s.",
        lambda pipeline: _dark_current(pipeline), tolerance=0.002),
    "surviving-threshold": Exercise(
        "From which threshold on (to 0.1) is the highest sample of the pixel used?",
        "raise `pipeline.threshold` step by step and look at `pipeline.pixel_stack(...)"
        ".rejected` of the highest value.",
        lambda pipeline, master, x, y: _surviving_threshold(pipeline, master, x, y),
        tolerance=0.051),
    "quietest-method": Exercise(
        "Which rejection method gives the master dark with the least pixel-to-pixel noise: "
        "sigclip, minmax or pclip?",
        "set `pipeline.rejection` to each and compare `ccdred.steps.pixel_noise` of "
        "`pipeline.master_dark().data`.",
        lambda pipeline: _quietest_method(pipeline)),
    "read-noise": Exercise(
        "What is the read noise of one frame, in ADU, from the two biases?",
        "the difference of two biases cancels their pattern and keeps both frames' noise: "
        "its standard deviation is √2 times one frame's. Subtract in float, not in the "
        "frames' 16-bit integers.",
        lambda bias_a, bias_b: _read_noise(bias_a, bias_b), tolerance=0.1),
    "gain": Exercise(
        "What is the gain, in electrons per ADU, from the two flats at one level and the two "
        "biases?",
        "signal: the flats' two means less the biases' two means; variance: that of the "
        "flats' difference less that of the biases' difference; the gain is their ratio "
        "(the Poisson variance of N electrons is N).",
        lambda flat_a, flat_b, bias_a, bias_b: _gain(flat_a, flat_b, bias_a, bias_b),
        tolerance=0.05),
    "hot-fraction": Exercise(
        "What fraction of the chip's pixels is hot? Answer a fraction between 0 and 1.",
        "count `badpix.hot_pixels(rate)` and divide by the number of pixels: `hot.mean()`.",
        lambda truth: float(np.mean(truth.hot_pixels)), tolerance=0.0003, fraction=True),
    "ray-or-star": Exercise(
        "Which of the two pixels, 'a' or 'b', is a cosmic ray?",
        "a star's light is spread over several pixels by the seeing; a ray's charge lands "
        "in one or two. Compare each with its neighbours.",
        lambda night, positions, index=0: _the_ray(night, positions, index)),
    "star-flux": Exercise(
        "By how many percent is the star's flux, measured with every pixel of its aperture, "
        "larger than with its masked pixels replaced by the mean of their unmasked "
        "neighbours?",
        "measure twice with `aperture_flux`, once on `calibrated` and once on "
        "`filled(calibrated, hot)`; answer 100 * (first / second - 1).",
        lambda image, mask, position, radius: _flux_change(image, mask, position, radius),
        tolerance=0.05),
    "master-bias-noise": Exercise(
        "How many times smaller is the noise of the master bias than that of one bias (each "
        "less the true bias)?",
        "the standard deviation of `bias - true_bias` over that of `master - true_bias`; the "
        "mean of N frames has √N times less noise.",
        lambda bias, master, true_bias: _noise_ratio(bias, master, true_bias), tolerance=0.1),
}


@dataclass(frozen=True)
class _LowerLimit:
    """The right answers to 'lower-limit': any limit that keeps exactly the right flats."""

    medians: np.ndarray
    upper_limit: float

    def __eq__(self, answer) -> bool:
        from .limits import FlatLimits

        try:
            limits = FlatLimits(self.upper_limit, float(answer))
        except (TypeError, ValueError):
            return False
        wanted = (self.medians <= self.upper_limit) & (self.medians > self.medians.min())
        return bool(np.array_equal(limits.accepts(self.medians), wanted))

    def __repr__(self) -> str:
        faint = self.medians.min()
        above = self.medians[self.medians > faint].min()
        return f"between {faint:.0f} and {above:.0f} ADU"
