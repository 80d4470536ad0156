"""The bad-pixel mask pre-masks the later combinations (issue 29): the user's mask every
master, the hot pixels found from the darks the master flats; equal in the three runners."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits

from ccdred import steps
from ccdred.combiners import FlatCombiner, FrameChoice, StackCombiner
from ccdred.demo import NightSpec
from ccdred.errors import BadPixelWarning
from ccdred.night import BAD_PIXELS, reduce_night
from ccdred.parameters import ReductionParameters
from ccdred.pipeline import MASTERS, Pipeline
from ccdred.planes import MaskBit

from .conftest import write_nights

SHAPE = (40, 56)
SPECS = {"real": NightSpec.real(shape=SHAPE, seed=41), "course": NightSpec(shape=SHAPE, seed=42)}
#: The user's bad pixels: a lone pixel, part of a row, a corner.
BAD = [(3, 7), (20, 30), (20, 31), (20, 32), (0, 0)]


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("premask-nights")
    user = np.zeros(SHAPE, dtype=np.int16)
    user[tuple(np.array(BAD).T)] = 1
    fits.writeto(folder / "mask.fits", user)
    return write_nights(folder, SPECS)


def _reduce(folder, out, error=None, **options):
    """Reduce a night, its warnings ignored but those of class ``error`` (raised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if error is not None:
            warnings.simplefilter("error", error)
        return reduce_night([folder], out, ReductionParameters(**options))


def _pipeline(folder, **options) -> Pipeline:
    MASTERS.clear()
    return Pipeline(night=str(folder), **options)


def _mask() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[tuple(np.array(BAD).T)] = True
    return mask


@pytest.mark.parametrize("night", SPECS)
def test_the_users_mask_leaves_its_pixels_out_of_every_master(nights, night):
    """Each master's combination: no sample at the mask's pixels (each frame's counted as
    left out before the rejection), every other pixel that has samples bit for bit as
    without the mask; a master flat there takes the value of a pixel with no sample: 1.0."""
    mask = _mask()
    plain = _pipeline(nights / night)
    masked = _pipeline(nights / night, bad_pixel_mask=str(nights / "mask.fits"))
    for name, master in plain.plan.masters.items():
        before, after = plain.master(name).combination, masked.master(name).combination
        assert np.all(after.n_used[mask] == 0), name
        np.testing.assert_array_equal(after.n_used[~mask], before.n_used[~mask])
        same = _unchanged(plain, master, mask)
        assert after.data[same].tobytes() == before.data[same].tobytes(), name
        np.testing.assert_array_equal(after.n_left_out_per_frame - before.n_left_out_per_frame,
                                      mask.sum() - _left_out_before(plain, master))
        if master.kind == "flat":
            assert np.all(masked.master(name).data[mask] == 1.0)


def _unchanged(pipeline, master, mask) -> np.ndarray:
    """The pixels a mask leaves as they were in a master: outside it, with samples, and so in
    each master it needs (pixels without samples take the master's mean, which the mask
    changes)."""
    same = ~mask & (pipeline.master(master.name).combination.n_used > 0)
    for need in master.needs:
        same &= _unchanged(pipeline, pipeline.plan.masters[need], mask)
    return same


def _left_out_before(pipeline, master) -> np.ndarray | int:
    """Per frame, the samples of the masked pixels left out without the mask (by a dark's
    own clipping), as the pixel inspector shows them; none for the dark current."""
    if master.kind == "dark_current":
        return 0
    return sum(pipeline.pixel_stack(master.name, x, y).premasked.astype(int) for y, x in BAD)


def test_a_night_with_the_users_mask_writes_the_documented_products(nights, tmp_path):
    """The flat's masked pixels are 1.0, its others the unmasked night's divided by one
    constant (the normalisation, now without the masked pixels); the darks equal the
    unmasked night's where any sample was used; no warning of bad flat pixels; the mask
    written as USER bits."""
    plain = _reduce(nights / "course", tmp_path / "plain")
    _reduce(nights / "course", tmp_path / "masked", BadPixelWarning,
            bad_pixel_mask=str(nights / "mask.fits"))
    mask = _mask()
    for master in plain.plan.masters.values():
        before = fits.getdata(tmp_path / "plain" / master.name).astype(np.float64)
        after = fits.getdata(tmp_path / "masked" / master.name).astype(np.float64)
        if master.kind == "flat":
            assert np.all(after[mask] == 1.0)
            ratio = after[~mask] / before[~mask]
            assert np.ptp(ratio) < 1e-6 * np.mean(ratio)
        else:
            combined = plain.masters[master.name].n_used > 0
            np.testing.assert_array_equal(after[~mask & combined], before[~mask & combined])
    written = fits.getdata(tmp_path / "masked" / BAD_PIXELS)
    np.testing.assert_array_equal(written, mask * np.uint8(MaskBit.USER))


def test_the_hot_pixels_found_pre_mask_the_flats_only(nights, tmp_path):
    """With --bad-pixels, the hot pixels the mask says (from the darks) have no sample in the
    master flats' combinations; the darks, made before, are as without it."""
    _reduce(nights / "real", tmp_path / "found", bad_pixels=True)
    hot = (fits.getdata(tmp_path / "found" / BAD_PIXELS) & MaskBit.HOT) != 0
    assert hot.any()  # the demo night's hot pixels, or the test proves nothing
    plain, found = _pipeline(nights / "real"), _pipeline(nights / "real", bad_pixels=True)
    for master in plain.plan.masters.values():
        before, after = plain.master(master.name), found.master(master.name)
        if master.kind == "flat":
            assert np.all(after.combination.n_used[hot] == 0)
            assert (after.combination.data[~hot].tobytes()
                    == before.combination.data[~hot].tobytes())
        else:
            assert after.data.tobytes() == before.data.tobytes(), master.name


def test_the_inspector_shows_the_masked_samples_left_out(nights):
    pipeline = _pipeline(nights / "course", bad_pixel_mask=str(nights / "mask.fits"))
    y, x = BAD[0]
    pixel = pipeline.pixel_stack("flat", x, y)
    assert pixel.premasked.all() and pixel.rejected.all()
    assert pixel.value == 1.0 and np.isnan(pixel.combined)
    assert not pipeline.pixel_stack("flat", x + 1, y).premasked.any()


@pytest.mark.parametrize("combiner", [StackCombiner(frame_clip=False), FlatCombiner()])
def test_the_premask_goes_through_the_kernels_mask(rng, combiner):
    """A combiner's premask equals the kernel's mask of every frame at those pixels,
    written out here as NaN samples (how the kernel treats a masked sample)."""
    stack = rng.normal(1000.0, 10.0, (5, 6, 7))
    premask = np.zeros((6, 7), dtype=bool)
    premask[2, 3] = premask[5, 0] = True
    choice = (combiner.choose([float(np.median(f)) for f in stack])
              if isinstance(combiner, FlatCombiner) else FrameChoice.every([None] * 5))
    masked = combiner.combine(stack, choice, premask=premask)
    nan = combiner.combine(np.where(premask, np.nan, stack), choice)
    assert masked.data.tobytes() == nan.data.tobytes()
    np.testing.assert_array_equal(masked.n_left_out_per_frame, [2] * 5)
    assert steps.premask({steps.PREMASK: premask.astype(np.uint8)}, slice(2, 3)).tolist() == \
        [premask[2].tolist()]


@pytest.mark.parametrize("options", [{"bad_pixel_mask": "mask.fits"}, {"bad_pixels": True}],
                         ids=["user", "found"])
def test_three_runners_make_the_same_premasked_products(nights, client, tmp_path, options):
    from ccdred.cluster import reduce_nights_on_cluster

    options = {k: str(nights / v) if k == "bad_pixel_mask" else v for k, v in options.items()}
    folder, parameters = nights / "real", ReductionParameters(**options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = reduce_night([folder], tmp_path / "local", parameters)
        reduce_nights_on_cluster([([folder], tmp_path / "dask")], client, parameters,
                                 memory_budget=6_000)  # row blocks, a task each
    names = sorted(p.name for p in (tmp_path / "local").glob("*.fits"))
    assert BAD_PIXELS in names
    assert names == sorted(p.name for p in (tmp_path / "dask").glob("*.fits"))
    for name in names:
        assert (fits.getdata(tmp_path / "local" / name).tobytes()
                == fits.getdata(tmp_path / "dask" / name).tobytes()), name
    bad = (fits.getdata(tmp_path / "dask" / BAD_PIXELS) & (MaskBit.USER | MaskBit.HOT)) != 0
    assert bad.any() and np.all(fits.getdata(tmp_path / "dask" / "flat_V.fits")[bad] == 1.0)
    pipeline = _pipeline(folder, **options)
    for name, master in local.masters.items():
        written = steps.as_written(pipeline.master(name).data, "float32")
        assert written.tobytes() == master.data.tobytes(), name
