"""Real nights from two real cameras (../shared/realdata, read-only; products go to tmp)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std

from ccdred.cli import main

from .conftest import SHARED, unavailable

REALDATA = SHARED / "realdata"
STL, CAFOS = REALDATA / "stl1001-lab", REALDATA / "cafos-ngc2420"


@pytest.fixture(scope="module", autouse=True)
def _realdata_present():
    if not REALDATA.is_dir():
        unavailable(f"real data not found at {REALDATA}", "CCDRED_REQUIRE_REALDATA")


@pytest.fixture(scope="module")
def stl(tmp_path_factory):
    out = tmp_path_factory.mktemp("stl")
    assert main(["reduce", "-q", "-d", str(out), "--frame-type", "flat-*=flat", str(STL)]) == 0
    return out


@pytest.fixture(scope="module")
def cafos(tmp_path_factory):
    out = tmp_path_factory.mktemp("cafos")
    assert main(["reduce", "-q", "-d", str(out), str(CAFOS)]) == 0
    return out


def test_stl_the_mislabelled_flats_are_refused_without_the_override(tmp_path, capsys):
    assert main(["reduce", "-q", "-d", str(tmp_path), str(STL)]) == 2
    assert "no flat for filter 'Visible'" in capsys.readouterr().err


def test_stl_master_bias_from_the_minus_5_degree_biases_only(stl):
    header = fits.getheader(stl / "bias_-5C.fits")
    inputs = [header[f"IMCMB{i:03d}"] for i in range(1, header["NCOMBINE"] + 1)]
    assert len(inputs) == 10 and all(name.startswith("biases-Neg5-") for name in inputs)
    assert not (stl / "bias_-10C.fits").exists()  # no frame at -10 C needs it


def test_stl_dark_current_predicts_each_dark_of_the_ladder(stl):
    bias = fits.getdata(stl / "bias_-5C.fits").astype(float)
    current = fits.getdata(stl / "dark_current_-5C.fits").astype(float)
    assert 0.1 < np.median(current) < 1.0  # ADU/s, a cooled CCD at -5 C
    for exptime in (10, 20, 30, 60, 150, 300):
        path = next(STL.glob(f"darks-expos{exptime}s-Neg5-*"))
        residual = fits.getdata(path).astype(float) - (bias + exptime * current)
        noise = mad_std(residual)
        assert abs(np.median(residual)) < 0.25 * noise, (exptime, np.median(residual), noise)
        if exptime >= 150:  # the scaled dark removed far more than the noise left
            assert np.median(residual + exptime * current) > 3 * noise


def test_stl_normalised_master_flat_visible(stl):
    flat = fits.getdata(stl / "flat_Visible.fits")
    header = fits.getheader(stl / "flat_Visible.fits")
    assert header["NCOMBINE"] == 10 and flat.shape == (1024, 1024)
    assert np.mean(flat, dtype=np.float64) == pytest.approx(1.0, abs=1e-5)  # 1 dead pixel set to 1
    assert 0.005 < np.std(flat) < 0.2  # vignetting and dust, not noise or a constant
    assert any("scaled dark bias_-5C.fits + 23 s x dark_current_-5C.fits" in str(line)
               for line in header["HISTORY"])


def test_cafos_bias_only_one_flat_per_filter_all_science_calibrated(cafos):
    science = sorted(p.name for p in CAFOS.glob("science_*"))
    calibrated = sorted(cafos.glob("science_*_df.fits"))
    assert len(science) == len(calibrated) == 11
    assert {fits.getheader(p)["HIERARCH CCDRED DARK_MODEL"] for p in calibrated} == {"none"}
    for band in ("JohnsonB", "JohnsonV"):
        assert fits.getheader(cafos / f"flat_{band}.fits")["NCOMBINE"] == 1
    assert not list(cafos.glob("dark*.fits"))


def test_cafos_calibrated_sky_is_flatter_than_the_raw_sky(cafos):
    """The large-scale sky: rms of 50x50 block medians over their median, raw vs calibrated."""
    bias = fits.getdata(cafos / "bias.fits")

    def unevenness(image):
        blocks = np.asarray(image, dtype=float)[12:1012, 12:1012].reshape(20, 50, 20, 50)
        medians = np.median(blocks, axis=(1, 3))
        return np.std(medians) / np.median(medians)

    for raw in sorted(CAFOS.glob("science_*")):
        name = raw.name.removesuffix(".fits.gz")
        before = unevenness(fits.getdata(raw) - bias)
        after = unevenness(fits.getdata(cafos / f"{name}_df.fits"))
        assert after < 0.6 * before, (name, before, after)


# -- what the lab's products say they are (issue 27, defect 12) --------------------------

def test_stl_masters_say_what_they_are_though_the_flats_say_light_frame(stl):
    raw_flat = fits.getheader(next(STL.glob("flat-*")))
    assert raw_flat["IMAGETYP"] == "Light Frame"
    types = {name: fits.getheader(stl / name)["IMAGETYP"]
             for name in ("bias_-5C.fits", "dark_current_-5C.fits", "flat_Visible.fits")}
    assert types == {"bias_-5C.fits": "BIAS", "dark_current_-5C.fits": "DARK",
                     "flat_Visible.fits": "FLAT"}


def test_stl_master_flat_is_dimensionless(stl):
    from astropy import units as u
    from astropy.nddata import CCDData

    assert fits.getheader(stl / "flat_Visible.fits")["BUNIT"] == ""
    assert CCDData.read(stl / "flat_Visible.fits").unit == u.dimensionless_unscaled
    assert CCDData.read(stl / "dark_current_-5C.fits").unit == u.adu / u.s


def test_stl_dark_current_has_no_exposure_time(stl):
    raw = fits.getheader(next(STL.glob("darks-expos300s-Neg5-*")))
    assert raw["EXPTIME"] == raw["EXPOSURE"] == 300  # the camera writes both
    header = fits.getheader(stl / "dark_current_-5C.fits")
    assert "EXPTIME" not in header and "EXPOSURE" not in header
    assert "ADU per second of exposure" in str(header["COMMENT"])


def test_stl_frame_type_rule_is_an_option_card_of_every_product(stl):
    products = sorted(stl.glob("*.fits"))
    assert len(products) == 13
    for path in products:
        assert json.loads(fits.getheader(path)["HIERARCH CCDRED FRAME_TYPES"]) == {
            "flat-*": "flat"}, path.name
