"""Uncertainty and mask planes: honest against the demo night's truth, propagated as a Monte
Carlo says, readable by astropy's CCDData, and the same from the three runners."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from ccdred import fitsio
from ccdred.calibrate import calibration_uncertainty
from ccdred.demo import NightSpec, make_night, night_stars, night_truth
from ccdred.night import reduce_night
from ccdred.parameters import ReductionParameters
from ccdred.pipeline import MASTERS, Pipeline
from ccdred.planes import (MaskBit, combined_variance, difference_variance, frame_mask,
                           frame_variance, quotient_variance, saturation_level)

#: The products with their planes.
PLANES = ReductionParameters(planes=True)
#: Large enough for a standard deviation of (value - truth) / uncertainty within 1 %.
HONEST = NightSpec(shape=(96, 128), seed=29)


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """The night reduced with exact darks (master darks, flats, objects) and with scaled
    ones (a master bias and dark current)."""
    folder = tmp_path_factory.mktemp("honest")
    make_night(folder / "raw", HONEST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = reduce_night([folder / "raw"], folder / "exact", PLANES)
        scaled = reduce_night([folder / "raw"], folder / "scaled",
                              ReductionParameters(dark_model="scaled", planes=True))
    return exact, scaled, night_truth(HONEST)


def pulls(path, truth, where) -> np.ndarray:
    """(value - truth) / uncertainty of a product, on the pixels ``where``."""
    product = CCDData.read(path)
    return ((product.data - truth) / product.uncertainty.array)[where]


def test_a_master_bias_is_as_uncertain_as_it_says(honest):
    """Truth: the bias structure the biases were made with (no overscan in this night)."""
    _, scaled, truth = honest
    pull = pulls(scaled.output_dir / "bias.fits", truth.bias, np.ones(HONEST.shape, bool))
    assert np.std(pull) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("exptime", HONEST.dark_exptimes)
def test_a_master_dark_is_as_uncertain_as_it_says(honest, exptime):
    """Truth: the bias plus the dark current times the exposure time, off the hot pixels
    (which the darks' own clipping takes out)."""
    exact, _, truth = honest
    name = exact.plan.darks[exptime].name
    pull = pulls(exact.output_dir / name, truth.bias + truth.dark_current * exptime,
                 ~truth.hot_pixels)
    assert np.std(pull) == pytest.approx(1.0, abs=0.1)


def test_a_dark_current_is_as_uncertain_as_it_says(honest):
    """Truth: the dark current, off the hot pixels; the cosmic rays of the darks (which five
    darks per exposure time cannot clip) are left out beyond 6 sigma."""
    _, scaled, truth = honest
    pull = pulls(scaled.output_dir / "dark_current.fits", truth.dark_current, ~truth.hot_pixels)
    assert np.mean(np.abs(pull) >= 6) < 0.005
    assert np.std(pull[np.abs(pull) < 6]) == pytest.approx(1.0, abs=0.1)


def test_a_master_flat_is_as_uncertain_as_it_says(honest):
    """Truth: the pixel response the flats were lit through (mean 1, as the master flat)."""
    exact, _, truth = honest
    pull = pulls(exact.output_dir / "flat_V.fits", truth.flat_response["V"], ~truth.hot_pixels)
    assert np.std(pull) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("index", [0, 3])
def test_a_calibrated_object_is_as_uncertain_as_it_says(honest, index):
    """Truth: the sky's light over the exposure (what flat-fielding gives back), on pixels
    without stars or hot pixels; cosmic rays (not masked yet) are left out beyond 6 sigma."""
    exact, _, truth = honest
    step = exact.plan.calibrations[index]
    stars = night_stars(HONEST)
    sky = 4.0 * step.frame.exptime
    pull = pulls(exact.output_dir / f"{step.frame.name}_df.fits", sky,
                 (stars * step.frame.exptime < 0.01 * sky) & ~truth.hot_pixels)
    assert np.std(pull[np.abs(pull) < 6]) == pytest.approx(1.0, abs=0.1)


def test_the_uncertainty_grows_where_the_signal_does(honest):
    """A star's pixels are more uncertain than the sky's: the shot noise is in the model."""
    exact, _, _ = honest
    step = exact.plan.calibrations[0]
    product = CCDData.read(exact.output_dir / f"{step.frame.name}_df.fits")
    bright = product.data > np.percentile(product.data, 99.9)
    assert product.uncertainty.array[bright].min() > 1.3 * np.median(product.uncertainty.array)


# -- propagation against a Monte Carlo ------------------------------------------------

def test_subtraction_adds_variances_as_a_monte_carlo_does():
    rng = np.random.default_rng(1)
    a = rng.normal(500.0, 7.0, 200_000)
    b = rng.normal(100.0, 3.0, 200_000)
    assert np.var(a - b) == pytest.approx(difference_variance(49.0, 9.0), rel=0.02)


@pytest.mark.parametrize("level, flat_sigma", [(1000.0, 0.01), (40.0, 0.05)])
def test_flat_division_as_a_monte_carlo_does(level, flat_sigma):
    rng = np.random.default_rng(2)
    frame = rng.normal(level, 10.0, 400_000)
    flat = rng.normal(0.8, flat_sigma, 400_000)
    expected = quotient_variance(level, 100.0, 0.8, flat_sigma**2)
    assert np.var(frame / flat) == pytest.approx(expected, rel=0.03)


def test_the_noise_model_of_a_raw_frame_as_poisson_and_read_noise_draws():
    rng = np.random.default_rng(3)
    gain, read_noise, signal = 2.0, 8.0, 900.0
    adu = rng.poisson(signal * gain, 300_000) / gain + rng.normal(0, read_noise / gain, 300_000)
    assert np.var(adu) == pytest.approx(frame_variance(signal, gain, read_noise), rel=0.02)


@pytest.mark.parametrize("average", ["mean", "median"])
def test_the_variance_of_an_average_as_a_monte_carlo_does(average):
    samples = np.random.default_rng(4).normal(0.0, 5.0, (20_000, 51))
    combined = getattr(np, average)(samples, axis=1)
    expected = combined_variance(25.0, 51, average)
    assert np.var(combined) == pytest.approx(expected, rel=0.05)


def test_the_propagation_leaves_its_inputs_alone():
    frame, flat = np.full(4, 100.0), np.full(4, 0.9)
    quotient_variance(frame, frame.copy(), flat, flat / 100)
    frame_variance(frame, 1.5, 9.0)
    assert frame.tolist() == [100.0] * 4 and flat.tolist() == [0.9] * 4


@pytest.mark.parametrize("dtype", [">f4", "float64"])
@pytest.mark.parametrize("keep_subtracted", [True, False])
def test_a_calibrations_uncertainty_is_the_noise_models(dtype, keep_subtracted):
    """Row block by row block, in buffers, the same values as the noise model's formulas
    on whole float64 frames: across blocks (300 rows), a negative signal, a zero flat and
    an infinite flat variance."""
    rng = np.random.default_rng(6)
    shape = (300, 17)
    raw = rng.integers(0, 65535, shape).astype(np.uint16)
    dark = rng.normal(1000.0, 30.0, shape).astype(np.float32)
    flat = rng.normal(1.0, 0.05, shape).astype(np.float32)
    flat[131, 3] = 0.0
    dark_var, flat_var = rng.uniform(1.0, 30.0, shape), rng.uniform(0.0, 1e-4, shape)
    flat_var[250, 7] = np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        subtracted, flat_fielded = calibration_uncertainty(
            raw, dark, dark_var, flat, flat_var, gain=1.5, read_noise=9.0, dtype=dtype,
            keep_subtracted=keep_subtracted)
        signal = raw.astype(np.float64) - dark.astype(np.float64)
        variance = np.maximum(signal, 0.0) / 1.5 + (9.0 / 1.5) ** 2 + dark_var
        square = flat.astype(np.float64) ** 2
        expected = np.sqrt((variance + signal**2 * flat_var / square) / square).astype(dtype)
    assert signal.min() < 0 and not np.isfinite(expected).all()
    assert flat_fielded.dtype == np.dtype(dtype) and flat_fielded.tobytes() == expected.tobytes()
    assert subtracted is None if not keep_subtracted else (
        subtracted.tobytes() == np.sqrt(variance).astype(dtype).tobytes())


def test_the_in_place_variances_are_the_new_ones():
    signal = np.array([-5.0, 0.0, 300.0, 7e4])
    expected = combined_variance(frame_variance(signal, 1.5, 9.0), [4, 9, 0, 2], "median")
    out = signal.copy()
    same = combined_variance(frame_variance(out, 1.5, 9.0, out=out), [4, 9, 0, 2], "median",
                             out=out)
    assert same is out and out.tolist() == expected.tolist()


def test_the_mask_is_made_the_same_in_blocks_of_rows():
    """Bits in every block of rows (200 rows): saturated samples, a value or an uncertainty
    not finite, the caller's bits; against whole-frame numpy expressions."""
    rng = np.random.default_rng(7)
    shape = (200, 9)
    raw = rng.integers(60000, 65536, shape).astype(np.uint16)
    result = rng.normal(0.0, 1.0, shape).astype(">f4")
    uncertainty = np.abs(result) + 1
    result[rng.random(shape) < 0.05] = np.nan
    uncertainty[rng.random(shape) < 0.05] = np.inf
    extra = (rng.random(shape) < 0.05).astype(np.uint8) * np.uint8(MaskBit.HOT)
    mask = frame_mask(raw, result, 65000.0, uncertainty, extra)
    expected = (np.where(raw >= 65000, 8, 0) | extra
                | np.where(np.isfinite(result) & np.isfinite(uncertainty), 0, 32))
    assert mask.dtype == np.uint8 and np.array_equal(mask, expected)
    assert all(np.any(mask[rows] & bit) for rows in (slice(0, 64), slice(128, 200))
               for bit in (MaskBit.SATURATED, MaskBit.NOT_FINITE, MaskBit.HOT))


def test_the_mask_takes_one_pixel_and_bits_for_every_pixel():
    assert frame_mask(70000, np.nan, 65535, extra=MaskBit.HOT) == (
        MaskBit.HOT | MaskBit.SATURATED | MaskBit.NOT_FINITE)
    mask = frame_mask(np.zeros((3, 2)), np.ones((3, 2)), None, uncertainty=np.inf,
                      extra=np.uint8(MaskBit.USER))
    assert mask.tolist() == [[MaskBit.USER | MaskBit.NOT_FINITE] * 2] * 3


def test_saturation_comes_from_the_header_else_the_raw_type():
    assert saturation_level(None, np.uint16) == 65535
    assert saturation_level(40000, np.uint16) == 40000
    assert saturation_level(None, np.float32) is None


def test_the_mask_takes_the_callers_bits():
    extra = np.array([MaskBit.HOT, 0, MaskBit.COSMIC_RAY], dtype=np.uint8)
    mask = frame_mask(np.array([10, 65535, 10]), np.array([1.0, 1.0, 1.0]), 65535, extra=extra)
    assert mask.tolist() == [MaskBit.HOT, MaskBit.SATURATED, MaskBit.COSMIC_RAY]


# -- files ------------------------------------------------------------------------------

def test_a_product_opens_in_ccddata_with_its_planes(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.normal(100, 5, (20, 30))
    sigma = np.abs(rng.normal(5, 1, data.shape))
    mask = (rng.random(data.shape) < 0.1).astype(np.uint8) * MaskBit.SATURATED
    header = fits.Header({"BUNIT": "adu"})
    path = fitsio.write_image(tmp_path / "p.fits", data, header, uncertainty=sigma, mask=mask,
                              n_rejected=np.ones(data.shape))
    product = CCDData.read(path)
    assert isinstance(product.uncertainty, StdDevUncertainty)
    np.testing.assert_array_equal(product.data, data.astype(np.float32))
    np.testing.assert_array_equal(product.uncertainty.array, sigma.astype(np.float32))
    np.testing.assert_array_equal(product.mask, mask != 0)
    assert fitsio.read_planes(path)["MASK"].tolist() == mask.tolist()
    assert fitsio.read_planes(path)["NREJ"].dtype == np.dtype(">i2")


def test_the_primary_hdu_is_the_same_bytes_with_or_without_planes(tmp_path):
    data = np.random.default_rng(6).normal(100, 5, (20, 30))
    header = fits.Header({"BUNIT": "adu"})
    bare = fitsio.write_image(tmp_path / "bare.fits", data, header).read_bytes()
    planes = fitsio.write_image(tmp_path / "planes.fits", data, header, uncertainty=data,
                                mask=np.zeros(data.shape)).read_bytes()

    def without_checksums(block):  # their comments say the second they were computed
        cards = [block[i:i + 80] for i in range(0, len(block), 80)]
        return [c for c in cards if not c.startswith((b"CHECKSUM", b"DATASUM"))]

    assert without_checksums(planes[:len(bare)]) == without_checksums(bare)
    with fits.open(tmp_path / "planes.fits", checksum=True) as hdus:
        assert [hdu.name for hdu in hdus] == ["PRIMARY", "UNCERT", "MASK"]


@pytest.fixture(scope="module")
def saturated_night(tmp_path_factory):
    """A small night whose first object frame has a saturated patch; its pixels."""
    folder = tmp_path_factory.mktemp("saturated")
    paths = make_night(folder, NightSpec(shape=(40, 56), seed=8))
    with fits.open(paths[-1]) as hdus:
        data, header = hdus[0].data.copy(), hdus[0].header
    patch = (slice(10, 13), slice(20, 24))
    data[patch] = 65535
    cards = {k: v for k, v in header.items() if k not in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1",
                                                            "NAXIS2", "EXTEND", "BZERO", "BSCALE")}
    fitsio.write_raw_frame(paths[-1], data, cards)
    return folder, paths[-1], patch


def test_the_mask_flags_saturated_pixels(saturated_night, tmp_path):
    folder, path, patch = saturated_night
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reduce_night([folder], tmp_path, PLANES)
    product = CCDData.read(tmp_path / f"{fitsio.product_stem(path)}_df.fits")
    expected = np.zeros(product.shape, bool)
    expected[patch] = True
    np.testing.assert_array_equal(product.mask, expected)
    bits = fitsio.read_planes(tmp_path / f"{fitsio.product_stem(path)}_df.fits")["MASK"]
    assert set(bits[patch].ravel()) == {MaskBit.SATURATED}


def test_without_planes_the_products_are_the_bare_images_of_today(saturated_night, tmp_path):
    folder, _, _ = saturated_night
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_planes = reduce_night([folder], tmp_path / "planes", PLANES)
        bare = reduce_night([folder], tmp_path / "bare")
    for product in bare.products:
        assert fitsio.read_planes(product) == {}
        np.testing.assert_array_equal(fits.getdata(product),
                                      fits.getdata(with_planes.output_dir / product.name))
    assert set(fitsio.read_planes(with_planes.products[0])) == {"UNCERT", "NREJ"}


def test_without_intermediate_files_the_flat_fielded_planes_are_the_same(saturated_night,
                                                                         tmp_path):
    folder, path, _ = saturated_night
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reduce_night([folder], tmp_path / "all", PLANES)
        reduce_night([folder], tmp_path / "df", ReductionParameters(planes=True,
                                                                     intermediate=False))
    name = f"{fitsio.product_stem(path)}_df.fits"
    every, alone = (fitsio.read_planes(tmp_path / out / name) for out in ("all", "df"))
    assert every.keys() == alone.keys() == {"UNCERT", "MASK"}
    for plane in every:
        np.testing.assert_array_equal(every[plane], alone[plane])


def test_unknown_noise_leaves_the_mask_only_and_says_so(tmp_path, caplog):
    """A night of float frames with neither header gain nor flats to measure it."""
    spec = NightSpec(shape=(32, 40), seed=9, n_flats=1, n_objects=1, filters=("V",),
                     object_exptimes=(30.0,), saturated_flats=0, faint_flats=0)
    paths = make_night(tmp_path / "raw", spec)
    for path in paths:
        with fits.open(path, mode="update") as hdus:
            del hdus[0].header["GAIN"]
    with warnings.catch_warnings(), caplog.at_level("INFO", logger="ccdred"):
        warnings.simplefilter("ignore")
        result = reduce_night([tmp_path / "raw"], tmp_path / "out", PLANES)
    assert result.noise is None
    product = tmp_path / "out" / f"{result.plan.objects[0].name}_df.fits"
    assert set(fitsio.read_planes(product)) == {"MASK"}
    assert "No UNCERT plane" in str(fits.getheader(product)["COMMENT"])
    assert "no UNCERT plane (MASK only)" in caplog.text


# -- runners ----------------------------------------------------------------------------

SPECS = {"real": NightSpec.real(shape=(40, 56), seed=41),
         "course": NightSpec(shape=(40, 56), seed=42)}


@pytest.fixture(scope="module")
def runner_nights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runner-planes")
    for name, spec in SPECS.items():
        make_night(folder / name, spec)
    return folder


@pytest.mark.parametrize("night", SPECS)
def test_three_runners_write_equal_planes(runner_nights, client, tmp_path, night):
    from ccdred.cluster import reduce_nights_on_cluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = reduce_night([runner_nights / night], tmp_path / "local", PLANES,
                             memory_budget=6_000)
        reduce_nights_on_cluster([([runner_nights / night], tmp_path / "dask")], client, PLANES)
    assert any(product.name.endswith("_d.fits") for product in local.products)
    for product in local.products:
        expected, actual = (fitsio.read_planes(folder / product.name)
                            for folder in (tmp_path / "local", tmp_path / "dask"))
        assert expected.keys() == actual.keys(), product.name
        # planes on the masters and flat-fielded frames; the '_d' intermediates are bare
        assert bool(expected) is not product.name.endswith("_d.fits"), product.name
        for name in expected:
            assert expected[name].tobytes() == actual[name].tobytes(), (product.name, name)
    MASTERS.clear()
    pipeline = Pipeline(night=str(runner_nights / night), planes=True)
    for name in local.plan.made:
        planes = fitsio.read_planes(tmp_path / "local" / name.name)
        made = pipeline.master_planes(name.name)
        np.testing.assert_array_equal(np.sqrt(made.variance).astype(np.float32), planes["UNCERT"])
        np.testing.assert_array_equal(made.n_rejected, planes["NREJ"])
    step = local.plan.calibrations[0]
    planes = fitsio.read_planes(tmp_path / "local" / f"{step.frame.name}_df.fits")
    shown = pipeline.calibrated_planes(step.frame.path.name)
    np.testing.assert_array_equal(shown["uncertainty"].astype(np.float32), planes["UNCERT"])
    np.testing.assert_array_equal(shown["mask"], planes["MASK"])


def test_the_command_line_turns_the_planes_on():
    from ccdred.cli import build_parser

    assert build_parser().parse_args(["reduce", "night"]).planes is False
    assert build_parser().parse_args(["reduce", "--planes", "night"]).planes is True
    assert ReductionParameters(planes=True).command_options() == ["--planes"]


def test_a_library_master_brings_its_uncertainty(saturated_night, tmp_path):
    """Objects calibrated with the library's masters (and the same gain and read noise) get
    the same planes as in the night that made the masters."""
    folder, _, _ = saturated_night
    library = tmp_path / "library"
    objects = tmp_path / "objects"
    objects.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = reduce_night([folder], tmp_path / "first",
                             ReductionParameters(planes=True, library=str(library),
                                                 add_to_library=True))
        for step in first.plan.calibrations:
            (objects / step.frame.path.name).write_bytes(step.frame.path.read_bytes())
        later = reduce_night([objects], tmp_path / "later", ReductionParameters(
            planes=True, library=str(library), gain=first.noise.gain,
            read_noise=first.noise.read_noise))  # no biases to measure it
    for step in later.plan.calibrations:
        name = f"{step.frame.name}_df.fits"
        made, borrowed = (fitsio.read_planes(out / name) for out in (tmp_path / "first",
                                                                      tmp_path / "later"))
        assert borrowed.keys() == {"UNCERT", "MASK"}
        # the library holds the masters' standard deviations in float32: equal to 1e-6
        np.testing.assert_allclose(borrowed["UNCERT"], made["UNCERT"], rtol=1e-6)
        np.testing.assert_array_equal(borrowed["MASK"], made["MASK"])


def test_a_callers_bits_reach_an_objects_mask(saturated_night, tmp_path):
    """Where a bad-pixel mask or the frame's cosmic rays plug in: ``extra_mask``."""
    from ccdred.night import calibrate_object

    folder, _, _ = saturated_night
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = reduce_night([folder], tmp_path, PLANES)
    step = result.plan.calibrations[0]
    extra = np.zeros(step.frame.shape, np.uint8)
    extra[5, 7], extra[6, 8] = MaskBit.HOT, MaskBit.COSMIC_RAY
    before = fitsio.read_planes(tmp_path / f"{step.frame.name}_df.fits")["MASK"]
    calibrate_object(step, result.images(), tmp_path, PLANES, "overwrite", noise=result.noise,
                     planes=result.planes, extra_mask=extra)
    after = fitsio.read_planes(tmp_path / f"{step.frame.name}_df.fits")["MASK"]
    np.testing.assert_array_equal(after, before | extra)
