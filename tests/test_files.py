"""Files as observatories write them, reduced by the command line as the plain night is.

Each test rewrites a simulated night the way some observatory stores it (keywords
in the primary header with INHERIT, OBSTYPE instead of IMAGETYP, tile-compressed
``.fits.fz``, placeholder header sections) and holds the products to those of the
night as :func:`ccdred.demo.make_night` writes it.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from ccdred import steps
from ccdred.cli import main
from ccdred.demo import NightSpec, make_night
from ccdred.pipeline import MASTERS, Pipeline

#: Small nights: one without and one with an overscan strip (BIASSEC and TRIMSEC cards).
SPECS = {"plain": NightSpec(shape=(24, 32), seed=11),
         "overscan": NightSpec(shape=(24, 32), seed=11, overscan=4)}
#: Frame types as Las Cumbres Observatory's OBSTYPE says them.
LCO_TYPES = {"BIAS": "BIAS", "DARK": "DARK", "FLAT": "SKYFLAT", "LIGHT": "EXPOSE"}


@pytest.fixture(scope="module", params=sorted(SPECS))
def night(request, tmp_path_factory):
    """A simulated night and its products, as the command line makes them."""
    folder = tmp_path_factory.mktemp(request.param)
    make_night(folder / "night", SPECS[request.param])
    assert main(["reduce", "-q", "-d", str(folder / "out"), str(folder / "night")]) == 0
    return folder


def reduce(night, out, capsys, *options) -> str:
    """Reduce ``night`` into ``out`` with the command line; its stderr."""
    status = main(["reduce", "-q", "-d", str(out), *map(str, options), str(night)])
    err = capsys.readouterr().err
    assert status == 0, err
    return err


def rewrite(night, folder, write, suffix=".fits"):
    """Each raw frame of ``night`` written anew by ``write(header, data, path)``."""
    folder.mkdir()
    for path in sorted((night / "night").glob("*.fits")):
        with fits.open(path) as hdus:
            write(hdus[0].header.copy(), hdus[0].data, folder / f"{path.stem}{suffix}")
    return folder


def assert_same_products(out, night, keys=("IMAGETYP", "EXPTIME", "FILTER", "NCOMBINE")):
    """The products in ``out`` are the plain night's, bit for bit, under the same names,
    with the same header ``keys``."""
    expected = sorted(p.name for p in (night / "out").glob("*.fits"))
    assert sorted(p.name for p in out.glob("*.fits")) == expected and expected
    for name in expected:
        with fits.open(out / name) as made, fits.open(night / "out" / name) as plain:
            np.testing.assert_array_equal(made[0].data, plain[0].data, strict=True)
            for key in keys:
                assert made[0].header.get(key) == plain[0].header.get(key), (name, key)


@pytest.mark.parametrize("compression", ["RICE_1", "GZIP_1", "GZIP_2"])
def test_tile_compressed_night_reduces_as_the_plain_one(night, tmp_path, capsys, compression):
    def compress(header, data, path):
        tiled = fits.CompImageHDU(data, header, compression_type=compression)
        fits.HDUList([fits.PrimaryHDU(), tiled]).writeto(path)

    tiled = rewrite(night, tmp_path / "tiled", compress, ".fits.fz")
    reduce(tiled, tmp_path / "out", capsys)
    assert_same_products(tmp_path / "out", night)


def test_keywords_in_the_primary_header_with_inherit(night, tmp_path, capsys):
    def split(header, data, path):
        image = fits.ImageHDU(data, fits.Header({"INHERIT": True, "EXTNAME": "SCI"}))
        fits.HDUList([fits.PrimaryHDU(header=header), image]).writeto(path)

    split_night = rewrite(night, tmp_path / "mef", split)
    with fits.open(next(split_night.iterdir())) as hdus:
        assert "IMAGETYP" in hdus[0].header and "IMAGETYP" not in hdus[1].header
    reduce(split_night, tmp_path / "out", capsys)
    assert_same_products(tmp_path / "out", night)


def test_keywords_in_the_primary_header_without_inherit_said_once(night, tmp_path, capsys):
    primary_night = rewrite(night, tmp_path / "mef", _primary)
    err = reduce(primary_night, tmp_path / "out", capsys)
    n_files = len(list(primary_night.iterdir()))
    assert [line for line in err.splitlines() if "INHERIT" in line] == [
        "ccdred: warning: no frame-type keyword in the image extension, nor INHERIT: the "
        f"primary header's keywords read as well: extension 1 in "
        f"{primary_night / 'demo_0001.fits'} and {n_files - 1} other files"]
    assert_same_products(tmp_path / "out", night)


def test_frame_types_from_obstype_said_once(night, tmp_path, capsys):
    def lco(header, data, path):
        header["OBSTYPE"] = LCO_TYPES[header.pop("IMAGETYP")]
        fits.PrimaryHDU(data, header).writeto(path)

    lco_night = rewrite(night, tmp_path / "lco", lco)
    err = reduce(lco_night, tmp_path / "out", capsys)
    said = [line for line in err.splitlines() if "OBSTYPE" in line]
    n_files = len(list(lco_night.iterdir()))
    assert said == [f"ccdred: warning: no IMAGETYP keyword, the frame type read from another: "
                    f"OBSTYPE in {lco_night / 'demo_0001.fits'} and {n_files - 1} other files"]
    assert_same_products(tmp_path / "out", night, ("EXPTIME", "FILTER", "NCOMBINE"))
    calibrated = next((tmp_path / "out").glob("*_df.fits"))
    assert fits.getval(calibrated, "OBSTYPE") == "EXPOSE"
    assert fits.getval(next((tmp_path / "out").glob("dark_*.fits")), "IMAGETYP") == "DARK"
    err = reduce(lco_night, tmp_path / "named", capsys, "--keyword-datatype", "OBSTYPE",
                 "--keyword-datatype-object", "EXPOSE")
    assert "OBSTYPE" not in err
    assert_same_products(tmp_path / "named", night, ("EXPTIME", "FILTER", "NCOMBINE"))


def test_placeholder_sections_are_one_line_for_the_night(night, tmp_path, capsys):
    def unknown(header, data, path):
        number = int(path.stem.split("_")[1])
        header["BIASSEC"] = "UNKNOWN" if number % 2 else "N/A"
        header["TRIMSEC"] = "UNKNOWN"
        fits.PrimaryHDU(data, header).writeto(path)

    err = reduce(rewrite(night, tmp_path / "unknown", unknown), tmp_path / "out", capsys)
    said = [line for line in err.splitlines() if "SEC" in line]
    assert len(said) == 1 and said[0].startswith(
        "ccdred: warning: header sections that are placeholders, not used: BIASSEC = 'UNKNOWN' in ")
    assert "BIASSEC = 'N/A' in " in said[0] and "TRIMSEC = 'UNKNOWN' in " in said[0]
    if not (night / "night" / "demo_0001.fits").read_bytes().count(b"BIASSEC"):
        assert_same_products(tmp_path / "out", night)  # no strip to lose: the same night


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "header cut"])
def test_a_damaged_compressed_file_is_named(night, tmp_path, capsys, damage):
    def compress(header, data, path):
        tiled = fits.CompImageHDU(data, header, compression_type="GZIP_1")
        fits.HDUList([fits.PrimaryHDU(), tiled]).writeto(path)

    tiled = rewrite(night, tmp_path / "tiled", compress, ".fits.fz")
    broken = tiled / "demo_0004.fits.fz"  # a dark
    with fits.open(broken) as hdus:
        table = hdus[1].fileinfo()["datLoc"]
        heap = table + hdus[1]._bintable.header["NAXIS1"] * hdus[1]._bintable.header["NAXIS2"]
        end = heap + hdus[1]._bintable.header["PCOUNT"]
    raw = broken.read_bytes()
    if damage == "truncated":
        raw = raw[:heap]
    elif damage == "corrupt":  # every compressed tile
        raw = raw[:heap] + b"Z" * (end - heap) + raw[end:]
    else:  # inside the compressed image's header, right after the primary's
        raw = raw[:2880 + 400]
    broken.write_bytes(raw)
    status = main(["reduce", "-q", "-d", str(tmp_path / "out"), str(tiled)])
    err = capsys.readouterr().err
    expected = {"truncated": "truncated", "corrupt": "cannot read image data",
                "header cut": "truncated or damaged: the extension header at byte 2880 cannot "
                              "be read (file has 3280 bytes)"}[damage]
    assert status == 2 and f"ccdred: error: {broken}: {expected}" in err, err
    assert "WARNING: " not in err  # none of astropy's warnings about the damage
    assert not list(tmp_path.glob("out/*.fits"))


def test_a_compressed_lco_style_night_is_the_same_on_every_runner(night, tmp_path, capsys):
    """Tile-compressed, keywords in the primary header, OBSTYPE for the type: the Dask runner
    writes the plain night's products, and the dashboard's Pipeline makes its masters."""
    from ccdred.pipeline import Pipeline

    def lco(header, data, path):
        primary = header.copy()
        primary["OBSTYPE"] = LCO_TYPES[primary.pop("IMAGETYP")]
        tiled = fits.CompImageHDU(data, fits.Header({"INHERIT": True}),
                                  compression_type="RICE_1")
        fits.HDUList([fits.PrimaryHDU(header=primary), tiled]).writeto(path)

    lco_night = rewrite(night, tmp_path / "lco", lco, ".fits.fz")
    reduce(lco_night, tmp_path / "out", capsys, "--workers", 1)
    assert_same_products(tmp_path / "out", night, keys=("EXPTIME", "FILTER", "NCOMBINE"))
    pipeline = Pipeline(night=str(lco_night))
    for name in pipeline.plan.masters:
        written = fits.getdata(night / "out" / name)
        np.testing.assert_array_equal(pipeline.master(name).data.astype(written.dtype), written,
                                      err_msg=name)


def _inherit(header, data, path):
    image = fits.ImageHDU(data, fits.Header({"INHERIT": True, "EXTNAME": "SCI"}))
    fits.HDUList([fits.PrimaryHDU(header=header), image]).writeto(path)


def _primary(header, data, path):
    """Keywords in the primary header, the image in an extension without INHERIT."""
    fits.HDUList([fits.PrimaryHDU(header=header), fits.ImageHDU(data)]).writeto(path)


def _obstype(header, data, path):
    header["OBSTYPE"] = LCO_TYPES[header.pop("IMAGETYP")]
    fits.PrimaryHDU(data, header).writeto(path)


def _compressed(header, data, path):
    tiled = fits.CompImageHDU(data, header, compression_type="RICE_1")
    fits.HDUList([fits.PrimaryHDU(), tiled]).writeto(path)


def _placeholders(header, data, path):
    header["BIASSEC"] = header["TRIMSEC"] = "UNKNOWN"
    fits.PrimaryHDU(data, header).writeto(path)


#: Each way of writing a night, and the suffix of its files.
WRITERS = {"inherit": (_inherit, ".fits"), "primary": (_primary, ".fits"),
           "obstype": (_obstype, ".fits"),
           "compressed": (_compressed, ".fits.fz"), "placeholders": (_placeholders, ".fits")}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_every_runner_makes_the_command_line_s_products(night, tmp_path, capsys, client, kind):
    """The Dask runner writes the command line's products byte for byte; the dashboard's
    Pipeline makes its masters and calibrated frames."""
    from ccdred.cluster import reduce_nights_on_cluster

    write, suffix = WRITERS[kind]
    raw = rewrite(night, tmp_path / kind, write, suffix)
    reduce(raw, tmp_path / "cli", capsys)
    reduce_nights_on_cluster([([raw], tmp_path / "dask")], client)
    written = {p.name: fits.getdata(p) for p in sorted((tmp_path / "cli").glob("*.fits"))}
    assert sorted(written) == sorted(p.name for p in (tmp_path / "dask").glob("*.fits")) != []
    for name, data in written.items():
        assert fits.getdata(tmp_path / "dask" / name).tobytes() == data.tobytes(), name
    MASTERS.clear()
    pipeline = Pipeline(night=str(raw))
    for name in pipeline.plan.masters:
        master = steps.as_written(pipeline.master(name).data, "float32")
        assert master.tobytes() == written[name].astype(master.dtype).tobytes(), name
    for step in pipeline.plan.calibrations:
        calibrated = pipeline.calibrated(step.frame.path.name).astype(np.float32)
        np.testing.assert_array_equal(calibrated, written[f"{step.frame.name}_df.fits"])


def test_row_blocks_of_compressed_frames_change_no_product(night, tmp_path, capsys):
    """A memory budget of a few rows: each row block decompresses its own tiles (the
    section path), the products are those of whole images."""
    from ccdred.night import reduce_night

    write, suffix = WRITERS["compressed"]
    raw = rewrite(night, tmp_path / "compressed", write, suffix)
    reduce(raw, tmp_path / "whole", capsys)
    blocks = reduce_night([raw], tmp_path / "blocks", memory_budget=4_000)
    assert blocks.products
    for path in sorted((tmp_path / "whole").glob("*.fits")):
        assert (fits.getdata(tmp_path / "blocks" / path.name).tobytes()
                == fits.getdata(path).tobytes()), path.name
