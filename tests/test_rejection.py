"""Rejection methods beyond symmetric sigma clipping, each held to an independent oracle.

Sigma variants (separate low/high thresholds, MAD-based spread) against
``astropy.stats.sigma_clip``; ``minmax`` and ``pclip`` against a plain loop
over pixels written here, with numpy's sort and percentile.
"""

import numpy as np
import pytest
from astropy.stats import sigma_clip

from ccdred.combine import (ClipOptions, sigma_clip_combine, sigma_clip_combine_plain,
                            trace_rejection)

KERNELS = [sigma_clip_combine, sigma_clip_combine_plain]


def outlier_stack(rng, depth, shape=(20, 300)):
    stack = rng.normal(100.0, 10.0, (depth, *shape))
    stack[0, ::3, ::5] += 400.0
    stack[-1, 1::4, ::7] -= 300.0
    return stack


def tied_stack(rng, depth, shape=(12, 40)):
    """Integer samples with many ties, as raw ADU of a faint flat have."""
    return rng.integers(98, 103, (depth, *shape)).astype(np.float64)


def oracle_by_pixel(stack, keep, weights=None):
    """Mask and weighted mean, pixel by pixel, with ``keep(samples) -> bool per sample``."""
    weights = np.ones(len(stack)) if weights is None else np.asarray(weights)
    mask = np.ones(stack.shape, dtype=bool)
    mean = np.full(stack.shape[1:], np.nan)
    for row, col in np.ndindex(stack.shape[1:]):
        samples = stack[:, row, col]
        valid = np.flatnonzero(np.isfinite(samples))
        kept = valid[keep(samples[valid])]
        mask[kept, row, col] = False
        if kept.size:
            mean[row, col] = np.average(samples[kept], weights=weights[kept])
    return mask, mean


def minmax_keep(nlow, nhigh):
    def keep(samples):
        order = np.argsort(samples, kind="stable")
        return np.sort(order[nlow:len(samples) - nhigh])
    return keep


def pclip_keep(plow, phigh):
    def keep(samples):
        if samples.size == 0:
            return np.zeros(0, dtype=bool)
        low, high = np.percentile(samples, [plow, phigh])
        return (samples >= low) & (samples <= high)
    return keep


def assert_matches(result, mask, mean):
    np.testing.assert_array_equal(result.clip_mask, mask)
    np.testing.assert_array_equal(result.n_used, (~mask).sum(axis=0))
    np.testing.assert_allclose(result.data, mean, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("cenfunc", ["median", "mean"])
@pytest.mark.parametrize("stdfunc", ["std", "mad_std"])
@pytest.mark.parametrize("lsigma,hsigma", [(2.5, 2.5), (4.0, 1.5), (1.2, 3.0)])
@pytest.mark.parametrize("depth", [3, 8, 13])
def test_sigma_variants_match_astropy(kernel, cenfunc, stdfunc, lsigma, hsigma, depth, rng):
    stack = outlier_stack(rng, depth)
    result = kernel(stack, cenfunc=cenfunc, stdfunc=stdfunc, lsigma=lsigma, hsigma=hsigma)
    clipped = sigma_clip(stack, sigma_lower=lsigma, sigma_upper=hsigma, cenfunc=cenfunc,
                         stdfunc=stdfunc, maxiters=10, axis=0, masked=True)
    assert_matches(result, clipped.mask, np.ma.filled(clipped.mean(axis=0), np.nan))


@pytest.mark.parametrize("kernel", KERNELS)
def test_mad_std_on_tied_integers_matches_astropy(kernel, rng):
    """Tied samples make the MAD's middle ranks fall on equal deviations from both sides."""
    stack = tied_stack(rng, 9)
    result = kernel(stack, stdfunc="mad_std", threshold=1.0, maxiters=5)
    clipped = sigma_clip(stack, sigma=1.0, stdfunc="mad_std", maxiters=5, axis=0, masked=True)
    assert_matches(result, clipped.mask, np.ma.filled(clipped.mean(axis=0), np.nan))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("make", [outlier_stack, tied_stack])
@pytest.mark.parametrize("nlow,nhigh", [(1, 1), (0, 2), (2, 0), (3, 4), (4, 4)])
def test_minmax_matches_a_loop_over_pixels(kernel, make, nlow, nhigh, rng):
    stack = make(rng, 8)
    stack[2, 0, :5] = np.nan  # fewer samples; with nlow + nhigh = 8 none are left
    weights = rng.uniform(0.5, 2.0, 8)
    result = kernel(stack, rejection="minmax", nlow=nlow, nhigh=nhigh, weights=weights)
    assert_matches(result, *oracle_by_pixel(stack, minmax_keep(nlow, nhigh), weights))
    assert (result.n_used[1:] == 8 - nlow - nhigh).all()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("make", [outlier_stack, tied_stack])
@pytest.mark.parametrize("plow,phigh", [(10, 90), (0, 50), (25, 75), (33.3, 100)])
def test_pclip_matches_numpy_percentiles(kernel, make, plow, phigh, rng):
    stack = make(rng, 11)
    stack[4, 1, :7] = np.nan
    result = kernel(stack, rejection="pclip", plow=plow, phigh=phigh)
    assert_matches(result, *oracle_by_pixel(stack, pclip_keep(plow, phigh)))


def test_minmax_of_all_equal_samples_drops_the_first_and_last_frames():
    stack = np.full((5, 1, 1), 7.0)
    result = sigma_clip_combine(stack, rejection="minmax", nlow=1, nhigh=1)
    assert result.clip_mask[:, 0, 0].tolist() == [True, False, False, False, True]


@pytest.mark.parametrize("rejection", ["sigclip", "minmax", "pclip"])
def test_methods_remove_an_injected_cosmic_ray(rejection, rng):
    """Injected truth: a sky of 100 with one frame's cosmic ray at a known pixel."""
    stack = rng.normal(100.0, 1.0, (10, 8, 8))
    stack[3, 4, 4] = 5000.0
    result = sigma_clip_combine(stack, rejection=rejection)
    assert result.clip_mask[3, 4, 4]
    assert abs(result.data[4, 4] - 100.0) < 1.5


@pytest.mark.parametrize("options,match", [
    ({"rejection": "avsigclip"}, "rejection must be one of"),
    ({"stdfunc": "iqr"}, "stdfunc must be one of"),
    ({"lsigma": 0}, "lsigma must be a positive number, got 0"),
    ({"hsigma": "x"}, "hsigma must be a positive number"),
    ({"nlow": -1}, "nlow must be an integer >= 0, got -1"),
    ({"nhigh": 1.5}, "nhigh must be an integer >= 0, got 1.5"),
    ({"plow": 60, "phigh": 40}, "0 <= plow < phigh <= 100, got 60, 40"),
    ({"phigh": 101}, "0 <= plow < phigh <= 100"),
])
def test_bad_options_name_the_value(options, match):
    with pytest.raises(ValueError, match=match):
        ClipOptions(**options)
    with pytest.raises(ValueError, match=match):
        sigma_clip_combine(np.ones((3, 2, 2)), **options)


def test_describe_names_only_what_the_method_uses():
    assert ClipOptions(rejection="pclip", plow=5).describe() == {
        "rejection": "pclip", "plow": 5.0, "phigh": 90.0}
    described = ClipOptions(threshold=3, hsigma=4).describe()
    assert (described["lsigma"], described["hsigma"]) == (3.0, 4.0)


# -- the trace: every iteration's decisions ---------------------------------------------


@pytest.mark.parametrize("options", [
    {}, {"threshold": 1.2, "maxiters": 3}, {"cenfunc": "mean", "lsigma": 1.5, "hsigma": 3.0},
    {"stdfunc": "mad_std"}, {"rejection": "minmax", "nhigh": 2}, {"rejection": "pclip"},
])
def test_trace_agrees_with_the_kernel(options, rng):
    stack = outlier_stack(rng, 9, shape=(10, 30))
    mask = rng.random(stack.shape) < 0.05
    trace = trace_rejection(stack, mask=mask, **options)
    result = sigma_clip_combine(stack, mask=mask, **options)
    np.testing.assert_array_equal(trace.rejected, result.clip_mask)
    np.testing.assert_array_equal(trace.premasked, mask)
    clipped = trace.rejected & ~trace.premasked
    assert (trace.iteration[clipped] >= 1).all() and (trace.iteration[~clipped] == 0).all()
    assert trace.iteration.max() <= len(trace.bounds)


def test_trace_bounds_are_astropys(rng):
    stack = outlier_stack(rng, 9, shape=(4, 6))
    trace = trace_rejection(stack, threshold=2.0)
    _, lower, upper = sigma_clip(stack, sigma=2.0, maxiters=10, axis=0, return_bounds=True)
    last = trace.bounds[-1]
    np.testing.assert_allclose(last[0], lower, rtol=1e-12)
    np.testing.assert_allclose(last[2], upper, rtol=1e-12)
    np.testing.assert_allclose(trace.bounds[0, 1], np.median(stack, axis=0), rtol=1e-12)
