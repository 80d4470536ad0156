"""Exploring the rejection from Python: a pixel's stack, the threshold sweep, A/B masters.

The pixel's samples are read here from the FITS files with astropy and its
decisions are held to ``astropy.stats.sigma_clip`` (and to plain loops for
minmax and pclip), and to the master itself.
"""

import holoviews as hv
import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clip

from ccdred import plots
from ccdred.combine import outside_bounds
from ccdred.errors import InputError
from ccdred.pipeline import MASTERS, Pipeline

from .oracles import clipped_darks, flat_samples, raw_stack

hv.extension("bokeh", logo=False)

METHODS = [
    {},
    {"threshold": 1.5, "cenfunc": "mean"},
    {"lsigma": 1.5, "hsigma": 3.0, "stdfunc": "mad_std"},
    {"rejection": "minmax", "nlow": 1, "nhigh": 2},
    {"rejection": "pclip", "plow": 20.0, "phigh": 80.0},
]


@pytest.fixture
def pipeline(night_files):
    MASTERS.clear()
    return Pipeline(night=str(night_files[0].parent))


def raw_samples(frames, x, y):
    return np.array([fits.getdata(frame.path)[y, x] for frame in frames], dtype=np.float64)


def expected_rejection(values, options) -> tuple[np.ndarray, tuple | None]:
    """The oracle's mask of ``values`` (all usable) and, for sigma clipping, its final bounds."""
    if options.rejection == "sigclip":
        clipped, low, high = sigma_clip(
            values, sigma_lower=options.sigma_lower, sigma_upper=options.sigma_upper,
            cenfunc=options.cenfunc, stdfunc=options.stdfunc, maxiters=options.maxiters,
            masked=True, return_bounds=True)
        return np.ma.getmaskarray(clipped), (low, high)
    if options.rejection == "minmax":
        order = np.argsort(values, kind="stable")
        mask = np.ones(values.size, dtype=bool)
        mask[order[options.nlow:values.size - options.nhigh]] = False
        return mask, None
    low, high = np.percentile(values, [options.plow, options.phigh])
    return (values < low) | (values > high), None


def pixels_with_rejections(result, n=3):
    """A few pixels where the combination rejected something (the interesting ones)."""
    rows, cols = np.nonzero(result.n_rejected > 0)
    return list(zip(cols[:n].tolist(), rows[:n].tolist(), strict=True))


@pytest.mark.parametrize("options", METHODS)
@pytest.mark.parametrize("frame_clip", [True, False])
def test_dark_pixel_stack_agrees_with_astropy_and_the_master(pipeline, options, frame_clip):
    pipeline.param.update(frame_clip=frame_clip, **options)
    clip = pipeline.step_options().clip
    master = pipeline.master_dark()
    for x, y in [*pixels_with_rejections(master), (0, 0)]:
        pixel = pipeline.pixel_stack("dark", x, y)
        frames = pipeline.frames_of(pipeline.calibration)
        values = raw_samples(frames, x, y)
        np.testing.assert_array_equal(pixel.values, values)
        premasked = np.zeros(values.size, dtype=bool)
        if frame_clip:  # each dark's own clipping bounds, from the whole frame
            for i, frame in enumerate(frames):
                data = fits.getdata(frame.path)
                bounds = sigma_clip(data, sigma=clip.threshold, cenfunc=clip.cenfunc,
                                    maxiters=clip.maxiters, return_bounds=True)[1:]
                premasked[i] = outside_bounds(data[y, x], bounds)
        np.testing.assert_array_equal(pixel.premasked, premasked)
        mask, bounds = expected_rejection(values[~premasked], clip)
        expected = premasked.copy()
        expected[~premasked] = mask
        np.testing.assert_array_equal(pixel.rejected, expected)
        if bounds is not None and (~premasked).any():
            np.testing.assert_allclose(pixel.bounds[-1][::2], bounds, rtol=1e-12)
        assert pixel.value == master.data[y, x]
        if not pixel.rejected.all():
            np.testing.assert_allclose(pixel.combined, values[~pixel.rejected].mean(),
                                       rtol=1e-12)
            assert pixel.combined == master.data[y, x]
        used = values[~pixel.rejected]
        if used.size >= 2:  # the standard error of the mean of the used samples
            np.testing.assert_allclose(pixel.uncertainty,
                                       np.std(used, ddof=1) / np.sqrt(used.size), rtol=1e-9)
        else:
            assert np.isnan(pixel.uncertainty)


@pytest.mark.parametrize("options", METHODS)
def test_flat_pixel_stack_agrees_with_astropy_and_the_master(pipeline, options):
    pipeline.param.update(**options)
    clip = pipeline.step_options().clip
    flat = pipeline.master_flat()
    used = [f for f, ok in zip(pipeline.flat_frames(), flat.accepted, strict=True) if ok]
    medians = flat.medians[flat.accepted]
    # flats less the master dark as its product holds it (float32 by default)
    dark = pipeline.master_dark(used[0].exptime).data.astype(pipeline.dtype)
    for x, y in pixels_with_rejections(flat.combine):
        pixel = pipeline.pixel_stack("flat", x, y)
        assert pixel.frames == tuple(f.path.name for f in used)
        values = (raw_samples(used, x, y) - dark[y, x]) * (medians[0] / medians)
        np.testing.assert_allclose(pixel.values, values, rtol=1e-12)
        mask, bounds = expected_rejection(pixel.values, clip)
        np.testing.assert_array_equal(pixel.rejected, mask)
        if bounds is not None:
            np.testing.assert_allclose(pixel.bounds[-1][::2], bounds, rtol=1e-12)
        kept = ~pixel.rejected
        np.testing.assert_allclose(pixel.combined, np.average(values[kept], weights=medians[kept]),
                                   rtol=1e-12)
        assert pixel.combined == flat.combine.data[y, x]
        assert pixel.value == flat.data[y, x]


def test_iterations_say_when_each_sample_went(pipeline):
    pipeline.threshold = 1.2
    pixel = pipeline.shown_pixel()
    clipped = pixel.rejected & ~pixel.premasked
    assert clipped.any()
    assert (pixel.iteration[clipped] >= 1).all() and (pixel.iteration[~clipped] == 0).all()
    for sample, step in zip(pixel.values[clipped], pixel.iteration[clipped], strict=True):
        low, _, high = pixel.bounds[step - 1]  # outside the bounds of the iteration that took it
        assert sample < low or sample > high


def test_shown_pixel_defaults_to_the_most_rejected_one(pipeline):
    flat = pipeline.master_flat()
    pixel = pipeline.shown_pixel()
    assert int(np.count_nonzero(pixel.rejected)) == flat.combine.n_rejected.max()


def test_a_pixel_outside_the_master_is_refused(pipeline):
    with pytest.raises(InputError, match=r"pixel \(x=64, y=0\) lies outside"):
        pipeline.pixel_stack("flat", 64, 0)


@pytest.mark.parametrize("master", ["dark", "flat"])
def test_sweep_rejects_less_as_the_threshold_grows(pipeline, master):
    sweep = pipeline.threshold_sweep(master)
    assert len(sweep["threshold"]) == len(sweep["rejected_fraction"]) == len(sweep["noise"]) == 20
    assert np.all(np.diff(sweep["rejected_fraction"]) <= 0)
    assert sweep["rejected_fraction"][0] > sweep["rejected_fraction"][-1]


def astropy_master(pipeline, master, threshold) -> np.ndarray:
    """The master the sweep makes at ``threshold``, as written, made from the files with
    astropy: the darks left out at their own bounds at the pipeline's threshold, then clipped
    across at ``threshold`` (a pixel where nothing is left takes the master's mean); the
    accepted flats less the master dark as written, clipped across, averaged with their medians
    as weights, divided by the mean (NaN where nothing is left)."""
    if master == "dark":
        darks = raw_stack(pipeline.frames_of(pipeline.calibration))
        combined = clipped_darks(darks, threshold, frame_threshold=pipeline.threshold).mean(axis=0)
        return combined.filled(combined.mean())
    frames = pipeline.flat_frames()
    dark = pipeline.master_dark(frames[0].exptime).data.astype(pipeline.dtype)
    samples, medians = flat_samples(raw_stack(frames), dark)
    combined = np.ma.average(sigma_clip(samples, sigma=threshold, maxiters=10, axis=0), axis=0,
                             weights=medians)
    return (combined / combined.mean()).filled(np.nan)


@pytest.mark.parametrize("master", ["dark", "flat"])
def test_sweep_change_is_the_mean_difference_of_masters_made_at_the_two_thresholds(pipeline,
                                                                                    master):
    sweep = pipeline.threshold_sweep(master)
    assert sweep["row_step"] == 1  # every row: the masters below are whole
    current = astropy_master(pipeline, master, pipeline.threshold)
    for threshold in (1.5, 4.0):
        other = astropy_master(pipeline, master, threshold)
        change = sweep["change"][list(sweep["threshold"]).index(threshold)]
        assert change > 0
        np.testing.assert_allclose(change, np.nanmean(np.abs(other - current)), rtol=1e-9)


def test_sweep_at_the_current_threshold_is_the_clipping_summary(pipeline):
    flat = pipeline.master_flat().combine
    sweep = pipeline.threshold_sweep("flat")
    at = list(sweep["threshold"]).index(pipeline.threshold)
    summary = plots.summary_line(pipeline.sample_counts("flat"), f"flat {pipeline.filter}")
    assert f"({100 * sweep['rejected_fraction'][at]:.2f} %)" in summary
    assert sweep["rejected_fraction"][at] == flat.n_rejected.sum() / (flat.n_frames * flat.data.size)
    assert sweep["left_out_fraction"] == 0.0 and "left out" not in summary  # none to name


def astropy_counts(frames, threshold=2.5) -> tuple[int, int, int]:
    """Samples of frame-clipped darks counted with astropy, from the files: left out before the
    combination (outside their own frame's sigma_clip bounds), rejected by the combination
    (sigma_clip across the frames of what is left), and all of them."""
    stack = np.array([fits.getdata(frame.path) for frame in frames], dtype=np.float64)
    left_out = np.array([outside_bounds(data, sigma_clip(data, sigma=threshold, maxiters=10,
                                                         return_bounds=True)[1:])
                         for data in stack])
    clipped = sigma_clip(np.ma.masked_array(stack, left_out), sigma=threshold, maxiters=10, axis=0)
    n_left_out = int(left_out.sum())
    return n_left_out, int(np.ma.getmaskarray(clipped).sum()) - n_left_out, stack.size


@pytest.fixture
def dashboard(night_files, tmp_path):
    from ccdred.dashboard import Dashboard

    MASTERS.clear()
    night = night_files[0].parent
    return Dashboard(night.parent, tmp_path, night=night.name)


def test_a_dark_s_two_counts_are_each_one_number_under_one_name(dashboard):
    """Issue 27, defect 3: the Clipping summary said 2.30 % rejected (samples left out by the
    frame clipping and rejected by the combination together) where the sweep said 0.15 %
    (rejected by the combination only). Each count now has its name, and the Clipping and
    Explore tabs give the same number under it: the number astropy counts."""
    pipeline = dashboard.pipeline
    pipeline.inspect = "dark"
    left_out, rejected, samples = astropy_counts(pipeline.frames_of(pipeline.calibration))
    rejected_percent = f"{100 * rejected / (samples - left_out):.2f} %"
    left_out_percent = f"{100 * left_out / samples:.2f} %"
    mixed_percent = f"{100 * (left_out + rejected) / samples:.2f} %"  # what Clipping said
    assert len({rejected_percent, left_out_percent, mixed_percent}) == 3  # told apart here
    clipping = dashboard._clip_summary().splitlines()[0]
    explore = plots.sweep_summary(pipeline.shown_sweep())
    assert (f"{rejected:,} of {samples - left_out:,} samples rejected by the combination "
            f"({rejected_percent})") in clipping
    assert f"samples rejected by the combination {rejected_percent} (of those that" in explore
    assert f"{left_out:,} ({left_out_percent} of all {samples:,}) left out before it" in clipping
    assert f"left out before it {left_out_percent} (of all samples" in explore
    assert mixed_percent not in clipping + explore


def test_the_sweep_s_plot_and_the_pixel_name_the_counts_as_the_summaries_do(pipeline):
    pipeline.inspect = "dark"
    title = hv.Store.lookup_options("bokeh", plots.threshold_sweep_plot(pipeline.shown_sweep()),
                                    "plot").kwargs["title"]
    assert title == "rejected by the combination"
    for inspect in ("dark", "flat"):  # the pixels with most samples not used
        pipeline.inspect = inspect
        pixel = pipeline.shown_pixel()
        left_out, rejected = pixel.premasked, pixel.rejected & ~pixel.premasked
        listed = plots.pixel_summary(pixel)
        assert listed.count("left out before the combination") == left_out.sum()
        assert listed.count("rejected by the combination") == rejected.sum()
        assert left_out.any() if inspect == "dark" else rejected.any()


def test_a_and_b_differ_only_after_a_change(pipeline):
    pipeline.pin()
    assert all(not np.any(difference) for _, difference in pipeline.shown_differences())
    pipeline.rejection = "minmax"
    dark, flat = pipeline.shown_differences()
    assert np.any(dark[1]) and np.any(flat[1])
    a = pipeline.master(flat[0], pipeline.pinned).data
    np.testing.assert_array_equal(flat[1], pipeline.master_flat().data - a)


def test_nothing_pinned_is_said(pipeline):
    assert pipeline.shown_differences() == []
    with pytest.raises(InputError, match="nothing pinned yet"):
        pipeline.difference("flat")


def test_a_darks_pixel_needs_no_master_flat(night_files):
    """A night whose flats are all ignored still shows its darks' pixels."""
    pipeline = Pipeline(night=str(night_files[0].parent))
    pipeline.frame_types = {f.path.name: "ignore" for f in pipeline.catalogue.frames
                            if f.frame_type == "flat"}
    assert not pipeline.plan.flats
    pixel = pipeline.pixel_stack("dark", 1, 2)
    assert (pixel.x, pixel.y) == (1, 2) and len(pixel.frames) >= 2
