import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from ccdred.calibrate import (calibrate_frame, calibration_steps, flat_acceptance,
                              master_dark, master_flat, subtract_dark)
from ccdred.combiners import darks_for_frames
from ccdred.errors import InputError
from ccdred.demo import NightSpec, make_night, night_truth

from .conftest import frame_files

TRUTH_SPEC = NightSpec(shape=(96, 128), seed=11, n_darks=9, n_flats=9)


@pytest.fixture(scope="module")
def truth_night(tmp_path_factory):
    files = make_night(tmp_path_factory.mktemp("truth"), TRUTH_SPEC)
    return files, night_truth(TRUTH_SPEC)


def stack_of(files, **cards):
    chosen = [p for p in files if all(fits.getheader(p).get(k) == v for k, v in cards.items())]
    return np.stack([fits.getdata(p) for p in chosen])


def test_master_dark_recovers_the_dark_level(truth_night):
    files, truth = truth_night
    darks = stack_of(files, IMAGETYP="DARK", EXPTIME=60.0)
    expected = truth.bias + 60.0 * truth.dark_current
    cool = ~truth.hot_pixels
    result = master_dark(darks, frame_clip=False)
    error = result.data - expected
    assert abs(error[cool].mean()) < 0.2  # ADU, against a level of ~1000
    assert error[cool].std() < 6.0 / np.sqrt(9) * 1.5  # read noise averaged down
    np.testing.assert_allclose(result.data[truth.hot_pixels], expected[truth.hot_pixels], rtol=0.05)


def test_frame_clip_hides_hot_pixels(truth_night):
    """The course script's per-frame clipping masks hot pixels; they get the master's mean."""
    files, truth = truth_night
    darks = stack_of(files, IMAGETYP="DARK", EXPTIME=60.0)
    result = master_dark(darks)
    assert (result.n_used[truth.hot_pixels] == 0).mean() > 0.9
    hidden = truth.hot_pixels & (result.n_used == 0)
    np.testing.assert_allclose(result.data[hidden], np.nanmean(result.data[result.n_used > 0]))


def test_master_flat_recovers_the_response(truth_night):
    files, truth = truth_night
    for name in TRUTH_SPEC.filters:
        exptime = TRUTH_SPEC.flat_exptime
        dark = master_dark(stack_of(files, IMAGETYP="DARK", EXPTIME=exptime)).data
        flats = stack_of(files, IMAGETYP="FLAT", FILTER=name) - dark
        result = master_flat(flats)
        assert result.data.mean() == pytest.approx(1.0, abs=1e-9)
        expected = truth.flat_response[name]
        rms = np.sqrt(np.mean((result.data / expected - 1.0) ** 2))
        assert rms < 0.005, f"filter {name}: rms {rms:.4f}"


def test_flat_limits_reject_frames(rng):
    flats = np.stack([np.full((4, 5), level) * rng.uniform(0.99, 1.01, (4, 5))
                      for level in (20000, 40000, 21000, 300, 22000)])
    result = master_flat(flats, lower_limit=1000)
    assert result.accepted.tolist() == [True, False, True, False, True]
    np.testing.assert_allclose(result.medians, np.median(flats, axis=(1, 2)))
    assert result.combine.n_frames == 3
    assert flat_acceptance([5.0, 50.0], upper_limit=10).tolist() == [True, False]


#: Combines ten 64x64 flats (two above the upper limit) and prints the traced peak
#: allocation: in a fresh interpreter, where no thread of another test (a Dask worker, a
#: server's loop) allocates while the combination is traced.
_REJECTED_FLATS_PEAK = """
import tracemalloc
import numpy as np
import ccdred.combine
from ccdred.calibrate import master_flat

ccdred.combine._KERNEL_BLOCK_BYTES = 16 << 10
rng = np.random.default_rng(12345)
levels = (40000, 20000, 39000, 21000, 22000, 23000, 20500, 21500, 22500, 23500)
flats = np.stack([np.full((64, 64), level) * rng.uniform(0.99, 1.01, (64, 64))
                  for level in levels])
master_flat(flats)  # the compiled kernels load (tens of MB, once per process) first
tracemalloc.start()
result = master_flat(flats)
print(result.accepted.sum(), tracemalloc.get_traced_memory()[1], flats[0].nbytes)
"""


def test_rejected_flats_are_skipped_not_copied():
    """master_flat combines the accepted flats where they are: no copy of them is allocated,
    only the kernel's block of rows (here made small, as it is beside a night's stacks)."""
    done = subprocess.run([sys.executable, "-c", _REJECTED_FLATS_PEAK], capture_output=True,
                          text=True, check=True)
    accepted, peak, flat_bytes = map(int, done.stdout.split())
    assert accepted == 8
    # the result's images (about 130 kB here) and no copy of the 8 accepted flats (262 kB)
    assert peak < 8 * flat_bytes


def test_combining_the_accepted_flats_alone_gives_the_same_master(rng):
    levels = (40000, 20000, 39000, 21000, 22000, 23000, 20500, 21500, 22500, 23500)
    flats = np.stack([np.full((64, 64), level) * rng.uniform(0.99, 1.01, (64, 64))
                      for level in levels])
    result = master_flat(flats)
    assert result.accepted.tolist() == [False] + [True] + [False] + [True] * 7
    expected = master_flat(flats[result.accepted])
    np.testing.assert_array_equal(result.data, expected.data)


def test_no_flat_within_limits_names_each_flat_and_its_median():
    flats = np.stack([np.full((4, 4), 50000.0), np.full((4, 4), 41000.0)])
    with pytest.raises(InputError, match=r"too few flats of filter .* within the limits \(upper 38000, "
                                         r"lower off\): flat 0 50000, flat 1 41000"):
        master_flat(flats)


def test_a_flat_darker_than_its_dark_is_an_input_problem_naming_it():
    """A dark taken for a flat (or a flat less a wrong dark term) has a level of zero or
    below: it can be neither scaled nor weighted, and the message says so."""
    flats = np.stack([np.full((4, 4), 20000.0), np.full((4, 4), -4482.6)])
    with pytest.raises(InputError, match=r"flat of filter .. has median -4482.6 ADU less "
                                         r"its dark term \(not positive\)"):
        master_flat(flats)


def test_one_flat_is_enough_and_is_only_normalised(rng):
    flats = np.stack([np.full((4, 4), 50000.0), rng.uniform(19000, 21000, (4, 4))])
    result = master_flat(flats)
    assert result.accepted.tolist() == [False, True]
    np.testing.assert_allclose(result.data, flats[1] / flats[1].mean(), rtol=1e-12)


def test_bad_flat_pixels_become_one_not_inf():
    flats = np.stack([np.full((4, 4), 1000.0 + i) for i in range(3)])
    flats[:, 0, 0] = np.nan
    flats[:, 1, 1] = 0.0
    result = master_flat(flats)
    assert result.data[0, 0] == 1.0 and result.data[1, 1] == 1.0
    assert result.n_bad_pixels == 2
    assert np.isfinite(calibrate_frame(np.ones((4, 4)), np.zeros((4, 4)), result.data)).all()


def test_calibrate_frame_arithmetic():
    raw = np.array([[110, 210]], dtype=np.uint16)
    out = calibrate_frame(raw, np.array([[10.0, 10.0]]), np.array([[0.5, 2.0]]))
    np.testing.assert_allclose(out, [[200.0, 100.0]])
    assert out.dtype == np.float64
    np.testing.assert_allclose(subtract_dark(raw, np.array([[10.0, 10.0]])), [[100.0, 200.0]])


def test_the_dark_subtracted_image_is_stored_only_when_kept(rng):
    raw = rng.integers(1000, 3000, size=(300, 40)).astype(np.uint16)  # several row blocks
    dark, flat = rng.normal(100, 5, raw.shape), rng.uniform(0.8, 1.2, raw.shape)
    subtracted, flat_fielded = calibration_steps(raw, dark, flat, dtype=np.float32,
                                                 keep_subtracted=False)
    assert subtracted is None
    np.testing.assert_array_equal(flat_fielded, ((raw - dark) / flat).astype(np.float32))
    kept, _ = calibration_steps(raw, dark, dtype=np.float32, keep_subtracted=False)
    np.testing.assert_array_equal(kept, (raw - dark).astype(np.float32))  # no flat: kept anyway


def test_steps_do_not_change_their_inputs(night_files):
    darks = np.stack([fits.getdata(p) for p in frame_files(night_files, "DARK")[:5]])
    flats = np.stack([fits.getdata(p) for p in frame_files(night_files, "FLAT")[:5]]).astype(float)
    raw = fits.getdata(frame_files(night_files, "LIGHT")[0])
    copies = [a.copy() for a in (darks, flats, raw)]
    dark = master_dark(darks).data
    flat = master_flat(flats - dark).data
    dark_copy, flat_copy = dark.copy(), flat.copy()
    calibrate_frame(raw, dark, flat)
    for before, after in zip(copies, (darks, flats, raw), strict=True):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(dark, dark_copy)
    np.testing.assert_array_equal(flat, flat_copy)


def test_master_flat_subtracts_each_flats_own_dark(rng):
    """Raw flats of two exposure times with their darks equal subtracting the darks first."""
    raw = rng.normal(20000.0, 300.0, (6, 16, 20)).astype(np.uint16)
    exptimes = [2.0, 5.0, 2.0, 5.0, 5.0, 2.0]
    darks_by_exptime = {2.0: rng.normal(100.0, 3.0, (16, 20)), 5.0: rng.normal(400.0, 3.0, (16, 20))}
    darks, dark_index = darks_for_frames(exptimes, darks_by_exptime)
    assert darks.shape == (2, 16, 20) and dark_index.tolist() == [0, 1, 0, 1, 1, 0]
    subtracted = raw - np.stack([darks_by_exptime[t] for t in exptimes])
    expected = master_flat(subtracted, upper_limit=19_700.0)
    raw_copy = raw.copy()
    result = master_flat(raw, darks=darks, dark_index=dark_index, upper_limit=19_700.0)
    assert 2 <= result.accepted.sum() < 6  # the limit sees the dark-subtracted medians
    np.testing.assert_array_equal(result.accepted, expected.accepted)
    np.testing.assert_array_equal(result.medians, expected.medians)
    np.testing.assert_array_equal(result.data, expected.data)
    np.testing.assert_array_equal(raw, raw_copy)


def test_one_dark_serves_every_flat(rng):
    raw = rng.normal(20000.0, 300.0, (4, 10, 12)).astype(np.uint16)
    dark = rng.normal(100.0, 3.0, (10, 12))
    np.testing.assert_array_equal(master_flat(raw, darks=dark).data, master_flat(raw - dark).data)


def test_darks_for_one_exposure_time_are_a_view(rng):
    dark = rng.normal(100.0, 3.0, (8, 9))
    darks, dark_index = darks_for_frames([3.0, 3.0], {3.0: dark, 9.0: dark + 1})
    assert np.shares_memory(darks, dark) and dark_index.tolist() == [0, 0]
    rows, _ = darks_for_frames([3.0], {3.0: dark}, rows=slice(2, 5))
    np.testing.assert_array_equal(rows[0], dark[2:5])


def test_darks_for_frames_come_in_the_order_of_first_use(rng):
    """Any key will do (the steps give dark terms): one image per key, first used first."""
    images = {"long": rng.normal(400.0, 3.0, (4, 5)), "short": rng.normal(100.0, 3.0, (4, 5))}
    darks, dark_index = darks_for_frames(["long", "short", "long"], images)
    assert dark_index.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(darks, np.stack([images["long"], images["short"]]))
