"""Calibration steps: their options, the combiners of masters, calibrating a frame.

Each step is a small frozen object holding its validated options, in the
manner of astropy's ``SigmaClip``: :class:`ClipOptions` and :class:`FlatLimits`
(overscan and trim are in :mod:`ccdred.sections`); :class:`StackCombiner` (master
bias, master dark, dark-current image) and :class:`FlatCombiner` (master flat) know
their own decomposition into per-frame statistics, the combination of a
block of rows, and a finish, so that every runner (in process, Dask, the
interactive pipeline) runs the same pieces. The one-call functions
:func:`master_bias`, :func:`master_dark`, :func:`master_flat` and
:func:`calibrate_frame` wrap them.

Arrays in, new arrays out: inputs are never changed, and nothing here touches
files. With default options the results equal the course script's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .combine import (ClipOptions, CombineResult, RejectionTrace, concatenate_rows,
                      frame_clip_bounds, frame_median, offset_images, sigma_clip_combine,
                      trace_rejection)
from .errors import InputError, InputProblem

__all__ = [
    "ClipOptions",
    "DarkCurrentCombiner",
    "FlatCombiner",
    "FlatLimits",
    "MasterFlat",
    "StackCombiner",
    "calibrate_frame",
    "calibration_steps",
    "darks_for_frames",
    "flat_acceptance",
    "frame_medians",
    "master_bias",
    "master_dark",
    "master_flat",
    "normalise_flat",
    "subtract_dark",
]


# -- options -------------------------------------------------------------------


@dataclass(frozen=True)
class FlatLimits:
    """Which flats a master flat may use, judged by their (dark-subtracted) medians.

    Parameters
    ----------
    upper : float
        Reject flats whose median is above this (saturation, non-linearity).
    lower : float or None
        Reject flats whose median is below this (under-exposed); off when None.

    Examples
    --------
    >>> FlatLimits(upper=10).accepts([5.0, 50.0, float("nan")]).tolist()
    [True, False, False]
    >>> FlatLimits(upper=10).verdict(50.0)
    'rejected: above upper limit 10'
    """

    upper: float = 38000.0
    lower: float | None = None

    def __post_init__(self):
        for name in ("upper", "lower"):
            value = getattr(self, name)
            if value is None and name == "lower":
                continue
            if not isinstance(value, int | float | np.number) or math.isnan(value):
                msg = f"{name} limit must be a number, got {value!r}"
                raise ValueError(msg)
            object.__setattr__(self, name, float(value))

    def accepts(self, medians) -> np.ndarray:
        """Bool per flat: its median lies within the limits (a NaN median never does)."""
        medians = np.asarray(medians, dtype=np.float64)
        accepted = medians <= self.upper
        if self.lower is not None:
            accepted &= medians >= self.lower
        return accepted

    def verdict(self, median: float) -> str:
        """'used', or why a flat of this median is rejected."""
        if not np.isfinite(median):
            return "rejected: median is not a number"
        if median > self.upper:
            return f"rejected: above upper limit {self.upper:g}"
        if self.lower is not None and median < self.lower:
            return f"rejected: below lower limit {self.lower:g}"
        return "used"

    def describe(self) -> str:
        """The limits in words, for messages."""
        lower = "off" if self.lower is None else f"{self.lower:g}"
        return f"upper {self.upper:g}, lower {lower}"

    def statuses(self, medians) -> list[str]:
        """Each flat's :meth:`verdict`, as :meth:`select` decides (a lone flat is used),
        with used flats far from their filter's level marked suspect."""
        medians = np.asarray(medians, dtype=np.float64)
        if _lone_usable(medians):
            return ["used (the only flat; outside the limits)"
                    if self.verdict(medians[0]) != "used" else "used"]
        statuses = [self.verdict(m) for m in medians]
        used = np.array([status == "used" for status in statuses])
        for i in np.flatnonzero(suspect_levels(medians, used)):
            statuses[i] = f"used, suspect: {suspect_reason(medians[i], medians[used])}"
        return statuses

    def select(self, medians, paths, filter_name) -> np.ndarray:
        """The accepted flats; InputError naming every flat and its median when none is.

        The limits choose among flats: a filter's only flat (with a finite
        median) is used even outside them, since there is no other to choose.

        Parameters
        ----------
        medians : array_like
            Median of each flat.
        paths : sequence of path-like
            The flats' files (or names), for the message.
        filter_name : str
            Their filter, for the message.
        """
        accepted = self.accepts(medians) | _lone_usable(medians)
        if not accepted.any():
            details = ", ".join(f"{_file_name(p)} {m:.0f}" for p, m in zip(paths, medians, strict=True))
            msg = (f"too few flats of filter {filter_name!r} within the limits "
                   f"({self.describe()}): {details}")
            raise InputError([InputProblem(paths[0] if _is_path(paths[0]) else None, msg)])
        dark = [InputProblem(p if _is_path(p) else None,
                             f"flat of filter {filter_name!r} has median {m:.1f} ADU less its "
                             "dark term (not positive), so it cannot be scaled or weighted: "
                             "is it a flat, and are the bias and darks right?")
                for p, m, used in zip(paths, medians, accepted, strict=True) if used and m <= 0]
        if dark:
            raise InputError(dark)
        return accepted


#: A used flat whose level differs from its filter's median level by more than this
#: factor is suspect (a robust rule: the median of the group is not moved by one outlier).
SUSPECT_FACTOR = 10.0


def suspect_levels(medians, used) -> np.ndarray:
    """Bool per flat: used, and more than :data:`SUSPECT_FACTOR` from the used flats' median.

    Flagging changes nothing in the combination (the course's products stay as
    they are); it tells the user which flat to look at.
    """
    medians, used = np.asarray(medians, dtype=np.float64), np.asarray(used, dtype=bool)
    if used.sum() < 3:
        return np.zeros(medians.shape, dtype=bool)
    level = np.median(medians[used])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(np.log(medians / level))
    return used & (ratio > np.log(SUSPECT_FACTOR))


def suspect_reason(median, used_medians) -> str:
    """Why a flat is suspect, in words."""
    level = float(np.median(used_medians))
    factor = level / median if median < level else median / level
    return (f"median {median:.0f}, {factor:.0f}x {'below' if median < level else 'above'} the "
            f"filter's {level:.0f}")


def _lone_usable(medians) -> bool:
    medians = np.asarray(medians, dtype=np.float64)
    return medians.size == 1 and bool(np.isfinite(medians[0]))


def _file_name(path) -> str:
    return getattr(path, "name", str(path))


def _is_path(value) -> bool:
    return hasattr(value, "name")


# -- combiners -------------------------------------------------------------------------


@dataclass(frozen=True)
class StackCombiner:
    """The sigma-clipped mean of a stack: master bias, master dark, dark-current image.

    The work splits into :meth:`frame_statistics` (each whole frame's own
    clipping bounds), :meth:`combine` (any block of rows) and :meth:`finish`
    (join the blocks; pixels where every sample was rejected take the mean
    of the master), which runners may run where they like.

    Parameters
    ----------
    clip : ClipOptions
        Clipping across the stack, and of each frame on its own.
    frame_clip : bool
        First sigma-clip each frame on its own and leave out what it rejects
        (the course script's behaviour for darks: it masks hot pixels and
        cosmic rays).
    """

    clip: ClipOptions = field(default_factory=ClipOptions)
    frame_clip: bool = True

    def frame_statistics(self, image) -> tuple[float, float] | None:
        """One whole frame's clipping bounds (None without frame clipping)."""
        if not self.frame_clip:
            return None
        return frame_clip_bounds(image, **self.clip.frame_kwargs())

    def combine(self, stack, statistics=None, *, offsets=None, offset_index=None,
                scale=None) -> CombineResult:
        """The clipped mean of (a block of rows of) the stack; NaN where nothing is left.

        ``statistics`` are the frames' :meth:`frame_statistics`; ``offsets``
        (images, e.g. a master bias), ``offset_index`` and ``scale`` (per
        frame, e.g. 1 / exposure time) are as for
        :func:`~ccdred.combine.sigma_clip_combine`.
        """
        return sigma_clip_combine(stack, keep_mask=False, **self._arguments(
            statistics, offsets, offset_index, scale))

    def trace(self, stack, statistics=None, *, offsets=None, offset_index=None,
              scale=None) -> RejectionTrace:
        """What :meth:`combine` does to each sample of a few pixels, iteration by iteration."""
        return trace_rejection(stack, **self._arguments(statistics, offsets, offset_index, scale))

    def _arguments(self, statistics, offsets, offset_index, scale) -> dict:
        valid_range = None
        if self.frame_clip:
            valid_range = np.array(statistics, dtype=np.float64).T
        return {"valid_range": valid_range, "offsets": offsets, "offset_index": offset_index,
                "scale": scale, **self.clip.as_kwargs()}

    def finish(self, parts) -> CombineResult:
        """Join row blocks; pixels where every sample was rejected take the master's mean."""
        return _fill_unused(concatenate_rows(parts))
    def __call__(self, stack, *, offsets=None, offset_index=None, scale=None,
                 map_frames=map) -> CombineResult:
        """The whole master from a whole stack (``map_frames`` measures the frames)."""
        statistics = list(map_frames(self.frame_statistics, stack))
        return self.finish([self.combine(stack, statistics, offsets=offsets,
                                         offset_index=offset_index, scale=scale)])


@dataclass(frozen=True)
class DarkCurrentCombiner:
    """The dark current (ADU/s) per pixel, from darks of any exposure times less the bias.

    The darks of each exposure time are sigma-clipped and averaged (less the
    master bias, subtracted as they load); the dark current is then the
    least-squares slope through zero of those levels against exposure time,
    ``sum(n t D_t) / sum(n t^2)`` with ``n`` the samples each level averaged.
    Darks of one exposure time share their noise, so clipping stays within
    them; long darks, which measure the current best, weigh the most.

    Parameters
    ----------
    clip : ClipOptions
    """

    clip: ClipOptions = field(default_factory=ClipOptions)

    @staticmethod
    def frame_statistics(image) -> None:
        """Nothing per frame: darks are not clipped on their own for the dark current."""
        return None

    def combine(self, stack, exptimes, *, offsets=None, read=None) -> CombineResult:
        """The dark current of (a block of rows of) a stack of darks; NaN where nothing is left.

        ``exptimes`` gives each frame's exposure time (> 0); ``offsets`` holds
        the master bias (one image, or a stack of one). With ``read``, a
        function returning the stack of the frames whose indices it is given,
        ``stack`` is not needed: the darks are then read one exposure time at
        a time, so that only those are in memory.
        """
        exptimes = np.asarray(exptimes, dtype=np.float64)
        numerator = denominator = n_used = 0
        rejected = np.zeros(len(exptimes), dtype=np.int64)
        for exptime in np.unique(exptimes):
            frames = np.flatnonzero(exptimes == exptime)
            samples = {"frames": frames} if read is None else {}
            level = sigma_clip_combine(stack if read is None else read(frames),
                                       offsets=offsets, keep_mask=False, **samples,
                                       **self.clip.as_kwargs())
            weight = level.n_used * exptime
            numerator = numerator + np.where(level.n_used > 0, weight * level.data, 0.0)
            denominator = denominator + weight * exptime
            n_used = n_used + level.n_used
            rejected[frames] = level.n_rejected_per_frame
        with np.errstate(invalid="ignore", divide="ignore"):
            current = numerator / denominator
        return CombineResult(current, None, n_used.astype(np.int16), len(exptimes), rejected)

    def finish(self, parts) -> CombineResult:
        """Join row blocks; pixels where every sample was rejected take the image's mean."""
        return _fill_unused(concatenate_rows(parts))


@dataclass(frozen=True)
class MasterFlat:
    """A master flat and how it was made.

    Attributes
    ----------
    data : numpy.ndarray
        The normalised master flat (mean 1); 1.0 where no sample survived
        and where the combination was not positive and finite.
    combine : CombineResult or None
        The clipped combination of the accepted, scaled flats; None once a
        night's runner has released it (see :func:`ccdred.steps.written_part`).
    medians : numpy.ndarray
        Median of every input flat.
    accepted : numpy.ndarray
        Bool per input flat: used or rejected by the limits.
    n_bad_pixels : int
        Pixels set to 1.0 because no usable value was left.
    """

    data: np.ndarray
    combine: CombineResult | None
    medians: np.ndarray
    accepted: np.ndarray
    n_bad_pixels: int


@dataclass(frozen=True)
class FlatCombiner:
    """A normalised master flat from the flats of one filter.

    Flats whose median falls outside the limits are left out; the others are
    scaled to the first accepted flat's median, sigma-clipped, averaged with
    their medians as weights, and divided by the mean of the result. One
    accepted flat is enough (it is normalised; a warning says so).

    Parameters
    ----------
    clip : ClipOptions
    limits : FlatLimits
    """

    clip: ClipOptions = field(default_factory=ClipOptions)
    limits: FlatLimits = field(default_factory=FlatLimits)

    @staticmethod
    def frame_statistics(image, offset=None) -> float:
        """A flat's median, less its dark (``offset``) when given."""
        return frame_median(image, offset)

    def combine(self, stack, medians, accepted, *, offsets=None, offset_index=None) -> CombineResult:
        """Scaled, clipped, weighted mean of (a block of rows of) the accepted flats.

        ``stack`` holds every flat; ``medians`` and ``accepted`` describe them
        all, ``offset_index`` (which of ``offsets`` each flat takes) too.
        """
        return sigma_clip_combine(stack, keep_mask=False, **self._arguments(
            medians, accepted, offsets, offset_index))

    def trace(self, stack, medians, accepted, *, offsets=None, offset_index=None) -> RejectionTrace:
        """What :meth:`combine` does to each sample of a few pixels, iteration by iteration
        (of the accepted flats only)."""
        return trace_rejection(stack, **self._arguments(medians, accepted, offsets, offset_index))

    def _arguments(self, medians, accepted, offsets, offset_index) -> dict:
        accepted = np.asarray(accepted, dtype=bool)
        used = np.asarray(medians, dtype=np.float64)[accepted]
        index = None if offset_index is None else np.asarray(offset_index)[accepted]
        return {"weights": used, "scale": used[0] / used, "frames": np.flatnonzero(accepted),
                "offsets": offsets, "offset_index": index, **self.clip.as_kwargs()}

    def finish(self, parts, medians, accepted) -> MasterFlat:
        """Join the row blocks and normalise."""
        combined = concatenate_rows(parts)
        normalised, n_bad = normalise_flat(combined.data)
        return MasterFlat(normalised, combined, np.asarray(medians, dtype=np.float64),
                          np.asarray(accepted, dtype=bool), n_bad)

    def __call__(self, stack, *, offsets=None, offset_index=None, medians=None, paths=None,
                 filter_name="", map_frames=map) -> MasterFlat:
        """The whole master flat from a whole stack of (raw) flats."""
        index = np.zeros(len(stack), dtype=np.int64) if offset_index is None else offset_index
        if medians is None:
            medians = frame_medians(stack, offsets, index, map_frames)
        paths = [f"flat {i}" for i in range(len(stack))] if paths is None else paths
        accepted = self.limits.select(medians, paths, filter_name)
        part = self.combine(stack, medians, accepted, offsets=offsets, offset_index=index)
        return self.finish([part], medians, accepted)


def _fill_unused(result: CombineResult) -> CombineResult:
    """Pixels where every sample was rejected take the mean of the others (in place)."""
    used = result.n_used > 0
    if not used.all():
        result.data[~used] = np.mean(result.data, where=used) if used.any() else 0.0
    return result


def frame_medians(stack, offsets=None, offset_index=None, map_frames=map) -> np.ndarray:
    """Median of each frame of a stack (less its offset image, if given), in float64.

    ``offsets`` and ``offset_index`` are as for :func:`master_flat`;
    ``map_frames`` (e.g. a thread pool's ``map``) measures the frames.
    """
    if offsets is None:
        return np.array(list(map_frames(frame_median, stack)), dtype=np.float64)
    offsets, index = offset_images(offsets, offset_index, len(stack), np.shape(stack)[1:])
    return np.array(list(map_frames(lambda frame, i: frame_median(frame, offsets[i]), stack,
                                    index)), dtype=np.float64)


def darks_for_frames(exptimes, master_darks, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """The master darks that frames of these exposure times take, and which each takes.

    Parameters
    ----------
    exptimes : sequence
        Each frame's key into ``master_darks``: its exposure time, or its dark term
        (:class:`~ccdred.plan.DarkTerm`), any hashable.
    master_darks : mapping
        The image of each key: the master dark of each exposure time, say.
    rows : slice, optional
        Only these rows of the darks.

    Returns
    -------
    darks : numpy.ndarray, shape (n_darks, n_rows, n_columns)
        One image per distinct key, in the order of first use (a view when there is one).
    dark_index : numpy.ndarray of int
        Which of ``darks`` each frame takes, as :func:`master_flat` wants them.
    """
    distinct = list(dict.fromkeys(exptimes))
    images = [np.asarray(master_darks[t])[slice(None) if rows is None else rows] for t in distinct]
    darks = images[0][np.newaxis] if len(images) == 1 else np.stack(images)
    return darks, np.array([distinct.index(t) for t in exptimes], dtype=np.int64)


def normalise_flat(combined) -> tuple[np.ndarray, int]:
    """Divide by the mean; pixels left without a positive, finite value become 1.0.

    Returns the normalised flat and the number of such pixels.
    """
    finite = np.isfinite(combined)
    normalised = np.divide(combined, np.mean(combined, where=finite))
    bad = np.logical_not(finite, out=finite)
    bad |= normalised <= 0
    np.copyto(normalised, 1.0, where=bad)
    return normalised, int(np.count_nonzero(bad))


def flat_acceptance(medians, *, upper_limit=FlatLimits.upper, lower_limit=None) -> np.ndarray:
    """Which flats to use, from their medians (see :meth:`FlatLimits.accepts`)."""
    return FlatLimits(upper_limit, lower_limit).accepts(medians)


# -- one-call wrappers --------------------------------------------------------------


def master_bias(biases, *, frame_clip=False, **clip) -> CombineResult:
    """Combine bias frames into a master bias (sigma-clipped mean).

    Parameters
    ----------
    biases : array_like, shape (n_frames, n_rows, n_columns)
    frame_clip : bool, optional
        Sigma-clip each frame on its own first; off by default.
    **clip
        :class:`ClipOptions` (threshold, cenfunc, maxiters).
    """
    return StackCombiner(ClipOptions(**clip), frame_clip)(biases)


def master_dark(darks, *, frame_clip=True, bias=None, **clip) -> CombineResult:
    """Combine dark frames of one exposure time into a master dark.

    Parameters
    ----------
    darks : array_like, shape (n_frames, n_rows, n_columns)
        Raw dark frames; integer (raw ADU) or float.
    frame_clip : bool, optional
        First sigma-clip each frame on its own and leave out what it rejects
        (the course script's behaviour: it masks hot pixels and cosmic rays).
    bias : array_like, optional
        A master bias to subtract from every sample first.
    **clip
        :class:`ClipOptions` (threshold, cenfunc, maxiters).

    Returns
    -------
    CombineResult
        ``data`` is the clipped mean; pixels where every sample was rejected
        take the mean of the master.
    """
    return StackCombiner(ClipOptions(**clip), frame_clip)(darks, offsets=bias)


def master_flat(flats, *, darks=None, dark_index=None, upper_limit=FlatLimits.upper,
                lower_limit=None, medians=None, **clip) -> MasterFlat:
    """Combine flats of one filter into a normalised master flat (see :class:`FlatCombiner`).

    Parameters
    ----------
    flats : array_like, shape (n_frames, n_rows, n_columns)
        Dark-subtracted flat frames, or raw ones when ``darks`` are given.
    darks : array_like, shape (n_darks, n_rows, n_columns) or (n_rows, n_columns), optional
        Images to subtract (in float64) from the raw flats as they are
        measured and combined, which spares a dark-subtracted copy of them;
        one 2-D dark serves every flat.
    dark_index : array_like of int, shape (n_frames,), optional
        Which of ``darks`` each flat takes; the first by default.
    upper_limit, lower_limit : float or None
        Limits on each flat's median (ADU); see :class:`FlatLimits`.
    medians : array_like, optional
        The flats' medians, when already known.
    **clip
        :class:`ClipOptions` (threshold, cenfunc, maxiters).

    Raises
    ------
    InputError
        When no flat passes the limits.
    """
    combiner = FlatCombiner(ClipOptions(**clip), FlatLimits(upper_limit, lower_limit))
    return combiner(np.asarray(flats), offsets=darks, offset_index=dark_index, medians=medians)


def subtract_dark(frame, dark, out=None) -> np.ndarray:
    """Raw frame minus master dark, computed in float64 (stored into ``out`` if given)."""
    return np.subtract(frame, dark, out=out, dtype=np.float64, casting="unsafe")


def calibrate_frame(raw, master_dark, master_flat=None) -> np.ndarray:
    """(raw - master dark) / master flat, in float64.

    Parameters
    ----------
    raw : array_like
        The raw (preprocessed) object frame.
    master_dark : array_like
        What to subtract: the master dark of the frame's exposure time, or
        the bias plus the scaled dark current.
    master_flat : array_like, optional
        Normalised master flat of the frame's filter; dark subtraction only
        when omitted.
    """
    subtracted, flat_fielded = calibration_steps(raw, master_dark, master_flat)
    return subtracted if flat_fielded is None else flat_fielded


#: Rows calibrated at a time, so that the float64 intermediate stays in the cache.
_CALIBRATION_ROWS = 128


def calibration_steps(raw, master_dark, master_flat=None, *, dtype=np.float64,
                      keep_subtracted: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Both steps of calibrating a frame: dark-subtracted, then flat-fielded.

    The arithmetic is float64 (as :func:`calibrate_frame`), done a block of
    rows at a time, and the results are stored in ``dtype``: storing in the
    products' type directly spares a float64 copy of the whole frame.

    Parameters
    ----------
    keep_subtracted : bool, optional
        Store the dark-subtracted image; False (with a flat) spares that image
        when only the flat-fielded one is written.

    Returns
    -------
    dark_subtracted : numpy.ndarray or None
        ``raw - master_dark``; None when not kept.
    flat_fielded : numpy.ndarray or None
        ``(raw - master_dark) / master_flat``; None without a flat.
    """
    raw = np.asarray(raw)
    master_dark = np.broadcast_to(master_dark, raw.shape)
    keep_subtracted = keep_subtracted or master_flat is None
    subtracted = np.empty(raw.shape, dtype) if keep_subtracted else None
    flat_fielded = None
    if master_flat is not None:
        master_flat = np.broadcast_to(master_flat, raw.shape)
        flat_fielded = np.empty(raw.shape, dtype)
    work = np.empty((min(_CALIBRATION_ROWS, len(raw)), *raw.shape[1:]))
    master_rows = np.empty_like(work)
    for start in range(0, len(raw), _CALIBRATION_ROWS):
        rows = slice(start, start + _CALIBRATION_ROWS)
        block = work[: len(raw[rows])]
        subtract_dark(raw[rows], _as_float64(master_dark[rows], master_rows), out=block)
        if subtracted is not None:
            subtracted[rows] = block
        if flat_fielded is not None:
            np.divide(block, _as_float64(master_flat[rows], master_rows), out=block)
            flat_fielded[rows] = block
    return subtracted, flat_fielded


def _as_float64(rows: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """``rows`` of a master as float64: themselves, or copied into ``buffer`` (a float32
    master's rows cast by one copy cost less than by the arithmetic's own casting)."""
    if rows.dtype == np.float64:
        return rows
    converted = buffer[: len(rows)]
    np.copyto(converted, rows)
    return converted
