import numpy as np
import pytest
from astropy.stats import sigma_clip
from astropy.utils.exceptions import AstropyUserWarning
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ccdred.combine import (ClipOptions, concatenate_rows, frame_clip_bounds, frame_clip_mask,
                            frame_median, sigma_clip_combine, sigma_clip_combine_plain,
                            sorting_network, trace_rejection)

KERNELS = [sigma_clip_combine, sigma_clip_combine_plain]


def astropy_combine(stack, threshold=2.5, cenfunc="median", maxiters=10, weights=None, mask=None):
    """The oracle: astropy's sigma_clip along the stack, then numpy.ma.average."""
    data = np.ma.array(stack, mask=mask) if mask is not None else stack
    clipped = sigma_clip(data, sigma=threshold, maxiters=maxiters, cenfunc=cenfunc, axis=0,
                         masked=True)
    return clipped.mask, np.ma.average(clipped, weights=weights, axis=0)


def assert_matches_astropy(result, stack, **options):
    mask, average = astropy_combine(stack, **options)
    np.testing.assert_array_equal(result.clip_mask, mask)
    np.testing.assert_array_equal(result.n_used, (~mask).sum(axis=0))
    expected = np.ma.filled(average.astype(np.float64), np.nan)
    np.testing.assert_allclose(result.data, expected, rtol=1e-12, equal_nan=True)


def outlier_stack(rng, depth, shape=(30, 40), dtype=np.float64):
    stack = rng.normal(100.0, 10.0, (depth, *shape))
    stack[0, ::3, ::5] += 400.0  # cosmic rays
    stack[-1, 1::4, ::7] -= 300.0
    return stack.astype(dtype)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("cenfunc", ["median", "mean"])
@pytest.mark.parametrize("depth", [2, 3, 6, 7, 12])
def test_matches_astropy(kernel, cenfunc, depth, rng):
    stack = outlier_stack(rng, depth)
    result = kernel(stack, cenfunc=cenfunc)
    assert_matches_astropy(result, stack, cenfunc=cenfunc)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threshold,maxiters", [(1.0, 1), (1.5, 3), (3.0, 10), (0.3, 10)])
def test_matches_astropy_threshold_and_iterations(kernel, threshold, maxiters, rng):
    stack = outlier_stack(rng, 8)
    result = kernel(stack, threshold=threshold, maxiters=maxiters)
    assert_matches_astropy(result, stack, threshold=threshold, maxiters=maxiters)


def test_columns_still_clipping_late_match_astropy(rng):
    """Wide rows (several column blocks) where a minority of pixels needs many iterations.

    The kernel switches from whole-block sums to per-column sums once few
    columns are still clipping; both must agree with astropy to the bit.
    """
    stack = outlier_stack(rng, 10, shape=(6, 700))
    late = np.any(astropy_combine(stack, threshold=2.0, maxiters=2)[0]
                  != astropy_combine(stack, threshold=2.0)[0], axis=0)
    assert 0 < late.mean() < 0.25  # the case the per-column finish is for
    result = sigma_clip_combine(stack, threshold=2.0)
    assert_matches_astropy(result, stack, threshold=2.0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_frames_equals_combining_the_chosen_frames(kernel, rng):
    stack = outlier_stack(rng, 9)
    chosen = [1, 2, 5, 8]
    options = {"weights": [1.0, 2.0, 0.5, 1.5], "scale": [1.0, 1.1, 0.9, 1.0]}
    result = kernel(stack, frames=chosen, **options)
    expected = kernel(stack[chosen], **options)
    np.testing.assert_array_equal(result.data, expected.data)
    np.testing.assert_array_equal(result.clip_mask, expected.clip_mask)
    assert result.n_frames == 4
    with pytest.raises(ValueError, match="frames must be indices"):
        kernel(stack, frames=[0, 9])


@pytest.mark.parametrize("kernel", KERNELS)
def test_weights(kernel, rng):
    stack = outlier_stack(rng, 7)
    weights = rng.uniform(0.5, 3.0, 7)
    result = kernel(stack, weights=weights)
    assert_matches_astropy(result, stack, weights=weights)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("cenfunc", ["median", "mean"])
def test_premasked_samples(kernel, cenfunc, rng):
    stack = outlier_stack(rng, 6)
    mask = rng.random(stack.shape) < 0.2
    mask[:, 0, 0] = True  # a pixel with nothing left
    result = kernel(stack, mask=mask, cenfunc=cenfunc)
    assert_matches_astropy(result, stack, mask=mask, cenfunc=cenfunc)
    assert np.isnan(result.data[0, 0]) and result.n_used[0, 0] == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_nans_are_left_out(kernel, rng):
    stack = outlier_stack(rng, 5)
    stack[2, 3, 4] = np.nan
    stack[:, 5, 6] = np.nan
    stack[1, 7, 8] = np.inf
    with pytest.warns(UserWarning, match="invalid values"):
        assert_matches_astropy(kernel(stack), stack)
    result = kernel(stack)
    assert result.clip_mask[2, 3, 4] and result.clip_mask[1, 7, 8]
    assert np.isnan(result.data[5, 6])


@pytest.mark.parametrize("kernel", KERNELS)
def test_constant_columns_keep_every_sample(kernel):
    stack = np.full((5, 4, 4), 42.0)
    result = kernel(stack)
    assert not result.clip_mask.any()
    np.testing.assert_array_equal(result.data, 42.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int32])
def test_any_numeric_dtype(dtype, rng):
    stack = np.abs(outlier_stack(rng, 6)).astype(dtype)
    fast = sigma_clip_combine(stack)
    plain = sigma_clip_combine_plain(stack)
    np.testing.assert_array_equal(fast.clip_mask, plain.clip_mask)
    np.testing.assert_allclose(fast.data, plain.data, rtol=1e-12)


def test_scale_equals_scaling_first(rng):
    stack = outlier_stack(rng, 5)
    scale = np.array([1.0, 0.5, 2.0, 1.5, 0.8])
    scaled = sigma_clip_combine(stack * scale[:, None, None])
    direct = sigma_clip_combine(stack, scale=scale)
    np.testing.assert_array_equal(direct.clip_mask, scaled.clip_mask)
    np.testing.assert_allclose(direct.data, scaled.data, rtol=1e-13)


def test_keep_mask_false_saves_the_mask(rng):
    stack = outlier_stack(rng, 5)
    result = sigma_clip_combine(stack, keep_mask=False)
    assert result.clip_mask is None
    np.testing.assert_array_equal(result.n_used, sigma_clip_combine(stack).n_used)


@pytest.mark.parametrize("kernel", KERNELS)
def test_does_not_change_its_input(kernel, rng):
    stack = outlier_stack(rng, 5, dtype=np.float32)
    stack[0, 0, 0] = np.nan
    mask = rng.random(stack.shape) < 0.1
    before, mask_before = stack.copy(), mask.copy()
    kernel(stack, mask=mask, weights=np.arange(1.0, 6.0))
    np.testing.assert_array_equal(stack, before)
    np.testing.assert_array_equal(mask, mask_before)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bad,match", [
    ({"threshold": 0}, "threshold must be a positive number, got 0"),
    ({"threshold": np.nan}, "threshold"),
    ({"cenfunc": "mode"}, "cenfunc must be one of .* got 'mode'"),
    ({"maxiters": 0}, "maxiters must be an integer >= 1, got 0"),
    ({"maxiters": 2.5}, "maxiters"),
    ({"weights": [1.0, 2.0]}, "weights must be 3 finite non-negative"),
    ({"weights": [1.0, -1.0, 1.0]}, "weights"),
    ({"mask": np.zeros((2, 4, 4), bool)}, r"mask shape \(2, 4, 4\) differs"),
])
def test_bad_arguments_name_the_value(kernel, bad, match):
    with pytest.raises(ValueError, match=match):
        kernel(np.ones((3, 4, 4)), **bad)


def test_stack_must_be_3d():
    with pytest.raises(ValueError, match=r"3-D .* got shape \(4, 4\)"):
        sigma_clip_combine(np.ones((4, 4)))


@pytest.mark.parametrize("cenfunc", ["median", "mean"])
@pytest.mark.parametrize("dtype", [np.uint16, ">u2", np.int32, np.float32, np.float64])
def test_frame_clip_matches_astropy(cenfunc, dtype, rng):
    frame = rng.poisson(800, (64, 80)).astype(dtype)
    frame[::17, ::13] = 20000  # hot pixels
    frame[5, 5] = 0
    expected = sigma_clip(frame.astype(np.float64), sigma=2.5, maxiters=10, cenfunc=cenfunc,
                          axis=None).mask
    mask = frame_clip_mask(frame, cenfunc=cenfunc)
    np.testing.assert_array_equal(mask, expected)
    assert mask[::17, ::13].all()


@pytest.mark.parametrize("cenfunc", ["median", "mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_frame_clip_bounds_of_float_frames_are_astropys(cenfunc, dtype, rng):
    frame = rng.normal(800.0, 30.0, (64, 80)).astype(dtype)
    frame[::17, ::13] = 20000.0
    frame[3, 4] = np.nan
    with pytest.warns(AstropyUserWarning, match="invalid values"):
        _, lower, upper = sigma_clip(frame.astype(np.float64), sigma=2.5, maxiters=10,
                                     cenfunc=cenfunc, axis=None, return_bounds=True)
    assert frame_clip_bounds(frame, cenfunc=cenfunc) == (lower, upper)


def test_frame_clip_bounds_keep_the_last_bounds_when_every_sample_is_clipped(rng):
    """Where astropy's bounds become NaN (nothing left to clip), a float frame keeps the last
    ones, as an integer frame does (its histogram path): why it is not astropy's call."""
    frame = rng.poisson(800, (64, 80))
    clip = {"threshold": 0.5, "cenfunc": "mean"}
    _, lower, upper = sigma_clip(frame.astype(np.float64), sigma=0.5, cenfunc="mean", axis=None,
                                 return_bounds=True)
    assert np.isnan(lower) and np.isnan(upper)
    bounds = frame_clip_bounds(frame.astype(np.float64), **clip)
    assert np.isfinite(bounds).all()
    assert bounds == frame_clip_bounds(frame.astype(np.uint16), **clip)


@settings(max_examples=60, deadline=None)
@given(stack=arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 3), st.integers(1, 40)),
                    elements=st.floats(-1e6, 1e6, allow_nan=False) | st.just(np.nan)),
       threshold=st.floats(0.2, 5.0), maxiters=st.integers(1, 12),
       cenfunc=st.sampled_from(["median", "mean"]))
def test_property_fast_equals_plain(stack, threshold, maxiters, cenfunc):
    options = {"threshold": threshold, "maxiters": maxiters, "cenfunc": cenfunc}
    fast = sigma_clip_combine(stack, **options)
    plain = sigma_clip_combine_plain(stack, **options)
    np.testing.assert_array_equal(fast.n_used, plain.n_used)
    np.testing.assert_allclose(fast.data, plain.data, rtol=1e-9, atol=1e-9, equal_nan=True)
    assert np.all((fast.n_used == 0) == np.isnan(fast.data))


@pytest.mark.parametrize("n", range(1, 15))
def test_sorting_network_sorts_every_zero_one_input(n):
    """0-1 principle: a comparator network that sorts all 0/1 inputs sorts everything."""
    network = sorting_network(n)
    inputs = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    values = inputs.T.copy()
    for i, j in network:
        values[i], values[j] = np.minimum(values[i], values[j]), np.maximum(values[i], values[j])
    np.testing.assert_array_equal(values, np.sort(inputs, axis=1).T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("size", [1, 2, 7, 1000, 4096 * 3 + 1])
def test_frame_median_equals_numpy(rng, dtype, size):
    values = (rng.normal(20000, 150, size) if dtype != np.uint16
              else rng.integers(0, 65535, size)).astype(dtype)
    assert frame_median(values) == np.nanmedian(values.astype(np.float64))


def test_frame_median_ignores_nan_like_numpy(rng):
    values = rng.normal(0, 1, (40, 50))
    values[::3, ::4] = np.nan
    values[0, 0] = np.inf
    assert frame_median(values) == np.nanmedian(values)
    assert np.isnan(frame_median(np.full(5, np.nan)))
    assert frame_median(np.full(5, 3.0)) == 3.0
    assert frame_median(np.array([5e-324, 0.0])) == np.median([5e-324, 0.0])


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 60), elements=st.floats(-1e9, 1e9) | st.just(np.nan)))
def test_property_frame_median(values):
    expected = np.nanmedian(values) if not np.isnan(values).all() else np.nan
    result = frame_median(values)
    assert result == expected or (np.isnan(result) and np.isnan(expected))  # -0.0 == 0.0


@pytest.mark.parametrize("kernel", KERNELS)
def test_valid_range_equals_the_mask_it_describes(kernel, rng):
    stack = outlier_stack(rng, 6)
    lower, upper = rng.uniform(60, 90, 6), rng.uniform(110, 140, 6)
    mask = (stack < lower[:, None, None]) | (stack > upper[:, None, None])
    by_range = kernel(stack, valid_range=(lower, upper))
    by_mask = kernel(stack, mask=mask)
    np.testing.assert_array_equal(by_range.clip_mask, by_mask.clip_mask)
    np.testing.assert_array_equal(by_range.data, by_mask.data)
    assert by_range.clip_mask[mask].all()


def _misleading(rng):
    """Values whose sampled runs (evenly spaced stretches) sit far above the rest."""
    values = rng.normal(0.0, 1.0, 300_000)
    for run in range(16384 // 32):
        start = int((run * 0.6180339887498949) % 1.0 * (values.size - 32))
        values[start:start + 32] += 50.0
    return values


LARGE_FRAMES = {
    "normal": lambda rng: rng.normal(1000.0, 30.0, (400, 300)),
    "few distinct integers": lambda rng: rng.integers(0, 3, (400, 300)).astype(np.float64),
    "mostly NaN": lambda rng: np.where(rng.random((400, 300)) < 0.7, np.nan,
                                       rng.normal(0.0, 1.0, (400, 300))),
    "even count, NaN and inf": lambda rng: np.concatenate([rng.normal(0, 1, 99_999), [np.nan, np.inf]]),
    "misleading sample": _misleading,
    "float32 gradient": lambda rng: (np.linspace(0, 1, 120_000) + rng.normal(0, 1e-3, 120_000)
                                     ).astype(np.float32),
}


@pytest.mark.parametrize("name", list(LARGE_FRAMES))
def test_frame_median_of_large_frames_equals_numpy(name, rng):
    """Frames large enough for the sampled window (and its fallbacks)."""
    values = LARGE_FRAMES[name](rng)
    assert frame_median(values) == np.nanmedian(values.astype(np.float64))


@pytest.mark.parametrize("dark_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(7, 9), (400, 300)])
def test_frame_median_subtracts_the_offset_exactly(shape, dark_dtype, rng):
    raw = rng.integers(20_000, 30_000, shape).astype(np.uint16)
    dark = rng.normal(100.0, 5.0, shape).astype(dark_dtype)  # float32: a master as written
    assert frame_median(raw, dark) == np.median(raw - dark.astype(np.float64))
    assert frame_median(raw, dark) != frame_median(raw)


@pytest.mark.parametrize("name", list(LARGE_FRAMES))
@pytest.mark.parametrize("frame_dtype", [np.float32, np.float64, ">f8"])
def test_frame_median_less_an_offset_of_large_frames_equals_numpy(name, frame_dtype, rng):
    """The offset subtracted as the pass reads the frame as stored, fallbacks included;
    a big-endian frame (converted) too."""
    values = LARGE_FRAMES[name](rng).astype(frame_dtype)
    offset = rng.normal(5.0, 1.0, values.shape).astype(np.float32)
    expected = np.nanmedian(values.astype(np.float64) - offset.astype(np.float64))
    assert frame_median(values, offset) == expected


def test_frame_median_rejects_an_offset_of_another_shape(rng):
    with pytest.raises(ValueError, match=r"offset shape \(3, 4\) differs from the frame's \(4, 3\)"):
        frame_median(np.ones((4, 3)), np.ones((3, 4)))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("frames", [None, [0, 2, 3, 5]])
@pytest.mark.parametrize("dark_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stack_dtype", [np.uint16, np.float32, np.float64])
def test_offsets_equal_subtracting_them_first(kernel, frames, dark_dtype, stack_dtype, rng):
    """Offsets are subtracted in float64, float32 ones (masters as written) too, from
    every stack type the kernel reads as it is."""
    raw = (outlier_stack(rng, 6, dtype=np.float64) + 1000.0).astype(stack_dtype)
    darks = rng.normal(100.0, 5.0, (2, *raw.shape[1:])).astype(dark_dtype)
    index = np.array([0, 1, 0, 1, 1, 0])
    chosen = index if frames is None else index[frames]
    scale = rng.uniform(0.9, 1.1, len(chosen))
    by_offsets = kernel(raw, offsets=darks, offset_index=chosen, frames=frames, scale=scale)
    subtracted = raw.astype(np.float64) - darks[index].astype(np.float64)
    expected = kernel(subtracted, frames=frames, scale=scale)
    np.testing.assert_array_equal(by_offsets.data, expected.data)
    np.testing.assert_array_equal(by_offsets.clip_mask, expected.clip_mask)


@pytest.mark.parametrize("kernel", KERNELS)
def test_one_offset_image_serves_every_frame(kernel, rng):
    raw = rng.normal(20000.0, 300.0, (5, 6, 7)).astype(np.uint16)
    dark = rng.normal(100.0, 3.0, (6, 7))
    by_offset = kernel(raw, offsets=dark)
    expected = kernel(raw - dark)
    np.testing.assert_array_equal(by_offset.data, expected.data)
    np.testing.assert_array_equal(by_offset.clip_mask, expected.clip_mask)


def test_offsets_of_integer_frames_match_the_plain_twin(rng):
    raw = rng.normal(25_000.0, 50.0, (8, 20, 30)).astype(np.uint16)
    raw[0, ::4, ::3] = 65_000
    dark = rng.normal(100.0, 5.0, (1, 20, 30))
    fast = sigma_clip_combine(raw, offsets=dark)
    plain = sigma_clip_combine_plain(raw, offsets=dark)
    np.testing.assert_array_equal(fast.clip_mask, plain.clip_mask)
    np.testing.assert_array_equal(fast.data, plain.data)
    assert fast.clip_mask[0, ::4, ::3].all()


@pytest.mark.parametrize("offsets,index,message", [
    (np.zeros((2, 3)), None, r"offsets must be images of shape \(n_offsets, 4, 5\)"),
    (np.zeros((1, 4, 6)), None, r"offsets must be images of shape \(n_offsets, 4, 5\), got \(1, 4, 6\)"),
    (np.zeros((2, 4, 5)), [0, 1], r"offset_index must be 3 indices into the 2 offsets"),
    (np.zeros((2, 4, 5)), [0, 1, 2], r"offset_index must be 3 indices into the 2 offsets"),
])
def test_bad_offsets_are_refused(offsets, index, message):
    with pytest.raises(ValueError, match=message):
        sigma_clip_combine(np.ones((3, 4, 5)), offsets=offsets, offset_index=index)


@pytest.mark.parametrize("kernel", KERNELS)
def test_rejected_per_frame_counts_the_clip_mask(kernel, rng):
    stack = outlier_stack(rng, 7, shape=(5, 600))  # several column blocks
    result = kernel(stack, frames=[0, 1, 2, 4, 6])
    np.testing.assert_array_equal(result.n_rejected_per_frame, result.clip_mask.sum(axis=(1, 2)))
    assert result.n_rejected_per_frame[0] > 0


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_left_out_per_frame_counts_what_never_entered(kernel, dtype, rng):
    """Left out: not finite (float frames), masked, or outside the frame's valid range;
    counted per frame, in the kernel's own pass and the plain twin's alike."""
    stack = outlier_stack(rng, 6, shape=(9, 300)).astype(dtype)  # several column blocks
    mask = rng.random(stack.shape) < 0.05
    low = np.percentile(stack, 2, axis=(1, 2))
    high = np.percentile(stack, 97, axis=(1, 2))
    if dtype == np.float32:
        stack[1, 2, 3] = np.nan
    outside = (stack < low[:, None, None]) | (stack > high[:, None, None])
    expected = (mask | outside | ~np.isfinite(stack)).sum(axis=(1, 2))
    result = kernel(stack, mask=mask, valid_range=(low, high), threshold=2.0)
    np.testing.assert_array_equal(result.n_left_out_per_frame, expected)
    assert (result.n_rejected_per_frame > result.n_left_out_per_frame).all()  # clipping too


def test_rejected_per_frame_without_the_mask_and_across_row_blocks(rng):
    stack = outlier_stack(rng, 6, shape=(12, 40))
    whole = sigma_clip_combine(stack)
    blocks = concatenate_rows([sigma_clip_combine(stack[:, rows], keep_mask=False)
                               for rows in (slice(0, 5), slice(5, 12))])
    assert blocks.clip_mask is None
    np.testing.assert_array_equal(blocks.n_rejected_per_frame, whole.n_rejected_per_frame)
    np.testing.assert_array_equal(blocks.n_left_out_per_frame, whole.n_left_out_per_frame)


def test_options_are_passed_whole_or_by_keyword_not_both(rng):
    """A combiner passes its validated ClipOptions whole: the same result as its keywords."""
    stack = rng.normal(100.0, 5.0, (7, 6, 5))
    stack[3, 2, 2] = 400.0
    clip = ClipOptions(threshold=2.0, cenfunc="mean", maxiters=3)
    whole = sigma_clip_combine(stack, clip=clip)
    np.testing.assert_array_equal(whole.data, sigma_clip_combine(
        stack, threshold=2.0, cenfunc="mean", maxiters=3).data)
    assert whole.clip_mask[3, 2, 2]
    with pytest.raises(TypeError, match="not both"):
        sigma_clip_combine(stack, clip=clip, threshold=3.0)
    with pytest.raises(TypeError, match="clip must be a ClipOptions"):
        trace_rejection(stack, clip={"threshold": 2.0})


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int32, ">f8"])
@pytest.mark.parametrize("shape", [(1,), (7, 13), (300, 301)])
def test_mean_where_is_numpys_mean_to_the_bit(dtype, shape, rng):
    from ccdred.combiners import mean_where

    values = rng.normal(1000.0, 50.0, shape).astype(dtype)
    if np.issubdtype(values.dtype, np.floating):
        values.flat[1::5] = np.nan
    where = np.isfinite(values) & (rng.random(shape) > 0.2)
    where.flat[0] = True
    expected = np.mean(values, where=where)
    assert mean_where(values, where) == expected
    assert type(mean_where(values, where)) is type(expected)
