"""The detector's gain and read noise: from the header, from options, or measured.

Pure numpy (astropy's sigma clipping, imported where used): arrays in, numbers
out, no files. The difference of two frames of the same kind cancels what they
share (the bias pattern, the flat field, hot pixels), leaving the noise:

- **read noise** from two biases: σ_read = σ(B_a − B_b) / √2;
- **gain** from two flats at one level and two biases (Janesick's method):
  g = ((F̄_a + F̄_b) − (B̄_a + B̄_b)) / (σ²(F_a − F_b) − σ²(B_a − B_b));
- the **photon transfer curve**: per-frame variance against signal for pairs of
  flats at several levels, a straight line of slope 1/g through the read
  noise's variance.

Every σ is a sigma-clipped standard deviation (5σ about the median, iterated
until nothing changes), which leaves out cosmic rays and the odd deviant
pixel. It is not ``mad_std``: the median absolute deviation of integer ADU is
itself a multiple of 0.5, so that ``mad_std`` of a bias difference moves in
steps of 0.74 ADU (two cameras' bias pairs of 6.6 and 6.7 ADU both give 6.29).

Units: gain in electrons per ADU, read noise in ADU where it is measured from
data (``read_noise_from_biases``, ``PhotonTransferCurve.read_noise_adu``) and
in electrons, as cameras write it, in :class:`DetectorNoise`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import NoiseWarning

__all__ = ["CLIP_SIGMA", "GAIN_KEYWORDS", "PAIR_TOLERANCE", "READ_NOISE_KEYWORDS",
           "DetectorNoise", "PhotonTransferCurve", "central_region", "clipped_std",
           "detector_noise", "gain_from_flats", "header_noise", "level_pair",
           "photon_transfer_curve", "read_noise_from_biases"]

#: Clipping threshold (in σ) of every mean and σ here.
CLIP_SIGMA = 5.0

#: Header keywords of the gain (e⁻/ADU), first found wins. ``EGAIN`` comes before ``GAIN``
#: because some cameras (ZWO ASI) write their gain *setting* in ``GAIN``; CAFOS writes
#: ``CCDSENS`` (its ``CCDGAIN`` is the analogue amplification, not e⁻/ADU).
GAIN_KEYWORDS = ("EGAIN", "GAIN", "CCDSENS")

#: Header keywords of the read noise (e⁻), first found wins; CAFOS writes ``CCDRON``.
READ_NOISE_KEYWORDS = ("RDNOISE", "READNOIS", "RON", "CCDRON")

#: A measured value further than this (relative) from the header's gives a NoiseWarning.
TOLERANCE = 0.2

#: Two flats whose signals differ by at most this (relative) are a pair at one level.
PAIR_TOLERANCE = 0.1


@dataclass(frozen=True)
class DetectorNoise:
    """A detector's gain and read noise, and where each value came from.

    Attributes
    ----------
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise in electrons.
    gain_source, read_noise_source : str
        Where each came from: ``'header EGAIN'``, ``'option'``,
        ``'measured from 2 biases and 2 flats'``, ...

    Examples
    --------
    >>> noise = DetectorNoise(1.5, 9.0, "header GAIN", "measured from 2 biases")
    >>> noise.read_noise_adu
    6.0
    >>> noise.source
    'gain: header GAIN; read noise: measured from 2 biases'
    """

    gain: float
    read_noise: float
    gain_source: str
    read_noise_source: str

    def __post_init__(self):
        for name in ("gain", "read_noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                msg = f"{name} must be a finite number greater than 0, not {value!r}"
                raise ValueError(msg)

    @property
    def read_noise_adu(self) -> float:
        """Read noise in ADU."""
        return self.read_noise / self.gain

    @property
    def source(self) -> str:
        """Where both values came from, in one phrase (for a log line or a header comment)."""
        if self.gain_source == self.read_noise_source:
            return self.gain_source
        return f"gain: {self.gain_source}; read noise: {self.read_noise_source}"


@dataclass(frozen=True)
class PhotonTransferCurve:
    """Variance against signal of pairs of flats, and the straight line through them.

    The model is ``variance = signal / gain + read_noise_adu**2`` (ADU², per frame).

    Attributes
    ----------
    signal : numpy.ndarray
        Mean signal above the bias of each pair (ADU); the biases' pair is the point at 0.
    variance : numpy.ndarray
        Per-frame variance of each pair, σ²(a − b) / 2 (ADU²).
    gain : float
        Electrons per ADU: the inverse of the fitted slope.
    read_noise_adu : float
        Read noise (ADU): the square root of the fitted intercept (NaN if it is negative).
    """

    signal: np.ndarray
    variance: np.ndarray
    gain: float
    read_noise_adu: float

    @property
    def read_noise(self) -> float:
        """Read noise in electrons."""
        return self.read_noise_adu * self.gain


def read_noise_from_biases(bias_a, bias_b, region=None) -> float:
    """Read noise (ADU) from two bias frames: σ(bias_a − bias_b) / √2.

    The difference cancels the bias pattern the frames share; what is left is
    the read noise of two frames. σ is the 5σ-clipped standard deviation
    (:func:`clipped_std`).

    Parameters
    ----------
    bias_a, bias_b : array-like
        Two raw biases of one shape (ADU); not changed.
    region : tuple of slice, optional
        The pixels used; by default the central half of each axis
        (:func:`central_region`), away from edge rows and columns.

    Returns
    -------
    float
        Read noise of one frame, in ADU.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pattern = rng.normal(1000.0, 20.0, (200, 200))
    >>> biases = [pattern + rng.normal(0.0, 6.0, pattern.shape) for _ in range(2)]
    >>> round(read_noise_from_biases(*biases), 1)
    6.0
    """
    a, b = _pair(bias_a, bias_b, region)
    return clipped_std(a - b) / math.sqrt(2.0)


def gain_from_flats(flat_a, flat_b, bias_a, bias_b, region=None) -> float:
    """Gain (e⁻/ADU) from two flats at one level and two biases, by Janesick's method.

    .. math::

        g = \\frac{(\\bar F_a + \\bar F_b) - (\\bar B_a + \\bar B_b)}
                  {\\sigma^2(F_a - F_b) - \\sigma^2(B_a - B_b)}

    The numerator is the signal of both flats; the denominator, the variance
    of their difference less the read noise's, is its photon noise in ADU²
    (which, in electrons, equals the signal). The difference cancels the flat
    field and the bias pattern. Should the lamp have drifted, ``flat_b`` less
    its bias is first scaled to ``flat_a``'s level, so that the flat field
    does not enter the difference. Means and σ are 5σ-clipped.

    Parameters
    ----------
    flat_a, flat_b : array-like
        Two raw flats at (nearly) the same level, well below saturation (ADU).
    bias_a, bias_b : array-like
        Two raw biases of the same shape (ADU). None of the inputs is changed.
    region : tuple of slice, optional
        The pixels used; by default the central half of each axis.

    Returns
    -------
    float
        Electrons per ADU.

    Raises
    ------
    ValueError
        When the shapes differ or the flats vary no more than the biases.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> field = 1000.0 + 20000.0 * rng.uniform(0.9, 1.1, (300, 300))
    >>> def frame(light):
    ...     return 1000.0 + rng.poisson(light * 2.0) / 2.0 + rng.normal(0.0, 5.0, light.shape)
    >>> flats = [frame(field - 1000.0) for _ in range(2)]
    >>> biases = [frame(np.zeros_like(field)) for _ in range(2)]
    >>> round(gain_from_flats(*flats, *biases), 1)
    2.0
    """
    bias_level, bias_variance = _bias_pair(bias_a, bias_b, region)
    signal, variance = _flat_pair(flat_a, flat_b, bias_level, region)
    return _gain(signal, variance, bias_variance)


def photon_transfer_curve(flats_by_level, biases, region=None) -> PhotonTransferCurve:
    """The photon transfer curve of flats at several levels, with its gain and read noise.

    Each level's first two flats give a point: their mean signal above the
    biases' level and the per-frame variance of their difference (the flat
    field cancels); the first two biases give the point at signal 0. A straight
    line ``variance = signal / gain + read_noise_adu**2`` is fitted by least
    squares, each point weighted by the inverse of its variance (the
    uncertainty of a variance grows with it).

    Parameters
    ----------
    flats_by_level : mapping or sequence of sequences of array-like
        Flats grouped by level (a mapping's values are used), two or more per
        level, two or more levels, all below saturation.
    biases : sequence of array-like
        Two or more raw biases.
    region : tuple of slice, optional
        The pixels used; by default the central half of each axis.

    Returns
    -------
    PhotonTransferCurve

    Raises
    ------
    ValueError
        With fewer than two levels, two flats at a level or two biases.
    """
    if isinstance(flats_by_level, Mapping):
        flats_by_level = flats_by_level.values()
    groups = list(flats_by_level)
    _check_counts(groups, biases)
    bias_level, bias_variance = _bias_pair(biases[0], biases[1], region)
    points = [_flat_pair(flats[0], flats[1], bias_level, region) for flats in groups]
    signal = np.array([0.0] + [s for s, _ in points])
    variance = np.array([bias_variance / 2.0] + [v / 2.0 for _, v in points])
    slope, intercept = np.polyfit(signal, variance, 1, w=1.0 / variance)
    read_noise_adu = math.sqrt(intercept) if intercept > 0 else math.nan
    return PhotonTransferCurve(signal, variance, float(1.0 / slope), read_noise_adu)


def detector_noise(header=None, *, biases=(), flats=(), gain=None, read_noise=None,
                   path=None, region=None) -> DetectorNoise:
    """The gain and read noise to use: an option's, else the header's, else measured.

    With two or more biases (and flats), the values are measured as well, and
    a :class:`~ccdred.errors.NoiseWarning` names both values and the file when a
    measured one is more than 20 % from the header's (the header's is still
    used: a warning, not a silent choice). A value given as an option is not
    compared: the user has chosen it.

    Parameters
    ----------
    header : mapping, optional
        A raw frame's header (``astropy.io.fits.Header`` or a dict); see
        :data:`GAIN_KEYWORDS` and :data:`READ_NOISE_KEYWORDS`.
    biases, flats : sequence of array-like, optional
        Raw frames to measure from: the first two biases give the read noise,
        with the first two flats (at one level) the gain.
    gain, read_noise : float, optional
        The user's values (e⁻/ADU, e⁻): used whatever the header or frames say.
    path : path-like, optional
        The file ``header`` came from, named in warnings.
    region : tuple of slice, optional
        The pixels measured; by default the central half of each axis.

    Returns
    -------
    DetectorNoise

    Raises
    ------
    ValueError
        When the gain or the read noise is known from no source.
    """
    from_header = header_noise(header or {})
    measured_gain, measured_rn_adu = _measure(biases, flats, region)
    chosen_gain, gain_source = _choose("gain", gain, from_header[0], measured_gain,
                                       "measured from 2 biases and 2 flats")
    measured_rn = None if measured_rn_adu is None else measured_rn_adu * chosen_gain
    chosen_rn, rn_source = _choose("read noise", read_noise, from_header[1], measured_rn,
                                   "measured from 2 biases")
    if gain is None:
        _warn_if_far("gain", "e-/ADU", from_header[0], measured_gain, path)
    if read_noise is None and measured_rn is not None:
        _warn_if_far("read noise", "e-", from_header[1], measured_rn, path,
                     f" ({measured_rn_adu:.3g} ADU at {chosen_gain:g} e-/ADU)")
    return DetectorNoise(chosen_gain, chosen_rn, gain_source, rn_source)


def header_noise(header) -> tuple[tuple[float, str] | None, tuple[float, str] | None]:
    """The gain (e⁻/ADU) and read noise (e⁻) a header states, each with its keyword.

    Examples
    --------
    >>> header_noise({"CCDSENS": 1.43, "CCDRON": 7.4})
    ((1.43, 'CCDSENS'), (7.4, 'CCDRON'))
    >>> header_noise({"EGAIN": 2.06})
    ((2.06, 'EGAIN'), None)
    """
    return _first_positive(header, GAIN_KEYWORDS), _first_positive(header, READ_NOISE_KEYWORDS)


def central_region(shape, fraction: float = 0.5, most: int | None = None) -> tuple[slice, slice]:
    """The central ``fraction`` of each axis of an image of ``shape`` (rows, columns), and
    at most ``most`` pixels along each when given.

    Examples
    --------
    >>> central_region((100, 200))
    (slice(25, 75, None), slice(50, 150, None))
    >>> central_region((2048, 100), most=512)
    (slice(768, 1280, None), slice(25, 75, None))
    """
    if not 0 < fraction <= 1:
        msg = f"fraction must be in (0, 1], not {fraction!r}"
        raise ValueError(msg)
    margin, region = (1 - fraction) / 2, []
    for n in shape:
        start, stop = round(n * margin), round(n * (1 - margin))
        if most is not None and stop - start > most:
            start += (stop - start - most) // 2
            stop = start + most
        region.append(slice(start, stop))
    return tuple(region)


def level_pair(levels, tolerance: float = PAIR_TOLERANCE) -> tuple[int, int] | None:
    """The first two flats at one level: positions of two positive ``levels`` (signal above
    the bias) within ``tolerance`` (relative) of each other, or None.

    Examples
    --------
    >>> level_pair([45000.0, 300.0, 22000.0, 23500.0])
    (2, 3)
    >>> level_pair([1000.0, 2000.0]) is None
    True
    """
    for j, later in enumerate(levels):
        for i, earlier in enumerate(levels[:j]):
            close = abs(later - earlier) <= tolerance * max(earlier, later)
            if earlier > 0 and later > 0 and close:
                return i, j
    return None


def clipped_std(values, sigma: float = CLIP_SIGMA) -> float:
    """Standard deviation of ``values`` after sigma clipping about the median, to convergence."""
    return _clipped_stats(values, sigma)[1]


def _clipped_stats(values, sigma: float = CLIP_SIGMA) -> tuple[float, float]:
    """(mean, standard deviation) after ``sigma`` clipping about the median, to convergence."""
    from astropy.stats import sigma_clipped_stats

    mean, _, std = sigma_clipped_stats(values, sigma=sigma, maxiters=None,
                                       cenfunc="median", stdfunc="std")
    return float(mean), float(std)


def _pair(a, b, region) -> tuple[np.ndarray, np.ndarray]:
    """Two frames of one shape, as float64, cut to ``region`` (the central half by default)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        msg = f"two images of one shape are needed, not shapes {a.shape} and {b.shape}"
        raise ValueError(msg)
    region = central_region(a.shape) if region is None else region
    return a[region], b[region]


def _bias_pair(bias_a, bias_b, region) -> tuple[float, float]:
    """(mean level of the two biases, variance of their difference)."""
    a, b = _pair(bias_a, bias_b, region)
    level = (_clipped_stats(a)[0] + _clipped_stats(b)[0]) / 2.0
    return level, clipped_std(a - b) ** 2


def _flat_pair(flat_a, flat_b, bias_level, region) -> tuple[float, float]:
    """(signal of two flats above ``bias_level``, variance of their matched difference).

    ``flat_b`` is scaled by r = S_a / S_b to ``flat_a``'s level, so that the difference's
    photon variance is (S_a + r² S_b) / g = S_a (1 + r) / g: the signal returned is
    S_a (1 + r) / 2, which is the mean of the two signals when they are equal (taking the
    mean would bias the gain by S_b / S_a, 5 % for flats 5 % apart).
    """
    a, b = _pair(flat_a, flat_b, region)
    signal_a, signal_b = _clipped_stats(a)[0] - bias_level, _clipped_stats(b)[0] - bias_level
    ratio = signal_a / signal_b
    difference = (a - bias_level) - (b - bias_level) * ratio
    return signal_a * (1.0 + ratio) / 2.0, clipped_std(difference) ** 2


def _gain(signal: float, flat_variance: float, bias_variance: float) -> float:
    """Janesick's gain from one pair's mean signal and the variances of the two differences."""
    photon_variance = flat_variance - bias_variance
    if not (signal > 0 and photon_variance > 0):
        msg = (f"the flats (signal {signal:.1f} ADU above the bias, difference variance "
               f"{flat_variance:.1f} ADU²) vary no more than the biases "
               f"({bias_variance:.1f} ADU²): are they exposed to light?")
        raise ValueError(msg)
    return 2.0 * signal / photon_variance


def _check_counts(groups, biases) -> None:
    if len(groups) < 2 or any(len(flats) < 2 for flats in groups) or len(biases) < 2:
        counts = [len(flats) for flats in groups]
        msg = ("a photon transfer curve needs two or more flats at each of two or more levels "
               f"and two or more biases, not flats {counts} and {len(biases)} biases")
        raise ValueError(msg)


def _measure(biases: Sequence, flats: Sequence, region) -> tuple[float | None, float | None]:
    """(gain or None, read noise in ADU or None) from the first two biases and flats given."""
    if len(biases) < 2:
        return None, None
    bias_level, bias_variance = _bias_pair(biases[0], biases[1], region)
    if len(flats) < 2:
        return None, math.sqrt(bias_variance / 2.0)
    signal, variance = _flat_pair(flats[0], flats[1], bias_level, region)
    return _gain(signal, variance, bias_variance), math.sqrt(bias_variance / 2.0)


def _choose(name, option, from_header, measured, measured_source) -> tuple[float, str]:
    """The option's value, else the header's, else the measured one, with its source."""
    if option is not None:
        return float(option), "option"
    if from_header is not None:
        return from_header[0], f"header {from_header[1]}"
    if measured is not None:
        return measured, measured_source
    msg = (f"the {name} is unknown: no option, no header keyword "
           f"({', '.join(GAIN_KEYWORDS if name == 'gain' else READ_NOISE_KEYWORDS)}) "
           "and not enough frames to measure it (two biases, and two flats for the gain)")
    raise ValueError(msg)


def _warn_if_far(name, unit, from_header, measured, path, detail="") -> None:
    if from_header is None or measured is None:
        return
    value, keyword = from_header
    difference = measured / value - 1.0
    if abs(difference) > TOLERANCE:
        where = f"{path}: " if path is not None else ""
        direction = "above" if difference > 0 else "below"
        msg = (f"{where}measured {name} {measured:.3g} {unit}{detail} is {abs(difference):.0%} "
               f"{direction} the header's {keyword} = {value:g} {unit}; "
               "the header's value is used")
        warnings.warn(msg, NoiseWarning, stacklevel=3)


def _first_positive(header, keywords) -> tuple[float, str] | None:
    """(value, keyword) of the first keyword holding a positive number, or None."""
    for keyword in keywords:
        value = header.get(keyword)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value), keyword
    return None
