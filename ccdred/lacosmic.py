"""LACosmic's detection in one iteration, compiled (numba): astroscrappy's, bit for bit.

:mod:`ccdred.cosmics` imports this module where it is first used (numba loads then).
astroscrappy (1.3) spends a frame's time in separable median filters over the whole
frame (of the variance, of the Laplacian's signal to noise, of the image and of that),
about 3 s of CPU per 2048² frame and iteration. Here the filters are min/max sorting
networks over rows of pixels, which the compiler vectorises, and the fine-structure
filter (a 9-pixel median of a 5-pixel one) is taken only at the pixels that pass the
first threshold, since only their ratio to it is asked. Every float32 operation is
astroscrappy's, in its order, so the mask is the same to the pixel:
``tests/test_cosmics.py`` holds it to ``astroscrappy.detect_cosmics`` with ``niter=1``.
The Laplacian's outermost rows and columns (with edge rules of their own) and the
masks' dilations are astroscrappy's own functions.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["clean_rays", "ray_mask", "sepmed7"]

_F4_2D = numba.float32[:, ::1]
_B1_2D = numba.boolean[:, ::1]


def ray_mask(electrons: np.ndarray, noise_model: np.ndarray, bad: np.ndarray, sigclip: float,
             sigfrac: float, objlim: float) -> np.ndarray:
    """LACosmic's mask of an image in one iteration (astroscrappy's ``detect_cosmics``
    with ``niter=1``, ``sepmed=True``, ``fsmode='median'``, given its final bad-pixel mask).

    Parameters
    ----------
    electrons : numpy.ndarray of float32, C order, shape (rows, columns)
        The image times the gain (astroscrappy's ``cleanarr``).
    noise_model : numpy.ndarray of float32, C order
        Its variance in electrons² (astroscrappy's ``clean_var``).
    bad : numpy.ndarray of bool
        Pixels that are never rays (astroscrappy's mask once grown and saturated stars
        added: see :func:`ccdred.cosmics.cosmic_ray_mask`).
    sigclip, sigfrac, objlim : float
        LACosmic's thresholds (:class:`~ccdred.cosmics.LACosmic`).

    Returns
    -------
    numpy.ndarray of bool
    """
    from astroscrappy.utils import dilate3

    good = ~bad
    noise = _noise(sepmed7(noise_model))
    signal = _laplacian(electrons)
    _laplacian_edges(electrons, signal)
    signal_to_noise = _signal_to_noise(signal, noise)
    fine = _sepmed5(electrons)
    seeds = _seeds(signal_to_noise, fine, noise, good, np.float32(sigclip), np.float32(objlim))
    grown = dilate3(seeds) & good & (signal_to_noise > np.float32(sigclip))
    low = np.float32(np.float32(sigfrac) * np.float32(sigclip))
    return dilate3(grown) & good & (signal_to_noise > low)


@numba.njit(cache=True, nogil=True, inline="always")
def _order(a, b):
    return (a, b) if a <= b else (b, a)


@numba.njit(cache=True, nogil=True, inline="always")
def _median5(a0, a1, a2, a3, a4):
    """The middle of five values (a sorting network; exact, as astroscrappy's)."""
    a0, a1 = _order(a0, a1)
    a3, a4 = _order(a3, a4)
    a2, a4 = _order(a2, a4)
    a2, a3 = _order(a2, a3)
    a1, a4 = _order(a1, a4)
    a0, a3 = _order(a0, a3)
    a0, a2 = _order(a0, a2)
    a1, a3 = _order(a1, a3)
    a1, a2 = _order(a1, a2)
    return a2


@numba.njit(cache=True, nogil=True, inline="always")
def _median7(a0, a1, a2, a3, a4, a5, a6):
    """The middle of seven values (a sorting network; exact, as astroscrappy's)."""
    a0, a6 = _order(a0, a6)
    a2, a3 = _order(a2, a3)
    a4, a5 = _order(a4, a5)
    a0, a2 = _order(a0, a2)
    a1, a4 = _order(a1, a4)
    a3, a6 = _order(a3, a6)
    a0, a1 = _order(a0, a1)
    a2, a5 = _order(a2, a5)
    a3, a4 = _order(a3, a4)
    a1, a2 = _order(a1, a2)
    a4, a6 = _order(a4, a6)
    a2, a3 = _order(a2, a3)
    a4, a5 = _order(a4, a5)
    a1, a2 = _order(a1, a2)
    a3, a4 = _order(a3, a4)
    a5, a6 = _order(a5, a6)
    return a3


@numba.njit(_F4_2D(_F4_2D), cache=True, nogil=True)
def sepmed7(data):
    """astroscrappy's ``sepmedfilt7``: the median of 7 along each row, then of 7 of those
    down each column; the 3 outermost rows and columns keep the input."""
    rows, columns = data.shape
    along = data.copy()
    for j in range(rows):
        d = data[j]
        for i in range(3, columns - 3):
            along[j, i] = _median7(d[i - 3], d[i - 2], d[i - 1], d[i], d[i + 1], d[i + 2],
                                   d[i + 3])
    out = data.copy()
    for j in range(3, rows - 3):
        r0, r1, r2, r3 = along[j - 3], along[j - 2], along[j - 1], along[j]
        r4, r5, r6 = along[j + 1], along[j + 2], along[j + 3]
        for i in range(3, columns - 3):
            out[j, i] = _median7(r0[i], r1[i], r2[i], r3[i], r4[i], r5[i], r6[i])
    return out


@numba.njit(_F4_2D(_F4_2D), cache=True, nogil=True)
def _sepmed5(data):
    """astroscrappy's ``sepmedfilt5``, as :func:`sepmed7` with 5 (2 rows and columns kept)."""
    rows, columns = data.shape
    along = data.copy()
    for j in range(rows):
        d = data[j]
        for i in range(2, columns - 2):
            along[j, i] = _median5(d[i - 2], d[i - 1], d[i], d[i + 1], d[i + 2])
    out = data.copy()
    for j in range(2, rows - 2):
        r0, r1, r2, r3, r4 = along[j - 2], along[j - 1], along[j], along[j + 1], along[j + 2]
        for i in range(2, columns - 2):
            out[j, i] = _median5(r0[i], r1[i], r2[i], r3[i], r4[i])
    return out


@numba.njit(_F4_2D(_F4_2D), cache=True, nogil=True)
def _noise(variance):
    """The square root of the filtered variance, floored at 1e-5 as astroscrappy does."""
    out = np.empty_like(variance)
    floor = np.float32(0.00001)
    for j in range(variance.shape[0]):
        for i in range(variance.shape[1]):
            value = variance[j, i]
            out[j, i] = np.sqrt(floor if value < floor else value)
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _positive(value):
    return value if value >= np.float32(0.0) else np.float32(0.0)


@numba.njit(_F4_2D(_F4_2D), cache=True, nogil=True)
def _laplacian(data):
    """LACosmic's ``L+`` inside the outermost rows and columns: the image subsampled 2x2,
    its Laplacian's positive part, rebinned (astroscrappy's ``subsample``,
    ``laplaceconvolve`` and ``rebin``, their float32 operations in their order)."""
    rows, columns = data.shape
    out = np.zeros_like(data)
    four = np.float32(4.0)
    for j in range(1, rows - 1):
        up, row, down = data[j - 1], data[j], data[j + 1]
        for i in range(1, columns - 1):
            c = row[i]
            top_left = _positive(four * c - c - row[i - 1] - c - up[i])
            bottom_left = _positive(four * c - c - row[i - 1] - down[i] - c)
            bottom_right = _positive(four * c - row[i + 1] - c - down[i] - c)
            top_right = _positive(four * c - row[i + 1] - c - c - up[i])
            total = top_left + bottom_left
            total += bottom_right
            total += top_right
            out[j, i] = total / four
    return out


def _laplacian_edges(electrons: np.ndarray, signal: np.ndarray) -> None:
    """``L+`` of the outermost rows and columns, by astroscrappy on strips 3 pixels deep
    (each edge row's subsampled pixels see only their own strip)."""
    from astroscrappy.utils import laplaceconvolve, rebin, subsample

    def lplus(strip):
        laplacian = laplaceconvolve(subsample(np.ascontiguousarray(strip)))
        laplacian[laplacian < 0] = 0.0
        return rebin(laplacian)

    signal[0], signal[-1] = lplus(electrons[:3])[0], lplus(electrons[-3:])[-1]
    signal[:, 0], signal[:, -1] = lplus(electrons[:, :3])[:, 0], lplus(electrons[:, -3:])[:, -1]


@numba.njit(_F4_2D(_F4_2D, _F4_2D), cache=True, nogil=True)
def _signal_to_noise(signal, noise):
    """LACosmic's ``s'``: ``L+`` over twice the noise, less its 7x7 separable median."""
    ratio = np.empty_like(signal)
    two = np.float32(2.0)
    for j in range(signal.shape[0]):
        for i in range(signal.shape[1]):
            ratio[j, i] = signal[j, i] / (two * noise[j, i])
    return ratio - sepmed7(ratio)


@numba.njit(cache=True, nogil=True, inline="always")
def _sepmed9_at(data, j, i):
    """astroscrappy's ``sepmedfilt9`` at one pixel: the input within 4 of an edge, else
    the median of 9 down the column of the medians of 9 along the rows."""
    rows, columns = data.shape
    if j < 4 or i < 4 or j >= rows - 4 or i >= columns - 4:
        return data[j, i]
    along = np.empty(9, np.float32)
    for k in range(9):
        along[k] = np.sort(data[j - 4 + k, i - 4:i + 5])[4]
    return np.sort(along)[4]


@numba.njit(numba.uint8[:, ::1](_F4_2D, _F4_2D, _F4_2D, _B1_2D, numba.float32, numba.float32),
            cache=True, nogil=True)
def _seeds(signal_to_noise, fine, noise, good, sigclip, objlim):
    """Pixels above ``sigclip`` whose contrast to the fine structure (the 5x5 separable
    median less its 9x9 separable median, over the noise, floored at 0.01) is above
    ``objlim``; the 9x9 median only where asked."""
    rows, columns = fine.shape
    seeds = np.zeros((rows, columns), np.uint8)
    floor = np.float32(0.01)
    for j in range(rows):
        for i in range(columns):
            if good[j, i] and signal_to_noise[j, i] > sigclip:
                structure = (fine[j, i] - _sepmed9_at(fine, j, i)) / noise[j, i]
                structure = floor if structure < floor else structure
                seeds[j, i] = signal_to_noise[j, i] / structure > objlim
    return seeds


@numba.njit(_F4_2D(_F4_2D, _B1_2D, _B1_2D, numba.float32), cache=True, nogil=True)
def clean_rays(electrons, rays, bad, background):
    """astroscrappy's ``meanmask`` cleaning: each ray pixel (2 or more from the edges)
    becomes the float32 mean of the 5x5 box's pixels that are neither rays nor bad, or
    ``background`` where there are none; a new image."""
    rows, columns = electrons.shape
    out = electrons.copy()
    for j in range(2, rows - 2):
        for i in range(2, columns - 2):
            if rays[j, i]:
                total, count = np.float32(0.0), 0
                for dj in range(-2, 3):
                    for di in range(-2, 3):
                        if not (rays[j + dj, i + di] or bad[j + dj, i + di]):
                            total = total + electrons[j + dj, i + di]
                            count += 1
                out[j, i] = background if count == 0 else total / np.float32(count)
    return out
