"""The compiled kernels behind :mod:`ccdred.combine` (numba), loaded on first use.

:mod:`ccdred.combine` imports this module inside the functions that need it,
so that importing ccdred (``ccdred --help``, the catalogue, the plan) loads
neither numba nor LLVM; the first combination pays that once (see
``benchmarks/README.md``). Four entry points are called from Python:
:func:`combine_rows`, :func:`sampled_median`, :func:`histogram` and
:func:`histogram_bounds`; the rest are inlined into them.

Each entry point takes a few fixed sets of argument types, whatever the data's
(see :data:`SIGNATURES`): :func:`combine_rows` reads the stacks raw frames come in
(16-bit, float32 once overscan-corrected, float64) and the offsets subtracted from
them (masters as written in float32, or float64) as they are, passed read-only,
and :mod:`ccdred.combine` converts any other (a block of rows at a time, to
float64), so that ``ccdred prepare`` compiles every version a run can need, and a
new stack type, byte order or memory layout compiles nothing at run time.
"""

from __future__ import annotations

import atexit
import gc

import numba
import numpy as np

from .constants import MAD_TO_SIGMA

__all__ = ["BLOCK", "HISTOGRAM_CHUNK", "SIGNATURES", "combine_rows", "histogram",
           "histogram_bounds", "sampled_median"]

# The interpreter's last garbage collection would walk every object numba made
# (~0.15-0.35 s at exit); the process is ending, so they are left to the OS.
atexit.register(gc.freeze)

# Frames of a stack lie a power of two apart (2048x2048 float32: 16 MiB), so
# walking down the stack pixel by pixel hits the same cache sets and thrashes.
# The kernel therefore works on blocks of one row: each frame's stretch is
# copied into small buffers (original order for the average, and a copy that a
# branch-free sorting network sorts for all the block's pixels at once).
BLOCK = 256

#: Values of an integer frame :func:`histogram` counts a call (as int64, less the frame's least).
HISTOGRAM_CHUNK = 1 << 16

_F8_1D = numba.float64[::1]
_I8_1D = numba.int64[::1]


def _read_only(dtype, ndim: int = 3) -> numba.types.Array:
    """A read-only, C-contiguous array of ``dtype`` (3-D: as :mod:`ccdred.combine` passes
    stacks; 1-D: frames and offsets to :func:`sampled_median`)."""
    return numba.types.Array(dtype, ndim, "C", readonly=True)


#: The stack types :func:`combine_rows` reads as they are (any other is converted to float64).
STACK_TYPES = ("uint16", "float32", "float64")

#: The offset types :func:`combine_rows` and :func:`sampled_median` read as they are (masters
#: as written, or float64).
OFFSET_TYPES = ("float32", "float64")


def _combine_rows_signature(stack_type, offset_type):
    return (_read_only(stack_type), _I8_1D, _F8_1D, _F8_1D, _read_only(offset_type), _I8_1D,
            _F8_1D, _F8_1D,
            numba.types.Tuple((numba.int64, numba.float64, numba.float64, numba.boolean,
                               numba.boolean, numba.int64, numba.int64, numba.int64,
                               numba.float64, numba.float64, numba.float64, numba.float64,
                               numba.float64)),
            numba.int64[:, ::1], numba.int64, numba.float64[:, ::1], numba.int16[:, ::1],
            numba.boolean[:, :, ::1], numba.float64[:, ::1], numba.int64[:, ::1],
            numba.int64[:, ::1])


#: The versions of each entry point that :mod:`ccdred.combine` calls (arrays C-contiguous,
#: native byte order; stacks and offsets read-only); :mod:`ccdred.prepare` compiles these. A
#: call with other types would compile another version at run time: ``tests/test_compile.py``
#: holds that none does.
SIGNATURES = {
    "combine_rows": [_combine_rows_signature(getattr(numba, name), getattr(numba, offset))
                     for name in STACK_TYPES for offset in OFFSET_TYPES],
    "sampled_median": [(_read_only(getattr(numba, name), 1),
                        _read_only(getattr(numba, offset), 1))
                       for name in STACK_TYPES for offset in OFFSET_TYPES],
    "histogram": [(_read_only(numba.uint16, 1), numba.int64, _I8_1D),
                  (_I8_1D, numba.int64, _I8_1D)],
    "histogram_bounds": [(_I8_1D, numba.float64, numba.boolean, numba.int64)],
}


@numba.njit(parallel=True, cache=True, nogil=True)
def combine_rows(stack, frames, valid_low, valid_high, offsets, offset_index, weights, scale,
                 rejection, network, first_row, data, n_used, clip_mask, variance,
                 used_per_task, left_out_per_task):  # pragma: no cover - compiled
    """Combine a block of rows: ``stack`` holds frames' rows (NaN where masked), of which
    ``frames`` are combined, ``offsets`` the same rows of the offset images (none: empty),
    and the results go to rows ``first_row`` on of ``data``, ``n_used``, ``clip_mask`` and
    ``variance`` (the combined value's, see :func:`_average_block`; not kept: empty); per
    task (a row's block of columns) and frame, the samples used and those left out before
    the rejection (not finite, or outside the frame's valid range)."""
    n, rows, cols = frames.shape[0], stack.shape[1], stack.shape[2]
    n_blocks = (cols + BLOCK - 1) // BLOCK
    for task in numba.prange(rows * n_blocks):
        row, start = task // n_blocks, (task % n_blocks) * BLOCK
        stop = min(cols, start + BLOCK)
        samples = np.empty((n, BLOCK))
        ordered = np.empty((n, BLOCK))
        _load_block(stack, frames, valid_low, valid_high, offsets, offset_index, scale,
                    row, start, stop, samples, ordered, left_out_per_task[task])
        _sort_block(ordered, network, stop - start)
        lower, upper, low_ties, high_keep = _block_bounds(ordered, stop - start, rejection, network)
        _average_block(samples, lower, upper, low_ties, high_keep, weights, first_row + row, start,
                       stop, data, n_used, clip_mask, variance, used_per_task[task])


@numba.njit(cache=True, nogil=True, inline="always")
def _load_block(stack, frames, valid_low, valid_high, offsets, offset_index, scale, row,
                start, stop, samples, ordered, left_out):  # pragma: no cover
    """Copy a row stretch of every combined frame, less its offset, scaled, in float64; NaN
    (+inf in ``ordered``) marks unusable samples, counted per frame in ``left_out``."""
    shift = np.zeros(stop - start)  # subtracting 0.0 changes no value
    for k in range(frames.shape[0]):
        low, high, factor, frame = valid_low[k], valid_high[k], scale[k], frames[k]
        if offsets.shape[0]:
            shift[:] = offsets[offset_index[k], row, start:stop]
        missing = 0
        for col in range(start, stop):
            stored = np.float64(stack[frame, row, col])
            value = (stored - shift[col - start]) * factor
            usable = np.isfinite(value) & (stored >= low) & (stored <= high)
            samples[k, col - start] = value if usable else np.nan
            ordered[k, col - start] = value if usable else np.inf
            missing += not usable
        left_out[k] = missing


@numba.njit(cache=True, nogil=True, inline="always")
def _sort_block(ordered, network, width):  # pragma: no cover
    """Sort every column of ``ordered`` with the comparator network (vectorises over columns)."""
    for pair in range(network.shape[0]):
        low, high = ordered[network[pair, 0]], ordered[network[pair, 1]]
        for col in range(width):
            a, b = low[col], high[col]
            low[col] = min(a, b)
            high[col] = max(a, b)


@numba.njit(cache=True, nogil=True, inline="always")
def _average_block(samples, lower, upper, low_ties, high_keep, weights, row, start, stop, data,
                   n_used, clip_mask, variance, frame_used):  # pragma: no cover
    """Weighted means of a block's samples within their bounds, in frame order; records the
    mask and how many samples of each frame were used, and the mean's variance when
    ``variance`` is kept (not empty; see :func:`_frame_sums`)."""
    width = stop - start
    total = np.zeros(width)
    weight_sum = np.zeros(width)
    used = np.zeros(width, dtype=np.int64)
    keep_variance = variance.shape[0] > 0
    moments = np.zeros((3, width if keep_variance else 0))  # origin, shifted, squares
    if keep_variance:  # two copies of the loop: the usual one has no variance branch
        _frame_sums(samples, lower, upper, low_ties, high_keep, weights, row, start, width,
                    clip_mask, frame_used, total, weight_sum, used, moments, True)
    else:
        _frame_sums(samples, lower, upper, low_ties, high_keep, weights, row, start, width,
                    clip_mask, frame_used, total, weight_sum, used, moments, False)
    shifted, squares = moments[1], moments[2]
    for col in range(width):
        n_used[row, start + col] = used[col]
        data[row, start + col] = (total[col] / weight_sum[col]
                                  if used[col] > 0 and weight_sum[col] > 0 else np.nan)
        if keep_variance:
            variance[row, start + col] = _mean_variance(squares[col], shifted[col],
                                                        weight_sum[col], used[col])


@numba.njit(cache=True, nogil=True, inline="always")
def _frame_sums(samples, lower, upper, low_ties, high_keep, weights, row, start, width,
                clip_mask, frame_used, total, weight_sum, used, moments,
                keep_variance):  # pragma: no cover
    """Add up the samples within their bounds, frame by frame across the block's columns
    (so the loop vectorises): weighted sum, weights' sum, count and, with ``keep_variance``
    (a constant at each call), in ``moments`` each column's first used sample and the
    weighted sums of deviations and of squared deviations from it (so that a level far
    above the spread loses no digits; see :func:`_mean_variance`).

    With tie quotas (``minmax``; empty otherwise), of the samples equal to a
    column's lower bound the first ``low_ties`` (in frame order) are
    rejected, and of those equal to its upper bound all after the first
    ``high_keep``: so exactly the samples a stable sort puts at the ends go.
    """
    origin, shifted, squares = moments[0], moments[1], moments[2]
    seen_low = np.zeros(width, dtype=np.int64)
    seen_high = np.zeros(width, dtype=np.int64)
    ties = low_ties.size > 0
    for k in range(samples.shape[0]):
        weight = weights[k]
        count = 0
        for col in range(width):
            value = samples[k, col]
            inside = (value >= lower[col]) & (value <= upper[col])  # False for NaN
            if ties:
                at_low, at_high = value == lower[col], value == upper[col]
                inside &= (~(at_low & (seen_low[col] < low_ties[col]))
                           & ~(at_high & (seen_high[col] >= high_keep[col])))
                seen_low[col] += at_low
                seen_high[col] += at_high
            total[col] += weight * value if inside else 0.0
            weight_sum[col] += weight if inside else 0.0
            if keep_variance:
                origin[col] = value if inside and used[col] == 0 else origin[col]
                deviation = value - origin[col] if inside else 0.0
                shifted[col] += weight * deviation
                squares[col] += weight * deviation * deviation
            used[col] += inside
            count += inside
            if clip_mask.shape[0]:
                clip_mask[k, row, start + col] = not inside
        frame_used[k] = count


@numba.njit(cache=True, nogil=True, inline="always")
def _mean_variance(squares, shifted, weight_sum, n):  # pragma: no cover
    """The variance of a weighted mean of ``n`` samples, from their weighted sums of squared
    and of plain deviations from a point: sum w (x - mean)^2 / (W (n - 1)), W the weights'
    sum. Equal weights: the sample variance (ddof=1) over n; inverse-variance weights: 1 / W
    in expectation. NaN for fewer than two samples."""
    if n < 2 or weight_sum <= 0:
        return np.nan
    return max(squares - shifted * shifted / weight_sum, 0.0) / (weight_sum * (n - 1))


@numba.njit(cache=True, nogil=True, inline="always")
def _block_bounds(ordered, width, rejection, network):  # pragma: no cover
    """Each column's final bounds and tie quotas (see :func:`_average_block`), by method."""
    (method, lsigma, hsigma, use_median, use_mad, maxiters, nlow, nhigh, plow, phigh,
     read_variance, gain, snoise) = rejection
    n = ordered.shape[0]
    count = np.zeros(width, dtype=np.int64)
    for k in range(n):
        for col in range(width):
            count[col] += ordered[k, col] != np.inf
    low_ties = np.zeros(width if method == 1 else 0, dtype=np.int64)
    high_keep = np.full(width if method == 1 else 0, n, dtype=np.int64)
    if method == 1:
        lower, upper = _minmax_bounds(ordered, count, nlow, nhigh, low_ties, high_keep)
    elif method == 2:
        lower, upper = _percentile_bounds(ordered, count, plow, phigh)
    elif method == 3:
        lower, upper = _noise_bounds(ordered, count, lsigma, hsigma, use_median, maxiters,
                                     read_variance, gain, snoise)
    else:
        lower, upper = _sigma_bounds(ordered, count, lsigma, hsigma, use_median, use_mad,
                                     maxiters, network)
    return lower, upper, low_ties, high_keep


@numba.njit(cache=True, nogil=True, inline="always")
def _minmax_bounds(ordered, count, nlow, nhigh, low_ties, high_keep):  # pragma: no cover
    """Bounds at the first and last kept ranks; tie quotas so that exactly ``nlow`` and
    ``nhigh`` samples go."""
    width = count.shape[0]
    lower = np.full(width, np.nan)
    upper = np.full(width, np.nan)
    for col in range(width):
        last = count[col] - nhigh - 1
        if last < nlow:
            continue
        lower[col], upper[col] = ordered[nlow, col], ordered[last, col]
        equal_high = dropped_high = 0
        for k in range(count[col]):
            low_ties[col] += k < nlow and ordered[k, col] == lower[col]
            equal_high += ordered[k, col] == upper[col]
            dropped_high += k > last and ordered[k, col] == upper[col]
        high_keep[col] = equal_high - dropped_high
    return lower, upper


@numba.njit(cache=True, nogil=True, inline="always")
def _percentile_bounds(ordered, count, plow, phigh):  # pragma: no cover
    """The ``plow``-th and ``phigh``-th percentiles of each column's samples."""
    width = count.shape[0]
    lower = np.full(width, np.nan)
    upper = np.full(width, np.nan)
    for col in range(width):
        if count[col]:
            lower[col] = _percentile(ordered, col, count[col], plow)
            upper[col] = _percentile(ordered, col, count[col], phigh)
    return lower, upper


@numba.njit(cache=True, nogil=True, inline="always")
def _percentile(ordered, col, n, percent):  # pragma: no cover
    """numpy's linear-interpolation percentile of sorted ``ordered[:n, col]``, to the bit."""
    quantile = percent / 100.0
    virtual = n * quantile + (1.0 + quantile * -1.0) - 1.0
    if virtual >= n - 1:
        return ordered[n - 1, col]
    previous = max(int(np.floor(virtual)), 0)
    gamma = virtual - np.floor(virtual) if virtual >= 0 else 0.0
    a, b = ordered[previous, col], ordered[previous + 1, col]
    difference = b - a
    return b - difference * (1.0 - gamma) if gamma >= 0.5 else a + difference * gamma


@numba.njit(cache=True, nogil=True, inline="always")
def _sigma_bounds(ordered, count, lsigma, hsigma, use_median, use_mad, maxiters,
                  network):  # pragma: no cover
    """Final sigma-clipping bounds of every column of a sorted block.

    Separate from its plain twin ``combine._sigma_clip_trace`` on purpose: this is the fast
    path (sorted once, two moving indices); the tests hold it to the twin and to astropy.

    The kept samples of a column are always a contiguous run ``lo:hi`` of its
    sorted values, so an iteration only moves two indices. While many columns
    are still clipping, the sums run over all rows with the others masked out
    (:func:`_block_sums`, :func:`_block_mad`); the few columns left after
    that are done one by one, over their kept samples only.
    """
    n, width = ordered.shape[0], count.shape[0]
    lo = np.zeros(width, dtype=np.int64)
    hi = count.copy()
    active = hi > 0
    lower = np.full(width, np.nan)
    upper = np.full(width, np.nan)
    total = np.empty(width)
    mean = np.empty(width)
    mad = np.empty(width)
    deviations = np.empty((n if use_mad else 0, width))
    n_active = width
    for _ in range(maxiters):
        whole_block = 4 * n_active >= width
        if whole_block and use_mad:
            _block_mad(ordered, lo, hi, network, deviations, mad)
        if whole_block and not (use_mad and use_median):
            _block_sums(ordered, lo, hi, mean, total)
        n_active = 0
        for col in range(width):
            if not active[col]:
                continue
            kept = hi[col] - lo[col]
            if not whole_block and not (use_mad and use_median):
                mean[col], total[col] = _column_sums(ordered, col, lo[col], hi[col])
            if not whole_block and use_mad:
                mad[col] = _column_mad(ordered, col, lo[col], hi[col])
            std = MAD_TO_SIGMA * mad[col] if use_mad else np.sqrt(total[col] / kept)
            centre = _column_median(ordered, col, lo[col], hi[col]) if use_median else mean[col]
            lower[col] = centre - lsigma * std
            upper[col] = centre + hsigma * std
            new_lo, new_hi = lo[col], hi[col]
            while new_lo < new_hi and ordered[new_lo, col] < lower[col]:
                new_lo += 1
            while new_hi > new_lo and ordered[new_hi - 1, col] > upper[col]:
                new_hi -= 1
            if (new_lo == lo[col] and new_hi == hi[col]) or new_lo == new_hi:
                active[col] = False
            else:
                lo[col], hi[col] = new_lo, new_hi
                n_active += 1
        if n_active == 0:
            break
    return lower, upper


@numba.njit(cache=True, nogil=True, inline="always")
def _noise_bounds(ordered, count, lsigma, hsigma, use_median, maxiters, read_variance, gain,
                  snoise):  # pragma: no cover
    """Final bounds of clipping every column of a sorted block by the CCD noise model
    (IRAF's ``ccdclip``): ``centre -/+ sigma``, with ``sigma**2 = read_variance +
    max(centre, 0) / gain + (snoise * centre)**2`` in the samples' units, iterated as
    :func:`_sigma_bounds` is (its plain twin: ``combine._sigma_clip_trace``).

    The spread is the model's, not measured: only the centre is computed each
    iteration, column by column over its kept run ``lo:hi``.
    """
    width = count.shape[0]
    lower = np.full(width, np.nan)
    upper = np.full(width, np.nan)
    for col in range(width):
        lo, hi = 0, count[col]
        for _ in range(maxiters):
            if hi == lo:
                break
            centre = (_column_median(ordered, col, lo, hi) if use_median
                      else _column_sums(ordered, col, lo, hi)[0])
            sigma = _model_sigma(centre, read_variance, gain, snoise)
            lower[col] = centre - lsigma * sigma
            upper[col] = centre + hsigma * sigma
            new_lo, new_hi = lo, hi
            while new_lo < new_hi and ordered[new_lo, col] < lower[col]:
                new_lo += 1
            while new_hi > new_lo and ordered[new_hi - 1, col] > upper[col]:
                new_hi -= 1
            if (new_lo == lo and new_hi == hi) or new_lo == new_hi:
                break
            lo, hi = new_lo, new_hi
    return lower, upper


@numba.njit(cache=True, nogil=True, inline="always")
def _model_sigma(centre, read_variance, gain, snoise):  # pragma: no cover
    """The CCD noise model's sigma at level ``centre`` (``combine.model_sigma``'s twin, to
    the bit: the same operations in the same order)."""
    relative = snoise * centre
    return np.sqrt(read_variance + max(centre, 0.0) / gain + relative * relative)


@numba.njit(cache=True, nogil=True, inline="always")
def _block_sums(ordered, lo, hi, mean, total):  # pragma: no cover
    """Every column's mean and sum of squared deviations over its kept run ``lo:hi``.

    The sums run over all rows with the others masked out: this vectorises
    across columns and adds exactly what a loop over ``lo:hi`` would.
    """
    n, width = ordered.shape[0], lo.shape[0]
    total[:] = 0.0
    for k in range(n):
        for col in range(width):
            total[col] += ordered[k, col] if lo[col] <= k < hi[col] else 0.0
    for col in range(width):
        mean[col] = total[col] / max(hi[col] - lo[col], 1)
    total[:] = 0.0
    for k in range(n):
        for col in range(width):
            deviation = ordered[k, col] - mean[col]
            total[col] += deviation * deviation if lo[col] <= k < hi[col] else 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _block_mad(ordered, lo, hi, network, deviations, mad):  # pragma: no cover
    """Every column's median absolute deviation over its kept run, by sorting the
    deviations of all columns at once with the comparator network."""
    n, width = ordered.shape[0], lo.shape[0]
    for col in range(width):
        mad[col] = _column_median(ordered, col, lo[col], hi[col]) if hi[col] > lo[col] else 0.0
    for k in range(n):
        for col in range(width):
            deviation = abs(ordered[k, col] - mad[col])
            deviations[k, col] = deviation if lo[col] <= k < hi[col] else np.inf
    _sort_block(deviations, network, width)
    for col in range(width):
        kept = hi[col] - lo[col]
        first, second = deviations[max(kept - 1, 0) // 2, col], deviations[kept // 2, col]
        mad[col] = first if kept % 2 else 0.5 * (first + second)


@numba.njit(cache=True, nogil=True, inline="always")
def _column_median(ordered, col, lo, hi):  # pragma: no cover
    """Median of the sorted run ``ordered[lo:hi, col]``: the mean of the middle pair when even."""
    kept = hi - lo
    mid = lo + kept // 2
    return ordered[mid, col] if kept % 2 else 0.5 * (ordered[mid, col] + ordered[mid - 1, col])


@numba.njit(cache=True, nogil=True, inline="always")
def _column_mad(ordered, col, lo, hi):  # pragma: no cover
    """Median absolute deviation about the median of the sorted run ``ordered[lo:hi, col]``.

    The deviations below the median, walked downwards, and those above it,
    walked upwards, are each ascending: merging the two finds the middle ranks
    in one pass, without sorting.
    """
    median = _column_median(ordered, col, lo, hi)
    kept = hi - lo
    below = lo
    while below < hi and ordered[below, col] < median:
        below += 1
    down, up = below - 1, below
    first = second = 0.0
    for rank in range(kept // 2 + 1):
        if up >= hi or (down >= lo and median - ordered[down, col] <= ordered[up, col] - median):
            deviation = abs(ordered[down, col] - median)
            down -= 1
        else:
            deviation = abs(ordered[up, col] - median)
            up += 1
        if rank == (kept - 1) // 2:
            first = deviation
        second = deviation
    return first if kept % 2 else 0.5 * (first + second)


@numba.njit(cache=True, nogil=True, inline="always")
def _column_sums(ordered, col, lo, hi):  # pragma: no cover
    """Mean and sum of squared deviations of one column's kept samples, in row order."""
    total = 0.0
    for k in range(lo, hi):
        total += ordered[k, col]
    mean = total / (hi - lo)
    total = 0.0
    for k in range(lo, hi):
        deviation = ordered[k, col] - mean
        total += deviation * deviation
    return mean, total


#: Values sampled to place the median's window (in runs of consecutive pixels,
#: which cost one cache miss a run); the window spans this many standard errors
#: of the sample median's rank either side of it.
_MEDIAN_SAMPLE, _MEDIAN_RUN, _MEDIAN_MARGIN = 1 << 14, 32, 4.0


@numba.njit(cache=True, nogil=True)
def sampled_median(values, offset):  # pragma: no cover - compiled
    """Median of ``values - offset`` in float64 (``offset`` empty: of ``values``), NaN
    ignored (see :func:`ccdred.combine.frame_median`)."""
    runs = _MEDIAN_SAMPLE // _MEDIAN_RUN
    if values.size < 4 * _MEDIAN_SAMPLE:
        return _histogram_median_float(_differences(values, offset))
    sample = np.empty(_MEDIAN_SAMPLE)
    m = 0
    for run in range(runs):  # golden-ratio steps: spread over rows and columns alike
        start = int((run * 0.6180339887498949) % 1.0 * (values.size - _MEDIAN_RUN))
        for i in range(start, start + _MEDIAN_RUN):
            v = np.float64(values[i]) - (offset[i] if offset.size else 0.0)
            if not np.isnan(v):
                sample[m] = v
                m += 1
    if m < _MEDIAN_SAMPLE // 2:
        return _histogram_median_float(_differences(values, offset))
    margin = _MEDIAN_MARGIN * 0.5 / np.sqrt(m)
    low_rank = max(0, int((0.5 - margin) * (m - 1)))
    high_rank = min(m - 1, int(np.ceil((0.5 + margin) * (m - 1))))
    sample = np.partition(sample[:m], (low_rank, high_rank))
    low, high = sample[low_rank], sample[high_rank]
    chunk = np.empty(1024)
    window = np.empty(int(4 * margin * values.size) + chunk.size)
    below, above, inside = 0, 0, 0
    for begin in range(0, values.size, chunk.size):
        width = min(chunk.size, values.size - begin)
        if inside + width > window.size:  # the window holds a few per cent, unless misled
            return _histogram_median_float(_differences(values, offset))
        _load_chunk(values, offset, begin, width, chunk)
        for j in range(width):  # these loops vectorise; NaN fails every comparison
            below += chunk[j] < low
            above += chunk[j] > high
        for j in range(width):  # stored, then kept only if inside: no branch
            window[inside] = chunk[j]
            inside += (chunk[j] >= low) & (chunk[j] <= high)
    n = below + inside + above
    first, second = (n - 1) // 2 - below, n // 2 - below
    if first < 0 or second >= inside:
        return _histogram_median_float(_differences(values, offset))
    window = np.partition(window[:inside], (first, second))
    return 0.5 * (window[first] + window[second])


@numba.njit(cache=True, nogil=True, inline="always")
def _load_chunk(values, offset, begin, width, chunk):  # pragma: no cover - compiled
    """``chunk[:width] = values[begin:begin + width] - offset[...]`` in float64 (no offset:
    empty)."""
    if offset.size:
        for j in range(width):
            chunk[j] = np.float64(values[begin + j]) - offset[begin + j]
    else:
        for j in range(width):
            chunk[j] = values[begin + j]


@numba.njit(cache=True, nogil=True)
def _differences(values, offset):  # pragma: no cover - compiled
    """``values - offset`` (no offset: empty) as a new float64 array."""
    out = np.empty(values.size)
    for begin in range(0, values.size, 1024):
        _load_chunk(values, offset, begin, min(1024, values.size - begin), out[begin:])
    return out


@numba.njit(cache=True, nogil=True)
def _histogram_median_float(values):  # pragma: no cover - compiled
    n, low, high = 0, np.inf, -np.inf
    for i in range(values.size):
        v = values[i]
        if not np.isnan(v):
            n += 1
            low = min(low, v)
            high = max(high, v)
    if n == 0:
        return np.nan
    if low == high:
        return low
    n_bins = 4096
    scale = (n_bins - 1) / (high - low)
    if not np.isfinite(scale) or scale <= 0:  # infinities, or a subnormal spread
        kept = np.empty(n)
        m = 0
        for i in range(values.size):
            v = values[i]
            if not np.isnan(v):
                kept[m] = v
                m += 1
        return np.median(kept)
    counts = np.zeros(n_bins, dtype=np.int64)
    for i in range(values.size):
        v = values[i]
        if not np.isnan(v):
            counts[int((v - low) * scale)] += 1
    first_rank, second_rank = (n - 1) // 2, n // 2
    below, first_bin = 0, 0
    while below + counts[first_bin] <= first_rank:
        below += counts[first_bin]
        first_bin += 1
    last_bin, through = first_bin, below + counts[first_bin]
    while through <= second_rank:
        last_bin += 1
        through += counts[last_bin]
    middle = np.empty(through - below)
    m = 0
    for i in range(values.size):
        v = values[i]
        if not np.isnan(v):
            b = int((v - low) * scale)
            if first_bin <= b <= last_bin:
                middle[m] = v
                m += 1
    middle.sort()
    return 0.5 * (middle[first_rank - below] + middle[second_rank - below])


@numba.njit(cache=True, nogil=True)
def histogram(values, least, counts):  # pragma: no cover - compiled
    """Add one to ``counts[v - least]`` for each value ``v`` of ``values``."""
    for value in values:
        counts[np.int64(value) - least] += 1


@numba.njit(cache=True, nogil=True)
def histogram_bounds(counts, threshold, use_median, maxiters):  # pragma: no cover
    """Clipping bounds of integer samples given as counts per value 0..len-1.

    Separate from ``combine._frame_clip_bounds_plain`` on purpose: exact for integer frames
    and linear in their size (no sort, no float copy); the plain loop serves float frames.
    """
    lo, hi = 0, counts.size
    lower, upper = np.nan, np.nan
    for _ in range(maxiters):
        kept = 0
        total = 0.0
        for v in range(lo, hi):
            kept += counts[v]
            total += counts[v] * np.float64(v)
        if kept == 0:
            break
        mean = total / kept
        var = 0.0
        for v in range(lo, hi):
            var += counts[v] * (v - mean) * (v - mean)
        std = np.sqrt(var / kept)
        centre = _histogram_median(counts, lo, hi, kept) if use_median else mean
        lower = centre - threshold * std
        upper = centre + threshold * std
        new_lo = max(lo, int(np.ceil(lower)))
        new_hi = min(hi, int(np.floor(upper)) + 1)
        changed = False
        for v in range(lo, new_lo):
            changed = changed or counts[v] > 0
        for v in range(new_hi, hi):
            changed = changed or counts[v] > 0
        if not changed:
            break
        lo, hi = new_lo, max(new_lo, new_hi)
    return lower, upper


@numba.njit(cache=True, nogil=True)
def _histogram_median(counts, lo, hi, kept):  # pragma: no cover
    """Median of the samples with values in [lo, hi): mean of the middle pair when even."""
    want_low = (kept - 1) // 2
    want_high = kept // 2
    seen = 0
    low_value = -1
    for v in range(lo, hi):
        seen += counts[v]
        if low_value < 0 and seen > want_low:
            low_value = v
        if seen > want_high:
            return 0.5 * (low_value + v)
    return np.nan
