"""IRAF's ``ccdclip`` (rejection by the CCD noise model) and the variance of a combined value."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from scipy.stats import norm

from ccdred import plots, steps
from ccdred.cli import main
from ccdred.combine import (ClipOptions, concatenate_rows, model_bounds, sigma_clip_combine,
                            sigma_clip_combine_plain, trace_rejection)
from ccdred.demo import NightSpec, make_night
from ccdred.errors import InputError
from ccdred.night import reduce_night
from ccdred.noise import DetectorNoise
from ccdred.pipeline import MASTERS, Pipeline

GAIN, READ_NOISE = 1.5, 9.0  # e-/ADU, e-: the read noise is 6 ADU
COMBINERS = [sigma_clip_combine, sigma_clip_combine_plain]


def ccdclip_loop(stack, gain, read_noise, snoise=0.0, lsigma=2.5, hsigma=2.5, maxiters=10,
                 cenfunc="median", photon_noise=True):
    """IRAF's ccdclip written out pixel by pixel: (mean of the used samples, count used);
    without ``photon_noise``, the read noise alone."""
    data = np.full(stack.shape[1:], np.nan)
    n_used = np.zeros(stack.shape[1:], dtype=int)
    for row, col in np.ndindex(*stack.shape[1:]):
        samples = [float(v) for v in stack[:, row, col] if math.isfinite(v)]
        kept, lower, upper = sorted(samples), math.nan, math.nan
        for _ in range(maxiters):
            if not kept:
                break
            centre = statistics.median(kept) if cenfunc == "median" else sum(kept) / len(kept)
            signal = (max(centre, 0.0) / gain + (snoise * centre) ** 2) if photon_noise else 0.0
            sigma = math.sqrt((read_noise / gain) ** 2 + signal)
            lower, upper = centre - lsigma * sigma, centre + hsigma * sigma
            inside = [v for v in kept if lower <= v <= upper]
            if len(inside) in (0, len(kept)):
                break
            kept = inside
        used = [v for v in samples if lower <= v <= upper]
        n_used[row, col] = len(used)
        data[row, col] = sum(used) / len(used) if used else math.nan
    return data, n_used


@pytest.fixture
def outlier_stack(rng):
    """9 frames at 300-3000 ADU with the model's noise (gain 1.5, read noise 9 e-), some
    samples pushed far up and down, one frame masked in a corner."""
    level = rng.uniform(300.0, 3000.0, (12, 17))
    sigma = np.sqrt((READ_NOISE / GAIN) ** 2 + level / GAIN)
    stack = rng.normal(level, sigma, (9, 12, 17))
    outliers = rng.random(stack.shape) < 0.05
    n_outliers = outliers.sum()
    stack[outliers] += rng.choice([-1.0, 1.0], n_outliers) * rng.uniform(80, 600, n_outliers)
    stack[3, :2, :2] = np.nan
    return stack


@pytest.mark.parametrize("combine", COMBINERS)
@pytest.mark.parametrize(("cenfunc", "snoise", "lsigma", "hsigma", "maxiters"),
                         [("median", 0.0, 2.5, 2.5, 10), ("mean", 0.0, 2.5, 2.5, 10),
                          ("median", 0.02, 2.0, 3.0, 3), ("mean", 0.01, 3.0, 2.0, 1)])
def test_ccdclip_matches_a_loop_over_pixels(outlier_stack, combine, cenfunc, snoise, lsigma,
                                            hsigma, maxiters):
    clip = ClipOptions(rejection="ccdclip", gain=GAIN, read_noise=READ_NOISE, snoise=snoise,
                       lsigma=lsigma, hsigma=hsigma, maxiters=maxiters, cenfunc=cenfunc)
    result = combine(outlier_stack, clip=clip)
    data, n_used = ccdclip_loop(outlier_stack, GAIN, READ_NOISE, snoise, lsigma, hsigma, maxiters,
                                cenfunc)
    np.testing.assert_array_equal(result.n_used, n_used)
    np.testing.assert_allclose(result.data, data, rtol=1e-13)
    assert result.n_rejected.sum() > 0


@pytest.mark.parametrize("combine", COMBINERS)
def test_without_photon_noise_ccdclip_clips_at_the_read_noise(outlier_stack, combine):
    """A bias's level is a pedestal, not light: the model keeps the read noise (6 ADU) alone."""
    pedestal = outlier_stack - np.nanmedian(outlier_stack, axis=0) + 1000.0
    clip = ClipOptions(rejection="ccdclip", gain=GAIN, read_noise=READ_NOISE, snoise=0.05,
                       photon_noise=False)
    result = combine(pedestal, clip=clip)
    data, n_used = ccdclip_loop(pedestal, GAIN, READ_NOISE, photon_noise=False)
    np.testing.assert_array_equal(result.n_used, n_used)
    np.testing.assert_allclose(result.data, data, rtol=1e-13)
    with_photons = combine(pedestal, rejection="ccdclip", gain=GAIN, read_noise=READ_NOISE)
    assert result.n_rejected.sum() > with_photons.n_rejected.sum()


def test_the_kernel_and_its_trace_reject_the_same_samples(outlier_stack):
    clip = ClipOptions(rejection="ccdclip", gain=GAIN, read_noise=READ_NOISE, snoise=0.01)
    trace = trace_rejection(outlier_stack, clip=clip)
    result = sigma_clip_combine(outlier_stack, clip=clip)
    np.testing.assert_array_equal(trace.rejected, result.clip_mask)
    lower, centre, upper = trace.bounds[0]
    model = np.sqrt((READ_NOISE / GAIN) ** 2 + centre / GAIN + (0.01 * centre) ** 2)
    np.testing.assert_allclose(upper - centre, 2.5 * model, rtol=1e-12)  # the model's sigma


def test_ccdclip_rejects_what_the_model_calls_noise_not_what_the_samples_spread_says():
    """Pixel 0: one sample 200 ADU up among four at 1000 ADU (the other frames masked): their
    own spread, the outlier in it, keeps it at 3 sigma (one of five never lies beyond 2.5);
    the model (26.5 ADU) rejects it. Pixel 1: eight samples within 0.1 ADU and one 5 ADU up:
    their spread rejects it, the model calls 5 ADU noise."""
    nan = np.nan
    stack = np.array([[1000.0, 1000.0, 1000.0, 1000.0, 1200.0, nan, nan, nan, nan],
                      [1000.0, 1000.1, 999.9, 1000.0, 1000.1, 999.9, 1000.0, 1000.0, 1005.0]])
    stack = stack.T.reshape(9, 1, 2)
    options = {"threshold": 3.0, "cenfunc": "median"}
    sigclip = sigma_clip_combine(stack, **options).clip_mask[:, 0]
    ccdclip = sigma_clip_combine(stack, rejection="ccdclip", gain=GAIN, read_noise=READ_NOISE,
                                 **options).clip_mask[:, 0]
    assert np.flatnonzero(sigclip[:, 0]).tolist() == [5, 6, 7, 8]  # the masked ones
    assert np.flatnonzero(ccdclip[:, 0]).tolist() == [4, 5, 6, 7, 8]
    assert np.flatnonzero(sigclip[:, 1]).tolist() == [8]
    assert np.flatnonzero(ccdclip[:, 1]).tolist() == []


def simulated_frames(rng, n_frames, shape=(100, 100), gain=GAIN, read_noise=READ_NOISE):
    """Frames of a known signal (ADU): Poisson electrons read out with Gaussian read noise."""
    truth = rng.uniform(500.0, 2000.0, shape)
    electrons = rng.poisson(truth * gain, (n_frames, *shape))
    return truth, electrons / gain + rng.normal(0.0, read_noise / gain, (n_frames, *shape))


def test_ccdclip_rejects_the_gaussian_tail_of_simulated_frames(rng):
    """One pass about the mean of 20 frames: a sample less the mean is normal with sigma
    sqrt(1 - 1/20) times the model's, so 2.5 model sigmas leave 2 (1 - Phi(2.5 /
    sqrt(0.95))) = 1.03 % out. 800 000 samples give ~8300 rejections (binomial sd 1.1 %);
    Poisson's skew at >= 750 e- moves the two tails' sum by far less: 5 % is several sd.
    A gain half the true one (a model twice as wide in variance) rejects far fewer."""
    n = 20
    _, frames = simulated_frames(rng, n, (200, 200))
    expected = 2 * norm.sf(2.5 / math.sqrt(1 - 1 / n))
    options = {"rejection": "ccdclip", "read_noise": READ_NOISE, "cenfunc": "mean",
               "maxiters": 1, "keep_mask": False}
    fraction = sigma_clip_combine(frames, gain=GAIN, **options).n_rejected.sum() / frames.size
    assert fraction == pytest.approx(expected, rel=0.05)
    too_wide = sigma_clip_combine(frames, gain=GAIN / 2, **options).n_rejected.sum() / frames.size
    assert too_wide < expected / 5


def test_ccdclip_needs_the_gain_and_read_noise():
    stack = np.ones((3, 2, 2))
    with pytest.raises(ValueError, match="ccdclip needs the detector's gain and read noise"):
        sigma_clip_combine(stack, rejection="ccdclip", gain=GAIN)
    with pytest.raises(ValueError, match="gain and read noise"):
        trace_rejection(stack, rejection="ccdclip", read_noise=READ_NOISE)
    with pytest.raises(ValueError, match="snoise must be a finite number >= 0, got -0.1"):
        ClipOptions(rejection="ccdclip", snoise=-0.1)
    with pytest.raises(ValueError, match="gain must be a positive number, got 0"):
        ClipOptions(gain=0)


def test_the_step_options_take_the_nights_noise():
    ccdclip = steps.StepOptions(ClipOptions(rejection="ccdclip", snoise=0.02))
    noise = DetectorNoise(GAIN, READ_NOISE, "option", "option")
    clip = ccdclip.with_noise(noise).clip
    assert (clip.gain, clip.read_noise, clip.snoise) == (GAIN, READ_NOISE, 0.02)
    sigclip = steps.StepOptions()
    assert sigclip.with_noise(noise) is sigclip  # nothing else changes, nor its masters' keys
    with pytest.raises(InputError) as caught:
        ccdclip.with_noise(None)
    assert len(caught.value.problems) == 1 and "--read-noise" in str(caught.value.problems[0])


# -- the variance of a combined value ----------------------------------------------------------

@pytest.mark.parametrize("combine", COMBINERS)
@pytest.mark.parametrize("clip", [ClipOptions(), ClipOptions(cenfunc="mean", threshold=2.0),
                                  ClipOptions(rejection="minmax"),
                                  ClipOptions(rejection="ccdclip", gain=GAIN,
                                              read_noise=READ_NOISE)],
                         ids=["sigclip", "sigclip-mean", "minmax", "ccdclip"])
def test_variance_is_that_of_the_mean_of_the_used_samples(outlier_stack, rng, combine, clip):
    """numpy on each pixel's used samples: the sample variance (ddof=1) over their number, and
    with weights sum w (x - mean)^2 / (sum w (n - 1)). The combined value is the mean of the
    used samples whatever ``cenfunc`` centres the bounds, so no median factor applies."""
    weights = rng.uniform(0.5, 2.0, len(outlier_stack))
    for frame_weights in (None, weights):
        result = combine(outlier_stack, clip=clip, weights=frame_weights, variance=True)
        assert result.variance.dtype == np.float64
        for row, col in np.ndindex(*outlier_stack.shape[1:]):
            used = ~result.clip_mask[:, row, col]
            values = outlier_stack[used, row, col]
            if used.sum() < 2:
                assert np.isnan(result.variance[row, col])
            elif frame_weights is None:
                expected = np.var(values, ddof=1) / len(values)
                assert result.variance[row, col] == pytest.approx(expected, rel=1e-9)
            else:
                mean = np.average(values, weights=weights[used])
                expected = (np.average((values - mean) ** 2, weights=weights[used])
                            / (len(values) - 1))
                assert result.variance[row, col] == pytest.approx(expected, rel=1e-9)


def test_variance_is_honest_on_simulated_frames(rng):
    """20 frames, nothing rejected: (combined - truth) / sqrt(variance) is Student's t with 19
    degrees of freedom (sd 1.06), over 10 000 pixels; within 10 % of 1."""
    truth, frames = simulated_frames(rng, 20)
    result = sigma_clip_combine(frames, rejection="minmax", nlow=0, nhigh=0, variance=True)
    pulls = (result.data - truth) / np.sqrt(result.variance)
    assert np.std(pulls) == pytest.approx(1.0, abs=0.1)
    assert np.std(pulls) == pytest.approx(math.sqrt(19 / 17), abs=0.03)


def test_variance_is_kept_only_when_asked_and_joined_across_row_blocks(outlier_stack):
    whole = sigma_clip_combine(outlier_stack, variance=True)
    assert sigma_clip_combine(outlier_stack).variance is None
    joined = concatenate_rows([sigma_clip_combine(outlier_stack[:, rows], variance=True)
                               for rows in (slice(0, 5), slice(5, None))])
    np.testing.assert_array_equal(joined.variance, whole.variance)
    unasked = concatenate_rows([whole, sigma_clip_combine(outlier_stack)])
    assert unasked.variance is None


def test_variance_keeps_its_digits_far_above_the_spread(rng):
    """Samples at 1e7 ADU spread by 1: the sums of squares about the first used sample keep
    the variance, where sums of raw squares would lose it to cancellation."""
    stack = 1e7 + rng.normal(0.0, 1.0, (10, 4, 5))
    result = sigma_clip_combine(stack, rejection="minmax", nlow=0, nhigh=0, variance=True)
    np.testing.assert_allclose(result.variance, np.var(stack, axis=0, ddof=1) / 10, rtol=1e-6)


# -- a night reduced with ccdclip ---------------------------------------------------------------

def run(args, capsys):
    status = main(["reduce", "-q", *map(str, args)])
    return status, capsys.readouterr().err


def test_reduce_with_ccdclip_writes_products(tmp_path, capsys):
    folder = tmp_path / "raw"
    make_night(folder, NightSpec(shape=(64, 64), seed=3))
    out = tmp_path / "out"
    status, err = run(["-d", out, "--rejection", "ccdclip", "--gain", "1.5", "--read-noise", "9",
                       "--snoise", "0.01", folder], capsys)
    assert status == 0, err
    header = fits.getheader(out / "flat_V.fits")
    assert header["HIERARCH CCDRED REJECTION"] == "ccdclip"
    assert header["HIERARCH CCDRED SNOISE"] == 0.01
    assert (header["GAIN"], header["RDNOISE"]) == (1.5, 9.0)
    sigclip = tmp_path / "sigclip"
    assert run(["-d", sigclip, "--gain", "1.5", "--read-noise", "9", folder], capsys)[0] == 0
    assert not np.array_equal(fits.getdata(out / "flat_V.fits"),
                              fits.getdata(sigclip / "flat_V.fits"))


def test_reduce_with_ccdclip_and_no_read_noise_says_so_in_one_line(tmp_path, capsys):
    """One bias: no read noise to measure, and the demo's headers have GAIN but no RDNOISE."""
    folder = tmp_path / "raw"
    make_night(folder, NightSpec(shape=(32, 32), seed=4, n_bias=1))
    status, err = run(["-d", tmp_path / "out", "--rejection", "ccdclip", folder], capsys)
    lines = [line for line in err.splitlines() if "ccdclip" in line]
    assert status == 2
    assert len(lines) == 1 and "--gain and --read-noise" in lines[0]
    assert f"{folder}: ccdclip needs the detector's gain and read noise" in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything is written, the log too


def test_the_three_runners_make_the_same_ccdclip_masters(tmp_path, client):
    from ccdred.cluster import reduce_nights_on_cluster
    from ccdred.parameters import ReductionParameters

    folder = tmp_path / "raw"
    make_night(folder, NightSpec.real(shape=(40, 56), seed=5))  # a bias, darks less it
    parameters = ReductionParameters(rejection="ccdclip", snoise=0.01)  # noise: measured
    local = reduce_night([folder], tmp_path / "local", parameters)
    reduce_nights_on_cluster([([folder], tmp_path / "dask")], client, parameters)
    MASTERS.clear()
    pipeline = Pipeline(night=str(folder), rejection="ccdclip", snoise=0.01)
    assert pipeline.step_options().clip.gain == local.noise.gain
    for name, master in local.masters.items():
        assert fits.getdata(tmp_path / "dask" / name).tobytes() == \
            fits.getdata(tmp_path / "local" / name).tobytes(), name
        written = steps.as_written(pipeline.master(name).data, "float32")
        assert written.tobytes() == master.data.tobytes(), name
    pixel = pipeline.pixel_stack("flat", 5, 7)  # the inspector's bounds: the model's sigma
    low, centre, high = pixel.bounds[-1]
    gain, read_noise = local.noise.gain, local.noise.read_noise
    sigma = math.sqrt((read_noise / gain) ** 2 + centre / gain + (0.01 * centre) ** 2)
    assert (high - centre, centre - low) == (pytest.approx(2.5 * sigma),) * 2
    low, centre, high = pipeline.pixel_stack("bias.fits", 5, 7).bounds[-1]  # the pedestal:
    assert high - centre == pytest.approx(2.5 * read_noise / gain)  # no photons, read noise


# -- the pixel inspector: the noise model's bounds beside the measured ones -----------------


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Two nights of a detector of gain 1.5 and read noise 9 e-: a real camera's (biases,
    the dark current, flats less it and the bias) and a course's (darks, bias in)."""
    folder = tmp_path_factory.mktemp("inspector")
    for name, spec in (("real", NightSpec.real), ("course", NightSpec)):
        make_night(folder / name, spec(shape=(40, 56), seed=5, gain=GAIN, read_noise=READ_NOISE))
    return folder


def _inspected(pipeline, name, n=4):
    """Pixels of a master: up to ``n`` where the combination rejected a sample, and two
    where it rejected none."""
    combination = pipeline.master(name).combination
    short = np.argwhere(combination.n_used < combination.n_frames)[:n]
    full = np.argwhere(combination.n_used == combination.n_frames)[:2]
    assert len(short) == n, name  # the test sees rejections, or it proves nothing
    return [pipeline.pixel_stack(name, int(x), int(y)) for y, x in (*short, *full)]


@pytest.mark.parametrize(("night", "name", "photon_noise", "snoise"),
                         [("real", "bias.fits", False, 0.01), ("real", "flat_V.fits", True, 0.0),
                          ("course", "flat_R.fits", True, 0.01),
                          ("course", "dark_00030000.fits", True, 0.01)])
def test_the_model_bounds_reject_exactly_what_the_kernel_rejects(nights, night, name,
                                                                 photon_noise, snoise):
    """At the final centre, :func:`model_bounds` (the inspector's) leaves outside exactly the
    samples the kernel rejected, pixel by pixel, for a bias (read noise alone), a flat less
    its dark and a dark; its sigma is the formula's, written out here."""
    MASTERS.clear()
    pipeline = Pipeline(night=str(nights / night), rejection="ccdclip", gain=GAIN,
                        read_noise=READ_NOISE, snoise=snoise)
    clip = ClipOptions(rejection="ccdclip", gain=GAIN, read_noise=READ_NOISE, snoise=snoise,
                       photon_noise=photon_noise)
    for pixel in _inspected(pipeline, name):
        centre = pixel.bounds[-1][1]
        low, high = model_bounds(centre, clip)
        outside = (pixel.values < low) | (pixel.values > high)
        assert np.array_equal(outside | pixel.premasked, pixel.rejected), (name, pixel)
        assert pixel.model_bounds == (low, high) == pixel.bounds[-1][::2]
        signal = (max(centre, 0) / GAIN + (snoise * centre) ** 2) if photon_noise else 0.0
        assert pixel.model_sigma == pytest.approx(math.sqrt((READ_NOISE / GAIN) ** 2
                                                        + signal))
        used = pixel.values[~pixel.rejected]
        assert pixel.measured_sigma == pytest.approx(np.std(used))
        assert pixel.measured_bounds == pytest.approx(
            (centre - 2.5 * np.std(used), centre + 2.5 * np.std(used)))


def test_with_sigclip_the_inspector_shows_the_model_as_information(nights):
    """sigclip's bounds are the measured sigma's; the noise model's sigma is given beside them
    when the gain and read noise are known, and is NaN (said in words) when they are not."""
    MASTERS.clear()
    pipeline = Pipeline(night=str(nights / "real"), gain=GAIN, read_noise=READ_NOISE)
    for pixel in _inspected(pipeline, "flat_V.fits"):
        low, centre, high = pixel.bounds[-1]
        assert pixel.measured_bounds == pytest.approx((low, high))  # converged: the same std
        assert pixel.model_sigma == pytest.approx(math.sqrt((READ_NOISE / GAIN) ** 2
                                                            + centre / GAIN))
    bias = pipeline.pixel_stack("bias.fits", 3, 4)
    assert bias.model_sigma == pytest.approx(READ_NOISE / GAIN)  # a pedestal: no photons
    summary = plots.pixel_summary(bias).splitlines()[1]
    assert f"measured σ {bias.measured_sigma:.4g}, noise model σ 6 " in summary
    unknown = replace(bias, model_sigma=math.nan, model_bounds=(math.nan, math.nan))
    assert "noise model unknown" in plots.pixel_summary(unknown)
