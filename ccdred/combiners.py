"""The combiners of masters: one protocol for every kind of master.

A combiner makes one master from a stack of frames in pieces that any runner
(in process, Dask, the interactive pipeline) may run where it likes:

1. :meth:`~Combiner.frame_statistic`: a statistic of each whole frame (its
   own clipping bounds, a flat's median less its dark), given the image that
   is subtracted from it;
2. :meth:`~Combiner.choose`: from all the statistics, once, which frames
   enter the master (a :class:`FrameChoice`: the flats within the limits);
3. :meth:`~Combiner.combine`: the combination of any block of rows of the
   frames chosen, and :meth:`~Combiner.trace`, the same for a few pixels,
   iteration by iteration; both may be given a ``premask``, pixels whose samples
   every frame leaves out (a bad-pixel mask), which reaches the kernel as its
   ``mask`` of pre-masked samples;
4. :meth:`~Combiner.finish`: the blocks joined into the master.

:class:`StackCombiner` (master bias, master dark), :class:`DarkCurrentCombiner`
(the dark current, fitted across exposure times) and :class:`FlatCombiner`
(master flat) implement it; :func:`combine_whole` runs the pieces on a stack
in memory. Arrays in, new arrays out; nothing here touches files.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from .combine import (ClipOptions, CombineResult, RejectionTrace, concatenate_rows,
                      frame_clip_bounds, frame_median, offset_images, sigma_clip_combine,
                      trace_rejection)
from .errors import BadPixelWarning, RejectedFlatWarning, SingleFlatWarning, SuspectFlatWarning
from .limits import FlatLimits

__all__ = [
    "Combiner",
    "DarkCurrentCombiner",
    "FlatCombiner",
    "FrameChoice",
    "MasterFlat",
    "StackCombiner",
    "combine_whole",
    "darks_for_frames",
    "mean_where",
    "normalise_flat",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameChoice:
    """The frames that enter a master, decided once from every frame's statistic.

    Attributes
    ----------
    statistics : tuple
        Each frame's :meth:`Combiner.frame_statistic`.
    used : numpy.ndarray
        Bool per frame: it enters the combination.
    frames : numpy.ndarray
        Int per frame: its index among the master's frames (a choice may
        describe some of them: :meth:`of_used`).
    """

    statistics: tuple
    used: np.ndarray
    frames: np.ndarray

    @classmethod
    def every(cls, statistics) -> FrameChoice:
        """Every frame enters."""
        n = len(statistics)
        return cls(tuple(statistics), np.ones(n, dtype=bool), np.arange(n))

    def of_used(self) -> FrameChoice:
        """The same choice of the used frames only: for a stack that holds just them."""
        return FrameChoice(tuple(s for s, ok in zip(self.statistics, self.used, strict=True)
                                 if ok),
                           np.ones(int(self.used.sum()), dtype=bool), self.frames[self.used])


class Combiner:
    """What every combiner does (the protocol; see the module's docstring).

    Attributes
    ----------
    measures_frames : bool
        Whether :meth:`frame_statistic` looks at the image (else a runner
        may skip reading frames for it).
    work_bytes : int
        Bytes per sample the combination needs beside the stack (a mask).
    """

    measures_frames = True
    work_bytes = 1

    def frame_statistic(self, image, offset=None):
        """The statistic of one whole frame, less ``offset`` (an image) where it matters."""
        raise NotImplementedError

    def choose(self, statistics, paths=None) -> FrameChoice:
        """Which frames enter, from every frame's statistic (``paths``, one per frame, for
        messages): all of them."""
        return FrameChoice.every(statistics)

    def combine(self, stack, choice: FrameChoice, offsets=None, offset_index=None,
                premask=None) -> CombineResult:
        """The combination of a stack (or a block of its rows) of the frames ``choice``
        describes; NaN where nothing is left.

        ``offsets`` are images subtracted from the frames (one, or a stack) and
        ``offset_index`` (one per frame of ``choice``) which each frame takes,
        as for :func:`~ccdred.combine.sigma_clip_combine`; ``premask`` (2-D bool, of
        the block's shape) the pixels every frame's sample leaves out before the
        rejection (the kernel's ``mask``: counted in ``n_left_out_per_frame``).
        """
        arguments = self._arguments(choice, offsets, offset_index)
        return sigma_clip_combine(stack, keep_mask=False,
                                  **_with_premask(arguments, len(stack), premask))

    def trace(self, stack, choice: FrameChoice, offsets=None, offset_index=None,
              premask=None) -> RejectionTrace:
        """What :meth:`combine` does to each sample of a few pixels, iteration by iteration
        (of the used frames only)."""
        arguments = self._arguments(choice, offsets, offset_index)
        return trace_rejection(stack, **_with_premask(arguments, len(stack), premask))

    def _arguments(self, choice, offsets, offset_index) -> dict:
        raise NotImplementedError

    def finish(self, parts, choice: FrameChoice, premask=None):
        """Join row blocks; pixels where every sample was rejected (or pre-masked: see
        :meth:`combine`) take the master's mean."""
        return _fill_unused(concatenate_rows(parts))

    def report(self, result, paths) -> None:
        """Log and warn about what the master's frames did (``paths``: one per frame)."""

    def read_result(self, image) -> CombineResult:
        """A master made earlier (read from a file) as this combiner's result, of no frames."""
        return CombineResult(image, None, np.zeros(image.shape, dtype=np.int16), 0,
                             np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))

    def statistic_key(self) -> tuple:
        """What, of this combiner, decides the frames' statistics (beside the frames and
        the images subtracted from them)."""
        return ()

    def combination_key(self) -> Combiner:
        """What, of this combiner, decides the master beside its :class:`FrameChoice`."""
        return self


@dataclass(frozen=True)
class StackCombiner(Combiner):
    """The sigma-clipped mean of a stack: a master bias or a master dark.

    Parameters
    ----------
    clip : ClipOptions
        Clipping across the stack, and of each frame on its own.
    frame_clip : bool
        First sigma-clip each frame on its own and leave out what it rejects
        (the course script's behaviour for darks: it masks hot pixels and
        cosmic rays); the statistic of a frame is then its clipping bounds.
    """

    clip: ClipOptions = field(default_factory=ClipOptions)
    frame_clip: bool = True

    def frame_statistic(self, image, offset=None) -> tuple[float, float] | None:
        """One whole frame's clipping bounds, as stored (None without frame clipping)."""
        if not self.frame_clip:
            return None
        return frame_clip_bounds(image, **self.clip.frame_kwargs())

    def statistic_key(self) -> tuple:
        """The frame clipping's options (nothing without frame clipping)."""
        return tuple(self.clip.frame_kwargs().items()) if self.frame_clip else ()

    def _arguments(self, choice, offsets, offset_index) -> dict:
        valid_range = np.array(choice.statistics, dtype=np.float64).T if self.frame_clip else None
        return {"valid_range": valid_range, "offsets": offsets, "offset_index": offset_index,
                "clip": self.clip}


@dataclass(frozen=True)
class DarkCurrentCombiner(Combiner):
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
    exptimes : tuple of float
        Each dark's exposure time (> 0).
    """

    clip: ClipOptions = field(default_factory=ClipOptions)
    exptimes: tuple = ()
    measures_frames = False

    def frame_statistic(self, image, offset=None) -> None:
        """Nothing: darks are not clipped on their own for the dark current."""
        return None

    def combine(self, stack, choice: FrameChoice, offsets=None, offset_index=None,
                premask=None, *, read=None) -> CombineResult:
        """The dark current of (a block of rows of) a stack of darks; NaN where nothing is left.

        With ``read``, a function returning the stack of the darks (of
        ``choice``) whose indices it is given, ``stack`` is not needed: the
        darks are read one exposure time at a time, so that only those are in
        memory (a runner may so when :attr:`measures_frames` is False).
        """
        exptimes = np.asarray(self.exptimes, dtype=np.float64)[choice.frames]
        numerator = denominator = n_used = 0
        rejected, left_out = (np.zeros(len(exptimes), dtype=np.int64) for _ in range(2))
        for exptime in np.unique(exptimes):
            frames = np.flatnonzero(exptimes == exptime)
            level = sigma_clip_combine(stack if read is None else read(frames), offsets=offsets,
                                       keep_mask=False, frames=frames if read is None else None,
                                       clip=self.clip, mask=_frames_mask(premask, len(frames)))
            weight = level.n_used * exptime
            numerator = numerator + np.where(level.n_used > 0, weight * level.data, 0.0)
            denominator = denominator + weight * exptime
            n_used = n_used + level.n_used
            rejected[frames] = level.n_rejected_per_frame
            left_out[frames] = level.n_left_out_per_frame
        with np.errstate(invalid="ignore", divide="ignore"):
            current = numerator / denominator
        return CombineResult(current, None, n_used.astype(np.int16), len(exptimes), rejected,
                             left_out)

    def trace(self, stack, choice, offsets=None, offset_index=None,
              premask=None) -> RejectionTrace:
        """Not traced: the current is a fit across exposure times, not one combination."""
        msg = ("the dark current is fitted across exposure times; look at the samples of a "
               "bias, a master dark or a master flat")
        raise ValueError(msg)


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
        Pixels set to 1.0 because no usable value was left, those of the bad-pixel mask
        that pre-masked the flats not counted (they are 1.0 too, by choice).
    """

    data: np.ndarray
    combine: CombineResult | None
    medians: np.ndarray
    accepted: np.ndarray
    n_bad_pixels: int

    @property
    def combination(self) -> CombineResult | None:
        """The combination behind the master, before normalising (a bias's or dark's
        :class:`~ccdred.combine.CombineResult` is its own)."""
        return self.combine


@dataclass(frozen=True)
class FlatCombiner(Combiner):
    """A normalised master flat from the flats of one filter.

    Flats whose median falls outside the limits are left out; the others are
    scaled to the first accepted flat's median, sigma-clipped, averaged with
    their medians as weights, and divided by the mean of the result. One
    accepted flat is enough (it is normalised; a warning says so).

    Parameters
    ----------
    clip : ClipOptions
    limits : FlatLimits
    filter_name : str
        The flats' filter, for messages.
    mosaic : bool
        The flats are a one-shot colour camera's colour-filter mosaic (Bayer):
        each of its four places in a 2x2 cell is normalised on its own, so that
        flat-fielding changes no colour (the lamp's colour is not the sky's).
    """

    clip: ClipOptions = field(default_factory=ClipOptions)
    limits: FlatLimits = field(default_factory=FlatLimits)
    filter_name: str = ""
    mosaic: bool = False
    work_bytes = 0

    def frame_statistic(self, image, offset=None) -> float:
        """A flat's median, less its dark (``offset``) when given."""
        return frame_median(image, offset)

    def choose(self, statistics, paths=None) -> FrameChoice:
        """The flats within the limits (:meth:`FlatLimits.select`: InputError naming each
        flat, from ``paths``, when none is)."""
        paths = [f"flat {i}" for i in range(len(statistics))] if paths is None else paths
        used = self.limits.select(statistics, paths, self.filter_name)
        return FrameChoice(tuple(map(float, statistics)), used, np.arange(len(statistics)))

    def read_result(self, image) -> MasterFlat:
        """A master flat made earlier (read from a file, normalised), of no flats."""
        return MasterFlat(image, None, np.zeros(0), np.zeros(0, dtype=bool), 0)

    def combination_key(self) -> FlatCombiner:
        """Itself without its limits: they decide the master only through the flats they
        accept (a limit moved so that the same flats are used makes the same master)."""
        return replace(self, limits=None)

    def _arguments(self, choice, offsets, offset_index) -> dict:
        used = np.asarray(choice.statistics, dtype=np.float64)[choice.used]
        index = None if offset_index is None else np.asarray(offset_index)[choice.used]
        return {"weights": used, "scale": used[0] / used, "frames": np.flatnonzero(choice.used),
                "offsets": offsets, "offset_index": index, "clip": self.clip}

    def finish(self, parts, choice: FrameChoice, premask=None) -> MasterFlat:
        """Join the row blocks and normalise; the pixels of ``premask`` (see :meth:`combine`)
        are 1.0 and not counted as bad."""
        combined = concatenate_rows(parts)
        normalised, n_bad = normalise_flat(combined.data, mosaic=self.mosaic)
        if premask is not None:
            n_bad -= int(np.count_nonzero(premask))
        return MasterFlat(normalised, combined, np.asarray(choice.statistics, dtype=np.float64),
                          choice.used.copy(), n_bad)

    def report(self, result: MasterFlat, paths) -> None:
        """Log each flat's median; warn about rejected, suspect and lone flats, and pixels
        with no usable value."""
        statuses = self.limits.statuses(result.medians)
        for path, median, ok, verdict in zip(paths, result.medians, result.accepted, statuses,
                                             strict=True):
            logger.info("  %s: median = %.1f%s", path, median,
                        "" if ok else f" (REJECTED: {verdict[len('rejected: '):]})")
            _warn_flat(path, median, ok, verdict, self.filter_name)
        if result.accepted.sum() == 1:
            warnings.warn(f"master flat {self.filter_name!r}: one flat only; it is normalised "
                          f"without clipping", SingleFlatWarning, stacklevel=3)
        if result.n_bad_pixels:
            warnings.warn(f"master flat {self.filter_name!r}: {result.n_bad_pixels} pixels had no "
                          f"usable value (NaN, zero or negative in every flat) and were set to 1.0",
                          BadPixelWarning, stacklevel=3)


def _warn_flat(path, median, ok, verdict, filter_name) -> None:
    """A flat's warning, if its verdict calls for one."""
    if verdict.startswith("used, suspect"):
        warnings.warn(f"{path}: flat {verdict[len('used, '):]}; used (check it, or set a lower "
                      f"or upper limit)", SuspectFlatWarning, stacklevel=4)
    if verdict.startswith("used ("):
        warnings.warn(f"{path}: flat median {median:.1f} outside the limits, but the only flat "
                      f"of filter {filter_name!r}; used", RejectedFlatWarning, stacklevel=4)
    if not ok:
        warnings.warn(f"{path}: flat median {median:.1f} outside the limits; not used "
                      f"({verdict[len('rejected: '):]})", RejectedFlatWarning, stacklevel=4)


def combine_whole(combiner: Combiner, stack, *, offsets=None, offset_index=None, paths=None,
                  map_frames=map, statistics=None):
    """A whole master from a whole stack in memory, by the combiner's pieces.

    Parameters
    ----------
    combiner : Combiner
    stack : array_like, shape (n_frames, n_rows, n_columns)
    offsets : array_like, optional
        Images subtracted from the frames: one 2-D image for all, or a stack
        with ``offset_index`` saying which each frame takes (the first by default).
    offset_index : array_like of int, optional
    paths : sequence, optional
        The frames' files or names, for messages.
    map_frames : callable, optional
        A ``map`` (e.g. a thread pool's) to measure the frames with.
    statistics : sequence, optional
        The frames' statistics, when already measured.
    """
    stack = np.asarray(stack)
    if statistics is None:
        statistics = frame_statistics(combiner, stack, offsets, offset_index, map_frames)
    choice = combiner.choose(statistics, paths)
    return combiner.finish([combiner.combine(stack, choice, offsets, offset_index)], choice)


def frame_statistics(combiner: Combiner, stack, offsets=None, offset_index=None,
                     map_frames=map) -> list:
    """Every frame's :meth:`Combiner.frame_statistic`, each less its offset image."""
    if offsets is None or not combiner.measures_frames:
        return list(map_frames(combiner.frame_statistic, stack))
    images, index = offset_images(offsets, offset_index, len(stack), np.shape(stack)[1:])
    return list(map_frames(lambda frame, i: combiner.frame_statistic(frame, images[i]), stack,
                           index))


def _with_premask(arguments: dict, depth: int, premask) -> dict:
    """A combination's ``arguments`` with ``premask`` (2-D bool, or None) as the kernel's
    ``mask`` of the frames it combines (``arguments``' ``frames`` of a stack ``depth`` deep)."""
    frames = arguments.get("frames")
    return arguments | {"mask": _frames_mask(premask, depth if frames is None else len(frames))}


def _frames_mask(premask, n: int):
    """``premask`` (2-D bool) as the mask of ``n`` frames (a read-only view), or None."""
    return None if premask is None else np.broadcast_to(premask, (n, *np.shape(premask)))


def _fill_unused(result: CombineResult) -> CombineResult:
    """Pixels where every sample was rejected take the mean of the others (in place)."""
    used = result.n_used > 0
    if not used.all():
        result.data[~used] = mean_where(result.data, used) if used.any() else 0.0
    return result


def mean_where(values, where):
    """``numpy.mean(values, where=where)`` to the bit, in a third of its time for float32 and
    float64 images: numpy counts ``where`` by summing it as integers; here
    :func:`numpy.count_nonzero` counts it. Other types go to :func:`numpy.mean`.

    Parameters
    ----------
    values : numpy.ndarray
    where : numpy.ndarray of bool
        The values to average, of the same shape.

    Returns
    -------
    numpy.floating
    """
    if values.dtype not in (np.float32, np.float64):
        return np.mean(values, where=where)
    total = np.add.reduce(values, axis=None, where=where)
    return total.dtype.type(total / np.intp(np.count_nonzero(where)))


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
        Which of ``darks`` each frame takes, as :func:`~ccdred.calibrate.master_flat`
        wants them.
    """
    distinct = list(dict.fromkeys(exptimes))
    images = [np.asarray(master_darks[t])[slice(None) if rows is None else rows] for t in distinct]
    darks = images[0][np.newaxis] if len(images) == 1 else np.stack(images)
    return darks, np.array([distinct.index(t) for t in exptimes], dtype=np.int64)


def normalise_flat(combined, *, mosaic: bool = False) -> tuple[np.ndarray, int]:
    """Divide by the mean; pixels left without a positive, finite value become 1.0.

    With ``mosaic`` (a colour-filter mosaic), each of the four places of a 2x2
    cell is divided by its own mean: every colour channel has mean 1.

    Returns the normalised flat and the number of such pixels.
    """
    finite = np.isfinite(combined)
    if mosaic:
        normalised = np.empty(np.shape(combined))
        for cell in ((slice(0, None, 2), slice(0, None, 2)), (slice(0, None, 2), slice(1, None, 2)),
                     (slice(1, None, 2), slice(0, None, 2)), (slice(1, None, 2), slice(1, None, 2))):
            np.divide(combined[cell], mean_where(combined[cell], finite[cell]),
                      out=normalised[cell])
    else:
        normalised = np.divide(combined, mean_where(combined, finite))
    bad = np.logical_not(finite, out=finite)
    bad |= normalised <= 0
    np.copyto(normalised, 1.0, where=bad)
    return normalised, int(np.count_nonzero(bad))
