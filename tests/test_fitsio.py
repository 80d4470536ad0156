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
