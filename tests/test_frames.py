import gzip
import shutil

import numpy as np
import pytest
from astropy.io import fits

from ccdred.errors import InputError, InputProblem
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
    bad = [key for key in cards if key in notes[0].message] if notes else []
    assert ((overscan, trim) != ("none", "none") or bad == ["BIASSEC"]
            or "DATASEC" in notes[1].message)


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
    ("notype.fits", None, {"EXPTIME": 1.0},
     r"no IMAGETYP keyword \(nor OBSTYPE, FRAMETYP\): cannot tell bias, dark, flat or object"),
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


@pytest.mark.parametrize("n_files", [3, 4, 38])
def test_a_problem_of_many_files_is_said_once_naming_the_first(tmp_path, write_fits, n_files):
    """A night whose frames are all refused alike is one line (the first file and how many
    others), not one per file; up to three files, each is named."""
    from ccdred.frames import PROBLEM_GROUP

    cards = {k: v for k, v in LIGHT.items() if k != "IMAGETYP"}
    paths = [write_fits(f"f{i:02d}.fits", **cards) for i in range(n_files)]
    write_fits("good.fits", **LIGHT)
    (tmp_path / "fake.fits").write_text("SIMPLE? no, this is text")
    problems = scan([tmp_path]).problems
    missing = [p for p in problems if p.message.startswith("no IMAGETYP keyword")]
    assert [p for p in problems if p not in missing] == [
        InputProblem(tmp_path / "fake.fits", "not a FITS file")]
    if n_files <= PROBLEM_GROUP:
        assert [p.path for p in missing] == paths
    else:
        assert [p.path for p in missing] == [paths[0]]
        assert missing[0].message.endswith(f" (and {n_files - 1} other files)")


def test_custom_keywords(write_fits):
    path = write_fits("a.fits", TYPE="sci", ITIME=5.0, FILT="B")
    frame = read_frame(path, Keywords(imagetyp="TYPE", exptime="ITIME", filter="FILT",
                                      object=("SCI",)))
    assert (frame.frame_type, frame.exptime, frame.filter) == ("object", 5.0, "B")


def test_unknown_frame_types_are_kept_but_not_used_and_said_once(tmp_path, write_fits):
    for i in range(3):
        write_fits(f"focus{i}.fits", IMAGETYP="FOCUS", EXPTIME=1.0)
    write_fits("arc.fits", IMAGETYP="ARC", EXPTIME=1.0)
    write_fits("bias.fits", IMAGETYP="BIAS", EXPTIME=0.0)
    catalogue = scan([tmp_path])
    assert [f.frame_type for f in catalogue.frames] == [None, "bias", None, None, None]
    assert not catalogue.problems
    assert catalogue.notes == (
        f"frames of an unknown type, not used: IMAGETYP = 'ARC' in {tmp_path / 'arc.fits'}; "
        f"IMAGETYP = 'FOCUS' in {tmp_path / 'focus0.fits'} and 2 other files",)
    ignored = scan([tmp_path], Keywords(frame_types=(("focus*", "ignore"),)))
    assert ignored.notes == (
        f"frames of an unknown type, not used: IMAGETYP = 'ARC' in {tmp_path / 'arc.fits'}",)


@pytest.mark.parametrize("cards,expected", [
    ({"OBSTYPE": "EXPOSE"}, ("object", "OBSTYPE", "EXPOSE")),
    ({"OBSTYPE": "SKYFLAT"}, ("flat", "OBSTYPE", "SKYFLAT")),
    ({"FRAMETYP": "zero"}, ("bias", "FRAMETYP", "zero")),
    ({"IMAGETYP": " ", "OBSTYPE": "LAMPFLAT"}, ("flat", "OBSTYPE", "LAMPFLAT")),
    ({"IMAGETYP": "DARK", "OBSTYPE": "BIAS"}, ("dark", "IMAGETYP", "DARK")),
    ({"IMAGETYP": " "}, (None, "IMAGETYP", "")),
])
def test_frame_type_from_the_first_frame_type_keyword_present(write_fits, cards, expected):
    path = write_fits("f.fits", EXPTIME=1.0, FILTER="V", **cards)
    notes = []
    frame = read_frame(path, note=notes.append)
    assert (frame.frame_type, frame.type_keyword, frame.imagetyp) == expected
    fell_back = expected[1] != "IMAGETYP"
    assert [n.message for n in notes] == ([expected[1]] if fell_back else [])


def test_configured_frame_type_keyword_comes_first(write_fits):
    path = write_fits("f.fits", EXPTIME=1.0, IMAGETYP="LIGHT", OBSTYPE="DARK")
    assert read_frame(path, Keywords(imagetyp="OBSTYPE")).frame_type == "dark"
    path = write_fits("g.fits", EXPTIME=1.0, IMAGETYP="DARK")
    assert read_frame(path, Keywords(imagetyp="OBSTYPE")).frame_type == "dark"


def test_a_fallback_frame_type_keyword_is_said_once_per_night(tmp_path, write_fits):
    for i, value in enumerate(["BIAS", "DARK", "DARK", "EXPOSE"]):
        write_fits(f"f{i}.fits", OBSTYPE=value, EXPTIME=1.0, FILTER="V")
    write_fits("g.fits", IMAGETYP="BIAS", EXPTIME=0.0)
    catalogue = scan([tmp_path])
    assert not catalogue.problems
    assert [f.frame_type for f in catalogue.frames] == ["bias", "dark", "dark", "object", "bias"]
    assert catalogue.notes == (f"no IMAGETYP keyword, the frame type read from another: OBSTYPE in "
                               f"{tmp_path / 'f0.fits'} and 3 other files",)


def test_unknown_fallback_value_names_its_keyword(write_fits):
    path = write_fits("arc.fits", OBSTYPE="ARC", EXPTIME=1.0)
    catalogue = scan([path])
    assert catalogue.frames[0].frame_type is None
    assert f"OBSTYPE = 'ARC' in {path}" in catalogue.notes[-1]


@pytest.mark.parametrize("placeholder", ["UNKNOWN", "unknown", "N/A", "", "NONE"])
def test_placeholder_sections_are_one_line_for_the_night(tmp_path, write_fits, placeholder):
    for i in range(4):
        write_fits(f"f{i}.fits", IMAGETYP="DARK", EXPTIME=1.0, BIASSEC=placeholder,
                   TRIMSEC="UNKNOWN", DATASEC="[2:9,3:7]")
    catalogue = scan([tmp_path])
    assert not catalogue.problems
    assert {f.preprocess.describe()["overscan"] for f in catalogue.frames} == {"none"}
    assert {f.preprocess.describe()["trim"] for f in catalogue.frames} == {"[2:9,3:7]"}
    first = tmp_path / "f0.fits"
    assert catalogue.notes == (
        "header sections that are placeholders, not used: "
        f"BIASSEC = {placeholder!r} in {first} and 3 other files; "
        f"TRIMSEC = 'UNKNOWN' in {first} and 3 other files",)


def test_malformed_sections_are_still_said_per_value(tmp_path, write_fits):
    for i in range(3):
        write_fits(f"f{i}.fits", IMAGETYP="DARK", EXPTIME=1.0, BIASSEC="[0,9:0,9]")
    (note,) = scan([tmp_path]).notes
    assert note.startswith(f"{tmp_path / 'f0.fits'}: BIASSEC = '[0,9:0,9]' not used: ")
    assert note.endswith("(and 2 other files)")


def test_inherit_gives_the_extension_the_primary_keywords(tmp_path):
    primary = fits.PrimaryHDU(header=fits.Header({"OBSTYPE": "SKYFLAT", "FILTER": "rp",
                                                  "EXPTIME": 5.0, "OBJECT": "flat"}))
    image = fits.ImageHDU(np.arange(80, dtype=np.uint16).reshape(8, 10),
                          fits.Header({"INHERIT": True, "EXPTIME": 7.0}))
    fits.HDUList([primary, image]).writeto(tmp_path / "mef.fits")
    frame = read_frame(tmp_path / "mef.fits")
    assert (frame.hdu, frame.frame_type, frame.filter, frame.exptime) == (1, "flat", "rp", 7.0)
    assert frame.header()["OBJECT"] == "flat" and "INHERIT" not in frame.header()
    np.testing.assert_array_equal(frame.read(), image.data)


def test_with_inherit_false_the_extension_header_stands_alone(tmp_path):
    primary = fits.PrimaryHDU(header=fits.Header({"IMAGETYP": "DARK", "EXPTIME": 5.0}))
    image = fits.ImageHDU(np.zeros((8, 10), np.uint16), fits.Header({"INHERIT": False}))
    fits.HDUList([primary, image]).writeto(tmp_path / "mef.fits")
    with pytest.raises(InputError, match=r"mef\.fits: no IMAGETYP keyword .* apart \(the primary "
                                         r"header has one, but extension 1 says INHERIT = F\)"):
        read_frame(tmp_path / "mef.fits")


def test_without_inherit_the_frame_type_in_the_primary_header_alone_is_read(tmp_path):
    """The primary header's keywords are read as well (the extension's own winning),
    said once for the night; an extension with a frame-type keyword stands alone."""
    primary = fits.PrimaryHDU(header=fits.Header({"IMAGETYP": "DARK", "EXPTIME": 5.0,
                                                  "INSTRUME": "cam"}))
    for name, own in (("a.fits", {}), ("b.fits", {"EXPTIME": 7.0}),
                      ("c.fits", {"OBSTYPE": "BIAS"})):
        image = fits.ImageHDU(np.zeros((8, 10), np.uint16), fits.Header(own))
        fits.HDUList([primary, image]).writeto(tmp_path / name)
    catalogue = scan([tmp_path])
    assert [(f.frame_type, f.exptime, f.primary_cards) for f in catalogue.frames] == [
        ("dark", 5.0, True), ("dark", 7.0, True), ("bias", 0.0, False)]
    assert catalogue.frames[0].header()["INSTRUME"] == "cam"
    assert "INSTRUME" not in catalogue.frames[2].header()
    assert catalogue.notes[0] == (
        "no frame-type keyword in the image extension, nor INHERIT: the primary header's "
        f"keywords read as well: extension 1 in {tmp_path / 'a.fits'} and 1 other files")


@pytest.mark.parametrize("compression", ["RICE_1", "GZIP_1", "GZIP_2"])
def test_tile_compressed_frames_are_scanned_and_read(tmp_path, rng, compression):
    data = rng.integers(0, 65535, (9, 13)).astype(np.uint16)
    header = fits.Header({"IMAGETYP": "LIGHT", "EXPTIME": 3.0, "FILTER": "V",
                          "BIASSEC": "[12:13,1:9]", "TRIMSEC": "[1:11,2:9]"})
    fits.PrimaryHDU(data, header).writeto(tmp_path / "plain.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header, compression_type=compression)]
                 ).writeto(tmp_path / "tiled.fits.fz")
    catalogue = scan([tmp_path])
    assert [f.path.name for f in catalogue.frames] == ["plain.fits", "tiled.fits.fz"]
    plain, tiled = catalogue.frames
    assert (tiled.name, tiled.hdu, tiled.frame_type) == ("tiled", 1, "object")
    assert tiled.dtype == plain.dtype == "float32"  # overscan-corrected
    assert tiled.preprocess == plain.preprocess and tiled.shape == plain.shape == (8, 11)
    np.testing.assert_array_equal(tiled.read(), plain.read())
    np.testing.assert_array_equal(tiled.read(rows=slice(2, 5)), plain.read(rows=slice(2, 5)))
