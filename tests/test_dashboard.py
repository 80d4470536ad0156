"""The dashboard's model, without a browser: night choice, errors that clear, the frame table, a job."""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path

import holoviews as hv
import panel as pn
import pytest

from ccdred.dashboard import Dashboard
from ccdred.demo import NightSpec, make_night
from ccdred.pipeline import MASTERS

hv.extension("bokeh", logo=False)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_night(root / "night1", NightSpec(shape=(24, 32), seed=8))
    (root / "empty").mkdir()
    return root


@pytest.fixture
def dashboard(data_root, tmp_path):
    MASTERS.clear()
    output_root = data_root / "products"  # the output root inside the data root
    output_root.mkdir(exist_ok=True)
    return Dashboard(data_root, output_root)


def test_the_output_root_is_not_a_night(dashboard):
    assert dashboard.param.night.objects == ["empty", "night1"]


def test_a_mistyped_folder_is_refused_and_the_night_stays(dashboard):
    dashboard.night = "night1"
    assert dashboard.status == "Night: night1"
    dashboard.folder_input.value = "night1-typo"
    assert dashboard.status == ("Error: night1-typo: no such folder under the data root "
                                "(still showing night1)")
    assert dashboard.pipeline.night.endswith("night1")
    assert dashboard.pipeline.plan.calibrations  # the loaded night still works
    dashboard.folder_input.value = "night1"
    assert dashboard.status == "Night: night1"  # the error is cleared by a good choice


def test_paths_outside_the_root_are_refused_without_the_servers_paths(dashboard, data_root):
    dashboard.folder_input.value = "../.."
    assert dashboard.status.startswith("Error: ../..: outside the data root; refused")
    assert str(data_root) not in dashboard.status


def test_a_folder_without_frames_says_so_in_the_views(dashboard):
    dashboard.night = "empty"
    frames = dashboard.tabs()[0].object()
    assert isinstance(frames, pn.pane.Alert) and "no FITS files in this folder" in frames.object


def test_the_frames_view_says_the_nights_notes(tmp_path):
    """What a reduction would warn of (placeholder sections, frames of an unknown type) is
    said above the frames, the server's paths left out."""
    from astropy.io import fits

    data_root = tmp_path / "data"
    paths = make_night(data_root / "noted", NightSpec(shape=(24, 32), seed=9))
    for number, path in enumerate(paths):
        with fits.open(path, mode="update") as hdus:
            hdus[0].header["BIASSEC"] = "UNKNOWN"
            if number == 0:
                hdus[0].header["IMAGETYP"] = "LAMPFLAT2"
    board = Dashboard(data_root, tmp_path / "products", night="noted")
    frames = board.tabs()[0].object()
    notes = [pane.object for pane in frames if isinstance(pane, pn.pane.Alert)]
    assert len(notes) == 1 and notes[0].startswith("**Notes on this night:**"), notes
    assert "BIASSEC = 'UNKNOWN'" in notes[0] and "LAMPFLAT2" in notes[0]
    assert str(data_root) not in notes[0]


def test_changing_a_frames_type_in_the_table_reclassifies_it(dashboard):
    dashboard.night = "night1"
    levels = dashboard.pipeline.frame_levels()
    table = dashboard.frame_table(levels)[1]
    assert table.editors["type"]["values"] == ["bias", "dark", "flat", "object", "ignore"]
    name = next(r["file"] for r in levels if r["type"] == "object")
    dashboard.retype(name, "ignore")
    assert dashboard.pipeline.frame_types == {name: "ignore"}
    assert name not in [s.frame.path.name for s in dashboard.pipeline.plan.calibrations]
    ignored = next(r for r in dashboard.pipeline.frame_levels() if r["file"] == name)
    assert ignored["type"] == "ignore" and ignored["status"] == "ignored (its type set to ignore)"
    dashboard.pipeline.threshold = 3.0  # a later change: the ignored frame is not warned about
    dashboard.pipeline.keyword_datatype_object = [*dashboard.pipeline.keyword_datatype_object,
                                                  "SCIENCE2"]  # a rescan
    assert not [n for n in dashboard.pipeline.catalogue.notes if "unknown type" in n]


def test_reduce_night_reports_products_and_the_folder(dashboard):
    dashboard.night = "night1"
    asyncio.run(dashboard.job.run(dashboard.pipeline.night, dashboard.pipeline))
    assert dashboard.job.error == ""
    assert dashboard.job.status.startswith("Reduced night1: 31 products in night1_")
    assert "flat_V.fits" in dashboard.job.products
    assert dashboard.job.summary[1] == "master flat R: 7 of 7 flats used"
    assert any("demo_0019.fits: rejected: above upper limit 38000" in line
               for line in dashboard.job.summary)
    with zipfile.ZipFile(dashboard.job.archive()) as archive:
        names = archive.namelist()
    folder = dashboard.job.output.rsplit("/", 1)[1]
    assert f"{folder}/ccdred.log" in names and f"{folder}/flat_V.fits" in names
    log = (Path(dashboard.job.output) / "ccdred.log").read_text()
    assert "master flat V from 7 frames" in log and "wrote" in log


def test_a_tap_on_before_after_inspects_the_frame_s_own_flat(dashboard):
    """An object frame of filter V, the flat on show R: a tap on its calibrated image shows
    the samples of master flat V (the one it was divided by), and shows that flat."""
    dashboard.night = "night1"
    pipeline = dashboard.pipeline
    pipeline.filter = "R"
    pipeline.object_frame = next(step.frame.path.name for step in pipeline.plan.calibrations
                                 if step.frame.filter == "V")
    assert pipeline.object_filter() == "V"
    shown = pipeline.shown_calibrated()
    view = dashboard._before_after_view(shown, None)
    assert "master flat V (this frame's)" in view[1].object
    taps = [stream for element in hv.streams.Stream.registry
            for stream in hv.streams.Stream.registry[element]
            if isinstance(stream, hv.streams.Tap) and stream.subscribers]
    taps[-1].event(x=10.2, y=12.7)
    assert (pipeline.inspect, pipeline.filter, pipeline.pixel_x, pipeline.pixel_y) == (
        "flat", "V", 10, 13)
    assert pipeline.shown_pixel().master == "flat_V.fits"


def test_the_frames_view_follows_the_products_dtype(dashboard):
    """The flats' levels are taken less their dark terms as the products hold them, so the
    products' type decides them too (found by the state machine, tests/test_states.py)."""
    dashboard.night, dashboard.tab = "night1", "Frames"
    dashboard.tabs()
    frames = next(view for view in dashboard.views if view.tab == "Frames")
    frames.drawn()
    dashboard.pipeline.dtype = "float64"
    assert frames.count == 1  # drawn again, with the float64 dark terms


def test_a_typed_folder_not_in_the_list_empties_the_list_so_the_list_opens_again(dashboard):
    """Typing a folder the list does not hold ('.') left the list showing the night before,
    so choosing that night in the list changed nothing (found by tests/test_states.py)."""
    dashboard.night = "night1"
    dashboard.folder_input.value = "."
    assert dashboard.night is None and dashboard.status == "Night: ."
    dashboard.night = "night1"
    assert dashboard.pipeline.night.endswith("night1") and dashboard.status == "Night: night1"


def test_a_problem_of_both_masters_is_said_once(dashboard):
    dashboard.night = "empty"
    assert dashboard._clip_summary() == "empty: no FITS files in this folder"


def test_the_command_shown_makes_the_masters_on_show(dashboard, data_root, tmp_path,
                                                       monkeypatch):
    """The command the page shows, run on the command line, writes the masters the page
    shows, bit for bit as written (float32), frame-type edits included; the Python call
    shown makes the same masters."""
    import re
    import shlex
    import subprocess
    import sys

    import numpy as np
    from astropy.io import fits

    import ccdred

    dashboard.night = "night1"
    pipeline = dashboard.pipeline
    pipeline.param.update(threshold=2.1, cenfunc="mean", lsigma=3.0, upper_limit=30000.0)
    dashboard.retype("demo_0005.fits", "ignore")  # a dark of the first exposure time
    shown = _same_elsewhere_pane(dashboard).object
    command = re.search(r"```bash\n(.*)\n```", shown)[1]
    imports, call = re.search(r"```python\n(.*)\n(.*)\n```", shown).groups()
    assert imports == "import ccdred"
    assert command == ("ccdred reduce night1 --threshold=2.1 --cenfunc=mean --lsigma=3.0 "
                       "--upperlimit=30000.0 --frame-type=demo_0005.fits=ignore")
    arguments = shlex.split(command)
    assert arguments[:2] == ["ccdred", "reduce"]
    run = subprocess.run([sys.executable, "-m", "ccdred", *arguments[1:], "-d", str(tmp_path / "out"),
                          "-q"], cwd=data_root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    monkeypatch.chdir(data_root)
    from_call = eval(call, {"ccdred": ccdred})  # noqa: S307 - the text the page shows
    for name in pipeline.plan.masters:
        on_show = pipeline.master(name).data.astype(np.float32)
        np.testing.assert_array_equal(fits.getdata(tmp_path / "out" / name), on_show, err_msg=name)
        np.testing.assert_array_equal(from_call.master(name).data.astype(np.float32), on_show)
    assert "ignored" in {row["file"]: row["status"] for row in pipeline.frame_levels()}[
        "demo_0005.fits"]


def test_the_command_shown_follows_the_parameters(dashboard):
    """The command is shown again after a change, with the views' drawings (no page here:
    at once)."""
    dashboard.night = "night1"
    pane = _same_elsewhere_pane(dashboard)
    dashboard.pipeline.threshold = 2.2
    assert "ccdred reduce night1 --threshold=2.2\n" in pane.object


def test_reduce_night_logs_the_command_the_page_shows(dashboard, data_root):
    dashboard.night = "night1"
    dashboard.pipeline.threshold = 2.9
    asyncio.run(dashboard.job.run(dashboard.pipeline.night, dashboard.pipeline))
    log = (Path(dashboard.job.output) / "ccdred.log").read_text()
    assert f"the same on the command line: ccdred reduce {data_root / 'night1'} --threshold=2.9" in log


def _same_elsewhere_pane(dashboard):
    """The sidebar's "The same outside the page" text."""
    card = next(item for item in dashboard._sidebar()
                if isinstance(item, pn.Card) and item.title == "The same outside the page")
    return card.objects[0]


@pytest.fixture(scope="module")
def library_root(tmp_path_factory):
    """A data root holding a calibration library (made from a demo night by the command
    line) and a night of that night's object frames alone."""
    import shutil

    from astropy.io import fits

    from ccdred.cli import main

    root = tmp_path_factory.mktemp("library-root")
    make_night(root / "whole", NightSpec(shape=(48, 64), seed=5))
    assert main(["reduce", "-q", "-d", str(root / "whole-out"), "--library", str(root / "lib"),
                 "--add-to-library", str(root / "whole")]) == 0
    (root / "objects").mkdir()
    for path in (root / "whole").glob("*.fits"):
        if fits.getval(path, "IMAGETYP") == "LIGHT":
            shutil.copy(path, root / "objects")
    return root


def test_the_library_card_takes_a_folder_under_the_root_and_says_where_masters_come_from(
        library_root, tmp_path):
    """A night of objects alone is calibrated from the library typed in the card, which
    names each library master's file (relative to the data root) and when it was taken;
    a folder outside the root is refused in words and the library stays; emptied: none."""
    board = Dashboard(library_root, tmp_path / "out", night="objects")
    assert board.pipeline.plan.problems  # no calibrations of its own
    board.library_input.value = "lib"
    assert board.pipeline.library == str(library_root / "lib")
    assert not board.pipeline.plan.problems
    text = board._library_view(board.pipeline.plan, board.library_status).object
    dark = board.pipeline.calibration
    assert f"library master lib/{dark}, taken " in text
    assert str(library_root) not in text  # no server path shown
    board.library_input.value = "../elsewhere"
    assert board.pipeline.library == str(library_root / "lib")
    assert "outside the data root; refused" in board.library_status
    assert "outside the data root" in board._library_view(board.pipeline.plan,
                                                          board.library_status).object
    board.library_input.value = ""
    assert board.pipeline.library is None and board.library_status == ""
    assert board._library_view(board.pipeline.plan, "").object == "This night makes no master."
    board.night = "whole"  # a night of its own frames: each master from them
    text = board._library_view(board.pipeline.plan, "").object
    assert "- master dark 30 s: from 5 frames" in text and "library" not in text
