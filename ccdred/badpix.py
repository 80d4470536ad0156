"""The bad-pixel mask: hot pixels from the darks, dead and deviant pixels from the flats.

Pure numpy on master images (scipy's median filter and astropy's ``mad_std``,
imported where used), arrays in, new arrays out; :func:`read_bad_pixel_mask`
alone reads a file, a user's own mask.

- **Hot pixels** (:func:`hot_pixels`): dark current far above the chip's, robustly:
  above the median by more than ``sigma`` times the ``mad_std`` of the image.
- **Defects** (:func:`flat_defects`): pixels of a flat far from the flat smoothed by a
  moving median, in units of a local robust σ, grown along columns, as IRAF's
  ``ccdmask`` (and ccdproc's) find them.
- **The mask** (:func:`bad_pixel_mask`): one uint8 image whose bits are
  :class:`~ccdred.planes.MaskBit`'s ``HOT``, ``DEFECT`` and ``USER``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import InputError, InputProblem
from .planes import MaskBit

__all__ = ["HOT_SIGMA", "bad_pixel_mask", "flat_defects", "hot_pixels", "read_bad_pixel_mask"]

#: Hot-pixel threshold, in robust σ above the median. The σ of a master dark current is
#: mostly read noise, Gaussian: 5σ is passed by 3e-7 of normal pixels (about one pixel of a
#: 2048² chip), while a hot pixel of the course's cameras (seconds of exposure at tens of
#: ADU/s) stands 20σ and more above the chip's.
HOT_SIGMA = 5.0

#: ``ccdmask``'s local σ is half the distance between these percentiles of a block, which the
#: deviant pixels it looks for barely move. IRAF's help calls them a Gaussian's ±1σ points;
#: they are its ±0.5σ points, so this σ is half the noise's and ``ccdmask``'s thresholds
#: (``lsigma`` = ``hsigma`` = 9 by default) are 4.5 times the noise's σ. Kept as ``ccdmask``
#: has it, so that its users' thresholds mean what they meant.
_SIGMA_PERCENTILES = (30.9, 69.1)


def hot_pixels(dark_current, sigma: float = HOT_SIGMA) -> np.ndarray:
    """Bool map of the pixels whose dark current is far above the chip's.

    A pixel is hot above ``median + sigma * mad_std`` of the image (non-finite pixels
    left out of both and never hot). The threshold is relative, so the image may be a
    master dark current (ADU/s) or a bias-subtracted master dark of any exposure time (ADU).

    Parameters
    ----------
    dark_current : array-like, shape (rows, columns)
        Dark current per pixel; not changed.
    sigma : float, optional
        Threshold in robust standard deviations (:data:`HOT_SIGMA`).

    Returns
    -------
    numpy.ndarray of bool

    Examples
    --------
    >>> rate = np.random.default_rng(1).normal(0.02, 0.002, (64, 64))
    >>> rate[10, 20] = 3.0
    >>> np.argwhere(hot_pixels(rate)).tolist()
    [[10, 20]]
    """
    from astropy.stats import mad_std

    _check_positive("sigma", sigma)
    dark_current = np.asarray(dark_current, dtype=float)
    level = np.nanmedian(dark_current)
    spread = mad_std(dark_current, ignore_nan=True)
    with np.errstate(invalid="ignore"):
        return dark_current > level + sigma * spread


def flat_defects(master_flat, *, ncmed: int = 7, nlmed: int = 7, ncsig: int = 15,
                 nlsig: int = 15, lsigma: float = 9.0, hsigma: float = 9.0,
                 ngood: int = 5) -> np.ndarray:
    """Bool map of a flat's dead and deviant pixels, as IRAF's ``ccdmask`` finds them.

    1. The ratio of the flat to itself smoothed by an ``nlmed`` x ``ncmed`` moving median
       (rows x columns): the illumination and vignetting divide out, a defect smaller than
       half the box stays.
    2. A local σ of the ratio per block of ``nlsig`` x ``ncsig`` pixels: half the distance
       between its 30.9th and 69.1th percentiles, which the defects barely move; as in
       ``ccdmask``, this is half the σ of Gaussian noise (see :data:`_SIGMA_PERCENTILES`),
       so that the default thresholds of 9 are 4.5 σ of the noise.
    3. Defects: a ratio below 1 by more than ``lsigma`` local σ, or above by more than
       ``hsigma``; non-finite pixels too.
    4. Grown along columns: a run of at most ``ngood`` good pixels between two defects of
       one column is marked too (a partly bad column is bad between its detections).

    ``ccdmask`` subtracts the smoothed image rather than dividing by it (the same for a
    flat near 1; the ratio keeps σ in relative units where vignetting dims the flat), and
    also sums columns to find faint bad columns (``findbadcolumns``): left out here.

    Parameters
    ----------
    master_flat : array-like, shape (rows, columns)
        A master flat (any scale); not changed.
    ncmed, nlmed : int, optional
        Columns and rows of the moving median (``ccdmask``'s defaults).
    ncsig, nlsig : int, optional
        Columns and rows of the blocks of the local σ (at least 10 each).
    lsigma, hsigma : float, optional
        Thresholds below and above, in local σ.
    ngood : int, optional
        Longest run of good pixels between two defects of a column that is marked too;
        0 grows nothing.

    Returns
    -------
    numpy.ndarray of bool

    Examples
    --------
    >>> flat = np.random.default_rng(2).normal(1.0, 0.01, (60, 60))
    >>> flat[5, 7], flat[30, 40] = 0.5, 1.3
    >>> np.argwhere(flat_defects(flat)).tolist()
    [[5, 7], [30, 40]]
    """
    from scipy.ndimage import median_filter

    for name, value in (("lsigma", lsigma), ("hsigma", hsigma)):
        _check_positive(name, value)
    if min(ncsig, nlsig) < 10:
        msg = (f"ncsig and nlsig must be at least 10 (pixels to estimate σ from), "
               f"not {ncsig}, {nlsig}")
        raise ValueError(msg)
    flat = np.asarray(master_flat, dtype=float)
    finite = np.isfinite(flat)
    filled = np.where(finite, flat, np.median(flat[finite]))
    with np.errstate(divide="ignore", invalid="ignore"):
        residual = filled / median_filter(filled, size=(nlmed, ncmed)) - 1.0
    sigma = _block_sigma(np.where(np.isfinite(residual), residual, 0.0), nlsig, ncsig)
    with np.errstate(invalid="ignore"):
        defects = ~finite | ~np.isfinite(residual) | (residual < -lsigma * sigma) \
            | (residual > hsigma * sigma)
    return _grow_along_columns(defects, ngood)


def bad_pixel_mask(hot=None, defects=None, user=None, shape=None) -> np.ndarray:
    """The bad-pixel mask: a uint8 image of :class:`~ccdred.planes.MaskBit` bits.

    Parameters
    ----------
    hot, defects, user : array-like of bool, optional
        Where the pixels are hot (``MaskBit.HOT``), defective in a flat
        (``MaskBit.DEFECT``), or bad in the user's mask (``MaskBit.USER``); all of
        one shape.
    shape : (int, int), optional
        The mask's shape when no map is given (a mask of no bad pixel).

    Returns
    -------
    numpy.ndarray of uint8

    Examples
    --------
    >>> bad_pixel_mask(hot=[[True, False]], defects=[[True, True]]).tolist()
    [[3, 2]]
    """
    maps = {bit: np.asarray(where, dtype=bool) for bit, where in
            ((MaskBit.HOT, hot), (MaskBit.DEFECT, defects), (MaskBit.USER, user))
            if where is not None}
    shapes = {where.shape for where in maps.values()} or {tuple(shape or ())}
    if len(shapes) > 1 or shapes == {()}:
        msg = f"hot, defects and user must have one shape (or shape given), not {sorted(shapes)}"
        raise ValueError(msg)
    mask = np.zeros(shapes.pop(), dtype=np.uint8)
    for bit, where in maps.items():
        mask[where] |= np.uint8(bit)
    return mask


def read_bad_pixel_mask(path, shape) -> np.ndarray:
    """A user's bad-pixel mask file as a ``MaskBit.USER`` map (uint8, see :func:`bad_pixel_mask`).

    Parameters
    ----------
    path : path-like
        A FITS file whose first image is the mask: non-zero (or non-finite) where a
        pixel is bad, as ``ccdmask`` and astropy write masks.
    shape : (int, int)
        The night's image shape (rows, columns), after trimming: the mask must have it.

    Raises
    ------
    InputError
        Naming the file, when it cannot be read or its shape differs.
    """
    from .fitsio import find_image_hdu, read_image

    path = Path(path)
    if not path.is_file():
        raise InputError([InputProblem(path, "bad-pixel mask file not found")])
    index, _ = find_image_hdu(path)
    data = read_image(path, index)
    if data.shape != tuple(shape):
        msg = (f"bad-pixel mask is {data.shape[-1]}x{data.shape[0]} pixels "
               f"(columns x rows), the night's images {shape[1]}x{shape[0]}")
        raise InputError([InputProblem(path, msg)])
    with np.errstate(invalid="ignore"):
        return bad_pixel_mask(user=(data != 0) | ~np.isfinite(data))


def _check_positive(name: str, value) -> None:
    if not (math.isfinite(value) and value > 0):
        msg = f"{name} must be a finite number greater than 0, not {value!r}"
        raise ValueError(msg)


def _block_sigma(residual: np.ndarray, nlsig: int, ncsig: int) -> np.ndarray:
    """Each pixel's σ: half the 30.9-69.1 percentile distance of its block of
    ``nlsig`` x ``ncsig`` pixels (the last blocks of a row or column smaller)."""
    rows, columns = residual.shape
    n_rows, n_columns = math.ceil(rows / nlsig), math.ceil(columns / ncsig)
    padded = np.full((n_rows * nlsig, n_columns * ncsig), np.nan)
    padded[:rows, :columns] = residual
    blocks = padded.reshape(n_rows, nlsig, n_columns, ncsig).swapaxes(1, 2)
    low, high = _percentiles(blocks.reshape(n_rows, n_columns, -1), _SIGMA_PERCENTILES)
    sigma = (high - low) / 2.0
    return np.repeat(np.repeat(sigma, nlsig, axis=0), ncsig, axis=1)[:rows, :columns]


def _percentiles(samples: np.ndarray, percentiles) -> list[np.ndarray]:
    """``np.nanpercentile(samples, p, axis=-1)`` (linear) for each ``p``, by one sort of the
    last axis (NaNs sort last), many times faster for many small sets of samples."""
    ordered = np.sort(samples, axis=-1)
    last = np.isfinite(samples).sum(axis=-1) - 1
    values = []
    for percentile in percentiles:
        position = percentile / 100.0 * last
        below = np.floor(position).astype(int)[..., None]
        above = np.minimum(below + 1, last[..., None])
        low, high = (np.take_along_axis(ordered, i, axis=-1)[..., 0] for i in (below, above))
        values.append(low + (position - below[..., 0]) * (high - low))
    return values


def _grow_along_columns(defects: np.ndarray, ngood: int) -> np.ndarray:
    """``defects`` with every run of at most ``ngood`` good pixels between two defects of
    a column marked too."""
    n_rows = len(defects)
    rows = np.arange(n_rows)[:, None]
    above = np.maximum.accumulate(np.where(defects, rows, -1), axis=0)
    below = np.minimum.accumulate(np.where(defects, rows, n_rows)[::-1], axis=0)[::-1]
    return defects | ((above >= 0) & (below < n_rows) & (below - above - 1 <= ngood))
