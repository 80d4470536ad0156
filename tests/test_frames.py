import gzip
import shutil

import numpy as np
import pytest
from astropy.io import fits

from ccdred.errors import InputError
from ccdred.frames import read_frame, scan
from ccdred.keywords import Keywords

from .conftest import SMALL_SPEC

LIGHT = {"IMAGETYP": "LIGHT", "EXPTIME": 30.0, "FILTER": "V"}


def test_scan_demo_night(night_files):
    catalogue = scan([night_files[0].parent])
    spec = SMALL_SPEC
    assert not catalogue.problems
    assert len(catalogue.frames) == len(night_files)
    assert len(catalogue.of_type("dark")) == spec.n_darks * len(spec.dark_exptimes)
    assert catalogue.exptimes == sorted({spec.flat_exptime, *spec.object_exptimes})
    assert catalogue.filters == sorted(spec.filters)
    frame = catalogue.of_type("object")[0]
    assert frame.shape == spec.shape and frame.filter in spec.filters
    assert frame.date_obs.startswith("2021-02-14")
    np.testing.assert_array_equal(frame.read(), fits.getdata(frame.path))


@pytest.mark.parametrize("cards,expected", [
    ({"FILTER": "V"}, "V"),
    ({"INSFLNAM": "JohnsonB"}, "JohnsonB"),
    ({"FILTER": " ", "FILTNAME": "R"}, "R"),
    ({"FILT1": "Ha", "FILTER1": "OIII"}, "OIII"),
])
def test_filter_from_the_first_filter_keyword_present(write_fits, cards, expected):
    path = write_fits("f.fits", IMAGETYP="FLAT", EXPTIME=1.0, **cards)
    assert read_frame(path).filter == expected


def test_frame_type_overrides_go_by_file_name(write_fits):
    flat = write_fits("flat-001.fits", IMAGETYP="Light Frame", EXPTIME=1.0, FILTER="V")
    junk = write_fits("focus-001.fits", IMAGETYP="Light Frame", EXPTIME=1.0, FILTER="V")
    keywords = Keywords(frame_types=(("flat-*", "flat"), ("focus-*", "ignore")))
    assert read_frame(flat, keywords).frame_type == "flat"
    assert read_frame(junk, keywords).frame_type is None
    assert read_frame(flat).frame_type == "object"


@pytest.mark.parametrize("cards,overscan,trim", [
    ({"BIASSEC": "[9:10,1:8]", "TRIMSEC": "[1:8,1:8]"}, "[9:10,1:8]", "[1:8,1:8]"),
    ({"BIASSEC": "[0,513:0,1536]", "DATASEC": "[513,513:1536,1536]"}, "none", "none"),
    ({"DATASEC": "[2:9,3:7]"}, "none", "[2:9,3:7]"),
])
def test_header_sections_used_when_they_fit_the_image(write_fits, cards, overscan, trim):
    path = write_fits("s.fits", IMAGETYP="DARK", EXPTIME=1.0, **cards)
    notes = []
    frame = read_frame(path, note=notes.append)
    assert frame.preprocess.describe()["overscan"] == overscan
    assert frame.preprocess.describe()["trim"] == trim
    bad = [key for key in cards if key in notes[0][1]] if notes else []
    assert (overscan, trim) != ("none", "none") or bad == ["BIASSEC"] or "DATASEC" in notes[1][1]


def test_files_are_recognised_by_content(tmp_path, write_fits):
    plain = write_fits("a.fit", **LIGHT)
    fts = write_fits("b.fts", **LIGHT)
    with open(write_fits("c.fits", **LIGHT), "rb") as src, gzip.open(tmp_path / "c.fits.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (tmp_path / "c.fits").unlink()
    (tmp_path / "notes.txt").write_text("not an image")
    catalogue = scan([tmp_path])
    assert [f.path.name for f in catalogue.frames] == ["a.fit", "b.fts", "c.fits.gz"]
    assert [f.name for f in catalogue.frames] == ["a", "b", "c"]
    assert not catalogue.problems
    assert plain.exists() and fts.exists()


def test_image_in_an_extension(tmp_path):
    header = fits.Header({"IMAGETYP": "DARK", "EXPTIME": 10})
    data = np.arange(80, dtype=np.uint16).reshape(8, 10)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header)]).writeto(tmp_path / "mef.fits")
    frame = read_frame(tmp_path / "mef.fits")
    assert (frame.hdu, frame.frame_type, frame.shape) == (1, "dark", (8, 10))
    np.testing.assert_array_equal(frame.read(), data)


def test_exposure_fallback_and_numeric_string(write_fits):
    frame = read_frame(write_fits("a.fits", IMAGETYP="Dark Frame", EXPOSURE=" 12.5 "))
    assert (frame.frame_type, frame.exptime) == ("dark", 12.5)


def test_same_file_twice_is_used_once(write_fits):
    path = write_fits("a.fits", **LIGHT)
    assert len(scan([path, path, path.parent]).frames) == 1


@pytest.mark.parametrize("name,data,cards,message", [
    ("cube.fits", np.zeros((3, 8, 10), np.uint16), LIGHT, "image has 3 axes"),
    ("notype.fits", None, {"EXPTIME": 1.0}, "no IMAGETYP keyword"),
    ("noexp.fits", None, {"IMAGETYP": "DARK"}, r"no exposure time \(EXPTIME or EXPOSURE\)"),
    ("strexp.fits", None, {"IMAGETYP": "DARK", "EXPTIME": "long"}, "EXPTIME = 'long' is not a number"),
    ("nofilter.fits", None, {"IMAGETYP": "FLAT", "EXPTIME": 1.0}, r"no filter keyword \(FILTER, FILTNAME, INSFLNAM, FILTER1, FILT1\) on a flat"),
])
def test_header_problems_name_the_file(write_fits, name, data, cards, message):
    path = write_fits(name, data, **cards)
    catalogue = scan([path])
    assert [p.path for p in catalogue.problems] == [path]
    with pytest.raises(InputError, match=message):
        catalogue.raise_problems()


def test_every_problem_is_reported_at_once(tmp_path, write_fits):
    (tmp_path / "fake.fits").write_text("SIMPLE? no, this is text")
    (tmp_path / "empty.fits").write_bytes(b"")
    good = write_fits("good.fits", **LIGHT)
    fits_bytes = good.read_bytes()
    (tmp_path / "truncated.fits").write_bytes(fits_bytes[: len(fits_bytes) - 2000])
    write_fits("big.fits", np.zeros((16, 10), np.uint16), **LIGHT)
    write_fits("other.fits", **LIGHT)
    catalogue = scan([tmp_path / n for n in ("fake.fits", "empty.fits", "truncated.fits",
                                             "big.fits", "good.fits", "other.fits", "gone.fits")])
    messages = {p.path.name: p.message for p in catalogue.problems}
    assert messages.pop("fake.fits") == "not a FITS file"
    assert messages.pop("empty.fits") == "not a FITS file"
    assert messages.pop("truncated.fits").startswith("truncated")
    assert messages.pop("big.fits") == "image size 10x16 differs from the night's 10x8 (2 frames)"
    assert messages.pop("gone.fits") == "no such file or folder"
    assert messages == {}


def test_custom_keywords(write_fits):
    path = write_fits("a.fits", TYPE="sci", ITIME=5.0, FILT="B")
    frame = read_frame(path, Keywords(imagetyp="TYPE", exptime="ITIME", filter="FILT",
                                      object=("SCI",)))
    assert (frame.frame_type, frame.exptime, frame.filter) == ("object", 5.0, "B")


def test_unknown_frame_type_is_kept_but_not_used(write_fits, caplog):
    path = write_fits("focus.fits", IMAGETYP="FOCUS", EXPTIME=1.0)
    catalogue = scan([path])
    assert catalogue.frames[0].frame_type is None and not catalogue.problems
    assert "'FOCUS' is not a known frame type" in caplog.text
