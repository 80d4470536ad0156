"""Calibration steps: master dark, master flat, calibrated frame.

Arrays in, new arrays out; inputs are never changed (but for
:func:`fill_rejected`, which finishes a fresh combination in place) and
nothing here touches files. With default arguments the results equal the course script's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .combine import CombineResult, frame_clip_bounds, frame_median, sigma_clip_combine

__all__ = [
    "MasterFlat",
    "calibrate_frame",
    "calibration_steps",
    "combine_darks",
    "combine_flats",
    "darks_for_frames",
    "fill_rejected",
    "flat_acceptance",
    "frame_medians",
    "master_dark",
    "master_flat",
    "normalise_flat",
    "require_two_flats",
    "subtract_dark",
]


def master_dark(darks, *, threshold=2.5, cenfunc="median", maxiters=10, frame_clip=True,
                keep_mask=True) -> CombineResult:
    """Combine dark frames of one exposure time into a master dark.

    Parameters
    ----------
    darks : array_like, shape (n_frames, n_rows, n_columns)
        Raw dark frames; integer (raw ADU) or float.
    threshold, cenfunc, maxiters
        Sigma-clipping settings, used both per frame and across the stack.
    frame_clip : bool, optional
        First sigma-clip each frame on its own and leave out what it rejects
        (the course script's behaviour: it masks hot pixels and cosmic rays).
    keep_mask : bool, optional
        Keep the 3-D ``clip_mask`` in the result.

    Returns
    -------
    CombineResult
        ``data`` is the clipped mean; pixels where every sample was rejected
        take the mean of the master.
    """
    return fill_rejected(combine_darks(darks, threshold=threshold, cenfunc=cenfunc,
                                       maxiters=maxiters, frame_clip=frame_clip,
                                       keep_mask=keep_mask))


def combine_darks(darks, *, threshold=2.5, cenfunc="median", maxiters=10, frame_clip=True,
                  frame_bounds=None, keep_mask=True) -> CombineResult:
    """The clipped mean of darks, NaN where every sample was rejected.

    ``frame_bounds`` gives each frame's own clipping bounds when ``darks`` is
    only a block of rows of the frames (the bounds must come from the whole
    frames, see :func:`~ccdred.combine.frame_clip_bounds`).
    """
    darks = np.asarray(darks)
    clip = {"threshold": threshold, "cenfunc": cenfunc, "maxiters": maxiters}
    valid_range = None
    if frame_clip:
        bounds = frame_bounds or [frame_clip_bounds(frame, **clip) for frame in darks]
        valid_range = np.array(bounds).T
    return sigma_clip_combine(darks, valid_range=valid_range, keep_mask=keep_mask, **clip)


def fill_rejected(result: CombineResult) -> CombineResult:
    """Pixels where every sample was rejected take the mean of the others.

    Fills ``result.data`` in place (it is meant for a combination just made,
    which saves a copy of the image) and returns ``result``.
    """
    used = result.n_used > 0
    if not used.all():
        fill = np.mean(result.data, where=used) if used.any() else 0.0
        result.data[np.logical_not(used, out=used)] = fill
    return result


def subtract_dark(frame, dark, out=None) -> np.ndarray:
    """Raw frame minus master dark, computed in float64 (stored into ``out`` if given)."""
    return np.subtract(frame, dark, out=out, dtype=np.float64, casting="unsafe")


def flat_acceptance(medians, *, upper_limit=38000.0, lower_limit=None) -> np.ndarray:
    """Which flats to use, from their (dark-subtracted) medians.

    A flat is rejected when its median is above ``upper_limit`` (saturation,
    non-linearity) or below ``lower_limit`` (under-exposed), when given.
    """
    medians = np.asarray(medians, dtype=np.float64)
    accepted = medians <= upper_limit
    if lower_limit is not None:
        accepted &= medians >= lower_limit
    return accepted


@dataclass(frozen=True)
class MasterFlat:
    """A master flat and how it was made.

    Attributes
    ----------
    data : numpy.ndarray
        The normalised master flat (mean 1); 1.0 where no sample survived
        and where the combination was not positive and finite.
    combine : CombineResult
        The clipped combination of the accepted, scaled flats.
    medians : numpy.ndarray
        Median of every input flat.
    accepted : numpy.ndarray
        Bool per input flat: used or rejected by the limits.
    n_bad_pixels : int
        Pixels set to 1.0 because no usable value was left.
    """

    data: np.ndarray
    combine: CombineResult
    medians: np.ndarray
    accepted: np.ndarray
    n_bad_pixels: int


def frame_medians(stack, darks=None, dark_index=None, map_frames=map) -> np.ndarray:
    """Median of each frame of a stack (less its dark, if given), in float64, ignoring NaN.

    ``darks`` and ``dark_index`` are as for :func:`master_flat`; ``map_frames``
    (e.g. a thread pool's ``map``) measures the frames, the median kernel
    releasing the GIL.
    """
    if darks is None:
        return np.array(list(map_frames(frame_median, stack)))
    darks, dark_index = _as_darks(darks), _dark_index(dark_index, len(stack))
    return np.array(list(map_frames(lambda frame, i: frame_median(frame, darks[i]), stack,
                                    dark_index)))


def darks_for_frames(exptimes, master_darks, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """The master darks that frames of these exposure times take, and which each takes.

    Parameters
    ----------
    exptimes : sequence of float
        Each frame's exposure time.
    master_darks : mapping of float to array_like
        The master dark image of each exposure time.
    rows : slice, optional
        Only these rows of the darks.

    Returns
    -------
    darks : numpy.ndarray, shape (n_darks, n_rows, n_columns)
        One master dark per distinct exposure time (a view when there is one).
    dark_index : numpy.ndarray of int
        Which of ``darks`` each frame takes, as :func:`master_flat` wants them.
    """
    distinct = sorted(set(exptimes))
    images = [np.asarray(master_darks[t])[slice(None) if rows is None else rows] for t in distinct]
    darks = images[0][np.newaxis] if len(images) == 1 else np.stack(images)
    return darks, np.array([distinct.index(t) for t in exptimes], dtype=np.int64)


def _as_darks(darks) -> np.ndarray | None:
    """Master darks as a stack: one 2-D dark becomes a stack of one."""
    if darks is None:
        return None
    darks = np.asarray(darks)
    return darks[np.newaxis] if darks.ndim == 2 else darks


def _dark_index(dark_index, n_frames) -> np.ndarray:
    return np.zeros(n_frames, dtype=np.int64) if dark_index is None else np.asarray(dark_index)


def master_flat(flats, *, darks=None, dark_index=None, threshold=2.5, cenfunc="median",
                maxiters=10, upper_limit=38000.0, lower_limit=None, medians=None,
                keep_mask=True) -> MasterFlat:
    """Combine flats of one filter into a normalised master flat.

    Flats whose median falls outside the limits are left out; the others are
    scaled to the first accepted flat's median, sigma-clipped, averaged with
    their medians as weights, and divided by the mean of the result.

    Parameters
    ----------
    flats : array_like, shape (n_frames, n_rows, n_columns)
        Dark-subtracted flat frames, or raw ones when ``darks`` are given.
    darks : array_like, shape (n_darks, n_rows, n_columns) or (n_rows, n_columns), optional
        Master darks to subtract (in float64) from the raw flats as they are
        measured and combined, which spares a dark-subtracted copy of them;
        one 2-D dark serves every flat.
    dark_index : array_like of int, shape (n_frames,), optional
        Which of ``darks`` each flat takes (its exposure time's); the first
        by default.
    threshold, cenfunc, maxiters
        Sigma-clipping settings.
    upper_limit, lower_limit : float or None
        Limits on each flat's median (ADU); see :func:`flat_acceptance`.
    medians : array_like, optional
        The flats' medians, when already known.
    keep_mask : bool, optional
        Keep the 3-D ``clip_mask`` in the combination result.

    Returns
    -------
    MasterFlat

    Raises
    ------
    ValueError
        When fewer than two flats pass the limits.
    """
    flats, darks = np.asarray(flats), _as_darks(darks)
    dark_index = _dark_index(dark_index, len(flats))
    medians = (frame_medians(flats, darks, dark_index) if medians is None
               else np.asarray(medians, dtype=np.float64))
    accepted = flat_acceptance(medians, upper_limit=upper_limit, lower_limit=lower_limit)
    require_two_flats(accepted, medians)
    combine = combine_flats(flats, medians[accepted], frames=np.flatnonzero(accepted),
                            darks=darks, dark_index=dark_index[accepted], threshold=threshold,
                            cenfunc=cenfunc, maxiters=maxiters, keep_mask=keep_mask)
    normalised, n_bad = normalise_flat(combine.data)
    return MasterFlat(normalised, combine, medians, accepted, n_bad)


def require_two_flats(accepted, medians) -> None:
    """Raise ValueError, with the medians, unless at least two flats are accepted."""
    if np.sum(accepted) < 2:
        msg = (f"{np.sum(accepted)} of {len(medians)} flats pass the limits "
               f"(medians {np.round(medians, 1).tolist()}); at least 2 are needed")
        raise ValueError(msg)


def combine_flats(flats, medians, *, frames=None, darks=None, dark_index=None, threshold=2.5,
                  cenfunc="median", maxiters=10, keep_mask=True) -> CombineResult:
    """Scale accepted flats to the first one's median, clip, average weighted by the medians.

    ``medians`` are those of the flats combined: all of ``flats``, or the ones
    ``frames`` picks (indices, which spares copying them out). ``darks`` and
    ``dark_index`` (one per combined flat) are as for :func:`master_flat`.
    """
    medians = np.asarray(medians, dtype=np.float64)
    return sigma_clip_combine(flats, threshold=threshold, cenfunc=cenfunc, maxiters=maxiters,
                              weights=medians, scale=medians[0] / medians, frames=frames,
                              offsets=darks, offset_index=dark_index, keep_mask=keep_mask)


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


def calibrate_frame(raw, master_dark, master_flat=None) -> np.ndarray:
    """(raw - master dark) / master flat, in float64.

    Parameters
    ----------
    raw : array_like
        The raw object frame.
    master_dark : array_like
        Master dark of the frame's exposure time.
    master_flat : array_like, optional
        Normalised master flat of the frame's filter; dark subtraction only
        when omitted.
    """
    subtracted, flat_fielded = calibration_steps(raw, master_dark, master_flat)
    return subtracted if flat_fielded is None else flat_fielded


#: Rows calibrated at a time, so that the float64 intermediate stays in the cache.
_CALIBRATION_ROWS = 128


def calibration_steps(raw, master_dark, master_flat=None, *,
                      dtype=np.float64) -> tuple[np.ndarray, np.ndarray | None]:
    """Both steps of calibrating a frame: dark-subtracted, then flat-fielded.

    The arithmetic is float64 (as :func:`calibrate_frame`), done a block of
    rows at a time, and the results are stored in ``dtype``: storing in the
    products' type directly spares a float64 copy of the whole frame.

    Parameters
    ----------
    raw : array_like
        The raw frame (rows along the first axis).
    master_dark : array_like
        Master dark of the frame's exposure time.
    master_flat : array_like, optional
        Normalised master flat of the frame's filter.
    dtype : numpy dtype, optional
        Type of the returned arrays.

    Returns
    -------
    dark_subtracted : numpy.ndarray
        ``raw - master_dark``.
    flat_fielded : numpy.ndarray or None
        ``(raw - master_dark) / master_flat``; None without a flat.
    """
    raw = np.asarray(raw)
    master_dark = np.broadcast_to(master_dark, raw.shape)
    subtracted = np.empty(raw.shape, dtype)
    flat_fielded = None
    if master_flat is not None:
        master_flat = np.broadcast_to(master_flat, raw.shape)
        flat_fielded = np.empty(raw.shape, dtype)
    work = np.empty((min(_CALIBRATION_ROWS, len(raw)), *raw.shape[1:]))
    for start in range(0, len(raw), _CALIBRATION_ROWS):
        rows = slice(start, start + _CALIBRATION_ROWS)
        block = work[: len(subtracted[rows])]
        subtract_dark(raw[rows], master_dark[rows], out=block)
        subtracted[rows] = block
        if flat_fielded is not None:
            np.divide(block, master_flat[rows], out=block)
            flat_fielded[rows] = block
    return subtracted, flat_fielded
