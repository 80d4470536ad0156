"""Cosmic rays in object frames: LACosmic on the demo night's calibrated objects against the
rays injected into them and its stars; the compiled iteration against astroscrappy's, pixel
for pixel; one frame's mask bits; the units astroscrappy works in."""

from __future__ import annotations

import logging

import astroscrappy
import numpy as np
import pytest
from astropy.io import fits
from scipy.ndimage import binary_dilation

from ccdred.cli import main
from ccdred.cosmics import LACosmic, cosmic_ray_mask, object_mask
from ccdred.demo import NightSpec, make_night, night_cosmic_rays, night_truth, star_cores
from ccdred.night import BAD_PIXELS, reduce_night
from ccdred.noise import DetectorNoise
from ccdred.parameters import ReductionParameters
from ccdred.planes import MaskBit

from .conftest import SHARED, unavailable

SPEC = NightSpec(shape=(512, 512))
#: A ray's mask grows over its neighbours that pass a lower threshold (sigfrac x sigclip),
#: a star's core among them when a ray lands beside it: core pixels this close to a ray
#: are the ray's mask, not a star taken for a ray.
RAY_REACH = 3


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """The course-shaped demo night reduced with its bad-pixel mask: (result, mask, the
    calibrated object frames, the rays injected into each)."""
    folder = tmp_path_factory.mktemp("cosmics")
    make_night(folder / "raw", SPEC)
    result = reduce_night([folder / "raw"], folder / "out", ReductionParameters(bad_pixels=True))
    objects = [fits.getdata(folder / "out" / f"{step.frame.name}_df.fits").astype(np.float32)
               for step in result.plan.calibrations]
    return result, fits.getdata(folder / "out" / BAD_PIXELS), objects, night_cosmic_rays(SPEC)


def ray_bits(mask):
    return mask & MaskBit.COSMIC_RAY > 0


def test_the_night_knows_its_gain_and_read_noise(reduced):
    result = reduced[0]
    truth = night_truth(SPEC)
    assert result.noise.gain == truth.gain
    assert result.noise.read_noise == pytest.approx(truth.read_noise, rel=0.05)


#: The default (one iteration, compiled) and the thorough setting (astroscrappy's four).
SETTINGS = [LACosmic(), LACosmic(niter=4)]


@pytest.mark.parametrize("lacosmic", SETTINGS, ids=["default", "thorough"])
def test_cosmic_rays_are_found_in_every_object_frame(reduced, lacosmic):
    result, bad_pixels, objects, rays = reduced
    assert len(objects) == len(rays) == 6
    for image, injected in zip(objects, rays, strict=True):
        hits = injected > 0
        found = ray_bits(object_mask(image, result.noise, bad_pixels, lacosmic=lacosmic))
        assert hits.sum() > 50
        assert (found & hits).sum() >= 0.9 * hits.sum()


@pytest.mark.parametrize("lacosmic", SETTINGS, ids=["default", "thorough"])
def test_star_cores_are_not_taken_for_rays(reduced, lacosmic):
    result, bad_pixels, objects, rays = reduced
    cores = star_cores(SPEC)
    assert cores.sum() > 500
    for image, injected in zip(objects, rays, strict=True):
        far = ~binary_dilation(injected > 0, iterations=RAY_REACH)
        found = ray_bits(object_mask(image, result.noise, bad_pixels, lacosmic=lacosmic))
        assert (found & cores & far).sum() <= 0.01 * cores.sum()


def astroscrappy_once(image, gain, read_noise, bad_pixels=None, saturation=None,
                      variance=None, lacosmic=LACosmic()):
    """The oracle: astroscrappy's own one iteration on the whole frame, given what
    :func:`cosmic_ray_mask` gives it (the mask and the image where it kept the pixel)."""
    image = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    left_out = ~finite if bad_pixels is None else ~finite | (bad_pixels != 0)
    known = {} if variance is None else {"invar": np.asarray(variance, np.float32)}
    mask, cleaned = astroscrappy.detect_cosmics(
        np.where(finite, image, 0.0).astype(np.float32), inmask=left_out, gain=gain,
        readnoise=read_noise, satlevel=np.inf if saturation is None else saturation * gain,
        sepmed=True, **known, **{**lacosmic._asdict(), "niter": 1})
    return mask & finite, np.where(mask & finite, cleaned, image)


def assert_as_astroscrappy(image, gain, read_noise, **options):
    found = cosmic_ray_mask(image, gain, read_noise, **options)
    mask, cleaned = astroscrappy_once(image, gain, read_noise, **options)
    assert mask.any()
    np.testing.assert_array_equal(found.mask, mask)
    np.testing.assert_array_equal(found.cleaned, cleaned)


@pytest.mark.parametrize("noise_model", ["image", "variance"])
@pytest.mark.parametrize("index", [0, 3])
def test_one_iteration_is_astroscrappys_on_the_night(reduced, index, noise_model):
    """The compiled iteration's rays and cleaned pixels are astroscrappy's, to the bit, on
    the demo night's objects (with its bad-pixel mask, and a noise model of its own)."""
    result, bad_pixels, objects, _ = reduced
    image = objects[index]
    variance = (None if noise_model == "image"
                else np.maximum(image, 0.0) / result.noise.gain + 40.0**2)
    assert_as_astroscrappy(image, result.noise.gain, result.noise.read_noise,
                           bad_pixels=bad_pixels, variance=variance)


def hard_frame(shape, seed=5):
    """Sky and stars with rays on every edge, in the corners, in a 7x7 block, beside bad
    and non-finite pixels, one with no good pixel to be cleaned from (in a ring of bad
    pixels, grown onto its neighbours), and a saturated star."""
    rng = np.random.default_rng(seed)
    rows, columns = np.indices(shape)
    image = rng.normal(400.0, 20.0, shape)
    for row, column, flux in [(shape[0] * 0.3, shape[1] * 0.6, 4e4), (shape[0] * 0.7, 5.2, 2e5)]:
        image += flux * np.exp(-0.5 * ((rows - row) ** 2 + (columns - column) ** 2) / 1.5**2)
    image = np.minimum(image, 50000.0)
    for offset in range(min(shape) // 2):
        image[offset, (7 * offset) % shape[1]] += 3000.0
        image[-1 - offset, (5 * offset + 3) % shape[1]] += 3000.0
        image[(3 * offset + 1) % shape[0], offset] += 2500.0
        image[(11 * offset) % shape[0], -1 - offset] += 2500.0
    image[0, 0] = image[-1, -1] = image[0, -1] = image[-1, 0] = 9000.0
    middle = shape[0] // 2, shape[1] // 2
    image[middle[0] - 3:middle[0] + 4, middle[1] - 3:middle[1] + 4] += 6000.0
    image[middle[0] + 6, middle[1] - 6] = np.nan
    bad = np.zeros(shape, np.uint8)
    bad[middle[0] + 5, middle[1] + 5] = 1
    lonely = 3 * shape[0] // 4, shape[1] // 4  # a ray in a ring of bad pixels
    bad[lonely[0] - 2:lonely[0] + 3, lonely[1] - 2:lonely[1] + 3] = 1
    bad[lonely[0] - 1:lonely[0] + 2, lonely[1] - 1:lonely[1] + 2] = 0
    image[lonely] += 5000.0
    return image, bad


@pytest.mark.parametrize("shape", [(64, 80), (37, 53), (14, 17)])
@pytest.mark.parametrize("saturation", [None, 50000.0])
def test_one_iteration_is_astroscrappys_at_the_edges(shape, saturation):
    """Rays on the edges and corners (where astroscrappy's filters and Laplacian keep edge
    rules of their own), a block of rays, bad, non-finite and saturated pixels."""
    image, bad = hard_frame(shape)
    assert_as_astroscrappy(image, 1.3, 7.0, bad_pixels=bad, saturation=saturation)
    assert_as_astroscrappy(image, 1.3, 7.0, variance=np.full(shape, 30.0**2),
                           lacosmic=LACosmic(sigclip=4.0, sigfrac=0.5, objlim=3.0))


def test_one_iteration_is_astroscrappys_on_a_real_frame():
    """A 60 s CAFOS exposure of NGC 2420 less its bias: real rays (tracks, not only the
    demo's one-pixel hits) and saturated stars. Four iterations find a little more (the
    tracks' wings that cleaning uncovers), which is why they stay an option."""
    cafos = SHARED / "realdata" / "cafos-ngc2420"
    if not cafos.is_dir():
        unavailable(f"real data not found at {cafos}", "CCDRED_REQUIRE_REALDATA")
    bias = np.mean([fits.getdata(path).astype(np.float32)
                    for path in sorted(cafos.glob("calib_bias_*"))], axis=0)
    image = fits.getdata(cafos / "science_NGC2420_V_uamA_0031.fits.gz") - bias
    assert_as_astroscrappy(image, 1.43, 7.4, saturation=60000.0)
    once = cosmic_ray_mask(image, 1.43, 7.4, saturation=60000.0).mask
    four = cosmic_ray_mask(image, 1.43, 7.4, saturation=60000.0, lacosmic=LACosmic(niter=4)).mask
    assert once.sum() > 100 and not (once & ~four).any() and four.sum() > once.sum()


@pytest.mark.parametrize("shape", [(2048 // 16, 2048 // 16), (7, 7), (6, 11)])
def test_the_separable_median_is_astroscrappys(shape):
    """With ties (integers) and without, and frames no wider than the filter."""
    from astroscrappy.utils import sepmedfilt7

    from ccdred.lacosmic import sepmed7

    rng = np.random.default_rng(2)
    for data in (rng.normal(0.0, 1.0, shape), rng.integers(0, 4, shape)):
        data = data.astype(np.float32)
        np.testing.assert_array_equal(sepmed7(data), sepmedfilt7(data))


def test_the_bad_pixel_mask_keeps_hot_pixels_from_being_rays(reduced):
    """A master dark clipped frame by frame leaves the hot pixels in the calibrated frames:
    spikes LACosmic takes for rays unless the bad-pixel mask leaves them out."""
    result, bad_pixels, objects, _ = reduced
    hot = night_truth(SPEC).hot_pixels
    unmasked = ray_bits(object_mask(objects[0], result.noise))
    masked = object_mask(objects[0], result.noise, bad_pixels)
    assert (unmasked & hot).sum() > 0.5 * hot.sum()
    assert not (ray_bits(masked) & hot).any()
    np.testing.assert_array_equal(masked & ~np.uint8(MaskBit.COSMIC_RAY), bad_pixels)


def test_the_cleaned_image_is_in_the_input_units(reduced):
    result, bad_pixels, objects, rays = reduced
    image = objects[3]
    found = cosmic_ray_mask(image, result.noise.gain, result.noise.read_noise,
                            bad_pixels=bad_pixels)
    assert found.cleaned.dtype == np.float32
    np.testing.assert_array_equal(found.cleaned[~found.mask], image[~found.mask])
    hits = found.mask & (rays[3] > 1000)
    sky = np.median(image)
    assert hits.sum() > 50
    assert np.median(np.abs(found.cleaned[hits] - sky)) < 0.1 * np.median(image[hits] - sky)


def test_saturated_stars_are_not_rays_when_the_level_is_given():
    rows, columns = np.indices((64, 64))
    star = 1e6 * np.exp(-0.5 * ((columns - 32.3) ** 2 + (rows - 30.6) ** 2) / 1.3**2)
    image = np.minimum(np.random.default_rng(8).normal(200.0, 13.0, star.shape) + star, 30000.0)
    assert cosmic_ray_mask(image, 1.5, 9.0).mask.sum() > 10  # the flat top's edges
    assert not cosmic_ray_mask(image, 1.5, 9.0, saturation=30000.0).mask.any()


def test_the_variance_is_the_noise_model_when_given():
    """A frame noisier than its read noise says (masters of few frames add theirs): rays
    in the noise, unless its variance is given."""
    image = np.random.default_rng(6).normal(100.0, 20.0, (128, 128))
    image[40, 50] += 2000.0
    assert cosmic_ray_mask(image, 1.5, 9.0).mask.sum() > 100
    rays = cosmic_ray_mask(image, 1.5, 9.0, variance=np.full(image.shape, 20.0**2)).mask
    assert rays[40, 50] and rays.sum() < 10


def frame_with_a_ray(dtype=np.float64):
    image = np.random.default_rng(4).normal(300.0, 15.0, (48, 56)).astype(dtype)
    image[10, 12] += 4000.0
    return image


def test_a_frames_mask_bits():
    image = frame_with_a_ray()
    image[30, 40] = np.nan
    bad = np.zeros(image.shape, np.uint8)
    bad[5, 6], bad[10, 12] = MaskBit.HOT, MaskBit.DEFECT
    noise = DetectorNoise(1.5, 9.0, "option", "option")
    mask = object_mask(image, noise, bad)
    assert mask.dtype == np.uint8
    assert mask[5, 6] == MaskBit.HOT and mask[30, 40] == MaskBit.NOT_FINITE
    assert mask[10, 12] == MaskBit.DEFECT  # a bad pixel is left out of the search
    image[25, 30] += 4000.0
    assert object_mask(image, noise, bad)[25, 30] == MaskBit.COSMIC_RAY
    assert not ray_bits(object_mask(image, cosmic_rays=False)).any()


def test_cosmic_rays_need_the_noise():
    with pytest.raises(ValueError, match="gain and read noise"):
        object_mask(frame_with_a_ray())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("find", [
    lambda image: cosmic_ray_mask(image, 1.5, 9.0, lacosmic=LACosmic(niter=2)),
    lambda image: object_mask(image, DetectorNoise(1.5, 9.0, "option", "option"))])
def test_the_input_is_not_changed(find, dtype):
    image = frame_with_a_ray(dtype)
    before = image.copy()
    find(image)
    np.testing.assert_array_equal(image, before)


def test_the_command_line_refuses_cosmic_rays_without_the_noise(tmp_path, capsys):
    """No bias to measure the read noise from, none in the header: one line, exit 2."""
    make_night(tmp_path / "raw", NightSpec(shape=(48, 64), n_bias=0, filters=("V",),
                                           object_exptimes=(30.0,)))
    status = main(["reduce", "-q", "--cosmic-rays", "--planes", "-d", str(tmp_path / "out"),
                   str(tmp_path / "raw")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("ccdred: error:")
    assert "--cosmic-rays needs the detector's gain and read noise" in err[-1]
    assert str(tmp_path / "raw") in err[-1]
    assert not (tmp_path / "out").exists()  # refused before anything is written, the log too


def test_the_command_line_refuses_cosmic_rays_without_the_planes(tmp_path, capsys):
    """The rays' bits go to the MASK plane: without --planes, one line, exit 2, nothing."""
    make_night(tmp_path / "raw", NightSpec(shape=(48, 64)))
    status = main(["reduce", "-q", "--cosmic-rays", "-d", str(tmp_path / "out"),
                   str(tmp_path / "raw")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and "--cosmic-rays needs --planes" in err[-1]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


#: A course-shaped night small enough for two runners, its rays and hot pixels known.
MASKED_SPEC = NightSpec(shape=(256, 256), seed=11)


def test_the_products_masks_hold_the_rays_and_the_bad_pixels_in_both_runners(client, tmp_path):
    """With --planes --bad-pixels --cosmic-rays, each calibrated frame's MASK (as CCDData
    reads it) marks >= 90 % of the rays injected into it (COSMIC_RAY) and the night's hot
    pixels (HOT); the Dask runner writes the same masks, and the dashboard's Pipeline
    shows them (its Before / after tab)."""
    from ccdred.pipeline import MASTERS, Pipeline
    from astropy.nddata import CCDData

    from ccdred.cluster import reduce_nights_on_cluster

    make_night(tmp_path / "raw", MASKED_SPEC)
    parameters = ReductionParameters(planes=True, bad_pixels=True, cosmic_rays=True)
    result = reduce_night([tmp_path / "raw"], tmp_path / "local", parameters)
    reduce_nights_on_cluster([([tmp_path / "raw"], tmp_path / "dask")], client, parameters)
    bad_pixels = fits.getdata(tmp_path / "local" / BAD_PIXELS)
    hot = bad_pixels & MaskBit.HOT > 0
    assert hot.sum() > 20
    names = [f"{step.frame.name}_df.fits" for step in result.plan.calibrations]
    MASTERS.clear()
    pipeline = Pipeline(night=str(tmp_path / "raw"), **parameters.param.values(onlychanged=True))
    found = injected = 0
    for name, rays in zip(names, night_cosmic_rays(MASKED_SPEC), strict=True):
        mask = fits.getdata(tmp_path / "local" / name, "MASK")
        assert fits.getdata(tmp_path / "dask" / name, "MASK").tobytes() == mask.tobytes()
        assert pipeline.object_mask(name.replace("_df.fits", ".fits")).tobytes() == mask.tobytes()
        assert (CCDData.read(tmp_path / "local" / name).mask == (mask > 0)).all()
        assert ((mask & MaskBit.HOT) > 0)[hot].all()
        found += (ray_bits(mask) & (rays > 0)).sum()
        injected += (rays > 0).sum()
    assert found >= 0.9 * injected > 100  # every object frame's, together


def test_the_command_line_refuses_replacing_without_finding(tmp_path, capsys):
    make_night(tmp_path / "raw", NightSpec(shape=(48, 64)))
    status = main(["reduce", "-q", "--planes", "--cosmic-ray-replace", "-d",
                   str(tmp_path / "out"), str(tmp_path / "raw")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and "--cosmic-ray-replace needs --cosmic-rays" in err[-1]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_replaced_rays_take_their_neighbours_values_in_both_runners(client, tmp_path):
    """--cosmic-ray-replace: each ray pixel of a flat-fielded frame takes a value within
    those of the good pixels of its 5x5 box (their mean), below the ray's; every other
    pixel, and the MASK, are those of the night without replacing; Dask writes the same."""
    from ccdred.cluster import reduce_nights_on_cluster

    make_night(tmp_path / "raw", MASKED_SPEC)
    found = ReductionParameters(planes=True, cosmic_rays=True)
    replaced = ReductionParameters(planes=True, cosmic_rays=True, cosmic_ray_replace=True)
    result = reduce_night([tmp_path / "raw"], tmp_path / "found", found)
    reduce_night([tmp_path / "raw"], tmp_path / "replaced", replaced)
    reduce_nights_on_cluster([([tmp_path / "raw"], tmp_path / "dask")], client, replaced)
    checked = 0
    for step in result.plan.calibrations:
        name = f"{step.frame.name}_df.fits"
        image, mask = (fits.getdata(tmp_path / "found" / name, extension)
                       for extension in ("PRIMARY", "MASK"))
        cleaned = fits.getdata(tmp_path / "replaced" / name)
        assert fits.getdata(tmp_path / "replaced" / name, "MASK").tobytes() == mask.tobytes()
        assert fits.getdata(tmp_path / "dask" / name).tobytes() == cleaned.tobytes()
        rays = ray_bits(mask)
        np.testing.assert_array_equal(cleaned[~rays], image[~rays])
        for row, col in zip(*np.nonzero(rays), strict=True):
            box = (slice(max(row - 2, 0), row + 3), slice(max(col - 2, 0), col + 3))
            good = image[box][~rays[box]]
            assert good.min() <= cleaned[row, col] <= good.max(), (name, row, col)
            checked += 1
        assert (cleaned[rays] < image[rays]).mean() > 0.9  # the rays were bright
    assert checked > 100
    assert fits.getheader(tmp_path / "replaced" / name)["HIERARCH CCDRED COSMIC_RAY_REPLACE"]


def test_the_command_line_refuses_no_iterations(tmp_path, capsys):
    status = main(["reduce", "-q", "--cosmic-rays", "--planes", "--cosmic-ray-iterations", "0",
                   "-d", str(tmp_path / "out"), str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1] == "ccdred: error: --cosmic-ray-iterations must be at least 1, not 0."


def test_other_iterations_make_the_object_products_again(tmp_path, caplog):
    """The iterations are in the products' provenance: resuming with others remakes them."""
    make_night(tmp_path / "raw", NightSpec(shape=(48, 64)))
    once = ReductionParameters(planes=True, cosmic_rays=True)
    reduce_night([tmp_path / "raw"], tmp_path / "out", once)
    with caplog.at_level(logging.INFO, logger="ccdred"):
        reduce_night([tmp_path / "raw"], tmp_path / "out", once, resume=True)
        kept = caplog.text.count("kept the products of")
        caplog.clear()
        reduce_night([tmp_path / "raw"], tmp_path / "out",
                     ReductionParameters(planes=True, cosmic_rays=True, cosmic_ray_iterations=2),
                     resume=True)
    assert kept == 6
    assert "kept the products of" not in caplog.text
