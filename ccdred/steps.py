"""How a planned master is made from files, in pieces every runner shares.

A master of the plan (:class:`~ccdred.plan.Master`) is made by its combiner
(:mod:`ccdred.combiners`, one protocol for every kind) in pieces: a statistic
per frame (clipping bounds, or a flat's median less its dark term), the
choice of the frames that enter (once), the combination of a block of rows,
and a finish. :func:`make_master` runs them in process;
the Dask runner submits the same functions as tasks; the interactive
pipeline feeds them its cached stacks. ``masters`` arguments map the
product names of the masters already made to their 2-D images, and
:data:`PREMASK` to the bad-pixel mask a master's combination leaves out, where a
runner gives one (see :func:`premask`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from . import fitsio
from .combine import (ClipOptions, CombineResult, frame_median, mean_variance, model_bounds,
                      model_sigma, sigma_bounds)
from .combiners import (Combiner, DarkCurrentCombiner, FlatCombiner, FrameChoice, MasterFlat,
                        StackCombiner, darks_for_frames, frame_statistics)
from .constants import MAD_TO_SIGMA
from .errors import InputError, InputProblem
from .frames import read_stack, stack_dtype
from .limits import FlatLimits
from .plan import Master

__all__ = [
    "PREMASK",
    "PixelStack",
    "SampleCounts",
    "StepOptions",
    "as_written",
    "choose",
    "combine_block",
    "frame_statistic",
    "make_master",
    "master_row_blocks",
    "offsets",
    "pixel_noise",
    "pixel_stack",
    "premask",
    "read_library_master",
    "report_master",
    "sample_counts",
    "stack_statistics",
    "threshold_sweep",
    "written_part",
]

logger = logging.getLogger(__name__)

#: Why a night cannot give what needs its gain and read noise, and where to give them.
UNKNOWN_NOISE = ("needs the detector's gain and read noise, and this night's are not known (no "
                 "GAIN and RDNOISE in its headers, too few biases and flats to measure them): "
                 "give them with --gain and --read-noise (in the dashboard, the Detector card)")


@dataclass(frozen=True)
class StepOptions:
    """The options that decide the masters' values, and the combiner of each master.

    Parameters
    ----------
    clip : ClipOptions
    frame_clip : bool
        Sigma-clip each dark on its own first, for exact master darks (the
        course script's way: it hides hot pixels). The dark-current image is
        not frame-clipped: the pixels whose current differs are what scaling
        is for; the clipping across the darks still removes cosmic rays.
    limits : FlatLimits
    """

    clip: ClipOptions = field(default_factory=ClipOptions)
    frame_clip: bool = True
    limits: FlatLimits = field(default_factory=FlatLimits)

    def with_noise(self, noise) -> StepOptions:
        """These options with the detector's gain and read noise (a
        :class:`~ccdred.noise.DetectorNoise`, or None when unknown) in the rejection, where
        it is ``ccdclip`` (the others are returned as they are).

        Raises
        ------
        InputError
            ``ccdclip`` with neither ``noise`` nor the clip's own gain and read noise,
            saying where to give them.
        """
        if self.clip.rejection != "ccdclip":
            return self
        if noise is not None:
            return replace(self, clip=replace(self.clip, gain=noise.gain,
                                              read_noise=noise.read_noise))
        try:
            self.clip.noise_model()
        except ValueError as err:
            raise InputError([InputProblem(None, f"ccdclip {UNKNOWN_NOISE}")]) from err
        return self

    def combiner(self, master: Master) -> Combiner:
        """The combiner of a planned master."""
        return _COMBINERS[master.kind](self, master)

    def provenance(self) -> dict:
        """The options as flat ``name: value`` pairs, for product headers."""
        return {**self.clip.frame_kwargs(), **self.clip.describe(), "frame_clip": self.frame_clip,
                "upper_limit": self.limits.upper, "lower_limit": self.limits.lower}


#: Each kind of master's combiner, from the options and the planned master.
_COMBINERS = {
    "bias": lambda options, master: StackCombiner(_bias_clip(options.clip), frame_clip=False),
    "dark": lambda options, master: StackCombiner(options.clip, options.frame_clip),
    "dark_current": lambda options, master: DarkCurrentCombiner(
        options.clip, tuple(f.exptime for f in master.frames)),
    "flat": lambda options, master: FlatCombiner(options.clip, options.limits, master.filter,
                                                 mosaic=any(f.bayer for f in master.frames)),
}


def _bias_clip(clip: ClipOptions) -> ClipOptions:
    """A master bias's rejection, its noise model the read noise alone (a bias's level is the
    electronics' pedestal, not light): ``ccdclip`` clips with it, the pixel inspector shows
    it beside any other rejection's measured sigma."""
    return replace(clip, photon_noise=False)


#: The key of the bad-pixel mask among a master's images (``masters``): a runner puts it there
#: for the masters whose combination leaves its pixels out (see :func:`premask`).
PREMASK = "bad_pixels.fits"


def premask(masters, rows=None) -> np.ndarray | None:
    """The pixels (of ``rows``: a slice, or a tuple of slices) whose samples a master's
    combination leaves out: where the bad-pixel mask a runner gave among ``masters``
    (:data:`PREMASK`; uint8 bits) is not zero; None without one.

    Every frame's sample of such a pixel is pre-masked, through the kernel's ``mask`` as a
    not-finite sample is (counted in ``n_left_out_per_frame``): the pixel has no sample left
    and takes the value of a pixel whose every sample was rejected (the master's mean; 1.0 in
    a master flat), finite as every master is, with an infinite variance in its planes.
    Which pixels those are the mask itself says (``bad_pixels.fits``, and the ``MASK``
    plane of the calibrated frames). The frames' statistics (a flat's median, a dark's own
    clipping bounds) are measured without it, so the frames chosen and their scales stay.

    Examples
    --------
    >>> premask({PREMASK: np.array([[0, 4], [1, 0]], np.uint8)}, slice(1, 2)).tolist()
    [[True, False]]
    >>> premask({}) is None
    True
    """
    mask = masters.get(PREMASK)
    if mask is None:
        return None
    return np.asarray(mask)[slice(None) if rows is None else rows] != 0


def offsets(master: Master, masters, rows=None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The images subtracted from a master's frames (of ``rows``), and which each frame takes:
    its dark terms (flats), the master bias (the dark current), or none."""
    if master.terms:
        return darks_for_frames(master.terms, {term: term.image(masters, rows)
                                               for term in set(master.terms)})
    if master.bias:
        image = np.asarray(masters[master.bias])[slice(None) if rows is None else rows]
        return image[np.newaxis], np.zeros(len(master.frames), dtype=np.int64)
    return None, None


def frame_offset(master: Master, masters, i: int) -> np.ndarray | None:
    """The image subtracted from frame ``i`` of a master (see :func:`offsets`), alone."""
    if master.terms:
        return master.terms[i].image(masters)
    return np.asarray(masters[master.bias]) if master.bias else None


def frame_statistic(master: Master, options: StepOptions, i: int, image, masters):
    """The statistic of frame ``i`` of a master, from its whole (preprocessed) image."""
    return options.combiner(master).frame_statistic(image, frame_offset(master, masters, i))


def stack_statistics(master: Master, options: StepOptions, stack, masters, map_frames=map) -> list:
    """Every frame's statistic, from a whole stack (``map_frames`` measures the frames)."""
    images, index = offsets(master, masters)
    return frame_statistics(options.combiner(master), stack, images, index, map_frames)


def file_statistic(master: Master, options: StepOptions, i: int, masters):
    """The statistic of frame ``i``, read from its file (a task of its own on a cluster;
    not read when the combiner does not measure frames)."""
    image = master.frames[i].read() if options.combiner(master).measures_frames else None
    return frame_statistic(master, options, i, image, masters)


def choose(master: Master, options: StepOptions, statistics) -> FrameChoice:
    """The frames that enter a master (the flats within the limits), decided once from every
    frame's statistic; InputError naming the frames when there are none."""
    return options.combiner(master).choose(statistics, [f.path for f in master.frames])


def combine_block(master: Master, options: StepOptions, stack, choice: FrameChoice, masters,
                  rows=None) -> CombineResult:
    """Combine a stack holding the frames of ``choice`` (or a block of their ``rows``)."""
    images, index = offsets(master, masters, rows)
    return options.combiner(master).combine(stack, choice, images, _of(index, choice),
                                            premask(masters, rows))


def file_block(master: Master, options: StepOptions, rows, choice: FrameChoice,
               masters) -> CombineResult:
    """Combine one block of rows of the used frames, read from the files (a task of its own
    on a cluster)."""
    used = choice.of_used()
    stack = read_stack([master.frames[i] for i in used.frames], rows)
    return combine_block(master, options, stack, used, masters, rows)


def finish(master: Master, options: StepOptions, parts, choice: FrameChoice, masters=None):
    """Join the row blocks into the master (``masters``: for its :func:`premask`)."""
    return options.combiner(master).finish(parts, choice, premask(masters or {}))


def _of(index, choice: FrameChoice):
    """The offset index of the frames a choice describes."""
    return None if index is None else np.asarray(index)[choice.frames]


def master_row_blocks(master: Master, options: StepOptions, budget: int) -> list[slice]:
    """Row blocks such that a block of the master's stack (and the combination's work
    beside it) fits in ``budget`` bytes."""
    if master.library is not None:
        return [slice(None)]  # read whole, not combined
    rows, cols = master.frames[0].shape
    per_sample = stack_dtype(master.frames).itemsize + options.combiner(master).work_bytes
    step = max(1, min(rows, budget // max(1, len(master.frames) * cols * per_sample)))
    return [slice(start, min(rows, start + step)) for start in range(0, rows, step)]


def make_master(master: Master, options: StepOptions, masters, *, budget: int = 1 << 30,
                map_frames=map, stack=None, statistics=None):
    """Make one master in this process: whole when its stack fits ``budget``, else in row blocks.

    Parameters
    ----------
    master : Master
    options : StepOptions
    masters : mapping of str to numpy.ndarray
        Images of the masters it needs.
    budget : int, optional
        Bytes its stack may take.
    map_frames : callable, optional
        A ``map`` (e.g. a thread pool's) to read and measure frames with.
    stack : numpy.ndarray, optional
        The master's frames, already read.
    statistics : list, optional
        The frames' statistics, already measured (with ``stack``).

    Returns
    -------
    CombineResult or MasterFlat
    """
    if master.library is not None:
        return read_library_master(master, options)
    logger.info("making %s from %d frames", master.label, len(master.frames))
    combiner, blocks = options.combiner(master), master_row_blocks(master, options, budget)
    if stack is None and len(blocks) == 1 and not combiner.measures_frames:
        return _combine_reading(master, options, masters, map_frames)
    if stack is not None or len(blocks) == 1:
        stack = read_stack(master.frames, map_frames=map_frames) if stack is None else stack
        if statistics is None:
            statistics = stack_statistics(master, options, stack, masters, map_frames)
        choice = choose(master, options, statistics)
        parts = [combine_block(master, options, stack, choice, masters)]
        del stack  # (this reference) before finishing, which makes a flat's normalised image
    else:
        statistics = list(map_frames(lambda i: file_statistic(master, options, i, masters),
                                     range(len(master.frames))))
        choice = choose(master, options, statistics)
        parts = [file_block(master, options, rows, choice, masters) for rows in blocks]
    return finish(master, options, parts, choice, masters)


def read_library_master(master: Master, options: StepOptions) -> CombineResult | MasterFlat:
    """A master of the calibration library (``master.library``), read from its file as its
    combiner's result of no frames (:meth:`~ccdred.combiners.Combiner.read_result`), so
    that every runner applies it as one it made."""
    logger.info("reading %s: %s", master.label, master.library.describe())
    data = fitsio.read_image(master.library.path)
    if data.ndim != 2:
        raise InputError([InputProblem(master.library.path, "a library master must be 2-D")])
    return options.combiner(master).read_result(data)


def _combine_reading(master: Master, options: StepOptions, masters, map_frames):
    """A master whose frames need no statistic (the dark current), with its frames read
    by the combination as it needs them (one exposure time at a time: less memory)."""
    choice = choose(master, options, [None] * len(master.frames))
    images, index = offsets(master, masters)
    part = options.combiner(master).combine(
        None, choice, images, index, premask(masters),
        read=lambda frames: read_stack([master.frames[i] for i in frames], map_frames=map_frames))
    return finish(master, options, [part], choice, masters)


@dataclass(frozen=True)
class PixelStack:
    """One pixel of a master: its samples across the frames and what the rejection did to them.

    Attributes
    ----------
    master : str
        The master's product name.
    x, y : int
        Column and row (0-based, as the images show them).
    frames : tuple of str
        File names of the frames combined (flats outside the limits are not).
    values : numpy.ndarray
        Each frame's sample as combined: less its offset (bias, dark), scaled
        (flats: to the first accepted flat's level).
    premasked : numpy.ndarray
        Bool per frame: left out before the combination (not finite, or
        outside the frame's own clipping bounds when darks are frame-clipped;
        see :class:`SampleCounts`).
    rejected : numpy.ndarray
        Bool per frame: not used (left out, or rejected by the combination),
        the kernel's own decision.
    iteration : numpy.ndarray
        Int per frame: the iteration (from 1) whose bounds rejected the
        sample; 0 if used or left out.
    bounds : tuple of (float, float, float)
        ``(low, centre, high)`` of each iteration.
    combined : float
        The weighted mean of the used samples, in the samples' units.
    value : float
        The master's value at the pixel (a master flat's is normalised).
    uncertainty : float
        The standard error of ``combined`` from its used samples
        (:func:`~ccdred.combine.mean_variance`); NaN with fewer than two.
    measured_sigma, model_sigma : float
        The spread of the samples at the last iteration's centre: measured from the used
        samples (the rejection's ``stdfunc``: their standard deviation, or MAD-based), and
        the CCD noise model's (:func:`~ccdred.combine.model_sigma` with the night's gain,
        read noise and ``snoise``; read noise alone for a bias). NaN for ``minmax`` and
        ``pclip`` (no sigma), with no used sample, or (the model's) when the gain or read
        noise is unknown.
    measured_bounds, model_bounds : tuple of (float, float)
        ``(low, high)``: the last centre -/+ the thresholds times each sigma
        (:func:`~ccdred.combine.sigma_bounds`); with ``ccdclip`` the model's are the
        rejection's final bounds.
    """

    master: str
    x: int
    y: int
    frames: tuple
    values: np.ndarray
    premasked: np.ndarray
    rejected: np.ndarray
    iteration: np.ndarray
    bounds: tuple
    combined: float
    value: float
    uncertainty: float = float("nan")
    measured_sigma: float = float("nan")
    model_sigma: float = float("nan")
    measured_bounds: tuple = (float("nan"), float("nan"))
    model_bounds: tuple = (float("nan"), float("nan"))


def pixel_stack(master: Master, options: StepOptions, stack, choice: FrameChoice, masters,
                result, x: int, y: int, noise=None) -> PixelStack:
    """The samples of one pixel of a master and the rejection's decisions on them.

    Parameters
    ----------
    master : Master
    options : StepOptions
    stack : numpy.ndarray
        The master's frames (whole; only the pixel is read from it).
    choice : FrameChoice
        The frames that entered the master (:func:`choose`).
    masters : mapping of str to numpy.ndarray
        Images of the masters it needs.
    result : CombineResult or MasterFlat
        The master itself (for its value at the pixel).
    x, y : int
        Column and row, 0-based.
    noise : DetectorNoise, optional
        The night's gain and read noise, for the noise model's sigma beside the measured
        one (a ``ccdclip`` rejection's own are in ``options`` already).
    """
    rows, cols = np.shape(stack)[1:]
    if not (0 <= x < cols and 0 <= y < rows):
        msg = f"pixel (x={x}, y={y}) lies outside {master.name} ({cols} x {rows})"
        raise ValueError(msg)
    where = (slice(y, y + 1), slice(x, x + 1))
    pixel = np.asarray(stack)[(slice(None), *where)]
    images, index = offsets(master, masters, where)
    try:
        trace = options.combiner(master).trace(pixel, choice, images, _of(index, choice),
                                               premask(masters, where))
    except ValueError as err:
        raise ValueError(f"{master.name}: {err}") from err
    decided = combine_block(master, options, pixel, choice, masters, where)
    rejected = decided.n_rejected_per_frame > 0
    bounds = tuple(b for b in (tuple(map(float, step[:, 0, 0])) for step in trace.bounds)
                   if not np.isnan(b).all())
    return PixelStack(
        master.name, x, y, tuple(master.frames[i].path.name for i in choice.frames[choice.used]),
        trace.values[:, 0, 0], trace.premasked[:, 0, 0], rejected,
        np.where(rejected, trace.iteration[:, 0, 0], 0), bounds, float(decided.data[0, 0]),
        float(result.data[y, x]), _standard_error(trace, ~rejected, decided.data),
        **_sigmas(trace.values[~rejected, 0, 0], bounds[-1][1] if bounds else np.nan,
                  _model_clip(options.combiner(master).clip, noise)))


def _model_clip(clip: ClipOptions, noise) -> ClipOptions:
    """A combiner's rejection with the night's gain and read noise (``noise``: a
    :class:`~ccdred.noise.DetectorNoise` or None), for its noise model (``ccdclip``'s has
    them already)."""
    if noise is None or clip.rejection == "ccdclip":
        return clip
    return replace(clip, gain=noise.gain, read_noise=noise.read_noise)


def _sigmas(used, centre, clip: ClipOptions) -> dict:
    """A pixel's measured and model sigmas about ``centre`` and their bounds (see
    :class:`PixelStack`), from its ``used`` samples; none for a rejection without sigma."""
    if clip.rejection not in ("sigclip", "ccdclip") or not used.size:
        return {}
    measured = (MAD_TO_SIGMA * np.median(np.abs(used - np.median(used)))
                if clip.stdfunc == "mad_std" else np.std(used))
    sigmas = {"measured_sigma": float(measured),
              "measured_bounds": tuple(map(float, sigma_bounds(centre, measured, clip)))}
    if clip.gain is not None and clip.read_noise is not None:
        sigmas |= {"model_sigma": float(model_sigma(centre, *clip.noise_model())),
                   "model_bounds": tuple(map(float, model_bounds(centre, clip)))}
    return sigmas


def _standard_error(trace, used, combined) -> float:
    """The standard error of one pixel's combined value from its ``used`` samples."""
    used = used[:, None, None]
    weights = trace.weights[:, None, None] * used
    return float(np.sqrt(mean_variance(trace.values, used, weights, combined))[0, 0])


def threshold_sweep(master: Master, options: StepOptions, stack, choice: FrameChoice, masters,
                    thresholds, rows=None) -> dict:
    """How a master depends on the sigma-clipping threshold of its combination.

    Each threshold combines the master anew with symmetric sigma clipping
    (``rejection='sigclip'``, no ``lsigma``/``hsigma``); what the master is
    made from stays as ``options`` make it (the per-frame clipping of darks,
    the darks subtracted from flats), so the curve shows the combination's
    own choice.

    Parameters
    ----------
    master, options, stack, choice, masters
        As for :func:`pixel_stack`.
    thresholds : sequence of float
    rows : slice, optional
        Only these rows of the master (e.g. every 4th, to be quick).

    Returns
    -------
    dict
        Arrays, one value per threshold: ``threshold``; ``rejected_fraction``,
        the samples rejected by the combination, as a fraction of those that
        entered it (:attr:`SampleCounts.rejected_fraction`); ``noise``, the
        master's pixel-to-pixel noise (:func:`pixel_noise`, MAD-based);
        ``change``, the mean absolute difference from the master ``options``
        make (master flats compared normalised, as they are written). And
        ``left_out_fraction``, a float: the samples left out before the
        combination, whatever its threshold (:attr:`SampleCounts.left_out_fraction`).
    """
    rows = slice(None) if rows is None else rows
    block = np.ascontiguousarray(np.asarray(stack)[:, rows])

    def combined(clip):
        swept = replace(options, clip=clip)
        result = combine_block(master, swept, block, choice, masters, rows)
        counts = sample_counts(result)  # before finishing fills the pixels left empty
        return swept.combiner(master).finish([result], choice).data, counts

    current, counts = combined(options.clip)
    sweep = {"threshold": np.asarray(thresholds, dtype=np.float64)}
    columns = {"rejected_fraction": [], "noise": [], "change": []}
    for threshold in sweep["threshold"]:
        image, counts = combined(replace(options.clip, rejection="sigclip", threshold=threshold,
                                         lsigma=None, hsigma=None))
        columns["rejected_fraction"].append(counts.rejected_fraction)
        columns["noise"].append(pixel_noise(image))
        columns["change"].append(float(np.nanmean(np.abs(image - current))))
    return (sweep | {name: np.array(values) for name, values in columns.items()}
            | {"left_out_fraction": counts.left_out_fraction})


@dataclass(frozen=True)
class SampleCounts:
    """What became of a master's samples, in two counts that are never mixed.

    A sample is *left out before the combination* when it is not finite or,
    for darks clipped frame by frame (the course script's way), outside its
    own frame's clipping bounds; the others enter the
    combination, whose rejection (sigma clipping, minmax or pclip across the
    frames) *rejects* some of them. A clip map shows the two together: the
    samples *not used*.

    Attributes
    ----------
    samples : int
        Every sample of the frames combined (frames x pixels).
    left_out : int
        Samples left out before the combination.
    rejected : int
        Samples rejected by the combination, of the ``samples - left_out``
        that entered it.

    Examples
    --------
    >>> counts = SampleCounts(samples=1000, left_out=20, rejected=49)
    >>> counts.entered, f"{counts.rejected_fraction:.1%}", f"{counts.left_out_fraction:.1%}"
    (980, '5.0%', '2.0%')
    """

    samples: int
    left_out: int
    rejected: int

    @property
    def entered(self) -> int:
        """Samples that entered the combination."""
        return self.samples - self.left_out

    @property
    def rejected_fraction(self) -> float:
        """Samples rejected by the combination, as a fraction of those that entered it."""
        return self.rejected / max(self.entered, 1)

    @property
    def left_out_fraction(self) -> float:
        """Samples left out before the combination, as a fraction of all samples."""
        return self.left_out / max(self.samples, 1)


def sample_counts(result: CombineResult) -> SampleCounts:
    """A master's :class:`SampleCounts`, from its combination (which counts both)."""
    left_out = int(result.n_left_out_per_frame.sum())
    return SampleCounts(result.n_frames * result.n_used.size, left_out,
                        int(result.n_rejected_per_frame.sum()) - left_out)


def pixel_noise(image) -> float:
    """The pixel-to-pixel noise of an image: a robust sigma of the differences of neighbouring
    pixels along rows, over sqrt(2) (gradients and vignetting cancel; NaN ignored)."""
    differences = np.diff(np.asarray(image, dtype=np.float64), axis=1)
    median = frame_median(differences)
    return MAD_TO_SIGMA * frame_median(np.abs(differences - median)) / np.sqrt(2.0)


def written_part(result: CombineResult | MasterFlat, dtype) -> CombineResult | MasterFlat:
    """What a night keeps of a master once made: its image as written (see
    :func:`as_written`), a bias's or dark's counts, a flat's medians and choices; not a
    flat's un-normalised combination (a float64 image)."""
    data = as_written(result.data, dtype)
    if isinstance(result, MasterFlat):
        return replace(result, data=data, combine=None)
    return replace(result, data=data)


def as_written(image, dtype) -> np.ndarray:
    """A master's image as its product holds it, in ``dtype`` (native byte order; no copy
    when it already is).

    The later steps of a night apply their masters so, as IRAF and the course
    script apply the files they wrote: every runner's flats and objects are
    calibrated with exactly the masters a user finds on disk.
    """
    return np.asarray(image, dtype=np.dtype(dtype))


def report_master(master: Master, options: StepOptions, result) -> None:
    """Log a master's inputs; warn about rejected flats and unusable pixels (a library
    master was reported when it was made)."""
    if master.library is not None:
        return
    options.combiner(master).report(result, [f.path for f in master.frames])
