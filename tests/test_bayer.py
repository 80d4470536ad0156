"""One-shot colour cameras: the mosaic is calibrated as recorded, and flat-fielding keeps colours."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from ccdred import steps
from ccdred.cli import main
from ccdred.combiners import normalise_flat
from ccdred.demo import SKY_COLOUR, NightSpec, make_night, mosaic_image
from ccdred.pipeline import MASTERS, Pipeline

SPEC = NightSpec(shape=(64, 80), seed=11, bayer="RGGB", filters=("L",), object_exptimes=(30.0,),
                 saturated_flats=0, faint_flats=0)


def channels(image) -> dict:
    """The median of each colour of an RGGB mosaic (the two greens together)."""
    return {"R": np.median(image[0::2, 0::2]), "B": np.median(image[1::2, 1::2]),
            "G": np.median(np.concatenate([image[0::2, 1::2].ravel(), image[1::2, 0::2].ravel()]))}


def test_a_colour_night_keeps_its_colours_and_its_mosaic(tmp_path):
    """The master flat has mean 1 in each colour, so a calibrated frame's colour is the sky's
    (the flat lamp's colour, here redder and less blue than the sky, is divided out)."""
    make_night(tmp_path / "raw", SPEC)
    assert main(["reduce", "-q", "-d", str(tmp_path / "out"), str(tmp_path / "raw")]) == 0
    master_flat = fits.getdata(tmp_path / "out" / "flat_L.fits")
    lattice = mosaic_image(SPEC.shape, "RGBX", {"R": 0, "G": 1, "B": 2, "X": 3})
    for place in range(4):
        np.testing.assert_allclose(master_flat[lattice == place].mean(), 1.0, rtol=1e-6)
    calibrated = sorted((tmp_path / "out").glob("*_df.fits"))[0]
    colour = channels(fits.getdata(calibrated))
    for name in ("R", "B"):
        np.testing.assert_allclose(colour[name] / colour["G"], SKY_COLOUR[name], rtol=0.02)
    header = fits.getheader(calibrated)
    assert header["BAYERPAT"] == "RGGB" and header["NAXIS1"] == SPEC.shape[1]


def test_a_mosaic_flat_is_normalised_per_place_in_the_cell():
    vignetting = np.kron(np.linspace(1.0, 1.2, 12).reshape(3, 4), np.ones((2, 2)))  # per cell
    flat = mosaic_image((6, 8), "RGGB", {"R": 2.0, "G": 1.0, "B": 0.5}) * vignetting
    normalised, n_bad = normalise_flat(flat, mosaic=True)
    assert n_bad == 0
    np.testing.assert_allclose(normalised[0::2, 0::2].mean(), 1.0)
    np.testing.assert_allclose(normalised[1::2, 1::2].mean(), 1.0)
    np.testing.assert_allclose(normalised[0::2, 0::2], normalised[1::2, 1::2])  # colour gone
    whole, _ = normalise_flat(flat)
    assert whole[0::2, 0::2].mean() > 1.5  # the lamp's colour stays in a whole normalisation


def test_the_runners_make_equal_colour_products(tmp_path, client):
    """The Dask runner writes the command line's products byte for byte, Bayer keywords
    kept in the masters and the calibrated frames alike; the dashboard's Pipeline makes the same
    masters and calibrated frames."""
    from ccdred.cluster import reduce_nights_on_cluster

    make_night(tmp_path / "raw", SPEC)
    assert main(["reduce", "-q", "-d", str(tmp_path / "cli"), str(tmp_path / "raw")]) == 0
    reduce_nights_on_cluster([([tmp_path / "raw"], tmp_path / "dask")], client)
    written = sorted(p.name for p in (tmp_path / "cli").glob("*.fits"))
    assert written == sorted(p.name for p in (tmp_path / "dask").glob("*.fits")) and written
    for name in written:
        cli, dask = fits.getdata(tmp_path / "cli" / name), fits.getdata(tmp_path / "dask" / name)
        assert cli.tobytes() == dask.tobytes(), name
        header = fits.getheader(tmp_path / "dask" / name)
        assert (header["BAYERPAT"], header["XBAYROFF"], header["YBAYROFF"]) == ("RGGB", 0, 0)
    MASTERS.clear()
    pipeline = Pipeline(night=str(tmp_path / "raw"))
    for name in pipeline.plan.masters:
        master = steps.as_written(pipeline.master(name).data, "float32")
        written = fits.getdata(tmp_path / "cli" / name)
        assert master.tobytes() == written.astype(master.dtype).tobytes(), name
    for product in sorted((tmp_path / "cli").glob("*_df.fits")):
        calibrated = pipeline.calibrated(product.name.replace("_df.fits", ".fits"))
        np.testing.assert_array_equal(calibrated.astype(np.float32), fits.getdata(product))
