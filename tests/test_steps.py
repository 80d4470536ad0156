"""The calibration steps: options validated once, inputs never changed, truth recovered."""

from __future__ import annotations

import inspect
import threading

import ccdproc
import numpy as np
import pytest
from astropy.io import fits

from ccdred.cache import MemoCache
from ccdred.calibrate import calibrate_frame
from ccdred.combine import ClipOptions
from ccdred.combiners import (DarkCurrentCombiner, FlatCombiner, FrameChoice, StackCombiner,
                              combine_whole)
from ccdred.limits import FlatLimits
from ccdred.demo import BIAS_LEVEL, NightSpec, bias_level_drift, make_night, night_truth
from ccdred.frames import scan
from ccdred.night import reduce_night
from ccdred.pipeline import MASTERS, Pipeline
from ccdred.plan import DarkTerm
from ccdred.sections import Overscan, Preprocess, Section, Trim

REAL = NightSpec.real(shape=(400, 64), seed=5, n_darks=7)  # 400 rows: the overscan averages


@pytest.fixture(scope="module")
def real_night(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    make_night(folder, REAL)
    return folder


@pytest.mark.parametrize("options,match", [
    ({"threshold": 0}, "threshold must be a positive number, got 0"),
    ({"threshold": float("nan")}, "threshold must be a positive number"),
    ({"cenfunc": "mode"}, "cenfunc must be one of"),
    ({"maxiters": 0}, "maxiters must be an integer >= 1, got 0"),
    ({"maxiters": 2.5}, "maxiters must be an integer"),
])
def test_clip_options_name_the_bad_value(options, match):
    with pytest.raises(ValueError, match=match):
        ClipOptions(**options)


@pytest.mark.parametrize("text,problem", [
    ("[0,513:0,1536]", "is not a FITS section"),
    ("[5:2,1:4]", "x1 <= x2"),
    ("1:4,1:4", "is not a FITS section"),
])
def test_sections_that_do_not_parse(text, problem):
    with pytest.raises(ValueError, match=problem):
        Section.parse(text)


def test_a_section_outside_the_image_is_refused():
    with pytest.raises(ValueError, match=r"\[1:20,1:4\] does not lie inside the 10x8 image"):
        Section.parse("[1:20,1:4]").check((8, 10))


def test_flat_limits_judge_a_nan_median_rejected():
    limits = FlatLimits(upper=100.0, lower=10.0)
    assert limits.accepts([50.0, np.nan, 5.0, 500.0]).tolist() == [True, False, False, False]
    assert limits.statuses([50.0, np.nan, 5.0, 500.0]) == [
        "used", "rejected: median is not a number", "rejected: below lower limit 10",
        "rejected: above upper limit 100"]


STEPS = {
    "bias": lambda s: combine_whole(StackCombiner(frame_clip=False), s),
    "dark": lambda s: combine_whole(StackCombiner(), s),
    "dark current": lambda s: combine_whole(DarkCurrentCombiner(exptimes=(1, 1, 2, 2, 2)), s,
                                            offsets=s[0].astype(float)),
    "flat": lambda s: combine_whole(FlatCombiner(), s, offsets=s[0].astype(float) * 0.5),
    "overscan": lambda s: Preprocess(Overscan(Section.parse("[9:10,1:12]"), "legendre:2"),
                                     Trim(Section.parse("[1:8,1:12]")))(s[0]),
    "calibrate": lambda s: calibrate_frame(s[0], s[1], s[2] / s[2].mean()),
    "dark term": lambda s: DarkTerm("scaled", 3.0, bias="b", current="c").image(
        {"b": s[0], "c": s[1]}),
}


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("step", STEPS)
def test_step_does_not_change_its_input(step, dtype, rng):
    stack = rng.uniform(900, 1100, (5, 12, 10)).astype(dtype)
    before = stack.copy()
    STEPS[step](stack)
    np.testing.assert_array_equal(stack, before)


def test_overscan_per_row_matches_astropy_ccdproc(rng):
    from astropy.modeling.models import Legendre1D
    from astropy.nddata import CCDData

    rows = np.arange(40.0)[:, None]
    raw = 1000 + 0.3 * rows + rng.normal(0, 5, (40, 30))
    for function, model in (("median", None), ("mean", None), ("legendre:3", Legendre1D(3))):
        ours = Preprocess(Overscan(Section.parse("[25:30,1:40]"), function),
                          Trim(Section.parse("[1:24,1:40]")))(raw)
        theirs = ccdproc.subtract_overscan(CCDData(raw, unit="adu"), fits_section="[25:30,1:40]",
                                           overscan_axis=1, median=function == "median",
                                           model=model)
        theirs = ccdproc.trim_image(theirs, fits_section="[1:24,1:40]").data
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-9, err_msg=function)
        assert not np.allclose(ours, raw[:, :24] - 1000, atol=1)  # a per-row level was removed


def test_dark_current_is_the_least_squares_slope_of_clipped_levels(rng):
    """Oracle: astropy's sigma_clip per exposure time, then sum(n t D) / sum(n t^2)."""
    from astropy.stats import sigma_clip

    exptimes = np.array([10.0] * 3 + [60.0] * 8 + [300.0] * 2)  # 8: enough to clip one outlier
    bias = rng.normal(1000, 3, (6, 7))
    current = rng.uniform(0.1, 2.0, (6, 7))
    darks = bias + exptimes[:, None, None] * current + rng.normal(0, 5, (13, 6, 7))
    darks[4, 2, 3] += 900.0  # a cosmic ray
    result = DarkCurrentCombiner(exptimes=tuple(exptimes)).combine(
        darks, FrameChoice.every([None] * len(exptimes)), offsets=bias)
    numerator = denominator = 0.0
    for t in np.unique(exptimes):
        clipped = sigma_clip(darks[exptimes == t] - bias, sigma=2.5, maxiters=10,
                             cenfunc="median", stdfunc="std", axis=0, masked=True)
        n = clipped.count(axis=0)
        numerator = numerator + n * t * clipped.mean(axis=0).filled(0.0)
        denominator = denominator + n * t * t
    np.testing.assert_allclose(result.data, numerator / denominator, rtol=1e-10)
    assert result.n_rejected_per_frame[4] >= 1
    assert np.abs(result.data - current).max() < 0.1  # ADU/s, against the injected current


def test_bias_and_scaled_dark_subtraction_match_astropy_ccdproc(rng):
    import astropy.units as u
    from astropy.nddata import CCDData

    raw, bias, current = (rng.normal(level, 5, (8, 9)) for level in (1500.0, 1000.0, 0.5))
    term = DarkTerm("scaled", 45.0, bias="bias.fits", current="dark_current.fits")
    ours = calibrate_frame(raw, term.image({"bias.fits": bias, "dark_current.fits": current}))
    theirs = ccdproc.subtract_bias(CCDData(raw, unit="adu"), CCDData(bias, unit="adu"))
    theirs = ccdproc.subtract_dark(theirs, CCDData(current, unit="adu"), dark_exposure=1 * u.s,
                                   data_exposure=45 * u.s, scale=True)
    np.testing.assert_allclose(ours, theirs.data, rtol=1e-12)
    only_bias = DarkTerm("none", 45.0, bias="bias.fits").image({"bias.fits": bias})
    np.testing.assert_allclose(calibrate_frame(raw, only_bias), raw - bias, rtol=1e-12)


def test_bias_level_is_removed_by_the_overscan(real_night):
    """Each bias frame, overscan-corrected, has the injected pattern's level to < 0.1 ADU rms."""
    truth = night_truth(REAL)
    catalogue = scan([real_night])
    levels, drifts = [], []
    for number, frame in enumerate(catalogue.frames, start=1):
        if frame.frame_type == "bias":
            corrected = frame.read()
            levels.append(np.mean(corrected - (truth.bias - BIAS_LEVEL)))
            drifts.append(np.mean(bias_level_drift(REAL, number)))
    assert len(levels) == REAL.n_bias
    assert np.std(drifts) > 3  # there was a drift to remove
    assert np.sqrt(np.mean(np.square(levels))) < 0.1


def test_scaled_dark_recovers_the_injected_current(real_night, tmp_path):
    truth = night_truth(REAL)
    result = reduce_night([real_night], tmp_path)
    bias, current = result.masters["bias.fits"].data, result.masters["dark_current.fits"].data
    cool = ~truth.hot_pixels
    for exptime in REAL.object_exptimes:
        scaled = bias + exptime * current
        expected = truth.bias - BIAS_LEVEL + exptime * truth.dark_current
        assert abs(np.mean((scaled - expected)[cool])) < 0.5, exptime
    assert set(result.plan.models()) == {"scaled"}


def test_nan_median_flat_is_rejected_not_a_crash(night_copy):
    """An all-NaN float flat: its median is NaN, it is rejected, the frame table says why."""
    path = sorted(night_copy.glob("*.fits"))[20]
    with fits.open(path) as hdus:
        assert hdus[0].header["IMAGETYP"] == "FLAT"
        data = np.full(hdus[0].data.shape, np.nan, dtype=np.float32)
        fits.PrimaryHDU(data, hdus[0].header).writeto(path, overwrite=True)
    MASTERS.clear()
    rows = Pipeline(night=str(night_copy)).frame_levels()
    row = next(r for r in rows if r["file"] == path.name)
    assert row["status"] == "rejected: median is not a number"


def test_memo_cache_forgets_a_failed_computation_and_its_lock():
    cache = MemoCache(1 << 20)

    def fail():
        raise RuntimeError("boom")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            cache.get(("x",), fail)
    assert cache.pending == 0
    assert cache.get(("x",), lambda: 3) == 3
    cache.clear()
    assert cache.pending == 0 and cache.peek(("x",)) is None


def test_memo_cache_computes_once_for_concurrent_requests():
    cache = MemoCache(1 << 20)
    started, calls = threading.Event(), []

    def slow():
        calls.append(1)
        started.wait(1)
        return np.ones(3)

    threads = [threading.Thread(target=cache.get, args=(("k",), slow)) for _ in range(6)]
    for thread in threads:
        thread.start()
    started.set()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and cache.computed["k"] == 1 and cache.pending == 0


def test_every_master_s_combiner_follows_the_one_protocol(real_night):
    """The runners call the same methods, with the same arguments, whatever the master."""
    from ccdred.combiners import Combiner
    from ccdred.plan import PlanOptions, plan_night
    from ccdred.steps import StepOptions

    plan = plan_night(scan([real_night]), PlanOptions(dark_model="scaled"))
    kinds = {master.kind: StepOptions().combiner(master) for master in plan.masters.values()}
    assert set(kinds) == {"bias", "dark_current", "flat"}
    for combiner in kinds.values():
        assert isinstance(combiner, Combiner)
        for method in ("frame_statistic", "choose", "combine", "trace", "finish"):
            ours = inspect.signature(getattr(combiner, method)).parameters
            protocol = inspect.signature(getattr(Combiner, method)).parameters
            assert list(ours)[:len(protocol) - 1] == list(protocol)[1:], (combiner, method)


@pytest.mark.parametrize("budget", [1 << 30, 20_000])
def test_a_master_flat_chooses_its_flats_once_in_any_number_of_blocks(night_copy, tmp_path,
                                                                      monkeypatch, budget):
    """The limits are applied once per master flat, not again for every row block and the
    finish (the choice is passed on)."""
    from ccdred.limits import FlatLimits

    calls, select = [], FlatLimits.select
    monkeypatch.setattr(FlatLimits, "select",
                        lambda self, *args: calls.append(args[-1]) or select(self, *args))
    result = reduce_night([night_copy], tmp_path / "out", memory_budget=budget)
    flats = [m.filter for m in result.plan.masters.values() if m.kind == "flat"]
    assert sorted(calls) == sorted(flats) and len(flats) >= 2
