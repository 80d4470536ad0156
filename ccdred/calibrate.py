"""Calibration in one call: masters from stacks in memory, and calibrating a frame.

:func:`master_bias`, :func:`master_dark` and :func:`master_flat` make a master
from a stack with the combiners of :mod:`ccdred.combiners` (which every runner
shares); :func:`calibrate_frame` and :func:`calibration_steps` subtract a dark
and divide by a flat. Overscan and trim are in :mod:`ccdred.sections`.

Arrays in, new arrays out: inputs are never changed, and nothing here touches
files. With default options the results equal the course script's.
"""

from __future__ import annotations

import numpy as np

from .combine import ClipOptions, CombineResult
from .combiners import FlatCombiner, MasterFlat, StackCombiner, combine_whole
from .limits import FlatLimits
from .planes import frame_variance, quotient_variance

__all__ = [
    "calibrate_frame",
    "calibration_uncertainty",
    "calibration_steps",
    "flat_acceptance",
    "master_bias",
    "master_dark",
    "master_flat",
    "subtract_dark",
]


def flat_acceptance(medians, *, upper_limit=FlatLimits.upper, lower_limit=None) -> np.ndarray:
    """Which flats to use, from their medians (see :meth:`~ccdred.limits.FlatLimits.accepts`)."""
    return FlatLimits(upper_limit, lower_limit).accepts(medians)


def master_bias(biases, *, frame_clip=False, **clip) -> CombineResult:
    """Combine bias frames into a master bias (sigma-clipped mean).

    Parameters
    ----------
    biases : array_like, shape (n_frames, n_rows, n_columns)
    frame_clip : bool, optional
        Sigma-clip each frame on its own first; off by default.
    **clip
        :class:`~ccdred.combine.ClipOptions` (threshold, cenfunc, maxiters).
    """
    return combine_whole(StackCombiner(ClipOptions(**clip), frame_clip), biases)


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
        :class:`~ccdred.combine.ClipOptions` (threshold, cenfunc, maxiters).

    Returns
    -------
    CombineResult
        ``data`` is the clipped mean; pixels where every sample was rejected
        take the mean of the master.
    """
    return combine_whole(StackCombiner(ClipOptions(**clip), frame_clip), darks, offsets=bias)


def master_flat(flats, *, darks=None, dark_index=None, upper_limit=FlatLimits.upper,
                lower_limit=None, medians=None, **clip) -> MasterFlat:
    """Combine flats of one filter into a normalised master flat (see :class:`~ccdred.combiners.FlatCombiner`).

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
        Limits on each flat's median (ADU); see :class:`~ccdred.limits.FlatLimits`.
    medians : array_like, optional
        The flats' medians, when already known.
    **clip
        :class:`~ccdred.combine.ClipOptions` (threshold, cenfunc, maxiters).

    Raises
    ------
    InputError
        When no flat passes the limits.
    """
    combiner = FlatCombiner(ClipOptions(**clip), FlatLimits(upper_limit, lower_limit))
    return combine_whole(combiner, flats, offsets=darks, offset_index=dark_index,
                         statistics=medians)


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


def calibration_uncertainty(raw, master_dark, dark_variance, master_flat=None,
                            flat_variance=None, *, gain: float, read_noise: float,
                            dtype=np.float64, keep_subtracted: bool = True
                            ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The standard deviations of both steps of :func:`calibration_steps`.

    The raw frame's variance from the noise model (:func:`~ccdred.planes.frame_variance`
    of ``raw - master_dark``), plus the dark's (in quadrature through the subtraction);
    then through the division by the flat (:func:`~ccdred.planes.quotient_variance`).
    The arithmetic is float64, a block of rows at a time in buffers made once; the
    results are stored in ``dtype``.

    Parameters
    ----------
    raw, master_dark, master_flat, dtype, keep_subtracted
        As for :func:`calibration_steps`.
    dark_variance, flat_variance : array_like
        The masters' variances.
    gain, read_noise : float
        e-/ADU and e-.

    Returns
    -------
    dark_subtracted : numpy.ndarray or None
        None when not kept.
    flat_fielded : numpy.ndarray or None
        None without a flat.
    """
    raw = np.asarray(raw)
    master_dark = np.broadcast_to(master_dark, raw.shape)
    dark_variance = np.broadcast_to(dark_variance, raw.shape)
    keep_subtracted = keep_subtracted or master_flat is None
    subtracted = np.empty(raw.shape, dtype) if keep_subtracted else None
    flat_fielded = None
    if master_flat is not None:
        master_flat = np.broadcast_to(master_flat, raw.shape)
        flat_variance = np.broadcast_to(flat_variance, raw.shape)
        flat_fielded = np.empty(raw.shape, dtype)
    # the signal, its variance, a master's rows as float64, the quotient's variance
    buffers = np.empty((4, min(_CALIBRATION_ROWS, len(raw)), *raw.shape[1:]))
    for start in range(0, len(raw), _CALIBRATION_ROWS):
        rows = slice(start, start + _CALIBRATION_ROWS)
        signal, variance, master_rows, quotient = buffers[:, : len(raw[rows])]
        subtract_dark(raw[rows], _as_float64(master_dark[rows], master_rows), out=signal)
        frame_variance(signal, gain, read_noise, out=variance)
        variance += dark_variance[rows]  # difference_variance, in place
        if subtracted is not None:
            np.sqrt(variance, out=subtracted[rows])
        if flat_fielded is not None:
            quotient_variance(signal, variance, _as_float64(master_flat[rows], master_rows),
                              flat_variance[rows], out=quotient)
            np.sqrt(quotient, out=flat_fielded[rows])
    return subtracted, flat_fielded


def _as_float64(rows: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """``rows`` of a master as float64: themselves, or copied into ``buffer`` (a float32
    master's rows cast by one copy cost less than by the arithmetic's own casting)."""
    if rows.dtype == np.float64:
        return rows
    converted = buffer[: len(rows)]
    np.copyto(converted, rows)
    return converted
