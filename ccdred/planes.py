"""The planes a product carries beside its image: its variance and its mask's bits.

A product's uncertainty plane (astropy's ``CCDData`` convention: an extension named
``UNCERT`` holding the standard deviation) comes from the detector's noise model, through
the combination of the masters and in quadrature through every subtraction and division;
its mask plane (an extension named ``MASK``, non-zero where a pixel should not be trusted)
says why, one bit per reason, so a user can keep the pixels one reason flags and drop those
of another.

Arrays in, new arrays out: variances in ADU², nothing here touches files.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = [
    "MaskBit",
    "combined_variance",
    "dark_current_bias_share",
    "dark_current_variance",
    "difference_variance",
    "flat_term_share",
    "flat_variance",
    "frame_mask",
    "frame_variance",
    "normalised_variance",
    "quotient_variance",
    "saturation_level",
    "scaled_variance",
]


class MaskBit(enum.IntFlag):
    """Why a pixel is masked: the bits of a product's ``MASK`` plane."""

    HOT = 1
    """Dark current far above the chip's (the bad-pixel mask, from the darks)."""
    DEFECT = 2
    """Dead or deviant in the flats (the bad-pixel mask, from the flats)."""
    USER = 4
    """Masked in the user's bad-pixel mask file."""
    SATURATED = 8
    """A raw sample at or above the detector's saturation level."""
    COSMIC_RAY = 16
    """A cosmic ray found in this frame (LACosmic)."""
    NOT_FINITE = 32
    """No finite value (every sample rejected, or a flat of zero)."""


def frame_variance(signal, gain: float, read_noise: float, out=None) -> np.ndarray:
    """The variance (ADU²) of a raw frame's pixels from the detector's noise model.

    ``(read_noise / gain)² + max(signal, 0) / gain``: the read noise, and the shot noise
    of the electrons the signal counts.

    Parameters
    ----------
    signal : array_like
        The frame less its bias, dark or overscan level (ADU): what arrived as electrons.
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise in electrons.
    out : numpy.ndarray of float64, optional
        Where to put the result (``signal`` itself, to spare a copy).

    Examples
    --------
    >>> frame_variance([-5.0, 0.0, 300.0], gain=1.5, read_noise=9.0).tolist()
    [36.0, 36.0, 236.0]
    """
    variance = np.maximum(signal, 0.0, out=out, dtype=np.float64)
    variance /= gain
    variance += (read_noise / gain) ** 2
    return variance


def combined_variance(sample_variance, n_used, average: str = "mean", out=None) -> np.ndarray:
    """The variance of the average of ``n_used`` samples, each of ``sample_variance``.

    The mean's is ``sample_variance / n``; the median's ``pi/2`` times that (for many
    normal samples). A pixel with no sample has an infinite variance.

    Parameters
    ----------
    sample_variance : array_like
    n_used : array_like of int
    average : {'mean', 'median'}
    out : numpy.ndarray of float64, optional
        Where to put the result (``sample_variance`` itself, to spare a copy).

    Examples
    --------
    >>> combined_variance([36.0, 36.0, 36.0], [4, 9, 0]).tolist()
    [9.0, 4.0, inf]
    """
    if average not in ("mean", "median"):
        msg = f"average must be 'mean' or 'median', got {average!r}"
        raise ValueError(msg)
    with np.errstate(divide="ignore"):
        variance = np.divide(sample_variance, n_used, out=out, dtype=np.float64)
    if average == "median":
        variance *= np.pi / 2
    return variance


def difference_variance(variance_a, variance_b) -> np.ndarray:
    """The variance of ``a - b`` (or ``a + b``) of independent ``a`` and ``b``: the sum."""
    return np.add(variance_a, variance_b, dtype=np.float64)


def scaled_variance(variance, factor) -> np.ndarray:
    """The variance of ``factor x a`` (a dark current scaled by an exposure time): ``factor² var``."""
    return np.square(factor, dtype=np.float64) * variance


def quotient_variance(numerator, numerator_variance, flat, flat_variance,
                      out=None) -> np.ndarray:
    """The variance of ``numerator / flat`` (a frame divided by a master flat), to first order.

    ``var_a / f² + a² var_f / f⁴``, computed as ``(var_a + a² var_f / f²) / f²``.

    Parameters
    ----------
    numerator, numerator_variance, flat, flat_variance : array_like
    out : numpy.ndarray of float64, optional
        Where to put the result.

    Examples
    --------
    >>> quotient_variance(100.0, 25.0, 2.0, 0.01).item()
    12.5
    """
    flat_square = np.square(flat, dtype=np.float64)
    variance = np.square(numerator, out=out, dtype=np.float64)
    variance *= flat_variance
    variance /= flat_square
    variance += numerator_variance
    variance /= flat_square
    return variance


def dark_current_variance(current, n_used, n_frames: int, exptimes, gain: float,
                          read_noise: float) -> np.ndarray:
    """The variance (ADU²/s²) of a dark current fitted through zero across exposure times,
    from the darks' noise (the master bias's: :func:`dark_current_bias_share`).

    The current is ``sum(n t D_t) / sum(n t²)`` (see
    :class:`~ccdred.combiners.DarkCurrentCombiner`) with ``D_t`` the mean of the ``n``
    darks of exposure time ``t`` less the master bias, so its variance is
    ``sum(n t² var_t) / sum(n t²)²`` with ``var_t`` a dark's (:func:`frame_variance` of
    ``current x t``); each pixel's ``n_used`` samples are taken as spread over the exposure
    times as the darks are.

    Parameters
    ----------
    current : array_like
        The dark current (ADU/s).
    n_used : array_like of int
        Samples used per pixel.
    n_frames : int
        Darks combined.
    exptimes : sequence of float
        Each dark's exposure time (s).
    gain, read_noise : float
        e-/ADU and e-.
    """
    exptimes = np.asarray(exptimes, dtype=np.float64)
    share = np.asarray(n_used, dtype=np.float64) / n_frames
    current = np.asarray(current, dtype=np.float64)
    numerator = sum_t2 = 0.0
    for exptime in np.unique(exptimes):
        n = share * np.count_nonzero(exptimes == exptime)
        numerator = numerator + n * exptime**2 * frame_variance(current * exptime, gain, read_noise)
        sum_t2 = sum_t2 + n * exptime**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(share > 0, numerator / np.square(sum_t2), np.inf)


def dark_current_bias_share(exptimes) -> float:
    """How much of the master bias a fitted dark current holds: ``sum(t) / sum(t²)`` (the
    bias's variance scales by its square; see :func:`dark_current_variance`).

    Examples
    --------
    >>> round(dark_current_bias_share([10.0, 10.0, 20.0]), 4)
    0.0667
    """
    exptimes = np.asarray(exptimes, dtype=np.float64)
    return float(exptimes.sum() / np.square(exptimes).sum())


def flat_variance(combined, n_used, medians, gain: float, read_noise: float) -> np.ndarray:
    """The variance of a master flat's combination before normalising (ADU²), from the
    flats' noise (their dark term's: :func:`flat_term_share`).

    The flats, less their dark terms (``x_i``, of medians ``m_i``), are scaled to the first
    one's median and averaged with their medians as weights: ``C = m_0 sum(x_i) / sum(m_i)``
    (see :class:`~ccdred.combiners.FlatCombiner`). With each pixel's ``n_used`` flats taken
    at the mean median ``m``, and ``x_i`` of the noise model at ``C m / m_0``:
    ``var C = (m_0 / m)² (rn/g)² / n + (m_0 / m) C / (g n)``.

    Parameters
    ----------
    combined : array_like
        The combination ``C`` (ADU, at the first flat's level).
    n_used : array_like of int
    medians : sequence of float
        The medians of the flats used, the first one's first (the scale).
    gain, read_noise : float
    """
    ratio = flat_term_share(medians)
    variance = np.maximum(combined, 0.0, dtype=np.float64)  # the signal, then its variance
    variance /= ratio
    combined_variance(frame_variance(variance, gain, read_noise, out=variance), n_used,
                      out=variance)
    variance *= ratio**2
    return variance


def flat_term_share(medians) -> float:
    """How much of the dark term a flat's combination holds: ``m_0 / mean(m)`` of the
    flats' medians (the term's variance scales by its square; see :func:`flat_variance`)."""
    medians = np.asarray(medians, dtype=np.float64)
    return float(medians[0] / medians.mean())


def normalised_variance(variance, combined, normalised) -> np.ndarray:
    """The variance of a normalised master flat, from its combination's: scaled by
    ``(normalised / combined)²``; infinite where the flat was set to 1.0 (no positive,
    finite combination)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.divide(normalised, combined, dtype=np.float64)
        scaled *= scaled
        scaled *= variance
        good = np.greater(combined, 0)
    good &= np.isfinite(combined)
    scaled[~good] = np.inf
    return scaled


def saturation_level(header_value, dtype) -> float | None:
    """The level at and above which a raw sample is saturated.

    The header's value (``SATURATE``) where it has one; else the largest value of an
    integer raw type (65535 for 16-bit frames); else None (float frames: unknown).

    Examples
    --------
    >>> saturation_level(None, "uint16"), saturation_level(50000, "uint16"), saturation_level(None, "float32")
    (65535.0, 50000.0, None)
    """
    if header_value is not None:
        return float(header_value)
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else None


def frame_mask(raw, result, saturation: float | None = None, uncertainty=None,
               extra=None) -> np.ndarray:
    """The mask plane (uint8 of :class:`MaskBit`) of a calibrated frame.

    Parameters
    ----------
    raw : array_like
        The raw samples (before overscan subtraction), of the result's shape.
    result : array_like
        The calibrated image.
    saturation : float, optional
        Raw samples at or above it are ``SATURATED`` (see :func:`saturation_level`).
    uncertainty : array_like, optional
        The result's standard deviation (or variance): not finite is ``NOT_FINITE`` too.
    extra : array_like of int, optional
        Bits a caller adds (a bad-pixel mask, cosmic rays).

    Examples
    --------
    >>> frame_mask([10, 65535, 20], [1.0, 2.0, np.nan], saturation=65535).tolist()
    [0, 8, 32]
    """
    shape = np.shape(result)
    result = np.atleast_1d(result)
    raw, uncertainty, extra = (
        None if plane is None else np.broadcast_to(np.asarray(plane, dtype), result.shape)
        for plane, dtype in ((None if saturation is None else raw, None),
                             (uncertainty, None), (extra, np.uint8)))
    mask = np.empty(result.shape, dtype=np.uint8)
    for start in range(0, len(result), _MASK_ROWS):  # temporaries of a few rows, in the cache
        rows = slice(start, start + _MASK_ROWS)
        _mask_rows(mask[rows], result[rows], saturation,
                   *(None if plane is None else plane[rows] for plane in (raw, uncertainty, extra)))
    return mask.reshape(shape)


#: Rows of a mask made at a time (:func:`frame_mask`).
_MASK_ROWS = 64


def _mask_rows(mask, result, saturation, raw, uncertainty, extra) -> None:
    """Fill ``mask``, some rows of :func:`frame_mask`'s, from the same rows of its inputs."""
    if saturation is None:
        mask.fill(0)
    else:
        np.multiply(np.greater_equal(raw, saturation), np.uint8(MaskBit.SATURATED), out=mask)
    finite = np.isfinite(result)
    if uncertainty is not None:
        finite &= np.isfinite(uncertainty)
    np.bitwise_or(mask, np.uint8(MaskBit.NOT_FINITE), out=mask, where=~finite)
    if extra is not None:
        mask |= extra
