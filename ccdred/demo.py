"""A deterministic simulated observing night, with the truth it was made from.

Frames are built by adding physical components, each a small function:
a bias level with row/column structure, dark current with hot pixels, a
pixel response (vignetting, dust rings, pixel-to-pixel variation) that
multiplies the light, star fields, cosmic rays, Poisson and read noise, and
16-bit saturation. Every generator is seeded, so the same arguments always
write the same files.
"""

from __future__ import annotations

import datetime
import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import fitsio

__all__ = ["NightSpec", "NightTruth", "amplifier_layout", "demo_night", "make_night",
           "night_cosmic_rays", "night_stars", "night_truth", "star_cores"]

GAIN = 1.5  # electrons per ADU
READ_NOISE = 6.0  # ADU (9 electrons)
BIAS_LEVEL = 1000.0  # ADU
SATURATION = 65535
#: Each amplifier's bias level (ADU) and gain (ADU per ADU of the one-amplifier camera), in
#: the order of :func:`amplifier_layout`.
AMPLIFIER_BIAS = (1000.0, 1180.0, 940.0, 1090.0)
AMPLIFIER_GAIN = (1.0, 0.92, 1.07, 0.96)
#: Columns of each amplifier's overscan strip, when the night's ``overscan`` is not given.
AMPLIFIER_OVERSCAN = 8


@dataclass(frozen=True)
class NightSpec:
    """What the simulated night holds.

    Parameters
    ----------
    shape : (int, int)
        Image (rows, columns).
    seed : int
        Seed of every random generator.
    n_bias, n_darks, n_flats, n_objects : int
        Frames per kind: darks per exposure time, flats and objects per filter.
    filters : tuple of str
        Filter names; each gets flats and objects.
    flat_exptime : float
        Exposure time of every flat (s).
    object_exptimes : tuple of float
        Object exposure time per filter (s), same order as ``filters``.
    flat_level : float
        Typical median of a flat (ADU above bias).
    saturated_flats, faint_flats : int
        Flats of the first filter made too bright (median above the course
        script's 38000 ADU limit) and of the last made under-exposed.
    imagetyp : dict
        IMAGETYP value written for each frame type.
    overscan : int
        Columns of overscan strip read out beside the image (BIASSEC and
        TRIMSEC in the header); none by default, as in the course's nights.
    bias_drift : float
        Peak drift (ADU) of the electronic bias level from frame to frame,
        with a slope along the rows; the overscan strip records it.
    dark_times : tuple of float
        Exposure times of the darks; by default the flats' and the objects'
        (one master dark for each, the course's way).
    gain : float
        Electrons per ADU: the light and dark current arrive as Poisson
        electrons, read out as ``electrons / gain`` ADU (also the header's ``GAIN``).
    read_noise : float
        Read noise in electrons (Gaussian, ``read_noise / gain`` ADU).
    flat_levels : tuple of float
        Levels (ADU above bias) of every filter's flats, in order, instead of
        ``n_flats`` levels spread around ``flat_level`` with saturated and faint
        ones: repeat a level for pairs of flats (gain, photon transfer curve).
    bayer : str or None
        A one-shot colour camera's mosaic (``BAYERPAT``, e.g. 'RGGB'): the flat
        lamp and the sky then have colours of their own (:data:`LAMP_COLOUR`,
        :data:`SKY_COLOUR`), seen through the mosaic; None: a monochrome sensor.
    defects : bool
        Give the pixel response dead and deviant pixels and two bad columns
        (:func:`pixel_defects`), which every filter's flats and objects see; the
        truth's ``defects`` says where. Off by default, so that the course's nights
        stay as they were.
    amplifiers : {1, 2, 4}
        Amplifiers the detector is read through. With 2 (left and right halves)
        or 4 (quadrants), each file holds an image extension per amplifier (see
        :func:`amplifier_layout`), the night's keywords in the primary header:
        the same frames as the one-amplifier night's, each amplifier adding its
        own bias level (:data:`AMPLIFIER_BIAS`) and gain (:data:`AMPLIFIER_GAIN`,
        its ``GAIN``), with an overscan strip (``overscan`` columns, else
        :data:`AMPLIFIER_OVERSCAN`) and its BIASSEC, DATASEC and DETSEC.
    """

    shape: tuple[int, int] = (512, 512)
    seed: int = 2021
    n_bias: int = 3
    n_darks: int = 5
    n_flats: int = 7
    n_objects: int = 3
    filters: tuple[str, ...] = ("V", "R")
    flat_exptime: float = 5.0
    object_exptimes: tuple[float, ...] = (30.0, 60.0)
    flat_level: float = 24000.0
    saturated_flats: int = 1
    faint_flats: int = 1
    imagetyp: dict = field(default_factory=lambda: {
        "bias": "BIAS", "dark": "DARK", "flat": "FLAT", "object": "LIGHT"})
    overscan: int = 0
    bias_drift: float = 0.0
    dark_times: tuple[float, ...] = ()
    gain: float = GAIN
    read_noise: float = GAIN * READ_NOISE
    flat_levels: tuple[float, ...] = ()
    bayer: str | None = None
    defects: bool = False
    amplifiers: int = 1

    def __post_init__(self):
        if self.amplifiers != 1:
            amplifier_layout(self.shape, self.amplifiers)  # ValueError naming what is wrong

    @classmethod
    def real(cls, **changes) -> NightSpec:
        """A night shaped like real cameras': overscan, a drifting bias level, more
        biases, and darks at fewer exposure times than the objects (to be scaled)."""
        values = {"overscan": 24, "bias_drift": 15.0, "n_bias": 9, "dark_times": (10.0, 120.0),
                  **changes}
        return cls(**values)

    @property
    def dark_exptimes(self) -> tuple[float, ...]:
        """Exposure times that get darks."""
        return tuple(sorted(self.dark_times or {self.flat_exptime, *self.object_exptimes}))


@dataclass(frozen=True)
class NightTruth:
    """The components a night was simulated from.

    Attributes
    ----------
    bias : numpy.ndarray
        Bias level per pixel (ADU).
    dark_current : numpy.ndarray
        Dark current per pixel (ADU/s), hot pixels included.
    hot_pixels : numpy.ndarray
        Bool map of the hot pixels.
    flat_response : dict of str to numpy.ndarray
        Relative response per filter, mean 1.
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise in electrons.
    defects : numpy.ndarray or None
        Bool map of the pixels whose response is dead or deviant (the bad columns
        included), in every filter; None when the night has none.
    """

    bias: np.ndarray
    dark_current: np.ndarray
    hot_pixels: np.ndarray
    flat_response: dict
    gain: float = GAIN
    read_noise: float = GAIN * READ_NOISE
    defects: np.ndarray | None = None

    @property
    def read_noise_adu(self) -> float:
        """Read noise in ADU."""
        return self.read_noise / self.gain


def night_truth(spec: NightSpec = NightSpec()) -> NightTruth:
    """The bias, dark current, flat response, gain and read noise of a night (no files written)."""
    rng = np.random.default_rng([spec.seed, 0])
    current, hot = dark_current(spec.shape, rng)
    factor, defects = (pixel_defects(spec.shape, np.random.default_rng([spec.seed, 5]))
                       if spec.defects else (1.0, None))
    return NightTruth(
        bias=bias_structure(spec.shape, rng),
        dark_current=current,
        hot_pixels=hot,
        flat_response={name: factor * flat_response(spec.shape,
                                                    np.random.default_rng([spec.seed, 1, i]))
                       for i, name in enumerate(spec.filters)},
        gain=spec.gain,
        read_noise=spec.read_noise,
        defects=defects,
    )


def bias_structure(shape, rng) -> np.ndarray:
    """Bias level with a gentle row gradient and fixed column pattern."""
    rows, cols = np.indices(shape)
    gradient = 3.0 * rows / shape[0]
    columns = rng.normal(0.0, 1.5, shape[1])[None, :]
    return BIAS_LEVEL + gradient + columns


def dark_current(shape, rng, rate=0.02, hot_fraction=0.001) -> tuple[np.ndarray, np.ndarray]:
    """Dark current (ADU/s) with a small fraction of hot pixels."""
    current = rate * (1.0 + 0.1 * rng.standard_normal(shape))
    hot = rng.random(shape) < hot_fraction
    current[hot] = rng.uniform(2.0, 40.0, hot.sum())
    return current, hot


def flat_response(shape, rng) -> np.ndarray:
    """Vignetting times dust-ring shadows times pixel response; mean 1."""
    rows, cols = np.indices(shape, dtype=float)
    scale = max(shape)
    radius2 = ((rows - shape[0] / 2) ** 2 + (cols - shape[1] / 2) ** 2) / (scale / 2) ** 2
    response = 1.0 - 0.2 * radius2
    for _ in range(4):
        centre = rng.uniform(0.15, 0.85, 2) * shape
        ring = scale * rng.uniform(0.02, 0.05)
        distance = np.hypot(rows - centre[0], cols - centre[1])
        response *= 1.0 - 0.06 * np.exp(-0.5 * ((distance - ring) / (0.25 * ring)) ** 2)
    response *= 1.0 + 0.01 * rng.standard_normal(shape)
    return response / response.mean()


def pixel_defects(shape, rng, fraction=0.0005, n_columns=2) -> tuple[np.ndarray, np.ndarray]:
    """Defects of the pixel response: a factor that multiplies it, and where it is not 1.

    A ``fraction`` of the pixels are dead or weak (response x 0 to 0.7) or too sensitive
    (x 1.3 to 1.6), as ``ccdmask`` finds them in a flat; ``n_columns`` columns, away from
    the edges, are low (x 0.85) over half the rows or more, from a charge trap down.
    """
    factor = np.ones(shape)
    deviant = rng.random(shape) < fraction
    low = rng.random(shape) < 0.5
    factor[deviant & low] = rng.uniform(0.0, 0.7, (deviant & low).sum())
    factor[deviant & ~low] = rng.uniform(1.3, 1.6, (deviant & ~low).sum())
    for column in rng.choice(np.arange(shape[1] // 8, shape[1] - shape[1] // 8), n_columns,
                             replace=False):
        factor[rng.integers(0, shape[0] // 2):, column] = 0.85
    return factor, factor != 1.0


def star_field(shape, rng, n_stars=None, fwhm=3.0) -> np.ndarray:
    """Gaussian stars (ADU/s) at random positions with a power-law flux spread."""
    n_stars = n_stars or max(10, shape[0] * shape[1] // 2500)
    image = np.zeros(shape)
    sigma = fwhm / 2.355
    half = int(4 * sigma) + 1
    offsets = np.arange(-half, half + 1)
    for _ in range(n_stars):
        row, col = rng.uniform(half, np.array(shape) - half - 1)
        flux = 50.0 * rng.pareto(1.5) + 20.0
        r0, c0 = int(row), int(col)
        dy = offsets[:, None] + r0 - row
        dx = offsets[None, :] + c0 - col
        psf = np.exp(-0.5 * (dx**2 + dy**2) / sigma**2) / (2 * np.pi * sigma**2)
        image[r0 - half:r0 + half + 1, c0 - half:c0 + half + 1] += flux * psf
    return image


def night_stars(spec: NightSpec = NightSpec()) -> np.ndarray:
    """The light (ADU/s, before the pixel response and noise) of the stars every object
    frame of the night sees."""
    return star_field(spec.shape, np.random.default_rng([spec.seed, 3]))


def star_cores(spec: NightSpec = NightSpec(), level=100.0) -> np.ndarray:
    """Bool map of the object frames' star cores: each star's brightest pixels, those whose
    light (before noise) reaches ``level`` ADU in the shortest object exposure."""
    return night_stars(spec) * min(spec.object_exptimes) >= level


def cosmic_rays(shape, rng, exptime) -> np.ndarray:
    """Sharp hits (ADU), about one per 2000 pixels per 60 s."""
    image = np.zeros(shape)
    n_hits = rng.poisson(shape[0] * shape[1] * exptime / 60.0 / 2000.0)
    rows = rng.integers(0, shape[0], n_hits)
    cols = rng.integers(0, shape[1], n_hits)
    image[rows, cols] = rng.uniform(500.0, 20000.0, n_hits)
    return image


def expose(truth, rng, exptime, light=0.0, cosmics=True, hits=None) -> np.ndarray:
    """A raw 16-bit frame: bias + noisy (dark + light) electrons + read noise; ``hits``,
    a list, gets the cosmic rays' image (ADU) added to the frame."""
    signal = truth.dark_current * exptime + light
    electrons = rng.poisson(np.clip(signal, 0, None) * truth.gain)
    read_noise = rng.normal(0.0, truth.read_noise_adu, truth.bias.shape)
    adu = truth.bias + electrons / truth.gain + read_noise
    if cosmics:
        rays = cosmic_rays(truth.bias.shape, rng, exptime)
        adu += rays
        if hits is not None:
            hits.append(rays)
    return np.clip(np.round(adu), 0, SATURATION).astype(np.uint16)


def make_night(folder, spec: NightSpec = NightSpec()) -> list[Path]:
    """Write a simulated night of raw FITS frames into ``folder``.

    Parameters
    ----------
    folder : path-like
        Created if missing; files are named ``demo_NNNN.fits`` in observing order.
    spec : NightSpec, optional
        What the night holds.

    Returns
    -------
    list of pathlib.Path
        The written files.

    Examples
    --------
    >>> import tempfile
    >>> files = make_night(tempfile.mkdtemp(), NightSpec(shape=(64, 64)))
    >>> len(files)
    38
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime.datetime(2021, 2, 14, 11, 0, 0)
    paths = []
    readout = np.random.default_rng([spec.seed, 4])
    for number, (data, cards) in enumerate(_frames(spec), start=1):
        cards["DATE-OBS"] = (start + datetime.timedelta(minutes=2 * number)).isoformat()
        if spec.amplifiers > 1:
            paths.append(_write_amplifiers(folder / f"demo_{number:04d}.fits", data, cards,
                                           bias_level_drift(spec, number), spec, readout))
            continue
        if spec.overscan:
            data, cards = _read_out(data, cards, bias_level_drift(spec, number), spec, readout)
        path = folder / f"demo_{number:04d}.fits"
        fitsio.write_raw_frame(path, data, cards)
        paths.append(path)
    return paths


def _frames(spec: NightSpec, hits=None):
    """Every raw frame of the night, in observing order, as (data, cards); ``hits``, a list,
    gets the cosmic rays of each object frame (see :func:`night_cosmic_rays`)."""
    truth = night_truth(spec)
    rng = np.random.default_rng([spec.seed, 2])
    return itertools.chain(_bias_frames(spec, truth, rng), _dark_frames(spec, truth, rng),
                           _flat_frames(spec, truth, rng), _object_frames(spec, truth, rng, hits))


def night_cosmic_rays(spec: NightSpec = NightSpec()) -> list[np.ndarray]:
    """The cosmic rays (ADU) added to each object frame of the night, in observing order.

    The night's frames are simulated again from the seed (nothing written), so these are
    the rays of the files :func:`make_night` writes.
    """
    hits = []
    for _ in _frames(spec, hits):
        pass
    return hits


def bias_level_drift(spec: NightSpec, number: int) -> np.ndarray:
    """The electronic bias level's drift (ADU) in frame ``number``: a column of one value per row."""
    rows = np.linspace(-0.5, 0.5, spec.shape[0])[:, None]
    return spec.bias_drift * (np.sin(number / 5.0) + 0.2 * np.cos(number / 3.0) * rows)


def _read_out(data, cards, drift, spec, rng):
    """The frame with the bias drift added and an overscan strip read beside it."""
    rows, cols = data.shape
    read_noise = rng.normal(0.0, spec.read_noise / spec.gain, (rows, spec.overscan))
    strip = BIAS_LEVEL + drift + read_noise
    # The drift is analogue, added before the converter: the uniform term undoes the first
    # rounding of ``data`` so that the image, like the strip, is quantised once, unbiased.
    image = np.hstack([data + drift + rng.uniform(-0.5, 0.5, data.shape), strip])
    cards = {**cards, "BIASSEC": f"[{cols + 1}:{cols + spec.overscan},1:{rows}]",
             "TRIMSEC": f"[1:{cols},1:{rows}]"}
    return np.clip(np.round(image), 0, SATURATION).astype(np.uint16), cards


def amplifier_layout(shape, amplifiers: int) -> list[tuple[slice, slice, bool, bool]]:
    """Where each amplifier reads the detector: (rows, columns, flip_x, flip_y) per amplifier.

    Two amplifiers read the left and right halves, four the quadrants (lower
    left, lower right, upper left, upper right); those on the right read their
    rows from the right edge (flipped left to right), those on top from the
    top (flipped bottom to top), as a detector read at its corners is.

    Examples
    --------
    >>> [(c.start, c.stop, fx) for r, c, fx, fy in amplifier_layout((4, 6), 2)]
    [(0, 3, False), (3, 6, True)]
    """
    if amplifiers not in (2, 4) or shape[0] % 2 or shape[1] % 2:
        msg = f"2 or 4 amplifiers over an even number of rows and columns, got {amplifiers} " \
              f"over {shape}"
        raise ValueError(msg)
    rows, cols = shape[0] // 2, shape[1] // 2
    bands = [slice(0, shape[0])] if amplifiers == 2 else [slice(0, rows), slice(rows, shape[0])]
    return [(band, half, half.start > 0, band.start > 0)
            for band in bands for half in (slice(0, cols), slice(cols, shape[1]))]


def _write_amplifiers(path, data, cards, drift, spec, rng) -> Path:
    """Write a frame as a multi-amplifier camera reads it: an extension per amplifier."""
    layout = amplifier_layout(data.shape, spec.amplifiers)
    images, own = [], []
    for number, (rows, cols, flip_x, flip_y) in enumerate(layout):
        image, sections = _amplifier_readout(data[rows, cols], drift[rows], number, flip_x,
                                             flip_y, spec, rng)
        corner = (cols.start + 1, cols.stop, rows.start + 1, rows.stop)
        x = corner[1::-1] if flip_x else corner[:2]
        y = corner[3:1:-1] if flip_y else corner[2:]
        images.append(image)
        own.append({"EXTNAME": f"AMP{number + 1}", **sections,
                    "DETSEC": f"[{x[0]}:{x[1]},{y[0]}:{y[1]}]",
                    "GAIN": spec.gain / AMPLIFIER_GAIN[number]})
    shared = {key: value for key, value in cards.items() if key != "GAIN"}
    shared |= {"DETSIZE": f"[1:{data.shape[1]},1:{data.shape[0]}]", "NAMPS": len(layout)}
    return fitsio.write_raw_extensions(path, images, shared, own)


def _amplifier_readout(region, drift, number, flip_x, flip_y, spec, rng):
    """One amplifier's image as it reads ``region`` (ADU of the one-amplifier camera): in
    its readout order, at its gain and bias level, with an overscan strip; and its sections."""
    gain, level = AMPLIFIER_GAIN[number], AMPLIFIER_BIAS[number]
    flip = (slice(None, None, -1 if flip_y else 1), slice(None, None, -1 if flip_x else 1))
    rows, cols = region.shape
    width = spec.overscan or AMPLIFIER_OVERSCAN
    read_noise = rng.normal(0.0, gain * spec.read_noise / spec.gain, (rows, width))
    # the uniform term undoes the first rounding, as in _read_out
    signal = gain * (region[flip] - BIAS_LEVEL + rng.uniform(-0.5, 0.5, region.shape))
    image = level + drift[flip[0]] + np.hstack([signal, read_noise])
    sections = {"BIASSEC": f"[{cols + 1}:{cols + width},1:{rows}]",
                "DATASEC": f"[1:{cols},1:{rows}]"}
    return np.clip(np.round(image), 0, SATURATION).astype(np.uint16), sections


#: Relative brightness, per colour, of the flat lamp and of the sky through a colour mosaic.
LAMP_COLOUR = {"R": 1.3, "G": 1.0, "B": 0.5}
SKY_COLOUR = {"R": 0.8, "G": 1.0, "B": 1.2}


def mosaic_image(shape, pattern: str, colour: dict) -> np.ndarray:
    """Each pixel's value of ``colour`` (e.g. :data:`SKY_COLOUR`) under a colour-filter mosaic
    such as 'RGGB' (the colours of a 2x2 cell, row by row, from the first pixel)."""
    image = np.empty(shape)
    for place, name in enumerate(pattern):
        image[place // 2::2, place % 2::2] = colour[name]
    return image


def _coloured(spec, light, colour) -> np.ndarray:
    """Light of this colour as the sensor sees it (as it is, for a monochrome sensor)."""
    return light if spec.bayer is None else light * mosaic_image(spec.shape, spec.bayer, colour)


def _cards(spec, kind, exptime, filter_name=None, target=None) -> dict:
    cards = {"IMAGETYP": spec.imagetyp[kind], "EXPTIME": float(exptime),
             "INSTRUME": "ccdred demo camera", "GAIN": spec.gain}
    if spec.bayer is not None:
        cards.update(BAYERPAT=spec.bayer, XBAYROFF=0, YBAYROFF=0)
    if filter_name is not None:
        cards["FILTER"] = filter_name
    if target is not None:
        cards["OBJECT"] = target
    return cards


def _bias_frames(spec, truth, rng):
    for _ in range(spec.n_bias):
        yield expose(truth, rng, 0.0, cosmics=False), _cards(spec, "bias", 0.0)


def _dark_frames(spec, truth, rng):
    for exptime in spec.dark_exptimes:
        for _ in range(spec.n_darks):
            yield expose(truth, rng, exptime), _cards(spec, "dark", exptime)


def _flat_levels(spec, index) -> np.ndarray:
    if spec.flat_levels:
        return np.array(spec.flat_levels, dtype=float)
    levels = spec.flat_level * np.linspace(0.9, 1.1, spec.n_flats)
    if index == 0:
        levels[: spec.saturated_flats] = 45000.0
    if index == len(spec.filters) - 1 and spec.faint_flats:
        levels[-spec.faint_flats:] = 300.0
    return levels


def _flat_frames(spec, truth, rng):
    for index, name in enumerate(spec.filters):
        response = truth.flat_response[name]
        for level in _flat_levels(spec, index):
            light = _coloured(spec, level * response, LAMP_COLOUR)
            yield (expose(truth, rng, spec.flat_exptime, light, cosmics=False),
                   _cards(spec, "flat", spec.flat_exptime, name))


def _object_frames(spec, truth, rng, hits=None):
    stars = night_stars(spec)
    for name, exptime in zip(spec.filters, spec.object_exptimes, strict=True):
        sky = 4.0  # ADU/s
        light = _coloured(spec, (sky + stars) * exptime * truth.flat_response[name], SKY_COLOUR)
        for _ in range(spec.n_objects):
            yield (expose(truth, rng, exptime, light, hits=hits),
                   _cards(spec, "object", exptime, name, "M67"))


def demo_night(cache_dir, spec: NightSpec = NightSpec()) -> Path:
    """The folder of a demo night under ``cache_dir``, simulated on first use only.

    The night is written into a temporary folder and renamed into place, so
    concurrent callers (several dashboard sessions) never see half a night.
    """
    cache_dir = Path(cache_dir)
    folder = cache_dir / (f"demo-{spec.shape[0]}x{spec.shape[1]}-seed{spec.seed}"
                          + ("-defects" if spec.defects else "")
                          + (f"-{spec.amplifiers}amp" if spec.amplifiers > 1 else ""))
    if folder.is_dir():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".demo-"))
    make_night(scratch, spec)
    try:
        os.rename(scratch, folder)
    except OSError:  # another process finished first
        shutil.rmtree(scratch, ignore_errors=True)
    return folder
