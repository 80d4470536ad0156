"""Cosmic rays in object frames (LACosmic, by astroscrappy), and one frame's mask bits.

Pure numpy around ``astroscrappy.detect_cosmics`` (imported where used), arrays in,
new arrays out. Units: images in ADU, the gain in electrons per ADU and the read noise
in electrons, as :class:`~ccdred.noise.DetectorNoise` holds them; astroscrappy works in
electrons (its ``gain`` multiplies the image, its ``satlevel`` is in electrons) and,
from version 1.1, returns the cleaned image in the input's units.

Masters need none of this: their combination rejects a ray, seen in one frame only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .planes import MaskBit

__all__ = ["CosmicRays", "LACosmic", "cosmic_ray_mask", "object_mask"]


class LACosmic(NamedTuple):
    """LACosmic's thresholds (astroscrappy's names and defaults, van Dokkum's 2001 values).

    Attributes
    ----------
    sigclip : float
        A pixel's Laplacian, in units of its noise, above which it is a ray.
    sigfrac : float
        The fraction of ``sigclip`` a ray's neighbours need to join it.
    objlim : float
        The contrast, Laplacian to fine structure, a ray needs over a star's core
        (raise it when star cores are taken for rays).
    niter : int
        Iterations (each finds rays the last one's cleaning uncovered).
    """

    sigclip: float = 4.5
    sigfrac: float = 0.3
    objlim: float = 5.0
    niter: int = 4


class CosmicRays(NamedTuple):
    """The rays found in an image, and the image with them replaced.

    Attributes
    ----------
    mask : numpy.ndarray of bool
        Where the rays are.
    cleaned : numpy.ndarray
        The image with each ray pixel replaced by the mean of the good pixels of
        the 5x5 box around it, in the input's units (float32); the other pixels are
        the input's.
    """

    mask: np.ndarray
    cleaned: np.ndarray


def cosmic_ray_mask(image, gain: float, read_noise: float, *, lacosmic: LACosmic = LACosmic(),
                    saturation: float | None = None, bad_pixels=None,
                    variance=None) -> CosmicRays:
    """Find the cosmic rays of an object frame with LACosmic (``astroscrappy``).

    The frame should keep its sky (a calibrated frame, not sky-subtracted): the noise
    model is the image's own Poisson noise and the read noise, or ``variance`` when given.
    A noise model below the frame's true noise finds rays in the noise: a read noise
    smaller than the camera's, or a calibrated frame whose masters (from few frames) add
    noise of their own, which ``variance`` can say.

    With one iteration (the default) LACosmic runs only round the pixels that can be rays
    (:func:`ray_candidates`), in windows wide enough that the result is the whole frame's
    (see :data:`WINDOW_MARGIN`); more iterations run on the whole frame.

    Parameters
    ----------
    image : array-like, shape (rows, columns)
        The frame (ADU); not changed. Non-finite pixels are left out and never rays.
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise in electrons.
    lacosmic : LACosmic, optional
        The detection's thresholds and iterations.
    saturation : float, optional
        Level (ADU) of saturated pixels: saturated stars are then not taken for rays.
        None: no pixel is saturated.
    bad_pixels : array-like, optional
        Pixels left out of the detection (non-zero), e.g. a bad-pixel mask.
    variance : array-like, optional
        The image's variance per pixel (ADU², e.g. its uncertainty plane squared), the
        noise model instead of the one made from the image, ``gain`` and ``read_noise``.

    Returns
    -------
    CosmicRays
        ``(mask, cleaned)``.

    Examples
    --------
    >>> sky = np.random.default_rng(3).normal(200.0, 12.0, (64, 64))
    >>> sky[20, 30] += 3000.0
    >>> rays = cosmic_ray_mask(sky, gain=1.5, read_noise=9.0)
    >>> bool(rays.mask[20, 30]), bool(abs(rays.cleaned[20, 30] - 200.0) < 50.0)
    (True, True)
    """
    image = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    left_out = ~finite if bad_pixels is None else ~finite | (np.asarray(bad_pixels) != 0)
    frame = _Frame(np.where(finite, image, 0.0).astype(np.float32), left_out,
                   None if variance is None else np.asarray(variance, dtype=np.float32))
    options = {"gain": gain, "readnoise": read_noise, "sepmed": True,
               "satlevel": np.inf if saturation is None else saturation * gain,
               **lacosmic._asdict()}
    mask, cleaned = (_in_windows(frame, options) if lacosmic.niter == 1
                     else _detect(frame, options))
    # astroscrappy scales the image by the gain and back: keep the pixels it did not clean
    return CosmicRays(mask & finite, np.where(mask & finite, cleaned, image))


#: How far (pixels) from a pixel LACosmic's one iteration looks to decide it is a ray and
#: to clean it: its Laplacian's signal to noise is measured against a separable 7-pixel
#: median of it (3) over a Laplacian (1) and a noise from a 7-pixel median of the variance
#: (3); the fine structure is a 9-pixel median (4) of a 5-pixel one (2); saturated stars
#: grow a 7-pixel median's mask twice by 2 (7); a ray grows twice by one pixel round its
#: seed (2) and is cleaned from the 5x5 box round it (2): 7 + 2 + 2.
WINDOW_MARGIN = 11
#: How far a ray's mask reaches from the pixels :func:`ray_candidates` finds.
RAY_GROWTH = 2


class _Frame(NamedTuple):
    """The arrays astroscrappy is given: the image, the pixels left out, the variance."""

    image: np.ndarray
    left_out: np.ndarray
    variance: np.ndarray | None

    def cut(self, window) -> _Frame:
        return _Frame(*(None if part is None else part[window] for part in self))


def _detect(frame: _Frame, options: dict) -> tuple[np.ndarray, np.ndarray]:
    """astroscrappy on the whole of ``frame``: (mask, cleaned image)."""
    import astroscrappy

    known = {} if frame.variance is None else {"invar": frame.variance}
    return astroscrappy.detect_cosmics(frame.image, inmask=frame.left_out, **known, **options)


def ray_candidates(image, gain: float, read_noise: float, sigclip: float,
                   variance=None) -> np.ndarray:
    """The pixels LACosmic may take for the seeds of rays (a superset, found cheaply).

    LACosmic's seeds have a Laplacian signal to noise ``s - median(s)`` above ``sigclip``,
    where ``s`` is the Laplacian (``L+``, astroscrappy's own) over twice the noise, the
    square root of a 7x7 separable median of the variance. ``s`` is never negative, so
    neither is its median: a seed has ``s`` above ``sigclip``, and so has an upper bound
    of ``s`` made with the 7x7 minimum of the variance instead of its median (the float32
    operations are astroscrappy's, each monotonic). The other pixels of a ray are within
    :data:`RAY_GROWTH` of a seed.

    Parameters
    ----------
    image : numpy.ndarray of float32, shape (rows, columns)
        The frame (ADU), finite.
    gain, read_noise : float
        Electrons per ADU; electrons.
    sigclip : float
        LACosmic's threshold (:attr:`LACosmic.sigclip`).
    variance : numpy.ndarray of float32, optional
        The noise model (ADU²), as for :func:`cosmic_ray_mask`.

    Returns
    -------
    numpy.ndarray of bool
    """
    from astroscrappy.utils import laplaceconvolve, rebin, subsample
    from scipy.ndimage import minimum_filter

    electrons = image * gain
    noise_model = (electrons + read_noise * read_noise if variance is None
                   else variance * (gain * gain))
    lowest = np.maximum(minimum_filter(noise_model, size=7), np.float32(0.00001))
    laplacian = laplaceconvolve(subsample(electrons))
    laplacian[laplacian < 0] = 0.0
    return rebin(laplacian) / (2.0 * np.sqrt(lowest)) > sigclip


def _in_windows(frame: _Frame, options: dict) -> tuple[np.ndarray, np.ndarray]:
    """One LACosmic iteration run only round :func:`ray_candidates`; (mask, cleaned image),
    the whole frame's (but for the cleaned value of a ray pixel whose 5x5 box holds no good
    pixel: astroscrappy gives it the median of what it is given, here a mosaic's).

    The four edge bands are each a strip of their own (the frame's edges, where
    astroscrappy's filters stop, are theirs); every other candidate's pixels, grown by
    :data:`RAY_GROWTH`, are cut out with :data:`WINDOW_MARGIN` round them and the windows
    packed into one mosaic.
    """
    depth = 2 * RAY_GROWTH + 2 * WINDOW_MARGIN
    if min(frame.image.shape) <= 2 * depth:
        return _detect(frame, options)
    seeds = ray_candidates(frame.image, options["gain"], options["readnoise"],
                           options["sigclip"], frame.variance)
    mask, cleaned = np.zeros(frame.image.shape, bool), frame.image.copy()
    strips = _edge_strips(frame.image.shape, depth)
    windows = _windows(seeds, depth // 2)
    found = [_detect(frame.cut(window), options) for window, _ in strips]
    found += _detect_in_mosaic(frame, [window for window, _ in windows], options)
    for (window, exact), (piece_mask, piece_cleaned) in zip(strips + windows, found,
                                                            strict=True):
        inner = tuple(slice(e.start - w.start, e.stop - w.start) for e, w in zip(exact, window))
        mask[exact], cleaned[exact] = piece_mask[inner], piece_cleaned[inner]
    return mask, cleaned


def _edge_strips(shape, depth: int) -> list[tuple]:
    """(window, exact part) of each edge band: ``depth`` rows or columns deep, exact but
    for the :data:`WINDOW_MARGIN` away from the edge."""
    rows, columns = shape
    everything, exact = slice(None), depth - WINDOW_MARGIN
    return [((slice(0, depth), slice(0, columns)), (slice(0, exact), slice(0, columns))),
            ((slice(rows - depth, rows), slice(0, columns)),
             (slice(rows - exact, rows), slice(0, columns))),
            ((slice(0, rows), slice(0, depth)), (slice(0, rows), slice(0, exact))),
            ((slice(0, rows), slice(columns - depth, columns)),
             (slice(0, rows), slice(columns - exact, columns)))]


def _windows(seeds: np.ndarray, edge: int) -> list[tuple]:
    """(window, exact part) round each group of the seeds more than ``edge`` pixels from
    the frame's edges: the group's box grown by :data:`RAY_GROWTH` (where its rays can
    be), and that by :data:`WINDOW_MARGIN` (what decides them)."""
    from scipy.ndimage import binary_dilation, find_objects, label

    inside = np.zeros_like(seeds)
    inside[edge:-edge, edge:-edge] = seeds[edge:-edge, edge:-edge]
    square = np.ones((3, 3), bool)
    groups, _ = label(binary_dilation(inside, square, iterations=RAY_GROWTH), square)
    return [(tuple(slice(part.start - WINDOW_MARGIN, part.stop + WINDOW_MARGIN)
                   for part in box), box) for box in find_objects(groups)]


def _detect_in_mosaic(frame: _Frame, windows: list, options: dict) -> list[tuple]:
    """astroscrappy once on the windows of ``frame`` packed side by side; each window's
    (mask, cleaned image)."""
    shapes = [tuple(part.stop - part.start for part in window) for window in windows]
    corners, size = _shelves(shapes, frame.image.shape[1])
    placed = [tuple(slice(start, start + length) for start, length in zip(corner, shape))
              for corner, shape in zip(corners, shapes, strict=True)]
    mosaic = _Frame(np.zeros(size, np.float32), np.ones(size, bool),
                    None if frame.variance is None else np.zeros(size, np.float32))
    for window, place in zip(windows, placed, strict=True):
        for whole, piece in zip(frame, mosaic):
            if whole is not None:
                piece[place] = whole[window]
    mask, cleaned = _detect(mosaic, options)
    return [(mask[place], cleaned[place]) for place in placed]


def _shelves(shapes: list, width: int) -> tuple[list, tuple]:
    """Boxes of ``shapes`` packed in shelves, tallest first: each one's (row, column)
    corner, and the mosaic's shape, ``width`` wide or as wide as the widest box."""
    width = max([width, *(columns for _, columns in shapes)])
    corners, row, column, shelf = [None] * len(shapes), 0, 0, 0
    for index in sorted(range(len(shapes)), key=lambda index: -shapes[index][0]):
        rows, columns = shapes[index]
        if column + columns > width:
            row, column, shelf = row + shelf, 0, 0
        corners[index] = (row, column)
        column, shelf = column + columns, max(shelf, rows)
    return corners, (max(row + shelf, 1), width)


def object_mask(image, noise=None, bad_pixels=None, *, cosmic_rays: bool = True,
                lacosmic: LACosmic = LACosmic(), saturation: float | None = None,
                variance=None) -> np.ndarray:
    """The mask bits of one calibrated object frame (:class:`~ccdred.planes.MaskBit`).

    The bad-pixel mask's bits, ``COSMIC_RAY`` where LACosmic finds a ray (see
    :func:`cosmic_ray_mask`; the bad pixels left out of its search), and ``NOT_FINITE``
    where the image has no finite value.

    Parameters
    ----------
    image : array-like, shape (rows, columns)
        The calibrated frame (ADU, its sky kept); not changed.
    noise : DetectorNoise, optional
        The detector's gain and read noise; needed to find cosmic rays.
    bad_pixels : array-like of uint, optional
        The night's bad-pixel mask (:func:`ccdred.badpix.bad_pixel_mask`).
    cosmic_rays : bool, optional
        Look for cosmic rays.
    lacosmic, saturation, variance
        As for :func:`cosmic_ray_mask`: pass the frame's variance (its uncertainty plane
        squared) where it is known, the honest noise model.

    Returns
    -------
    numpy.ndarray of uint8

    Raises
    ------
    ValueError
        When cosmic rays are wanted and ``noise`` is None.
    """
    image = np.asarray(image)
    mask = (np.zeros(image.shape, np.uint8) if bad_pixels is None
            else np.array(bad_pixels, dtype=np.uint8))
    mask[~np.isfinite(image)] |= np.uint8(MaskBit.NOT_FINITE)
    if cosmic_rays:
        if noise is None:
            msg = "finding cosmic rays needs the gain and read noise (noise is None)"
            raise ValueError(msg)
        rays = cosmic_ray_mask(image, noise.gain, noise.read_noise, lacosmic=lacosmic,
                               saturation=saturation, bad_pixels=bad_pixels, variance=variance)
        mask[rays.mask] |= np.uint8(MaskBit.COSMIC_RAY)
    return mask
