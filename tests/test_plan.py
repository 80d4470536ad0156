"""The night's plan: which dark model each frame gets, temperature groups, problems."""

from __future__ import annotations

import numpy as np
import pytest

from ccdred.frames import scan
from ccdred.plan import PlanOptions, build_plan


def night(write_fits, frames):
    """Frames as (name, IMAGETYP, EXPTIME, extra cards) on disk; the catalogue."""
    paths = [write_fits(name, np.full((6, 8), 1000, np.uint16), IMAGETYP=kind, EXPTIME=t,
                        FILTER="V", **cards) for name, kind, t, cards in frames]
    return scan([paths[0].parent])


COURSE = [("b1.fits", "BIAS", 0.0, {}), ("b2.fits", "BIAS", 0.0, {}),
          ("d1.fits", "DARK", 30.0, {}), ("d2.fits", "DARK", 30.0, {}),
          ("d3.fits", "DARK", 100.0, {}), ("d4.fits", "DARK", 100.0, {}),
          ("f1.fits", "FLAT", 30.0, {}), ("o1.fits", "LIGHT", 30.0, {}),
          ("o2.fits", "LIGHT", 60.0, {})]


@pytest.mark.parametrize("model,expected", [
    ("auto", {"f1.fits": "exact", "o1.fits": "exact", "o2.fits": "scaled"}),
    ("scaled", {"f1.fits": "scaled", "o1.fits": "scaled", "o2.fits": "scaled"}),
    ("none", {"f1.fits": "none", "o1.fits": "none", "o2.fits": "none"}),
])
def test_each_frame_gets_its_dark_model(write_fits, model, expected):
    plan = build_plan(night(write_fits, COURSE), PlanOptions(model))
    assert not plan.problems
    terms = {**{p.name: t for p, t in plan.flat_terms.items()},
             **{s.frame.path.name: s.term for s in plan.calibrations}}
    assert {name: term.model for name, term in terms.items()} == expected


def test_exact_model_names_the_missing_dark(write_fits):
    plan = build_plan(night(write_fits, COURSE), PlanOptions("exact"))
    assert [p.message for p in plan.problems] == [
        "no dark for exposure time 60 s (needed by o2.fits)"]


def test_a_frame_far_from_every_calibration_temperature_is_noted(write_fits):
    frames = [(n, k, t, {"CCD-TEMP": -20.0}) for n, k, t, _ in COURSE if k != "LIGHT"]
    frames.append(("warm.fits", "LIGHT", 30.0, {"CCD-TEMP": -12.0}))
    plan = build_plan(night(write_fits, frames))
    assert any("warm.fits: taken at -12 C, nearest calibration at -20 C" in n for n in plan.notes)


def test_biases_and_darks_are_grouped_by_temperature(write_fits):
    frames = [("cold-b1.fits", "BIAS", 0.0, {"CCD-TEMP": -10.2}),
              ("cold-b2.fits", "BIAS", 0.0, {"CCD-TEMP": -9.9}),
              ("b1.fits", "BIAS", 0.0, {"CCD-TEMP": -5.1}), ("b2.fits", "BIAS", 0.0, {"CCD-TEMP": -4.9}),
              ("d1.fits", "DARK", 60.0, {"CCD-TEMP": -5.0}),
              ("f1.fits", "FLAT", 20.0, {"CCD-TEMP": -5.3}),
              ("o1.fits", "LIGHT", 20.0, {"CCD-TEMP": -5.3})]
    plan = build_plan(night(write_fits, frames))
    assert [f.path.name for f in plan.masters["bias_-5C.fits"].frames] == ["b1.fits", "b2.fits"]
    assert "bias_-10C.fits" not in plan.masters  # nothing at -10 C needs it
    assert plan.calibrations[0].term.describe() == (
        "scaled dark bias_-5C.fits + 20 s x dark_current_-5C.fits")


def _without_biases_and_darks(folder, spec):
    """A demo night written to ``folder`` with its bias and dark frames removed."""
    from astropy.io import fits

    from ccdred.demo import make_night

    make_night(folder, spec)
    for path in folder.glob("*.fits"):
        if fits.getval(path, "IMAGETYP") in (spec.imagetyp["bias"], spec.imagetyp["dark"]):
            path.unlink()
    return folder


@pytest.mark.parametrize("dark_model", ["auto", "none"])
@pytest.mark.parametrize("overscan", [24, 0])
def test_a_night_without_biases_and_darks_is_flat_fielded(tmp_path, capsys, overscan, dark_model):
    """The overscan is then its only bias correction (IRAF's zerocor=no darkcor=no); without
    one, the bias level stays, and a warning says so. The log and each product's history
    say which corrections the frame got."""
    from astropy.io import fits

    from ccdred.cli import main
    from ccdred.demo import BIAS_LEVEL, NightSpec, night_truth

    spec = NightSpec.real(shape=(64, 48), seed=8, overscan=overscan)
    raw = _without_biases_and_darks(tmp_path / "raw", spec)
    assert main(["reduce", "-q", "--dark-model", dark_model, "-d", str(tmp_path / "out"),
                 str(raw)]) == 0
    warned = capsys.readouterr().err
    products = sorted(p.name for p in (tmp_path / "out").glob("*.fits"))
    assert not [p for p in products if p.startswith(("bias", "dark"))]
    objects = [p for p in products if p.endswith("_df.fits")]
    assert objects and "flat_V.fits" in products
    history = str(fits.getheader(tmp_path / "out" / objects[0])["HISTORY"])
    truth = night_truth(spec)
    response = truth.flat_response["V"] / truth.flat_response["V"].mean()
    master_flat = fits.getdata(tmp_path / "out" / "flat_V.fits")
    assert np.std(master_flat / response) < 0.02  # flats less nothing still show the response
    level = np.median(fits.getdata(tmp_path / "out" / objects[0]))
    correction = "overscan only" if overscan else "no bias correction"
    logged = (tmp_path / "out" / "ccdred.log").read_text()
    for product in objects:  # a line per frame: its bias correction, its flat
        assert f"  {product.replace('_df', '')}: {correction} (no bias" in logged, product
    if overscan:
        assert "overscan only" in history and "overscan is the only bias correction" in warned
        assert level < BIAS_LEVEL / 2  # the overscan took the bias level away
    else:
        assert "bias level stays" in history and "bias level stays" in warned
        assert level > BIAS_LEVEL  # it stayed


@pytest.mark.parametrize("overscan", [24, 0])
def test_the_runners_flat_field_a_night_without_biases_and_darks_alike(tmp_path, client,
                                                                      overscan):
    """Dask writes the in-process runner's products byte for byte; the Pipeline makes its
    flats and calibrated frames."""
    from astropy.io import fits

    from ccdred.cluster import reduce_nights_on_cluster
    from ccdred.demo import NightSpec
    from ccdred.night import reduce_night
    from ccdred.pipeline import MASTERS, Pipeline

    raw = _without_biases_and_darks(tmp_path / "raw",
                                    NightSpec.real(shape=(40, 48), seed=9, overscan=overscan))
    with pytest.warns(UserWarning, match="overscan is the only|bias level stays"):
        local = reduce_night([raw], tmp_path / "local")
    reduce_nights_on_cluster([([raw], tmp_path / "dask")], client)
    names = sorted(p.name for p in (tmp_path / "local").glob("*.fits"))
    assert names == sorted(p.name for p in (tmp_path / "dask").glob("*.fits"))
    assert set(names) == set(local.plan.product_names()) and "flat_V.fits" in names
    for name in names:
        assert (fits.getdata(tmp_path / "dask" / name).tobytes()
                == fits.getdata(tmp_path / "local" / name).tobytes()), name
    MASTERS.clear()
    pipeline = Pipeline(night=str(raw))
    for step in local.plan.calibrations:
        calibrated = pipeline.calibrated(step.frame.path.name).astype(np.float32)
        written = fits.getdata(tmp_path / "local" / f"{step.frame.name}_df.fits")
        np.testing.assert_array_equal(calibrated, written, err_msg=step.frame.name)


def test_an_exact_dark_model_without_darks_is_still_refused(tmp_path, capsys):
    from ccdred.cli import main
    from ccdred.demo import NightSpec

    raw = _without_biases_and_darks(tmp_path / "raw", NightSpec.real(shape=(64, 48), seed=8))
    assert main(["reduce", "-q", "--dark-model", "exact", "-d", str(tmp_path / "out"),
                 str(raw)]) == 2
    assert "no dark for exposure time" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_the_dashboard_s_pipeline_says_a_night_has_no_calibration_master(tmp_path):
    from ccdred.demo import NightSpec
    from ccdred.errors import InputError
    from ccdred.pipeline import Pipeline

    raw = _without_biases_and_darks(tmp_path / "raw", NightSpec.real(shape=(64, 48), seed=8))
    pipeline = Pipeline(night=str(raw))
    with pytest.raises(InputError, match="no bias or dark frames in this night"):
        pipeline.shown_dark()
    assert pipeline.shown_flat()[1].accepted.all()
    assert np.isfinite(pipeline.shown_calibrated()[2]).all()
