"""Cosmic rays in object frames (LACosmic, by astroscrappy), and one frame's mask bits.

Numpy around ``astroscrappy.detect_cosmics`` and :mod:`ccdred.lacosmic` (numba), both
imported where used; arrays in, new arrays out. Units: images in ADU, the gain in
electrons per ADU and the read noise in electrons, as :class:`~ccdred.noise.DetectorNoise`
holds them; astroscrappy works in electrons (its ``gain`` multiplies the image, its
``satlevel`` is in electrons) and, from version 1.1, returns the cleaned image in the
input's units.

One iteration, the default, runs compiled (:mod:`ccdred.lacosmic`): astroscrappy's mask
and cleaned image to the pixel, about 0.3 s of CPU per 2048² frame against astroscrappy's
3 s per iteration (``benchmarks/README.md``, 2026-12-07). More iterations run
astroscrappy on the whole frame.

Masters need none of this: their combination rejects a ray, seen in one frame only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .planes import MaskBit

__all__ = ["CosmicRays", "LACosmic", "cosmic_ray_mask", "object_mask"]


class LACosmic(NamedTuple):
    """LACosmic's thresholds (astroscrappy's names, van Dokkum's 2001 values) and iterations.

    Why one iteration by default, where astroscrappy has four: on the 2048² demo night
    (its six calibrated objects, 9335 ray pixels, their variance the noise model) one
    iteration finds the same rays as four (98.2 % of the ray pixels) and flags no more
    star cores (0.04 % against 0.05 %), and each iteration filters the whole frame again:
    four took 8.3 s of CPU a frame, one compiled takes 0.3 s (``benchmarks/README.md``,
    2026-12-07; the target is 1 s). Later iterations find what cleaning the first rays
    uncovers (the wings of long tracks, which the demo's one-pixel hits do not have): ask
    for them with ``niter`` (``ccdred reduce --cosmic-ray-iterations 4``); they run
    astroscrappy, 2.6 s of CPU for the first iteration and 1.6-1.9 s for each further one.
    ``sigclip`` 4.5 and ``objlim`` 5 are kept (van Dokkum's, astroscrappy's and ccdproc's):
    4.0-5.5 and 3-8 found the same rays on the demo night.

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
        Iterations (each finds rays the last one's cleaning uncovered); 1 runs compiled
        (:mod:`ccdred.lacosmic`), more run astroscrappy.
    """

    sigclip: float = 4.5
    sigfrac: float = 0.3
    objlim: float = 5.0
    niter: int = 1


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

    def bits(self) -> np.ndarray:
        """The rays as mask bits (uint8): ``COSMIC_RAY`` where a ray is, else 0."""
        return self.mask.astype(np.uint8) * np.uint8(MaskBit.COSMIC_RAY)


def cosmic_ray_mask(image, gain: float, read_noise: float, *, lacosmic: LACosmic = LACosmic(),
                    saturation: float | None = None, bad_pixels=None,
                    variance=None) -> CosmicRays:
    """Find the cosmic rays of an object frame with LACosmic (``astroscrappy``).

    The frame should keep its sky (a calibrated frame, not sky-subtracted): the noise
    model is the image's own Poisson noise and the read noise, or ``variance`` when given.
    A noise model below the frame's true noise finds rays in the noise: a read noise
    smaller than the camera's, or a calibrated frame whose masters (from few frames) add
    noise of their own, which ``variance`` can say.

    One iteration (``lacosmic.niter``, the default) runs compiled, with astroscrappy's
    result to the pixel; more run astroscrappy (see :class:`LACosmic` for why).

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
    image = np.ascontiguousarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    left_out = ~finite if bad_pixels is None else ~finite | (np.asarray(bad_pixels) != 0)
    image_in = np.where(finite, image, np.float32(0.0))
    variance = None if variance is None else np.ascontiguousarray(variance, dtype=np.float32)
    level = np.inf if saturation is None else saturation * gain
    find = _one_iteration if lacosmic.niter == 1 else _iterations
    mask, cleaned = find(image_in, left_out, variance, gain, read_noise, level, lacosmic)
    # astroscrappy scales the image by the gain and back: keep the pixels it did not clean
    return CosmicRays(mask & finite, np.where(mask & finite, cleaned, image))


def _iterations(image, left_out, variance, gain, read_noise, level, lacosmic):
    """``astroscrappy.detect_cosmics`` on the whole frame: (mask, cleaned image)."""
    import astroscrappy

    known = {} if variance is None else {"invar": variance}
    return astroscrappy.detect_cosmics(image, inmask=left_out, gain=gain, readnoise=read_noise,
                                       satlevel=level, sepmed=True, **known,
                                       **lacosmic._asdict())


def _one_iteration(image, left_out, variance, gain, read_noise, level, lacosmic):
    """LACosmic's one iteration compiled (:mod:`ccdred.lacosmic`), with astroscrappy's
    float32 arithmetic for the electrons, the noise model and the mask it grows:
    (mask, cleaned image), as :func:`_iterations` with ``niter=1``."""
    from astroscrappy.utils import median

    from . import lacosmic as kernels

    gain = np.float32(gain)
    electrons = image * gain
    noise_model = (electrons + np.float32(read_noise) * np.float32(read_noise)
                   if variance is None else variance * (gain * gain))
    bad = _grown_mask(electrons, left_out, np.float32(level))
    rays = kernels.ray_mask(electrons, noise_model, bad, *lacosmic[:3])
    cleaned = kernels.clean_rays(electrons, rays, bad, np.float32(np.nan))
    if np.isnan(cleaned[rays]).any():  # a ray whose 5x5 box has no good pixel
        good = np.ascontiguousarray(electrons[~bad])
        cleaned = kernels.clean_rays(electrons, rays, bad, median(good, good.size))
    return rays, cleaned / gain


def _grown_mask(electrons, left_out, level) -> np.ndarray:
    """astroscrappy's mask of pixels that are never rays: the pixels left out, grown by
    one, and the saturated stars' cores (saturated pixels whose 7x7 separable median is
    above a tenth of the level), grown by 4."""
    from astroscrappy.utils import dilate3, dilate5

    from .lacosmic import sepmed7

    bad = np.asarray(dilate3(left_out), dtype=bool)
    saturated = electrons >= level
    if saturated.any():
        saturated &= sepmed7(electrons) > np.float32(float(level) / 10.0)
        bad |= np.asarray(dilate5(saturated, 2), dtype=bool)
    return bad


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
        mask |= rays.bits()
    return mask
