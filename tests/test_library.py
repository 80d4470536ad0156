"""The calibration library: a night without its own calibrations takes masters of earlier nights."""

from __future__ import annotations

import datetime
import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdred import fitsio
from ccdred.cli import main
from ccdred.demo import NightSpec, make_night
from ccdred.errors import InputError
from ccdred.frames import scan
from ccdred.library import INDEX, Setup, add_to_library, open_library, setup_of
from ccdred.pipeline import Pipeline
from ccdred.plan import PlanOptions, build_plan

#: The course demo night, small.
SPEC = NightSpec(shape=(40, 56), seed=30)


def reduce(*args) -> int:
    return main(["reduce", "-q", *map(str, args)])


def copy_frames(paths, folder: Path, kinds, days: float = 0.0) -> Path:
    """The frames of ``kinds`` (IMAGETYP values) copied into ``folder``, DATE-OBS moved by
    ``days``."""
    folder.mkdir()
    for path in paths:
        header = fits.getheader(path)
        if header["IMAGETYP"] in kinds:
            copy = Path(shutil.copy(path, folder))
            taken = datetime.datetime.fromisoformat(header["DATE-OBS"])
            fits.setval(copy, "DATE-OBS", value=(taken + datetime.timedelta(days=days)).isoformat())
    return folder


def df_products(folder: Path) -> dict:
    return {p.name: fits.getdata(p) for p in sorted(folder.glob("*_df.fits"))}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The demo night reduced whole with ``--add-to-library``; its frames; the library."""
    root = tmp_path_factory.mktemp("library")
    paths = make_night(root / "night", SPEC)
    assert reduce("-d", root / "whole", "--library", root / "lib", "--add-to-library",
                  root / "night") == 0
    return paths, root / "whole", root / "lib"


@pytest.fixture(scope="module")
def objects(course, tmp_path_factory):
    """A folder holding only the night's object frames."""
    return copy_frames(course[0], tmp_path_factory.mktemp("objects") / "night", {"LIGHT"})


def test_adding_a_night_indexes_its_masters(course):
    _, whole, lib = course
    library = open_library(lib)
    assert sorted(e.kind for e in library.entries) == ["dark"] * 3 + ["flat"] * 2
    assert {e.filter for e in library.entries} == {None, *SPEC.filters}
    assert all(e.setup == Setup("ccdred demo camera", SPEC.shape) for e in library.entries)
    for product in [*whole.glob("dark_*.fits"), *whole.glob("flat_*.fits")]:
        copy, = lib.glob(f"20210214T*_ccdred_demo_camera_{product.name}")
        assert copy.read_bytes() == product.read_bytes()  # provenance and checksum kept


def test_objects_alone_reduce_with_the_library_to_the_whole_nights_products(course, objects,
                                                                            tmp_path):
    _, whole, lib = course
    before = {p.name: p.read_bytes() for p in lib.iterdir()}
    assert reduce("-d", tmp_path / "out", "--library", lib, objects) == 0
    assert {p.name: p.read_bytes() for p in lib.iterdir()} == before  # read, never changed
    got, want = df_products(tmp_path / "out"), df_products(whole)
    assert got.keys() == want.keys() and got
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name
    # the library masters are not the night's products; each product names those it used
    assert not list((tmp_path / "out").glob("dark_*")) + list((tmp_path / "out").glob("flat_*"))
    history = str(fits.getheader(tmp_path / "out" / next(iter(got)))["HISTORY"])
    assert "library master" in history and str(lib) in history.replace("\n", "")
    assert "days before the night" in history


def test_a_real_shaped_night_takes_the_library_bias_and_dark_current(tmp_path):
    paths = make_night(tmp_path / "night", NightSpec.real(shape=(40, 56), seed=31))
    assert reduce("-d", tmp_path / "whole", "--library", tmp_path / "lib", "--add-to-library",
                  tmp_path / "night") == 0
    objects = copy_frames(paths, tmp_path / "objects", {"LIGHT"})
    assert reduce("-d", tmp_path / "out", "--library", tmp_path / "lib", objects) == 0
    got, want = df_products(tmp_path / "out"), df_products(tmp_path / "whole")
    assert got.keys() == want.keys() and got
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name
    header = fits.getheader(tmp_path / "out" / next(iter(got)))
    assert header["HIERARCH CCDRED DARK_MODEL"] == "scaled"
    assert "_bias.fits: library master" in str(header["HISTORY"]).replace("\n", "")


def test_a_library_master_is_shown_but_not_inspected(course, objects):
    _, whole, lib = course
    pipeline = Pipeline(night=str(objects), library=str(lib))
    name = pipeline.calibration
    assert pipeline.plan.masters[name].library is not None
    dark = pipeline.master_dark()
    assert dark.data.tobytes() == fits.getdata(lib / name).astype(np.float32).tobytes()
    with pytest.raises(InputError, match="is a library master: its frames are not in this night"):
        pipeline.pixel_stack("dark", 3, 4)
    from ccdred import plots

    for inspect in ("dark", "flat"):  # what the Clipping and Explore tabs ask: said, not crashed
        pipeline.inspect = inspect
        for shown in (pipeline.shown_pixel, pipeline.shown_sweep,
                      lambda: pipeline.sample_counts(inspect)):
            with pytest.raises(InputError, match="is a library master"):
                shown()
    for plot, shown in ((plots.dark_clip_map, pipeline.shown_dark),
                        (plots.flat_clip_map, pipeline.shown_flat),
                        (lambda s: plots.flat_rejections(s, []), pipeline.shown_flat)):
        with pytest.raises(InputError, match="read from the calibration library"):
            plot(shown())


def test_the_plan_reads_library_masters_instead_of_combining_them(course, objects):
    _, _, lib = course
    plan = build_plan(scan([objects]), PlanOptions(library=open_library(lib)))
    assert not plan.problems and plan.masters
    assert all(m.library is not None and m.frames == () for m in plan.masters.values())
    assert plan.made == [] and all(name.endswith("_df.fits") or name.endswith("_d.fits")
                                   for name in plan.product_names())
    assert plan.models() == {"exact": SPEC.n_objects * len(SPEC.filters)}
    # without the library the same night has no flats: the plan says so
    assert any("no flat for filter" in str(p) for p in build_plan(scan([objects])).problems)


def test_the_dask_runner_gives_the_same_products(course, objects, tmp_path):
    pytest.importorskip("distributed")
    _, whole, lib = course
    assert reduce("--workers", "1", "-d", tmp_path / "out", "--library", lib, objects) == 0
    got, want = df_products(tmp_path / "out"), df_products(whole)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


def test_the_pipeline_calibrates_with_the_library_as_the_night_does(course, objects):
    _, whole, lib = course
    pipeline = Pipeline(night=str(objects), library=str(lib))
    for step in pipeline.plan.calibrations:
        calibrated = fitsio.storage_dtype("float32").type(pipeline.calibrated(step.frame.path.name))
        want = fits.getdata(whole / f"{step.frame.name}_df.fits")
        np.testing.assert_array_equal(calibrated, want, err_msg=step.frame.name)
    gets = {row["file"]: row["gets"] for row in pipeline.frame_levels()}
    assert all("(library, " in gets[step.frame.path.name] for step in pipeline.plan.calibrations)


def test_the_plan_shows_the_library_masters_and_writes_nothing(course, objects, tmp_path, capsys):
    _, _, lib = course
    assert reduce("--plan", "-d", tmp_path / "out", "--library", lib, objects) == 0
    shown = capsys.readouterr().out
    assert "master flat V (library)" in shown and "days before the night" in shown
    assert "demo_" in shown and "(library, 0.0" in shown
    assert not (tmp_path / "out").exists()


def test_a_master_older_than_the_max_age_is_not_used(course, tmp_path, capsys):
    paths, _, lib = course
    later = copy_frames(paths, tmp_path / "later", {"LIGHT"}, days=40)
    status = reduce("-d", tmp_path / "out", "--library", lib, "--library-max-age", 10, later)
    err = capsys.readouterr().err
    assert status == 2
    assert "no bias or dark frames; library: " in err
    assert "dark_00030000.fits is 40.0 days from this night (--library-max-age 10)" in err
    assert "no flat for filter 'V'" in err and "flat_V.fits is 40.0 days" in err
    assert not (tmp_path / "out").exists()
    assert reduce("-d", tmp_path / "out", "--library", lib, "--library-max-age", 41, later) == 0


def test_the_nights_own_frames_win(course, tmp_path):
    paths, whole, lib = course
    # a library whose flats are not the night's: every pixel twice as sensitive
    other = tmp_path / "other-lib"
    shutil.copytree(lib, other)
    for flat in other.glob("*flat_*.fits"):
        with fits.open(flat, mode="update") as hdus:
            hdus[0].data = hdus[0].data * np.float32(2)
    with_flats = copy_frames(paths, tmp_path / "with-flats", {"LIGHT", "FLAT"})
    assert reduce("-d", tmp_path / "out", "--library", other, with_flats) == 0
    got, want = df_products(tmp_path / "out"), df_products(whole)
    for name in want:  # its own flats (the darks from the library): the whole night's products
        assert got[name].tobytes() == want[name].tobytes(), name
    assert (tmp_path / "out" / "flat_V.fits").exists()
    assert not list((tmp_path / "out").glob("dark_*"))


def _add_repeatedly(library, products, times):
    for _ in range(times):
        add_to_library(library, products)


def test_two_adds_at_once_keep_both_nights(course, tmp_path):
    _, whole, _ = course
    nights = []
    for i, days in enumerate((0, 3)):  # a second night, three days later
        folder = tmp_path / f"night-{i}"
        folder.mkdir()
        for product in sorted([*whole.glob("dark_*.fits"), *whole.glob("flat_*.fits")]):
            copy = Path(shutil.copy(product, folder))
            taken = datetime.datetime.fromisoformat(fits.getval(copy, "DATE-OBS"))
            fits.setval(copy, "DATE-OBS", value=(taken + datetime.timedelta(days=days)).isoformat())
        nights.append(sorted(folder.glob("*.fits")))
    library = tmp_path / "lib"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_repeatedly, args=(library, night, 6)) for night in nights]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    index = json.loads((library / INDEX).read_text())
    assert len(index["masters"]) == 2 * len(nights[0]) == len(list(library.glob("*.fits")))
    assert {e["date_obs"][:10] for e in index["masters"]} == {"2021-02-14", "2021-02-17"}
    assert not list(library.glob(".*.part"))
    indexed = open_library(library).entries
    (library / INDEX).unlink()  # the index is a cache of the headers: rebuilt the same
    assert open_library(library).entries == indexed
    (library / INDEX).write_text("{not json")
    assert open_library(library).entries == indexed


@pytest.mark.parametrize("change", ["instrument", "shape", "filter", "binning"])
def test_a_master_of_another_setup_is_not_used(course, change):
    _, _, lib = course
    library = open_library(lib)
    when = datetime.datetime(2021, 2, 14, 12)
    setup = Setup("ccdred demo camera", SPEC.shape)
    setup = {"instrument": Setup("another camera", SPEC.shape),
             "shape": Setup("ccdred demo camera", (40, 57)),
             "binning": Setup("ccdred demo camera", SPEC.shape, binning="2x2")}.get(change, setup)
    found, _ = library.nearest("flat", setup, when, filter="B" if change == "filter" else "V")
    assert found is None
    found, _ = library.nearest("flat", Setup("ccdred demo camera", SPEC.shape), when, filter="V")
    assert found is not None and found.path.name.endswith("flat_V.fits")


def test_another_instruments_library_leaves_the_night_unreduced(course, objects, tmp_path, capsys):
    _, _, lib = course
    other = tmp_path / "other-lib"
    shutil.copytree(lib, other)
    (other / INDEX).unlink()
    for master in other.glob("*.fits"):
        fits.setval(master, "INSTRUME", value="another camera")
    assert reduce("-d", tmp_path / "out", "--library", other, objects) == 2
    assert "no flat for filter 'V'" in capsys.readouterr().err


def test_the_nearest_master_in_time_is_taken(course, tmp_path):
    _, whole, _ = course
    library = tmp_path / "lib"
    for days in (-5, 2, 9):
        copy = Path(shutil.copy(whole / "flat_V.fits", tmp_path / "flat_V.fits"))
        fits.setval(copy, "DATE-OBS", value=(datetime.datetime(2021, 2, 14, 11)
                                             + datetime.timedelta(days=days)).isoformat())
        add_to_library(library, [copy])
    found, _ = open_library(library).nearest("flat", Setup("ccdred demo camera", SPEC.shape),
                                             datetime.datetime(2021, 2, 17), filter="V")
    assert found.path.name.startswith("20210216T") and found.age == pytest.approx(13 / 24)


@pytest.mark.parametrize(("cards", "binning", "readout"), [
    ({}, None, None),
    ({"XBINNING": 2, "YBINNING": 2, "CCDSUM": "1 1"}, "2x2", None),
    ({"CCDSUM": "2 1", "READOUTM": "Fast "}, "2x1", "Fast"),
])
def test_the_setup_names_binning_and_readout_where_the_header_says_them(cards, binning, readout):
    header = fits.Header({"INSTRUME": "cam ", **cards})
    assert setup_of(header, (4, 6)) == Setup("cam", (4, 6), binning, readout)


def test_a_night_s_own_filter_keyword_reaches_the_library(tmp_path):
    """Masters say what the library matches them on (CCDRED FILTER, EXPTIME), so a night read
    with --keyword-filter WHEEL2 adds flats a later night of that camera finds."""
    paths = make_night(tmp_path / "raw", SPEC)
    for path in paths:
        with fits.open(path, mode="update") as hdus:
            header = hdus[0].header
            if "FILTER" in header:
                header["WHEEL2"] = header.pop("FILTER")
                header["FILTER"] = "open"  # a second wheel's: not the one that matters
    options = ("--keyword-filter", "WHEEL2", "--library", tmp_path / "lib")
    assert reduce("-d", tmp_path / "whole", *options, "--add-to-library", tmp_path / "raw") == 0
    assert {e.filter for e in open_library(tmp_path / "lib").entries} == {None, *SPEC.filters}
    objects = copy_frames(paths, tmp_path / "objects", {"LIGHT"})
    assert reduce("-d", tmp_path / "out", *options, objects) == 0
    got, want = df_products(tmp_path / "out"), df_products(tmp_path / "whole")
    assert got.keys() == want.keys() and got
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


def test_a_file_that_is_not_fits_is_refused_by_name(tmp_path):
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"not a FITS file at all" * 200)
    with pytest.raises(InputError, match="broken.fits.*cannot be added to the library"):
        add_to_library(tmp_path / "lib", [broken])
    assert not [p for p in (tmp_path / "lib").glob("*") if not p.name.startswith(".")]
