"""FITS input and output: the reader against astropy, the writer atomic and checksummed."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from ccdred import fitsio
from ccdred.errors import InputError
from ccdred.fitsio import read_image


def test_read_rows_from_plain_and_gzip_files(tmp_path):
    data = np.arange(60, dtype=np.uint16).reshape(6, 10)
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits.gz")
    for name in ("a.fits", "a.fits.gz"):
        np.testing.assert_array_equal(read_image(tmp_path / name, rows=slice(2, 4)), data[2:4])


@pytest.mark.parametrize("dtype,bzero", [(np.int16, 32768), (np.int16, 0), (np.int32, 0),
                                         (np.float32, 0)])
def test_read_image_equals_astropy(tmp_path, rng, dtype, bzero):
    values = rng.integers(0, 30000, (6, 10))
    hdu = fits.PrimaryHDU((values - bzero).astype(dtype))
    if bzero:
        hdu.header["BZERO"] = bzero
    hdu.writeto(tmp_path / "a.fits")
    expected = fits.getdata(tmp_path / "a.fits")
    for rows in (None, slice(1, 3)):
        actual = read_image(tmp_path / "a.fits", rows=rows)
        np.testing.assert_array_equal(actual, expected if rows is None else expected[rows])
        assert actual.dtype == expected.dtype.newbyteorder("=") and actual.dtype.isnative


def test_raw_frames_written_as_cameras_write_them(tmp_path, rng):
    data = rng.integers(0, 65535, (5, 7)).astype(np.uint16)
    path = fitsio.write_raw_frame(tmp_path / "raw.fits", data, {"IMAGETYP": "DARK", "EXPTIME": 2.0})
    header = fits.getheader(path)
    assert header["BITPIX"] == 16 and header["BZERO"] == 32768 and header["IMAGETYP"] == "DARK"
    np.testing.assert_array_equal(read_image(path), data)
    assert read_image(path).dtype == np.uint16


def test_products_are_written_atomically_with_checksums(tmp_path, rng):
    data = rng.normal(size=(4, 6))
    header = fitsio.add_provenance(fits.Header({"OBJECT": "M67"}), step="flat_fielded",
                                   inputs=["a.fits"], options={"threshold": 2.5, "lower": None},
                                   version="9.9.9", history=["subtracted dark_00001000.fits"])
    path = fitsio.write_image(tmp_path / "p.fits", data, header)
    assert [p.name for p in tmp_path.iterdir()] == ["p.fits"]  # no temporary file left
    with fits.open(path) as hdus:
        assert hdus[0].verify_checksum() == 1 and hdus[0].verify_datasum() == 1
        assert hdus[0].data.dtype == np.dtype(">f4")
        np.testing.assert_allclose(hdus[0].data, data.astype(np.float32))
        written = hdus[0].header
    assert written["OBJECT"] == "M67" and written["HIERARCH CCDRED THRESHOLD"] == 2.5
    assert "HIERARCH CCDRED LOWER" not in written and "NCOMBINE" not in written
    assert "subtracted dark_00001000.fits" in str(written["HISTORY"])
    digest = fitsio.product_digest("flat_fielded", ["a.fits"], {"threshold": 2.5, "lower": None},
                                   "9.9.9")
    assert fitsio.is_current_product(path, digest)
    assert not fitsio.is_current_product(path, digest[::-1])
    with pytest.raises(InputError, match="exists; refusing to overwrite it"):
        fitsio.write_image(path, data, header)


def test_a_tampered_product_is_not_current(tmp_path):
    header = fitsio.add_provenance(fits.Header(), step="master_dark", inputs=["a.fits", "b.fits"],
                                   options={}, version="1")
    assert header["NCOMBINE"] == 2
    path = fitsio.write_image(tmp_path / "d.fits", np.zeros((3, 3)), header)
    digest = header["HIERARCH CCDRED DIGEST"]
    assert fitsio.is_current_product(path, digest)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF  # one byte of the data
    path.write_bytes(bytes(raw))
    assert not fitsio.is_current_product(path, digest)


def test_a_16bit_frame_read_as_another_type(tmp_path, rng):
    data = rng.integers(0, 65535, (5, 7)).astype(np.uint16)
    path = fitsio.write_raw_frame(tmp_path / "raw.fits", data, {})
    actual = read_image(path, dtype=np.float32)
    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, data)


@pytest.mark.parametrize("compression", ["RICE_1", "GZIP_1", "GZIP_2", "HCOMPRESS_1"])
@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int32])
def test_tile_compressed_images_read_as_the_uncompressed_ones(tmp_path, rng, compression, dtype):
    data = rng.integers(0, 30000, (12, 13)).astype(dtype)
    fits.PrimaryHDU(data).writeto(tmp_path / "plain.fits")
    tiled = fits.CompImageHDU(data, compression_type=compression, tile_shape=(4, 13))
    fits.HDUList([fits.PrimaryHDU(), tiled]).writeto(tmp_path / "tiled.fits.fz")
    index, header = fitsio.find_image_hdu(tmp_path / "tiled.fits.fz")
    assert index == 1 and fitsio.image_dtype(header) == np.dtype(dtype)
    for rows in (None, slice(2, 7)):
        expected = read_image(tmp_path / "plain.fits", rows=rows)
        actual = read_image(tmp_path / "tiled.fits.fz", index, rows=rows)
        np.testing.assert_array_equal(actual, expected)
        assert actual.dtype == expected.dtype == np.dtype(dtype)
    for out_dtype in (dtype, np.float32):
        out = np.zeros(data.shape, out_dtype)
        assert read_image(tmp_path / "tiled.fits.fz", index, out=out) is out
        np.testing.assert_array_equal(out, data)


def test_an_extension_inherits_the_primary_cards_when_it_says_so(tmp_path):
    primary = fits.Header({"OBSTYPE": "BIAS", "FILTER": "V", "BZERO": 100})
    primary.add_history("from the primary")
    own = fits.Header({"INHERIT": True, "FILTER": "R", "EXTNAME": "SCI"})
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(data, own)]
                 ).writeto(tmp_path / "mef.fits")
    index, header = fitsio.find_image_hdu(tmp_path / "mef.fits")
    assert index == 1 and header["OBSTYPE"] == "BIAS" and header["FILTER"] == "R"
    assert header["EXTNAME"] == "SCI" and header["BITPIX"] == -32 and header["NAXIS1"] == 3
    assert "BZERO" not in header and "INHERIT" not in header and "SIMPLE" not in header
    assert list(header["HISTORY"]) == ["from the primary"]
    np.testing.assert_array_equal(read_image(tmp_path / "mef.fits", index), data)
    own["INHERIT"] = False
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(data, own)]
                 ).writeto(tmp_path / "alone.fits")
    assert "OBSTYPE" not in fitsio.find_image_hdu(tmp_path / "alone.fits")[1]
