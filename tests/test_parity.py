"""Parity with the course script: same products, same values (float32 tolerance)."""

import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from ccdred.cli import main
from ccdred.demo import NightSpec, make_night

from .conftest import expected_products

PARITY_SPECS = {
    "default-night": NightSpec(shape=(70, 90), seed=101),
    "three-filters": NightSpec(shape=(64, 64), seed=202, filters=("B", "V", "I"),
                               object_exptimes=(45.0, 20.0, 12.5), n_darks=4, n_flats=5,
                               n_objects=2, flat_exptime=2.5),
    "camera-values": NightSpec(shape=(50, 60), seed=303, imagetyp={
        "bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field", "object": "Light Frame"}),
}

OPTIONS = {
    "default-night": [[], ["-t", "3.0", "-c", "mean", "-i", "3", "-u", "30000"]],
    "three-filters": [["-t", "2.0", "-i", "1"]],
    "camera-values": [["--keyword-datatype-bias", "Bias Frame", "--keyword-datatype-dark",
                       "Dark Frame", "--keyword-datatype-flat", "Flat Field",
                       "--keyword-datatype-object", "Light Frame"]],
}

CASES = [(night, options) for night, option_sets in OPTIONS.items() for options in option_sets]


def run_reference(script, files, out, options):
    command = [sys.executable, str(script), "-d", str(out), *options, *map(str, files)]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=out.parent)


def relative_difference(expected, actual):
    expected, actual = expected.astype(np.float64), actual.astype(np.float64)
    return np.abs(actual - expected) / np.maximum(np.abs(expected), np.finfo(np.float32).tiny)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    return {name: make_night(tmp_path_factory.mktemp(name), spec)
            for name, spec in PARITY_SPECS.items()}


@pytest.mark.parametrize("night,options", CASES, ids=[f"{n}{' '.join(o)}" for n, o in CASES])
def test_same_products_as_the_reference(nights, reference_script, tmp_path, night, options):
    files = nights[night]
    run_reference(reference_script, files, tmp_path / "reference", options)
    assert main(["reduce", "-q", "-d", str(tmp_path / "ccdred"), *options, *map(str, files)]) == 0
    expected = sorted(p.name for p in (tmp_path / "reference").glob("*.fits"))
    produced = sorted(p.name for p in (tmp_path / "ccdred").glob("*.fits"))
    assert produced == expected
    assert set(expected) == expected_products(PARITY_SPECS[night], files) - {"ccdred.log"}
    for name in expected:
        reference = fits.getdata(tmp_path / "reference" / name)
        ours = fits.getdata(tmp_path / "ccdred" / name)
        assert ours.shape == reference.shape
        difference = relative_difference(reference, ours)
        assert np.mean(difference <= 1e-5) >= 0.9999, name
        assert difference.max() <= 1e-2, name


def test_float64_products_equal_the_reference(nights, reference_script, tmp_path):
    files = nights["default-night"]
    run_reference(reference_script, files, tmp_path / "reference", [])
    assert main(["reduce", "-q", "--dtype", "float64", "-d", str(tmp_path / "ccdred"),
                 *map(str, files)]) == 0
    for path in sorted((tmp_path / "reference").glob("*.fits")):
        difference = relative_difference(fits.getdata(path), fits.getdata(tmp_path / "ccdred" / path.name))
        assert difference.max() < 1e-9, path.name
