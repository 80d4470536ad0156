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
