"""Masters and samples made from the files with astropy and numpy, as the course script makes
them: the tests' independent oracles, which never call ccdred's combination."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clip

#: The course script's upper limit on a flat's median (ADU), its only limit.
UPPER_LIMIT = 38000.0


def raw_stack(frames) -> np.ndarray:
    """The frames' images (objects with a ``path``) read with astropy, as one float64 stack."""
    return np.array([fits.getdata(frame.path) for frame in frames], dtype=np.float64)


def clipped_darks(darks, threshold=2.5, *, frame_threshold=None,
                  rejection="sigclip") -> np.ma.MaskedArray:
    """A stack of darks masked where the master dark does not use them: each dark clipped at its
    own final ``sigma_clip`` bounds (whole frame, at ``frame_threshold``, ``threshold`` by
    default), then the rejection across the darks: sigma_clip at ``threshold``; ``'minmax'``
    drops the lowest and highest (stable order); ``'pclip'`` keeps the 10th to 90th
    percentiles. Its mean along the first axis is the master dark."""
    frame_threshold = threshold if frame_threshold is None else frame_threshold
    left_out = []
    for data in darks:
        _, low, high = sigma_clip(data, sigma=frame_threshold, maxiters=10, return_bounds=True)
        left_out.append((data < low) | (data > high))
    kept = np.ma.masked_array(darks, left_out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy and numpy about the left-out samples
        if rejection == "sigclip":
            return sigma_clip(kept, sigma=threshold, maxiters=10, axis=0)
        if rejection == "minmax":
            rank = np.argsort(np.argsort(kept.filled(np.inf), axis=0, kind="stable"), axis=0)
            return np.ma.masked_array(kept, kept.mask | (rank < 1)
                                      | (rank >= kept.count(axis=0) - 1))
        low, high = np.nanpercentile(kept.filled(np.nan), [10, 90], axis=0)
    return np.ma.masked_array(kept, kept.mask | (kept < low) | (kept > high))


def master_dark(darks, threshold=2.5, *, rejection="sigclip") -> np.ndarray:
    """The master dark of :func:`clipped_darks`; pixels left empty take the mean of the others."""
    mean = clipped_darks(darks, threshold, rejection=rejection).mean(axis=0)
    return mean.filled(mean.mean())


def flat_samples(flats, dark) -> tuple[np.ndarray, np.ndarray]:
    """The flats (a stack) whose median less ``dark`` is within :data:`UPPER_LIMIT`, less
    ``dark``, scaled to the first one's median; and their medians."""
    less = flats - dark
    medians = np.median(less, axis=(1, 2))
    accepted = medians <= UPPER_LIMIT
    less, medians = less[accepted], medians[accepted]
    return less * (medians[0] / medians)[:, None, None], medians
