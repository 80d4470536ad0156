"""The calibration library: a night without its own calibrations takes masters of earlier nights."""

from __future__ import annotations

import contextlib
import datetime
import json
import multiprocessing
import os
import shutil
import subprocess
from collections import Counter
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
from ccdred.pipeline import MASTERS, Pipeline
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


def test_two_dask_nights_at_once_add_to_one_library(course, client, tmp_path):
    """Two nights (three days apart) reduced at once on one Dask cluster, each by its own
    thread, both adding to one library: every master of both nights is indexed, a copy of
    its product byte for byte, and the index is the one its headers give."""
    import threading

    from ccdred.cluster import reduce_nights_on_cluster
    from ccdred.parameters import ReductionParameters

    paths, _, _ = course
    library = tmp_path / "lib"
    library.mkdir()
    parameters = ReductionParameters(library=str(library), add_to_library=True)
    nights = [copy_frames(paths, tmp_path / f"night-{days}", {"BIAS", "DARK", "FLAT", "LIGHT"},
                          days=days) for days in (0, 3)]
    failures = []

    def run(night):
        try:
            reduce_nights_on_cluster([([night], tmp_path / f"out-{night.name}")], client,
                                     parameters)
        except Exception as err:  # said by the assertion below, not lost in the thread
            failures.append(err)

    threads = [threading.Thread(target=run, args=(night,)) for night in nights]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert failures == [] and not any(thread.is_alive() for thread in threads)
    entries = open_library(library).entries
    assert Counter(e.date_obs[:10] for e in entries) == {
        "2021-02-14": 5, "2021-02-17": 5}
    for night in nights:
        for product in [*(tmp_path / f"out-{night.name}").glob("dark_*.fits"),
                        *(tmp_path / f"out-{night.name}").glob("flat_*.fits")]:
            day = fits.getval(product, "DATE-OBS")[:10].replace("-", "")
            copy, = library.glob(f"{day}T*_ccdred_demo_camera_{product.name}")
            assert copy.read_bytes() == product.read_bytes(), copy
    assert not list(library.glob(".*.part"))
    (library / INDEX).unlink()
    assert open_library(library).entries == entries


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


@pytest.mark.parametrize(("cards", "binning", "readout", "amplifiers"), [
    ({}, None, None, 1),
    ({"XBINNING": 2, "YBINNING": 2, "CCDSUM": "1 1"}, "2x2", None, 1),
    ({"CCDSUM": "2 1", "READOUTM": "Fast "}, "2x1", "Fast", 1),
    ({"HIERARCH CCDRED TILE": "4 amplifiers by DETSEC"}, None, None, 4),
])
def test_the_setup_names_binning_readout_and_amplifiers_where_the_header_says_them(
        cards, binning, readout, amplifiers):
    header = fits.Header({"INSTRUME": "cam ", **cards})
    assert setup_of(header, (4, 6)) == Setup("cam", (4, 6), binning, readout, amplifiers)
    assert setup_of(header, (4, 6), amplifiers=2).amplifiers == 2  # a frame's own count


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


# -- choosing another library master than the nearest ------------------------------------

#: The course night's date, for the dated copies of its masters.
TAKEN = datetime.datetime(2021, 2, 14, 11)


def dated_copy(master: Path, folder: Path, days: float, gain=None, **cards) -> Path:
    """A copy of ``master`` in ``folder`` taken ``days`` after it, with header ``cards``; its
    image multiplied by ``gain`` (an array) when given, so that products made with it differ."""
    folder.mkdir(exist_ok=True)
    with fits.open(master) as hdus:
        header, data = hdus[0].header.copy(), hdus[0].data
    header.update(cards)
    taken = datetime.datetime.fromisoformat(header["DATE-OBS"])
    header["DATE-OBS"] = (taken + datetime.timedelta(days=days)).isoformat()
    data = data if gain is None else (data * gain).astype(data.dtype)
    copy = folder / master.name
    fits.writeto(copy, data, header, overwrite=True, checksum=True)
    return copy


@pytest.fixture(scope="module")
def other_flat(course, tmp_path_factory):
    """The course library with a second flat V, taken 3 days later, whose pixels respond
    otherwise (a gradient across the columns); and a library holding that flat V alone
    (with the course's darks and flat R), as a night given that flat directly."""
    _, whole, lib = course
    root = tmp_path_factory.mktemp("other-flat")
    gradient = np.linspace(0.9, 1.1, SPEC.shape[1], dtype=np.float32)
    copy = dated_copy(whole / "flat_V.fits", root / "copies", 3, gradient)
    two = root / "two-flats"
    shutil.copytree(lib, two)
    later, = add_to_library(two, [copy])
    alone = root / "alone"
    shutil.copytree(lib, alone)
    (alone / INDEX).unlink()
    next(alone.glob("*_flat_V.fits")).unlink()
    add_to_library(alone, [copy])
    return two, later.name, alone


def test_candidates_are_every_fitting_master_nearest_first(course, tmp_path):
    _, whole, _ = course
    copies = tmp_path / "copies"
    library = tmp_path / "lib"
    for days in (-5, 2, 9, 50):
        add_to_library(library, [dated_copy(whole / "flat_V.fits", copies, days)])
    add_to_library(library, [dated_copy(whole / "flat_R.fits", copies, 2)])
    setup, when = Setup("ccdred demo camera", SPEC.shape), datetime.datetime(2021, 2, 17)
    fitting, why = open_library(library).candidates("flat", setup, when, max_age=30,
                                                    filter="V")
    assert [m.path.name[:9] for m in fitting] == ["20210216T", "20210223T", "20210209T"]
    taken = datetime.datetime.fromisoformat(fits.getval(whole / "flat_V.fits", "DATE-OBS"))
    assert [m.age for m in fitting] == [pytest.approx((when - taken).total_seconds() / 86400 - d)
                                        for d in (2, 9, -5)]
    assert len(why) == 1 and why[0].endswith("is 47.5 days from this night "
                                             "(--library-max-age 30)")  # flat R: not said
    nearest, _ = open_library(library).nearest("flat", setup, when, max_age=30, filter="V")
    assert nearest == fitting[0]
    assert fitting[1].age_words() == f"{-fitting[1].age:.2f} days after the night"
    assert fitting[0].age_words() == f"{fitting[0].age:.2f} days before the night"
    # darks: of the frame's exposure time and temperature only
    for days, temperature in ((1, -10.0), (2, -20.0), (3, -10.5)):
        add_to_library(library, [dated_copy(whole / "dark_00030000.fits", copies, days,
                                            **{"CCD-TEMP": temperature})])
    add_to_library(library, [dated_copy(whole / "dark_00060000.fits", copies, 2,
                                        **{"CCD-TEMP": -10.0})])
    fitting, why = open_library(library).candidates("dark", setup, when, exptime=30.0,
                                                    temperature=-10.2)
    assert [m.path.name[:9] for m in fitting] == ["20210217T", "20210215T"]  # 0.47, 1.53 d
    assert len(why) == 1 and why[0].endswith("was taken at -20 C, not within 1 C of -10.2 C")


def in_library(lib: Path, product: str) -> str:
    """The library's file name of the course night's product ``product``."""
    name, = (p.name for p in lib.glob(f"20210214T*_{product}"))
    return name


@pytest.mark.parametrize(("product", "wanted", "reason"), [
    ("flat_R.fits", {}, "is of filter 'R'"),
    ("dark_00030000.fits", {}, "is a master dark, not a master flat"),
    ("flat_V.fits", {"max_age": 0.1}, "is 2.5 days from this night (--library-max-age 0.1)"),
    ("flat_V.fits", {"setup": Setup("other", SPEC.shape)},
     "is of another setup: instrument 'ccdred demo camera', the frame's 'other'"),
    (None, {}, "is not in the library "),
])
def test_a_chosen_master_that_does_not_fit_says_why(course, product, wanted, reason):
    _, _, lib = course
    file = in_library(lib, product) if product else "no_such_flat.fits"
    need = {"setup": Setup("ccdred demo camera", SPEC.shape), "max_age": 30, **wanted}
    found, why = open_library(lib).chosen(file, "flat", when=datetime.datetime(2021, 2, 17),
                                          filter="V", **need)
    assert found is None and why.startswith(reason)
    fits_it = in_library(lib, "flat_V.fits")
    found, why = open_library(lib).chosen(fits_it, "flat", Setup("ccdred demo camera", SPEC.shape),
                                          datetime.datetime(2021, 2, 17), filter="V")
    assert why is None and found.path == lib / fits_it


def test_a_chosen_master_makes_the_products_of_a_night_given_it_directly(course, objects,
                                                                        other_flat, tmp_path):
    _, whole, _ = course
    two, later, alone = other_flat
    assert reduce("-d", tmp_path / "nearest", "--library", two, objects) == 0
    assert reduce("-d", tmp_path / "chosen", "--library", two, "--library-master",
                  f"flat_V={later}", objects) == 0
    assert reduce("-d", tmp_path / "direct", "--library", alone, objects) == 0
    nearest, chosen = df_products(tmp_path / "nearest"), df_products(tmp_path / "chosen")
    direct, want = df_products(tmp_path / "direct"), df_products(whole)
    v_frames = [name for name in want if fits.getval(whole / name, "FILTER") == "V"]
    assert v_frames and chosen.keys() == direct.keys() == want.keys()
    for name in want:
        assert nearest[name].tobytes() == want[name].tobytes(), name  # the default: nearest
        assert chosen[name].tobytes() == direct[name].tobytes(), name
        assert (chosen[name].tobytes() == want[name].tobytes()) == (name not in v_frames), name
    history = str(fits.getheader(tmp_path / "chosen" / v_frames[0])["HISTORY"]).replace("\n", "")
    assert f"{two / later}, taken 2021-02-17" in history and "2.98 days after the night" in history
    # the Pipeline the dashboard drives calibrates with the choice as the night does
    pipeline = Pipeline(night=str(objects), library=str(two), library_choice={"flat_V": later})
    assert pipeline.plan.flats["V"].name == later
    frame = v_frames[0].removesuffix("_df.fits") + ".fits"
    calibrated = fitsio.storage_dtype("float32").type(pipeline.calibrated(frame))
    np.testing.assert_array_equal(calibrated, chosen[v_frames[0]])


def test_the_plan_lists_each_library_masters_candidates(course, objects, other_flat, capsys):
    two, later, _ = other_flat
    assert reduce("--plan", "--library", two, "--library-master", f"flat_V={later}",
                  objects) == 0
    shown = capsys.readouterr().out
    lines = shown.splitlines()
    start = lines.index("    flat_V candidates (choose with --library-master flat_V=FILE):")
    nearest, chosen = lines[start + 1], lines[start + 2]
    assert nearest.strip().startswith(f"{in_library(two, 'flat_V.fits')}: taken 2021-02-14T")
    assert nearest.endswith("days before the night") and "used" not in nearest
    assert chosen.strip().startswith(f"{later}: taken 2021-02-17T")
    assert chosen.endswith("days after the night, used")
    assert f"master flat V (library): {later} library master" in shown
    assert "flat_R candidates" in shown and "dark_00030000 candidates" in shown


@pytest.mark.parametrize(("choice", "said"), [
    ("flat_V={flat_R}", "{lib}/{flat_R}: chosen as library master flat_V, but it is of filter 'R'"),
    ("flat_V=nothing.fits", "{lib}/nothing.fits: chosen as library master flat_V, but it is "
                            "not in the library {lib}"),
    ("flat_V={later}", "{lib}/{later}: chosen as library master flat_V, but it is 3.0 days "
                       "from this night (--library-max-age 2)"),
    ("dark_00030000={flat_R}", "{lib}/{flat_R}: chosen as library master dark_00030000, but it "
                               "is a master flat, not a master dark"),
    ("flat_B={flat_R}", "{lib}/{flat_R}: chosen as library master flat_B, but this night takes "
                        "no master flat_B from the library (it takes: dark_00030000, "
                        "dark_00060000, flat_R, flat_V)"),
])
def test_a_choice_that_does_not_fit_is_refused_before_anything_is_written(
        course, objects, other_flat, tmp_path, capsys, choice, said):
    two, later, _ = other_flat
    names = {"lib": two, "later": later, "flat_R": in_library(two, "flat_R.fits")}
    status = reduce("-d", tmp_path / "out", "--library", two, "--library-max-age", 2,
                    "--library-master", choice.format(**names), objects)
    err = capsys.readouterr().err
    assert status == 2
    assert err.splitlines() == [f"ccdred: error: {said.format(**names)}"]
    assert not (tmp_path / "out").exists()


def test_a_choice_for_a_master_the_night_makes_itself_is_refused(course, other_flat, tmp_path,
                                                                 capsys):
    paths, _, _ = course
    two, later, _ = other_flat
    with_flats = copy_frames(paths, tmp_path / "with-flats", {"LIGHT", "FLAT"})
    assert reduce("-d", tmp_path / "out", "--library", two, "--library-master",
                  f"flat_V={later}", with_flats) == 2
    assert ("this night makes flat_V from its own frames, which win over the library"
            in capsys.readouterr().err)
    assert reduce("-d", tmp_path / "out", "--library-master", f"flat_V={later}", with_flats) == 2
    assert "no library is given (--library DIR)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_choice_may_be_a_path_into_the_library_but_not_given_twice(course, objects,
                                                                     other_flat, capsys):
    two, later, _ = other_flat
    assert reduce("--plan", "--library", two, "--library-master",
                  f"flat_V={two / later}", objects) == 0
    assert f"master flat V (library): {later} library master" in capsys.readouterr().out
    assert reduce("--plan", "--library", two, "--library-master", f"flat_V={later}",
                  "--library-master", "flat_V=other.fits", objects) == 2
    assert capsys.readouterr().err.splitlines() == [
        "ccdred: error: --library-master: flat_V given more than once"]


def test_the_library_master_option_reads_name_equals_file(capsys):
    with pytest.raises(SystemExit):
        main(["reduce", "--library-master", "flat_V", "night"])
    assert "expected NAME=FILE" in capsys.readouterr().err


@pytest.fixture
def library_root(objects, other_flat, tmp_path):
    """A data root holding the night of objects and the library of two flats V."""
    root = tmp_path / "root"
    shutil.copytree(objects, root / "night")
    shutil.copytree(other_flat[0], root / "zz-lib")
    return root


def test_the_library_card_offers_each_library_masters_candidates(library_root, other_flat,
                                                                 tmp_path):
    from ccdred.dashboard import Dashboard

    two, later, alone = other_flat
    board = Dashboard(library_root, tmp_path / "out", night="night")
    board.library_input.value = "zz-lib"
    menus = {menu.label: menu for menu in board._library_choices(board.pipeline.plan)}
    assert sorted(menus) == [f"{role} from the library" for role in
                             ("dark_00030000", "dark_00060000", "flat_R", "flat_V")]
    flat, nearest = menus["flat_V from the library"], in_library(two, "flat_V.fits")
    assert list(flat.options.values()) == [nearest, later] and flat.value == nearest
    first, second = flat.options
    assert first.startswith("2021-02-14T11:40:00 (") and "days before the night): " in first
    assert second.startswith("2021-02-17T11:40:00 (") and second.endswith(f"after the night): {later}")
    frame = next(s.frame for s in board.pipeline.plan.calibrations if s.frame.filter == "V")
    before = board.pipeline.calibrated(frame.path.name)
    counts = Counter(MASTERS.computed)
    flat.value = later
    after = board.pipeline.calibrated(frame.path.name)
    # only what depends on the flat V: its file read, the frame calibrated again
    assert Counter(MASTERS.computed) - counts == Counter({"library": 1, "calibrate": 1})
    assert not np.array_equal(before, after)
    assert board.pipeline.library_choice == {"flat_V": later}
    assert board.pipeline.plan.flats["V"].name == later and not board.pipeline.plan.problems
    text = board._library_view(board.pipeline.plan, "").object
    assert f"master flat V (library): library master zz-lib/{later}, taken 2021-02-17" in text
    assert f"--library-master=flat_V={later}" in board._reproduction()
    # the product follows: as a night given that flat V alone
    direct = Pipeline(night=str(library_root / "night"), library=str(alone))
    np.testing.assert_array_equal(after, direct.calibrated(frame.path.name))
    # the nearest chosen again is no choice; another library (or night) forgets the choice
    menus = {menu.label: menu for menu in board._library_choices(board.pipeline.plan)}
    assert menus["flat_V from the library"].value == later
    menus["flat_V from the library"].value = nearest
    assert board.pipeline.library_choice == {}
    board.pipeline.library_choice = {"flat_V": later}
    board.library_input.value = ""
    assert board.pipeline.library_choice == {} and len(board._library_choices(
        board.pipeline.plan)) == 0


@pytest.mark.browser
def test_another_library_master_chosen_in_the_browser_makes_the_products(
        library_root, objects, other_flat, tmp_path):
    """In a real browser: the library typed in the card, the flat V menu set to the later
    flat; the card names it, and "Reduce night" writes the products of a night given it."""
    import os

    from ccdred.prepare import prepare
    from ccdred.testing import CHROMIUM, CHROMIUM_ARGS, serve_app

    from .conftest import unavailable

    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} not found: install Debian's chromium", "CCDRED_REQUIRE_BROWSER")
    from playwright.sync_api import expect, sync_playwright

    two, later, alone = other_flat
    prepare(tmp_path / "cache", demo_size=64)  # as after `ccdred prepare` (a small demo night)
    output_root, log_path = tmp_path / "products", tmp_path / "serve.log"
    with open(log_path, "w") as log, serve_app(
            ["--data-root", library_root, "--output-root", output_root], log=log,
            env={**os.environ, "CCDRED_CACHE": str(tmp_path / "cache")}) as (_, url), \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector("text=Reduce night", timeout=60_000)
        page.get_by_text("Calibration library").first.click()
        folder = page.get_by_placeholder("none")
        folder.fill("zz-lib")
        folder.press("Enter")
        page.wait_for_selector(f"text=library master zz-lib/{in_library(two, 'flat_V.fits')}",
                               timeout=60_000)
        menu = page.locator(".bk-input-group", has_text="flat_V from the library").locator("select")
        expect(menu.locator("option")).to_have_count(2, timeout=60_000)  # drawn after the text
        assert menu.locator("option").all_inner_texts()[1].endswith(f"after the night): {later}")
        menu.select_option(index=1)
        page.wait_for_selector(f"text=library master zz-lib/{later}", timeout=60_000)
        page.get_by_text("Reduce night").first.click()
        page.wait_for_selector("text=products in", timeout=120_000)
        browser.close()
    assert "Traceback" not in log_path.read_text()
    assert reduce("-d", tmp_path / "direct", "--library", alone, objects) == 0
    written, = output_root.glob("night_*")
    got, want = df_products(written), df_products(tmp_path / "direct")
    assert got.keys() == want.keys() and got
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name
    v_frame = next(p for p in written.glob("*_df.fits") if fits.getval(p, "FILTER") == "V")
    assert f"zz-lib/{later}, taken" in str(fits.getheader(v_frame)["HISTORY"]).replace("\n", "")


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made read-only for this process: its mode, or for root (whom modes do not
    stop) the immutable attribute."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", folder]).returncode:
        pytest.skip("root cannot make a folder read-only here (no chattr, or a file system "
                    "without attributes)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", folder], check=True)


def test_a_library_shared_read_only_is_indexed_in_memory(course, tmp_path, capsys):
    """A library whose index is out of date (another version's, or a file copied in) and
    whose folder cannot be written: read from the headers, nothing written."""
    _, _, lib = course
    shared = tmp_path / "shared"
    shutil.copytree(lib, shared)
    (shared / INDEX).unlink()
    (shared / ".index.lock").unlink(missing_ok=True)
    with read_only(shared):
        assert open_library(shared).entries == open_library(lib).entries
        assert reduce("-d", tmp_path / "out", "--library", shared, course[0][0].parent) == 0
    assert sorted(p.name for p in shared.iterdir()) == sorted(
        p.name for p in lib.iterdir() if p.name not in (INDEX, ".index.lock"))


def test_adding_to_a_read_only_library_is_refused_before_anything_is_written(course, tmp_path,
                                                                             capsys):
    _, _, lib = course
    shared = tmp_path / "shared"
    shutil.copytree(lib, shared)
    with read_only(shared):
        assert reduce("-d", tmp_path / "out", "--library", shared, "--add-to-library",
                      course[0][0].parent) == 2
    assert f"{shared}: the library cannot be written" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
