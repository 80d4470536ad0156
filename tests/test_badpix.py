"""The bad-pixel mask: hot pixels and flat defects against the demo night's truth and
ccdproc's ``ccdmask``; the user's mask file; the ``bad_pixels.fits`` product of both runners."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from astropy.io import fits

from ccdred.badpix import bad_pixel_mask, flat_defects, hot_pixels, read_bad_pixel_mask
from ccdred.cli import main
from ccdred.demo import NightSpec, make_night, night_truth
from ccdred.errors import InputError
from ccdred.night import BAD_PIXELS, dark_rate, reduce_night
from ccdred.parameters import ReductionParameters
from ccdred.planes import MaskBit

#: A course-shaped night whose pixel response has defects (dead, deviant, two bad columns).
SPEC = NightSpec(shape=(512, 512), defects=True)
TRUTH = night_truth(SPEC)
#: The issue's thresholds: found at least this fraction of the injected pixels ...
COMPLETENESS = 0.95
#: ... and at most this fraction of all pixels found that were not injected.
FALSE_POSITIVES = 0.001


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """The defects night's raw frames, by (IMAGETYP, EXPTIME, FILTER), in float64."""
    grouped = {}
    for path in make_night(tmp_path_factory.mktemp("defects"), SPEC):
        with fits.open(path) as hdus:
            header = hdus[0].header
            key = (header["IMAGETYP"], header["EXPTIME"], header.get("FILTER"))
            grouped.setdefault(key, []).append(hdus[0].data.astype(float))
    return grouped


def numpy_master_flat(frames, filter_name):
    """A master flat written out in numpy: each usable flat less the 5 s darks' median,
    normalised to its median; the median of them, normalised to mean 1."""
    dark = np.median(frames["DARK", 5.0, None], axis=0)
    flats = [flat - dark for flat in frames["FLAT", 5.0, filter_name]]
    normalised = [flat / np.median(flat) for flat in flats if 1000 < np.median(flat) < 38000]
    master = np.median(normalised, axis=0)
    return master / master.mean()


def assert_finds(found, injected):
    assert found.dtype == bool and found.shape == injected.shape
    assert (found & injected).sum() >= COMPLETENESS * injected.sum()
    assert (found & ~injected).sum() <= FALSE_POSITIVES * injected.size


def test_the_demo_night_has_enough_bad_pixels_to_measure():
    assert TRUTH.hot_pixels.sum() > 200 and TRUTH.defects.sum() > 500
    assert (TRUTH.defects.sum(axis=0) > SPEC.shape[0] // 2).sum() == 2  # two bad columns


def test_no_defects_unless_asked():
    assert night_truth(NightSpec(shape=(32, 32))).defects is None


def test_hot_pixels_from_the_darks_of_two_exposure_times(frames):
    medians = {t: np.median(frames["DARK", t, None], axis=0) for t in (5.0, 60.0)}
    dark_current = (medians[60.0] - medians[5.0]) / 55.0
    assert_finds(hot_pixels(dark_current), TRUTH.hot_pixels)


@pytest.mark.parametrize("filter_name", SPEC.filters)
def test_flat_defects_found_in_each_master_flat(frames, filter_name):
    assert_finds(flat_defects(numpy_master_flat(frames, filter_name)), TRUTH.defects)


def test_flat_defects_agree_with_ccdproc_ccdmask(frames):
    import ccdproc
    from astropy.nddata import CCDData

    master = numpy_master_flat(frames, "V")
    ours = flat_defects(master)
    theirs = ccdproc.ccdmask(CCDData(master, unit="adu"), byblocks=True)
    assert_finds(theirs, TRUTH.defects)
    assert (ours & theirs & TRUTH.defects).sum() >= COMPLETENESS * TRUTH.defects.sum()
    assert (ours != theirs).mean() < 1e-4


def column_growth_loop(defects, ngood):
    """ccdproc's column growth (its ``findbadcolumns`` loop), written out per pixel."""
    grown = defects.copy()
    rows, columns = grown.shape
    for column in range(columns):
        for row in range(rows):
            if not grown[row, column]:
                continue
            for end in range(row + 2, min(row + ngood + 2, rows)):
                if grown[end, column]:
                    grown[row:end, column] = True
    return grown


@pytest.mark.parametrize("ngood", [0, 1, 5])
def test_defects_grow_along_columns_as_ccdmask_grows_them(ngood):
    rng = np.random.default_rng(ngood)
    flat = rng.normal(1.0, 0.01, (80, 40))
    dead = rng.random(flat.shape) < 0.03
    flat[dead] = 0.2
    ungrown = flat_defects(flat, ngood=0)
    np.testing.assert_array_equal(ungrown, dead)
    np.testing.assert_array_equal(flat_defects(flat, ngood=ngood), column_growth_loop(dead, ngood))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("find", [hot_pixels, flat_defects])
def test_the_input_is_not_changed(find, dtype):
    image = np.random.default_rng(5).normal(1.0, 0.01, (40, 40)).astype(dtype)
    image[3, 4] = np.nan
    before = image.copy()
    find(image)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: hot_pixels(np.ones((4, 4)), sigma=0), "sigma must be .* greater than 0, not 0"),
    (lambda: flat_defects(np.ones((20, 20)), lsigma=np.inf), "lsigma must be a finite"),
    (lambda: flat_defects(np.ones((20, 20)), ncsig=5), "at least 10 .* not 5, 15"),
    (lambda: bad_pixel_mask(hot=np.ones((2, 2), bool), user=np.ones((3, 2), bool)), "one shape"),
    (lambda: bad_pixel_mask(), "one shape"),
])
def test_bad_arguments_are_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_mask_holds_one_bit_per_reason():
    hot = np.array([[1, 0, 0, 1]], bool)
    defects = np.array([[0, 1, 0, 1]], bool)
    user = np.array([[0, 0, 1, 1]], bool)
    mask = bad_pixel_mask(hot=hot, defects=defects, user=user)
    assert mask.dtype == np.uint8
    for pixel in range(4):
        expected = (MaskBit.HOT * hot[0, pixel] + MaskBit.DEFECT * defects[0, pixel]
                    + MaskBit.USER * user[0, pixel])
        assert mask[0, pixel] == expected
    np.testing.assert_array_equal(bad_pixel_mask(shape=(2, 3)), np.zeros((2, 3), np.uint8))


def test_a_users_mask_file_is_read_as_user_bits(tmp_path):
    data = np.zeros((6, 8), np.int16)
    data[2, 5], data[4, 1] = 1, -3
    fits.PrimaryHDU(data).writeto(tmp_path / "mask.fits")
    mask = read_bad_pixel_mask(tmp_path / "mask.fits", (6, 8))
    np.testing.assert_array_equal(np.argwhere(mask), [[2, 5], [4, 1]])
    assert set(np.unique(mask)) == {0, MaskBit.USER}


@pytest.mark.parametrize(("write", "message"), [
    (lambda path: fits.PrimaryHDU(np.zeros((6, 9))).writeto(path), "mask is 9x6 .* 8x6"),
    (lambda path: path.write_bytes(b"SIMPLE  = nonsense"), "FITS"),
    (lambda path: None, "not found"),
])
def test_a_users_mask_file_that_does_not_fit_names_the_file(tmp_path, write, message):
    path = tmp_path / "mask.fits"
    write(path)
    with pytest.raises(InputError, match=message) as caught:
        read_bad_pixel_mask(path, (6, 8))
    assert [problem.path for problem in caught.value.problems] == [path]


@pytest.fixture(scope="module")
def small_night(tmp_path_factory):
    """A real-shaped night with defects: a master bias and darks scaled from a dark current."""
    spec = NightSpec.real(shape=(224, 256), seed=29, defects=True)
    return make_night(tmp_path_factory.mktemp("small-defects"), spec)[0].parent, spec


@pytest.mark.parametrize(("write", "message"), [
    (lambda path: fits.PrimaryHDU(np.zeros((224, 100))).writeto(path), "mask is 100x224"),
    (lambda path: path.write_bytes(b"not a FITS file at all"), "not a FITS file"),
])
def test_the_command_line_refuses_a_users_mask_in_one_line(small_night, tmp_path, capsys,
                                                           write, message):
    mask = tmp_path / "mask.fits"
    write(mask)
    status = main(["reduce", "-q", "--bad-pixel-mask", str(mask), "-d",
                   str(tmp_path / "out"), str(small_night[0])])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith(f"ccdred: error: {mask}: ") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_the_night_writes_its_bad_pixel_mask(small_night, tmp_path):
    folder, spec = small_night
    result = reduce_night([folder], tmp_path / "out", ReductionParameters(bad_pixels=True))
    assert tmp_path / "out" / BAD_PIXELS in result.products
    mask = fits.getdata(tmp_path / "out" / BAD_PIXELS)
    truth = night_truth(spec)
    assert mask.dtype == np.uint8
    assert_finds(mask & MaskBit.HOT > 0, truth.hot_pixels)
    assert_finds(mask & MaskBit.DEFECT > 0, truth.defects)
    assert not (mask & MaskBit.USER).any()


def test_the_users_mask_is_written_instead(small_night, tmp_path):
    user = np.zeros((224, 256), np.uint8)
    user[10, 20] = 1
    fits.PrimaryHDU(user).writeto(tmp_path / "mine.fits")
    reduce_night([small_night[0]], tmp_path / "out",
                 ReductionParameters(bad_pixel_mask=str(tmp_path / "mine.fits")))
    np.testing.assert_array_equal(fits.getdata(tmp_path / "out" / BAD_PIXELS), user * MaskBit.USER)


def test_no_mask_unless_asked(small_night, tmp_path):
    result = reduce_night([small_night[0]], tmp_path / "out")
    assert not (tmp_path / "out" / BAD_PIXELS).exists()
    assert BAD_PIXELS not in {path.name for path in result.products}


def test_both_runners_write_the_same_mask(small_night, client, tmp_path):
    from ccdred.cluster import reduce_nights_on_cluster

    parameters = ReductionParameters(bad_pixels=True)
    reduce_night([small_night[0]], tmp_path / "local", parameters)
    reduce_nights_on_cluster([([small_night[0]], tmp_path / "dask")], client, parameters)
    local, dask = (fits.getdata(tmp_path / where / BAD_PIXELS) for where in ("local", "dask"))
    assert local.tobytes() == dask.tobytes()


def test_the_dark_rate_takes_the_longest_exposure_with_three_darks(tmp_path):
    """Two 120 s darks cannot outvote a cosmic ray: the 10 s darks' median is taken, less
    the master bias, per second."""
    spec = NightSpec(shape=(48, 64), seed=3, dark_times=(10.0, 120.0))
    files = make_night(tmp_path / "raw", spec)
    darks = {}
    for path in files:
        header = fits.getheader(path)
        if header["IMAGETYP"] == "DARK":
            darks.setdefault(header["EXPTIME"], []).append(path)
    for path in darks[120.0][2:]:
        path.unlink()
    result = reduce_night([tmp_path / "raw"], tmp_path / "out")
    short = np.median([fits.getdata(path).astype(float) for path in darks[10.0]], axis=0)
    expected = (short - fits.getdata(tmp_path / "out" / "bias.fits")) / 10.0
    np.testing.assert_allclose(dark_rate(result.plan, result.masters), expected, rtol=1e-6)


def test_a_resumed_night_keeps_its_mask_and_a_new_one_refuses_it(small_night, tmp_path):
    parameters = ReductionParameters(bad_pixels=True)
    reduce_night([small_night[0]], tmp_path / "out", parameters)
    made = (tmp_path / "out" / BAD_PIXELS).stat().st_mtime_ns
    (tmp_path / "out" / "bias.fits").unlink()
    reduce_night([small_night[0]], tmp_path / "out", parameters, resume=True)
    assert (tmp_path / "out" / BAD_PIXELS).stat().st_mtime_ns == made
    (tmp_path / "other").mkdir()
    (tmp_path / "out" / BAD_PIXELS).rename(tmp_path / "other" / BAD_PIXELS)
    with pytest.raises(InputError, match="already holds 1 of this night's products"):
        reduce_night([small_night[0]], tmp_path / "other", parameters)


def test_resuming_with_the_masks_makes_the_products_again(small_night, tmp_path):
    """Products made without the bad-pixel mask are not current for a run with it (nor
    for another user mask): resuming rewrites them, and their MASK planes get its bits."""
    folder, _ = small_night
    out = tmp_path / "out"
    reduce_night([folder], out, ReductionParameters(planes=True))
    name = next(out.glob("*_df.fits")).name
    assert not (fits.getdata(out / name, "MASK") & MaskBit.HOT).any()
    reduce_night([folder], out, ReductionParameters(planes=True, bad_pixels=True),
                 resume=True)
    mask = fits.getdata(out / name, "MASK")
    assert (mask & MaskBit.HOT).any()
    from astropy.nddata import CCDData

    assert (CCDData.read(out / BAD_PIXELS).data == fits.getdata(out / BAD_PIXELS)).all()
    np.testing.assert_array_equal(mask & MaskBit.HOT, fits.getdata(out / BAD_PIXELS) & MaskBit.HOT)
    user = np.zeros(mask.shape, np.uint8)
    user[3, 4] = 1
    for value in (1, 2):  # the same file name, other contents: made again
        user[3, 4] = value
        fits.PrimaryHDU(user).writeto(tmp_path / "mine.fits", overwrite=True)
        reduce_night([folder], out, ReductionParameters(
            planes=True, bad_pixel_mask=str(tmp_path / "mine.fits")), resume=True)
        assert fits.getdata(out / name, "MASK")[3, 4] & MaskBit.USER
        assert fits.getheader(out / name)["HIERARCH CCDRED BAD_PIXEL_MASK_SHA256"] == \
            hashlib.sha256((tmp_path / "mine.fits").read_bytes()).hexdigest()


def test_the_dashboard_mask_follows_a_dark_changed_on_disk(tmp_path):
    """The Pipeline's object mask is remade when a raw dark of another exposure time (which
    the hot pixels come from) changes: its memo is keyed on every frame of the night."""
    from ccdred.pipeline import MASTERS, Pipeline

    spec = NightSpec(shape=(64, 64), seed=4)
    make_night(tmp_path / "raw", spec)
    MASTERS.clear()
    pipeline = Pipeline(night=str(tmp_path / "raw"), bad_pixels=True)
    y, x = 10, 20
    assert not pipeline.object_mask()[y, x] & MaskBit.HOT
    longest = max(spec.dark_exptimes)
    for path in sorted((tmp_path / "raw").glob("*.fits")):
        with fits.open(path, mode="update") as hdus:
            header = hdus[0].header
            if header["IMAGETYP"] == spec.imagetyp["dark"] and header["EXPTIME"] == longest:
                hdus[0].data[y, x] = 60000
    assert pipeline.object_mask()[y, x] & MaskBit.HOT


def test_one_mask_file_for_two_nights_of_other_sizes_is_refused_for_the_second(tmp_path):
    from ccdred.pipeline import MASTERS, Pipeline

    make_night(tmp_path / "small", NightSpec(shape=(64, 64), seed=4))
    make_night(tmp_path / "large", NightSpec(shape=(96, 96), seed=4))
    mask = tmp_path / "mask.fits"
    fits.writeto(mask, np.zeros((64, 64), np.uint8))
    MASTERS.clear()
    assert Pipeline(night=str(tmp_path / "small"),
                    bad_pixel_mask=str(mask)).night_bad_pixels().shape == (64, 64)
    with pytest.raises(InputError, match="mask.fits"):
        Pipeline(night=str(tmp_path / "large"), bad_pixel_mask=str(mask)).night_bad_pixels()
