"""How a planned master is made from files, in pieces every runner shares.

A master of the plan (:class:`~ccdred.plan.Master`) is made by its combiner
(:mod:`ccdred.calibrate`) in three kinds of piece: a statistic per frame
(clipping bounds, or a flat's median less its dark term), the combination
of a block of rows, and a finish. :func:`make_master` runs them in process;
the Dask runner submits the same functions as tasks; the interactive
pipeline feeds them its cached stacks. ``masters`` arguments map the
product names of the masters already made to their 2-D images.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from .calibrate import (ClipOptions, DarkCurrentCombiner, FlatCombiner, FlatLimits, MasterFlat,
                        StackCombiner, darks_for_frames, normalise_flat)
from .combine import CombineResult, frame_median
from .constants import MAD_TO_SIGMA
from .errors import BadPixelWarning, RejectedFlatWarning, SingleFlatWarning, SuspectFlatWarning
from .frames import read_stack, stack_dtype
from .plan import Master

__all__ = [
    "PixelStack",
    "SampleCounts",
    "StepOptions",
    "as_written",
    "combine_block",
    "frame_statistic",
    "left_out",
    "make_master",
    "master_row_blocks",
    "pixel_noise",
    "pixel_stack",
    "report_master",
    "sample_counts",
    "stack_statistics",
    "threshold_sweep",
    "written_part",
]

logger = logging.getLogger(__name__)

#: Bytes per sample when combining bias and darks: the raw value and its mask.
_MASK_BYTES = 1


@dataclass(frozen=True)
class StepOptions:
    """The options that decide the masters' values, and the combiner of each kind.

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

    def combiner(self, kind: str) -> StackCombiner | DarkCurrentCombiner | FlatCombiner:
        """The combiner of one kind of master."""
        if kind == "flat":
            return FlatCombiner(self.clip, self.limits)
        if kind == "dark_current":
            return DarkCurrentCombiner(self.clip)
        return StackCombiner(self.clip, self.frame_clip and kind == "dark")

    def provenance(self) -> dict:
        """The options as flat ``name: value`` pairs, for product headers."""
        return {**self.clip.frame_kwargs(), **self.clip.describe(), "frame_clip": self.frame_clip,
                "upper_limit": self.limits.upper, "lower_limit": self.limits.lower}


def _offsets(master: Master, masters, rows=None):
    """Images subtracted from each frame's samples, and which image each frame takes."""
    if master.kind == "dark_current":
        return np.asarray(masters[master.bias])[slice(None) if rows is None else rows], None
    if master.kind == "flat":
        images = {term: term.image(masters, rows) for term in set(master.terms)}
        return darks_for_frames(master.terms, images)
    return None, None


def frame_statistic(master: Master, options: StepOptions, i: int, image, masters):
    """The statistic of frame ``i`` of a master, from its whole (preprocessed) image."""
    combiner = options.combiner(master.kind)
    if master.kind == "flat":
        return combiner.frame_statistics(image, np.asarray(master.terms[i].image(masters)))
    return combiner.frame_statistics(image)


def stack_statistics(master: Master, options: StepOptions, stack, masters, map_frames=map) -> list:
    """Every frame's statistic, from a whole stack (``map_frames`` measures the frames)."""
    return list(map_frames(lambda i: frame_statistic(master, options, i, stack[i], masters),
                           range(len(stack))))


def file_statistic(master: Master, options: StepOptions, i: int, masters):
    """The statistic of frame ``i``, read from its file (a task of its own on a cluster)."""
    return frame_statistic(master, options, i, master.frames[i].read(), masters)


def accepted_flats(master: Master, options: StepOptions, medians) -> np.ndarray:
    """The flats of a master flat within the limits (InputError naming each when none)."""
    return options.limits.select(medians, [f.path for f in master.frames], master.filter)


def combine_block(master: Master, options: StepOptions, stack, statistics, masters,
                  rows=None) -> CombineResult:
    """Combine a stack holding the master's frames (or a block of their ``rows``)."""
    combiner = options.combiner(master.kind)
    offsets, index = _offsets(master, masters, rows)
    if master.kind == "flat":
        accepted = accepted_flats(master, options, statistics)
        return combiner.combine(stack, statistics, accepted, offsets=offsets, offset_index=index)
    if master.kind == "dark_current":
        return combiner.combine(stack, [f.exptime for f in master.frames], offsets=offsets)
    return combiner.combine(stack, statistics)


def file_block(master: Master, options: StepOptions, rows, statistics, masters) -> CombineResult:
    """Combine one block of rows, read from the files (a task of its own on a cluster)."""
    if master.kind != "flat":
        return combine_block(master, options, read_stack(master.frames, rows), statistics,
                             masters, rows)
    accepted = accepted_flats(master, options, statistics)
    used = [frame for frame, ok in zip(master.frames, accepted, strict=True) if ok]
    offsets, index = _offsets(master, masters, rows)
    return options.combiner("flat").combine(read_stack(used, rows),
                                            np.asarray(statistics)[accepted],
                                            np.ones(len(used), dtype=bool), offsets=offsets,
                                            offset_index=index[accepted])


def finish(master: Master, options: StepOptions, parts, statistics) -> CombineResult | MasterFlat:
    """Join the row blocks into the master."""
    combiner = options.combiner(master.kind)
    if master.kind == "flat":
        return combiner.finish(parts, statistics, accepted_flats(master, options, statistics))
    return combiner.finish(parts)


def master_row_blocks(master: Master, budget: int) -> list[slice]:
    """Row blocks such that a block of the master's stack fits in ``budget`` bytes."""
    rows, cols = master.frames[0].shape
    per_sample = stack_dtype(master.frames).itemsize + (0 if master.kind == "flat" else _MASK_BYTES)
    step = max(1, min(rows, budget // max(1, len(master.frames) * cols * per_sample)))
    return [slice(start, min(rows, start + step)) for start in range(0, rows, step)]


def make_master(master: Master, options: StepOptions, masters, *, budget: int = 1 << 30,
                map_frames=map, stack=None, statistics=None) -> CombineResult | MasterFlat:
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
    """
    logger.info("making %s from %d frames", master.label, len(master.frames))
    blocks = master_row_blocks(master, budget)
    if master.kind == "dark_current" and stack is None and len(blocks) == 1:
        return finish(master, options, [_current_by_exptime(master, options, masters, map_frames)],
                      None)
    if stack is not None or len(blocks) == 1:
        stack = read_stack(master.frames, map_frames=map_frames) if stack is None else stack
        if statistics is None:
            statistics = stack_statistics(master, options, stack, masters, map_frames)
        parts = [combine_block(master, options, stack, statistics, masters)]
        del stack  # (this reference) before finishing, which makes a flat's normalised image
    else:
        statistics = list(map_frames(lambda i: file_statistic(master, options, i, masters),
                                     range(len(master.frames))))
        parts = [file_block(master, options, rows, statistics, masters) for rows in blocks]
    return finish(master, options, parts, statistics)


def _current_by_exptime(master: Master, options: StepOptions, masters, map_frames) -> CombineResult:
    """The dark current with the darks read one exposure time at a time (less memory)."""
    offsets, _ = _offsets(master, masters)
    return options.combiner(master.kind).combine(
        None, [f.exptime for f in master.frames], offsets=offsets,
        read=lambda frames: read_stack([master.frames[i] for i in frames], map_frames=map_frames))


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


def pixel_stack(master: Master, options: StepOptions, stack, statistics, masters, result,
                x: int, y: int) -> PixelStack:
    """The samples of one pixel of a master and the rejection's decisions on them.

    Parameters
    ----------
    master : Master
    options : StepOptions
    stack : numpy.ndarray
        The master's frames (whole; only the pixel is read from it).
    statistics : list
        The frames' statistics, as the master was made with.
    masters : mapping of str to numpy.ndarray
        Images of the masters it needs.
    result : CombineResult or MasterFlat
        The master itself (for its value at the pixel).
    x, y : int
        Column and row, 0-based.
    """
    if master.kind == "dark_current":
        msg = (f"{master.name} is fitted across exposure times; look at the samples of a "
               f"bias, a master dark or a master flat")
        raise ValueError(msg)
    rows, cols = np.shape(stack)[1:]
    if not (0 <= x < cols and 0 <= y < rows):
        msg = f"pixel (x={x}, y={y}) lies outside {master.name} ({cols} x {rows})"
        raise ValueError(msg)
    where = (slice(y, y + 1), slice(x, x + 1))
    pixel = np.asarray(stack)[(slice(None), *where)]
    decided = combine_block(master, options, pixel, statistics, masters, where)
    offsets, index = _offsets(master, masters, where)
    combiner, frames = options.combiner(master.kind), list(master.frames)
    if master.kind == "flat":
        accepted = accepted_flats(master, options, statistics)
        trace = combiner.trace(pixel, statistics, accepted, offsets=offsets, offset_index=index)
        frames = [frame for frame, ok in zip(frames, accepted, strict=True) if ok]
    else:
        trace = combiner.trace(pixel, statistics)
    rejected = decided.n_rejected_per_frame > 0
    bounds = [tuple(map(float, step[:, 0, 0])) for step in trace.bounds]
    return PixelStack(
        master.name, x, y, tuple(f.path.name for f in frames), trace.values[:, 0, 0],
        trace.premasked[:, 0, 0], rejected, np.where(rejected, trace.iteration[:, 0, 0], 0),
        tuple(b for b in bounds if not np.isnan(b).all()), float(decided.data[0, 0]),
        float(result.data[y, x]))


def threshold_sweep(master: Master, options: StepOptions, stack, statistics, masters, thresholds,
                    rows=None) -> dict:
    """How a master depends on the sigma-clipping threshold of its combination.

    Each threshold combines the master anew with symmetric sigma clipping
    (``rejection='sigclip'``, no ``lsigma``/``hsigma``); what the master is
    made from stays as ``options`` make it (the per-frame clipping of darks,
    the darks subtracted from flats), so the curve shows the combination's
    own choice.

    Parameters
    ----------
    master, options, stack, statistics, masters
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
    kept = left_out(master, options, block, statistics, masters, rows)

    def combined(clip):
        result = combine_block(master, replace(options, clip=clip), block, statistics, masters,
                               rows)
        image = normalise_flat(result.data)[0] if master.kind == "flat" else result.data
        return image, sample_counts(result, kept)

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


#: Clipping that rejects no sample: what a combination with it does not use was left out
#: before the combination.
_REJECTS_NOTHING = ClipOptions(threshold=1e300)


def left_out(master: Master, options: StepOptions, stack, statistics, masters, rows=None) -> int:
    """How many samples of a master (or of its ``rows``) are left out before the combination.

    Counted by the combination itself, with a clipping that rejects nothing:
    a sample it does not use was not finite, or was outside its frame's own
    clipping bounds (the per-frame clipping of darks, from ``statistics``).
    Arguments as for :func:`combine_block`.
    """
    result = combine_block(master, replace(options, clip=_REJECTS_NOTHING), stack, statistics,
                           masters, rows)
    return int(result.n_rejected_per_frame.sum())


def sample_counts(result: CombineResult, left_out_samples: int) -> SampleCounts:
    """A master's :class:`SampleCounts`, from its combination and its :func:`left_out` count."""
    not_used = int(result.n_rejected_per_frame.sum())
    return SampleCounts(result.n_frames * result.n_used.size, left_out_samples,
                        not_used - left_out_samples)


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


def report_master(master: Master, result, limits: FlatLimits) -> None:
    """Log a master's inputs; warn about rejected flats and unusable pixels."""
    if master.kind != "flat":
        return
    statuses = limits.statuses(result.medians)
    for frame, median, ok, verdict in zip(master.frames, result.medians, result.accepted,
                                          statuses, strict=True):
        logger.info("  %s: median = %.1f%s", frame.path, median,
                    "" if ok else f" (REJECTED: {verdict[len('rejected: '):]})")
        if verdict.startswith("used, suspect"):
            warnings.warn(f"{frame.path}: flat {verdict[len('used, '):]}; used (check it, or "
                          f"set a lower or upper limit)", SuspectFlatWarning, stacklevel=3)
        if verdict.startswith("used ("):
            warnings.warn(f"{frame.path}: flat median {median:.1f} outside the limits, but the "
                          f"only flat of filter {master.filter!r}; used", RejectedFlatWarning,
                          stacklevel=3)
        if not ok:
            warnings.warn(f"{frame.path}: flat median {median:.1f} outside the limits; not used "
                          f"({verdict[len('rejected: '):]})", RejectedFlatWarning, stacklevel=3)
    if result.accepted.sum() == 1:
        warnings.warn(f"master flat {master.filter!r}: one flat only; it is normalised without "
                      f"clipping",
                      SingleFlatWarning, stacklevel=3)
    if result.n_bad_pixels:
        warnings.warn(f"master flat {master.filter!r}: {result.n_bad_pixels} pixels had no usable value (NaN, "
                      f"zero or negative in every flat) and were set to 1.0",
                      BadPixelWarning, stacklevel=3)
