"""Gain and read noise: the demo night's truth recovered, the real sets against plain numpy,
the header's values preferred and a far measured value warned of."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from astropy.io import fits

from ccdred.demo import NightSpec, make_night, night_truth
from ccdred.errors import NoiseWarning
from ccdred.noise import (DetectorNoise, detector_noise, gain_from_flats, header_noise,
                          photon_transfer_curve, read_noise_from_biases)

from .conftest import SHARED, unavailable

REALDATA = SHARED / "realdata"
STL, CAFOS = REALDATA / "stl1001-lab", REALDATA / "cafos-ngc2420"

#: Biases, then pairs of flats at three levels, with a gain and read noise not the default's.
NOISE_SPEC = NightSpec(shape=(256, 256), seed=29, n_bias=4, n_darks=0, n_objects=0, filters=("V",),
                       object_exptimes=(30.0,), gain=2.2, read_noise=11.0,
                       flat_levels=(1500.0, 1500.0, 6000.0, 6000.0, 20000.0, 20000.0))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(paths, float images) of the noise night: 4 biases, then 3 pairs of flats."""
    paths = make_night(tmp_path_factory.mktemp("noise"), NOISE_SPEC)
    return paths, [fits.getdata(p).astype(np.float64) for p in paths]


def _biases(demo):
    return demo[1][:NOISE_SPEC.n_bias]


def _flat_pairs(demo):
    flats = demo[1][NOISE_SPEC.n_bias:]
    return [flats[i:i + 2] for i in range(0, len(flats), 2)]


def test_the_demo_truth_knows_its_gain_and_read_noise():
    truth = night_truth(NOISE_SPEC)
    assert (truth.gain, truth.read_noise, truth.read_noise_adu) == (2.2, 11.0, 5.0)
    assert night_truth(NightSpec(shape=(8, 8))).read_noise_adu == 6.0  # the default night's


@pytest.mark.parametrize("pair", [(0, 1), (2, 3)])
def test_read_noise_of_the_demo_night_within_5_percent(demo, pair):
    biases = _biases(demo)
    measured = read_noise_from_biases(biases[pair[0]], biases[pair[1]])
    assert measured == pytest.approx(night_truth(NOISE_SPEC).read_noise_adu, rel=0.05)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_gain_of_the_demo_night_within_5_percent_at_each_level(demo, level):
    flat_a, flat_b = _flat_pairs(demo)[level]
    gain = gain_from_flats(flat_a, flat_b, *_biases(demo)[:2])
    assert gain == pytest.approx(NOISE_SPEC.gain, rel=0.05)


def test_photon_transfer_curve_of_the_demo_night(demo):
    curve = photon_transfer_curve({level: pair for level, pair in zip("abc", _flat_pairs(demo))},
                                  _biases(demo))
    truth = night_truth(NOISE_SPEC)
    assert curve.gain == pytest.approx(truth.gain, rel=0.05)
    assert curve.read_noise_adu == pytest.approx(truth.read_noise_adu, rel=0.05)
    assert curve.read_noise == pytest.approx(truth.read_noise, rel=0.05)
    assert curve.signal[0] == 0
    assert np.all(np.diff(curve.signal) > 0) and np.all(np.diff(curve.variance) > 0)


def test_photon_transfer_curve_needs_two_levels(demo):
    with pytest.raises(ValueError, match=r"two or more levels .* not flats \[2\] and 4 biases"):
        photon_transfer_curve([_flat_pairs(demo)[0]], _biases(demo))


def test_the_header_gain_is_used_and_the_read_noise_measured(demo):
    paths, _ = demo
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        noise = detector_noise(fits.getheader(paths[0]), biases=_biases(demo),
                               flats=_flat_pairs(demo)[2], path=paths[0])
    assert (noise.gain, noise.gain_source) == (2.2, "header GAIN")
    assert noise.read_noise == pytest.approx(NOISE_SPEC.read_noise, rel=0.05)
    assert noise.source == "gain: header GAIN; read noise: measured from 2 biases"


def test_without_header_values_both_are_measured(demo):
    noise = detector_noise({}, biases=_biases(demo), flats=_flat_pairs(demo)[2])
    assert noise.gain == pytest.approx(NOISE_SPEC.gain, rel=0.05)
    assert noise.read_noise == pytest.approx(NOISE_SPEC.read_noise, rel=0.05)
    assert noise.gain_source == "measured from 2 biases and 2 flats"


def test_a_header_gain_far_from_the_measured_one_warns_naming_both_and_the_file(demo):
    paths, _ = demo
    message = (r"demo_0001\.fits: measured gain 2\.\d+ e-/ADU is \d+% below "
               r"the header's GAIN = 3\.3 e-/ADU")
    with pytest.warns(NoiseWarning, match=message):
        noise = detector_noise({"GAIN": 3.3}, biases=_biases(demo), flats=_flat_pairs(demo)[2],
                               path=paths[0])
    assert (noise.gain, noise.gain_source) == (3.3, "header GAIN")


def test_a_header_read_noise_far_from_the_measured_one_warns(demo):
    message = (r"measured read noise 1\d\.\d e- \(4\.\d+ ADU at 2\.2 e-/ADU\) is \d+% above "
               r"the header's RDNOISE = 5 e-")
    with pytest.warns(NoiseWarning, match=message):
        detector_noise({"GAIN": 2.2, "RDNOISE": 5.0}, biases=_biases(demo))


def test_options_win_over_header_and_frames_without_a_warning(demo):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        noise = detector_noise({"GAIN": 3.3, "RDNOISE": 5.0}, biases=_biases(demo),
                               flats=_flat_pairs(demo)[2], gain=2.0, read_noise=8.0)
    assert noise == DetectorNoise(2.0, 8.0, "option", "option") and noise.source == "option"


def test_an_unknown_gain_is_an_error_naming_the_keywords():
    with pytest.raises(ValueError, match=r"gain is unknown: .*EGAIN, GAIN, CCDSENS"):
        detector_noise({"RDNOISE": 5.0})


@pytest.mark.parametrize(("header", "expected"), [
    ({"GAIN": 120, "EGAIN": 0.25}, ((0.25, "EGAIN"), None)),  # a ZWO camera's gain setting
    ({"CCDSENS": 1.43, "CCDRON": 7.4, "CCDGAIN": 20.0}, ((1.43, "CCDSENS"), (7.4, "CCDRON"))),
    ({"GAIN": 1.5, "READNOIS": 9.0}, ((1.5, "GAIN"), (9.0, "READNOIS"))),
    ({"RON": 4.0, "GAIN": 0}, (None, (4.0, "RON"))),
    ({"GAIN": "high"}, (None, None)),
])
def test_header_keywords(header, expected):
    assert header_noise(header) == expected


@pytest.mark.parametrize("gain", [0.0, -1.0, float("nan")])
def test_detector_noise_refuses_a_gain_not_positive(gain):
    with pytest.raises(ValueError, match="gain must be a finite number greater than 0"):
        DetectorNoise(gain, 5.0, "option", "option")


def test_frames_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match=r"not shapes \(4, 4\) and \(4, 5\)"):
        read_noise_from_biases(np.zeros((4, 4)), np.zeros((4, 5)))


def test_unexposed_flats_are_refused(rng):
    biases = [rng.normal(1000.0, 5.0, (64, 64)) for _ in range(4)]
    with pytest.raises(ValueError, match="vary no more than the biases"):
        gain_from_flats(*biases)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_the_frames_are_not_changed(demo, dtype):
    frames = [f.astype(dtype) for f in (*_flat_pairs(demo)[1], *_biases(demo)[:2])]
    copies = [f.copy() for f in frames]
    gain = gain_from_flats(*frames)
    photon_transfer_curve([frames[:2], frames[:2]], frames[2:])
    for frame, copy in zip(frames, copies, strict=True):
        np.testing.assert_array_equal(frame, copy)
        assert frame.dtype == dtype
    assert gain == pytest.approx(NOISE_SPEC.gain, rel=0.05)


def test_the_module_loads_no_astropy_until_it_measures():
    code = "import sys, ccdred.noise; print('astropy' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert loaded.stdout.strip() == "False", loaded.stdout + loaded.stderr


# Real frames, against the same measurement written here with plain numpy.

def _clipped(values, sigma=5.0):
    """(mean, std) of ``values`` clipped at ``sigma`` std about the median, to convergence."""
    kept = values.ravel()
    while True:
        centre, spread = np.median(kept), kept.std()
        inside = kept[(kept >= centre - sigma * spread) & (kept <= centre + sigma * spread)]
        if inside.size == kept.size:
            return kept.mean(), kept.std()
        kept = inside


def _load(folder, pattern, n=2):
    if not REALDATA.is_dir():
        unavailable(f"real data not found at {REALDATA}", "CCDRED_REQUIRE_REALDATA")
    paths = sorted(folder.glob(pattern))[:n]
    return paths, [fits.getdata(p).astype(np.float64) for p in paths]


CENTRE = (slice(256, 768), slice(256, 768))  # the central half of 1024x1024


@pytest.fixture(scope="module")
def stl():
    return _load(STL, "biases-Neg5-Vis.*"), _load(STL, "flat-expos23s-*")


@pytest.fixture(scope="module")
def cafos():
    return _load(CAFOS, "calib_bias_*")


def test_stl_read_noise_as_plain_numpy(stl):
    (_, (bias_a, bias_b)), _ = stl
    expected = _clipped((bias_a - bias_b)[CENTRE])[1] / np.sqrt(2)
    assert read_noise_from_biases(bias_a, bias_b) == pytest.approx(expected, rel=1e-9)
    assert 6.0 < expected < 7.5  # ADU: 13.8 e- at the header's 2.06 e-/ADU


def test_stl_gain_as_plain_numpy_janesick_and_near_the_header(stl):
    (_, biases), (flat_paths, flats) = stl
    fa, fb, ba, bb = (x[CENTRE] for x in (*flats, *biases))
    mean = lambda x: _clipped(x)[0]  # noqa: E731
    expected = ((mean(fa) + mean(fb)) - (mean(ba) + mean(bb))) / (_clipped(fa - fb)[1] ** 2
                                                                 - _clipped(ba - bb)[1] ** 2)
    measured = gain_from_flats(*flats, *biases)
    assert measured == pytest.approx(expected, rel=0.01)  # noise.py matches the flats' levels
    header = fits.getheader(flat_paths[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        noise = detector_noise(header, biases=biases, flats=flats, path=flat_paths[0])
    assert (noise.gain, noise.gain_source) == (2.06, "header EGAIN")
    assert measured == pytest.approx(header["EGAIN"], rel=0.1)


def test_cafos_read_noise_as_plain_numpy_and_far_from_the_header(cafos):
    paths, (bias_a, bias_b) = cafos
    expected = _clipped((bias_a - bias_b)[CENTRE])[1] / np.sqrt(2)
    assert read_noise_from_biases(bias_a, bias_b) == pytest.approx(expected, rel=1e-9)
    message = (rf"{paths[0].name}: measured read noise 14\.\d e- \(9\.9 ADU at 1\.43 e-/ADU\) "
               r"is \d+% above the header's CCDRON = 7\.4 e-")
    with pytest.warns(NoiseWarning, match=message):
        noise = detector_noise(fits.getheader(paths[0]), biases=[bias_a, bias_b], path=paths[0])
    assert noise == DetectorNoise(1.43, 7.4, "header CCDSENS", "header CCDRON")
