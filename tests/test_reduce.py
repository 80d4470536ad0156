import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdred.cli import main
from ccdred.demo import NightSpec, make_night
from ccdred.parameters import ReductionParameters
from ccdred.frames import scan
from ccdred.night import reduce_night
from ccdred.plan import plan_night
from ccdred.steps import StepOptions, master_row_blocks

from .conftest import assert_same_products, expected_products, frame_files


def products(folder):
    return {p.name: fits.getdata(p) for p in sorted(folder.glob("*.fits"))}


@pytest.mark.parametrize("frame_clip", [True, False])
def test_row_blocks_give_the_same_products(night_files, tmp_path, frame_clip):
    folder = night_files[0].parent
    parameters = ReductionParameters(frame_clip=frame_clip)
    whole = reduce_night([folder], tmp_path / "whole", parameters)
    blocks = reduce_night([folder], tmp_path / "blocks", parameters, memory_budget=20_000,
                          threads=1)
    assert all(len(master_row_blocks(m, StepOptions(), 20_000)) > 1 for m in whole.plan.masters.values())
    expected, actual = products(tmp_path / "whole"), products(tmp_path / "blocks")
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-6, err_msg=name)
    for exptime, master in whole.master_darks.items():
        np.testing.assert_array_equal(blocks.master_darks[exptime].n_used, master.n_used)


@pytest.mark.parametrize("budget", [1, 5_000, 40_000])
def test_row_blocks_cover_every_row_once_within_the_budget(night_files, budget):
    plan = plan_night(scan([night_files[0].parent]))
    for master in plan.masters.values():
        blocks = master_row_blocks(master, StepOptions(), budget)
        rows, cols = master.frames[0].shape
        assert blocks[0].start == 0 and blocks[-1].stop == rows
        assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:]))
        per_row = len(master.frames) * cols * (2 + (master.kind != "flat"))  # uint16 + mask
        assert all((b.stop - b.start) * per_row <= budget or b.stop - b.start == 1 for b in blocks)


def test_float_raw_frames_in_big_endian(tmp_path):
    """Raw frames stored as BITPIX=-32 come back big-endian from astropy."""
    spec = NightSpec(shape=(32, 40), seed=3)
    for path in make_night(tmp_path / "raw", spec):
        with fits.open(path) as hdus:
            hdus[0].data = hdus[0].data.astype(">f4")
            hdus.writeto(tmp_path / "raw" / path.name, overwrite=True)
    assert fits.getdata(tmp_path / "raw" / "demo_0001.fits").dtype == np.dtype(">f4")
    result = reduce_night([tmp_path / "raw"], tmp_path / "out")
    assert sorted(p.name for p in result.products) == sorted(result.plan.product_names())
    assert len(result.products) == len(expected_products(spec, sorted((tmp_path / "raw").iterdir()))) - 1
    assert np.isfinite(fits.getdata(tmp_path / "out" / "flat_V.fits")).all()


@pytest.mark.parametrize("memory_budget", [1 << 30, 20_000])
def test_frames_of_several_data_types_are_stacked_without_loss(night_files, tmp_path,
                                                               memory_budget):
    """A dark and a flat with fractional values among 16-bit frames: nothing is truncated.

    The oracle is the same night with every frame stored as 32-bit floats.
    """
    fractional = {frame_files(night_files, kind)[1].name for kind in ("DARK", "FLAT")}
    for night, as_float in (("mixed", fractional), ("floats", {p.name for p in night_files})):
        (tmp_path / night).mkdir()
        for path in night_files:
            with fits.open(path) as hdus:
                if path.name in as_float:
                    hdus[0].data = hdus[0].data + np.float32(0.25 if path.name in fractional else 0)
                hdus.writeto(tmp_path / night / path.name)
    mixed = reduce_night([tmp_path / "mixed"], tmp_path / "mixed-out", memory_budget=memory_budget)
    reduce_night([tmp_path / "floats"], tmp_path / "floats-out")
    assert {f.dtype for f in mixed.plan.catalogue.frames} == {"uint16", "float32"}
    assert_same_products(tmp_path / "floats-out", tmp_path / "mixed-out")


# -- the dashboard's Reduce says its warnings in its log and page (issue 27, defect 8) ---

#: One "Reduce night" of the dashboard, twice, in a process of its own with Python's default
#: warning filters, as a server runs it; prints what the page shows after each.
REDUCE_AS_THE_SERVER = """
import asyncio, json, sys, time
from ccdred.job import ReductionJob
from ccdred.parameters import ReductionParameters

job = ReductionJob(sys.argv[2])
for _ in range(2):
    asyncio.run(job.run(sys.argv[1], ReductionParameters()))
    print(json.dumps({"error": job.error, "summary": job.summary, "output": job.output}))
    time.sleep(1.1)  # the next run's folder is named by the second
"""


def noted_night(folder):
    """A night that gives warnings the page shows: a header section that is not one (read
    when the night is scanned) and a single flat per filter (when its master is made)."""
    paths = make_night(folder, NightSpec(shape=(32, 40), seed=5, n_flats=1, saturated_flats=0,
                                         faint_flats=0))
    for path in paths[:3]:
        fits.setval(path, "BIASSEC", value="[0,9:0,9]")
    return folder


def test_reduce_night_of_the_dashboard_says_its_warnings_in_its_log_and_page(tmp_path):
    night = noted_night(tmp_path / "night")
    done = subprocess.run([sys.executable, "-c", REDUCE_AS_THE_SERVER, str(night),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "warn(" not in done.stderr, done.stderr
    assert "one flat only" not in done.stderr and "BIASSEC" not in done.stderr
    expected = [r"demo_0001\.fits: BIASSEC = '\[0,9:0,9\]' not used: .* \(and 2 other files\)",
                r"master flat 'R': one flat only; it is normalised without clipping",
                r"master flat 'V': one flat only; it is normalised without clipping"]
    runs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(runs) == 2 and len({run["output"] for run in runs}) == 2
    for run in runs:  # the second run of the same night says them again
        assert run["error"] == ""
        page = [line for line in run["summary"] if line.startswith("warning: ")]
        assert len(page) == len(expected) and not any(str(night) in line for line in page)
        for pattern, line in zip(expected, page, strict=True):
            assert re.fullmatch(f"warning: {pattern}", line), (pattern, line)
        log = (Path(run["output"]) / "ccdred.log").read_text().splitlines()
        logged = [line.split(" WARNING ", 1)[1] for line in log if " WARNING " in line]
        assert len(logged) == len(expected)
        for pattern, line in zip(expected, logged, strict=True):
            assert re.fullmatch(f"\\S*{pattern}", line), (pattern, line)


# -- product headers say what each product is (issue 27, defect 12) ---------------------

#: A night shaped as the lab's: biases, darks of several exposure times (a scaled dark
#: current), and flats whose header calls them light frames, typed by file-name rules.
TYPED_SPEC = NightSpec.real(shape=(32, 40), seed=9, imagetyp={
    "bias": "BIAS", "dark": "DARK", "flat": "Light Frame", "object": "LIGHT"})


@pytest.fixture(scope="module")
def typed_night(tmp_path_factory):
    """The night, its flats typed by rules, reduced; (raw files, rules, output folder)."""
    folder = tmp_path_factory.mktemp("typed")
    paths = make_night(folder / "raw", TYPED_SPEC)
    rules = {path.name: "flat" for path in frame_files(paths, "Light Frame")}
    with pytest.warns(UserWarning):  # the saturated and faint flats
        reduce_night([folder / "raw"], folder / "out", ReductionParameters(frame_types=rules))
    return paths, rules, folder / "out"


def test_each_master_says_its_frame_type_in_imagetyp(typed_night):
    paths, rules, out = typed_night
    assert {fits.getheader(p)["IMAGETYP"] for p in paths if p.name in rules} == {"Light Frame"}
    assert fits.getheader(out / "bias.fits")["IMAGETYP"] == "BIAS"
    assert fits.getheader(out / "dark_current.fits")["IMAGETYP"] == "DARK"
    for band in TYPED_SPEC.filters:
        assert fits.getheader(out / f"flat_{band}.fits")["IMAGETYP"] == "FLAT"
    subtracted = fits.getheader(out / f"{next(iter(rules)).removesuffix('.fits')}_d.fits")
    assert subtracted["IMAGETYP"] == "FLAT"
    assert "IMAGETYP was 'Light Frame'" in str(subtracted["HISTORY"])


def test_a_normalised_flat_is_dimensionless_and_astropy_reads_every_unit(typed_night):
    from astropy import units as u
    from astropy.nddata import CCDData

    _, _, out = typed_night
    flat = out / f"flat_{TYPED_SPEC.filters[0]}.fits"
    assert fits.getheader(flat)["BUNIT"] == ""
    assert np.mean(fits.getdata(flat), dtype=np.float64) == pytest.approx(1.0, abs=1e-5)
    units = {name: CCDData.read(out / name).unit
             for name in ("bias.fits", "dark_current.fits", flat.name)}
    assert units == {"bias.fits": u.adu, "dark_current.fits": u.adu / u.s,
                     flat.name: u.dimensionless_unscaled}


def test_the_dark_current_has_no_exposure_time(typed_night, night_files, tmp_path):
    paths, _, out = typed_night
    assert {fits.getheader(p)["EXPTIME"] for p in frame_files(paths, "DARK")} == set(
        TYPED_SPEC.dark_times)
    header = fits.getheader(out / "dark_current.fits")
    assert "EXPTIME" not in header and "EXPOSURE" not in header
    assert "ADU per second of exposure" in str(header["COMMENT"])
    exact = reduce_night([night_files[0].parent], tmp_path / "out")
    for exptime, master in exact.plan.darks.items():  # an exact dark keeps its exposure time
        assert fits.getheader(tmp_path / "out" / master.name)["EXPTIME"] == exptime


def test_frame_type_rules_are_an_option_card_of_every_product(typed_night, night_files,
                                                              tmp_path):
    _, rules, out = typed_night
    products = sorted(out.glob("*.fits"))
    assert len(products) > len(rules)
    for path in products:
        assert json.loads(fits.getheader(path)["HIERARCH CCDRED FRAME_TYPES"]) == rules, path
    reduce_night([night_files[0].parent], tmp_path / "out")
    assert not any("HIERARCH CCDRED FRAME_TYPES" in fits.getheader(p)
                   for p in (tmp_path / "out").glob("*.fits"))


@pytest.mark.parametrize("spec,options", [
    (NightSpec(shape=(30, 36), seed=11), []),
    (NightSpec(shape=(30, 36), seed=12, imagetyp={"bias": "Bias Frame", "dark": "Dark Frame",
                                                  "flat": "Flat Field", "object": "Light Frame"}),
     ["--keyword-datatype-dark", "Dark Frame", "--keyword-datatype-flat", "Flat Field",
      "--keyword-datatype-object", "Light Frame"]),
], ids=["course-night", "camera-values"])
def test_the_frame_type_and_exposure_cards_equal_the_reference(reference_script, tmp_path, spec,
                                                               options):
    files = make_night(tmp_path / "raw", spec)
    command = [sys.executable, str(reference_script), "-d", str(tmp_path / "reference"),
               *options, *map(str, files)]
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    assert main(["reduce", "-q", "-d", str(tmp_path / "ccdred"), *options, *map(str, files)]) == 0
    names = sorted(p.name for p in (tmp_path / "reference").glob("*.fits"))
    assert names == sorted(p.name for p in (tmp_path / "ccdred").glob("*.fits"))
    for name in names:
        reference = fits.getheader(tmp_path / "reference" / name)
        ours = fits.getheader(tmp_path / "ccdred" / name)
        assert [ours.get(k) for k in ("IMAGETYP", "EXPTIME", "FILTER")] == [
            reference.get(k) for k in ("IMAGETYP", "EXPTIME", "FILTER")], name
