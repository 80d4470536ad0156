"""The three runners over one plan: in process, Dask, and the interactive Pipeline."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from astropy.io import fits

from ccdred import fitsio, steps
from ccdred import night as night_module
from ccdred.demo import NightSpec
from ccdred.night import reduce_night
from ccdred.pipeline import MASTERS, RAW_FRAMES, Pipeline

from .conftest import write_nights

distributed = pytest.importorskip("distributed")

#: A real-shaped night: overscan, drifting bias, darks to be scaled, and a course-shaped one.
SPECS = {"real": NightSpec.real(shape=(40, 56), seed=41),
         "course": NightSpec(shape=(40, 56), seed=42)}
#: Whole stacks, and row blocks of a few rows.
BUDGETS = {"whole": 1 << 30, "blocks": 6_000}


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    return write_nights(tmp_path_factory.mktemp("runner-nights"), SPECS)


def product_data(folder):
    return {p.name: fits.getdata(p) for p in sorted(folder.glob("*.fits"))}


@pytest.mark.parametrize("budget", BUDGETS.values(), ids=BUDGETS.keys())
@pytest.mark.parametrize("night", SPECS)
def test_three_runners_make_byte_equal_products(nights, client, tmp_path, night, budget):
    from ccdred.cluster import reduce_nights_on_cluster

    local = reduce_night([nights / night], tmp_path / "local", memory_budget=budget)
    reduce_nights_on_cluster([([nights / night], tmp_path / "dask")], client, memory_budget=budget)
    expected, actual = product_data(tmp_path / "local"), product_data(tmp_path / "dask")
    assert expected.keys() == actual.keys() == set(local.plan.product_names())
    for name in expected:
        assert expected[name].tobytes() == actual[name].tobytes(), name
    MASTERS.clear()
    pipeline = Pipeline(night=str(nights / night))
    for name, master in local.masters.items():
        written = steps.as_written(pipeline.master(name).data, "float32")
        assert written.tobytes() == master.data.tobytes(), name
    step = local.plan.calibrations[0]
    calibrated = fitsio.storage_dtype("float32").type(pipeline.calibrated(step.frame.path.name))
    np.testing.assert_array_equal(calibrated, expected[f"{step.frame.name}_df.fits"])


def test_row_blocks_change_no_master(nights, tmp_path):
    whole = reduce_night([nights / "real"], tmp_path / "whole")
    blocks = reduce_night([nights / "real"], tmp_path / "blocks", memory_budget=BUDGETS["blocks"])
    for name, master in whole.masters.items():
        np.testing.assert_array_equal(blocks.masters[name].data, master.data, err_msg=name)


def test_the_real_night_gets_bias_scaled_darks_and_overscan(nights, tmp_path):
    result = reduce_night([nights / "real"], tmp_path / "out")
    assert set(result.masters) == {"bias.fits", "dark_current.fits", "flat_V.fits", "flat_R.fits"}
    # a night keeps of its flats what it writes and calibrates with, not their combinations
    assert [result.masters[f].combine for f in ("flat_V.fits", "flat_R.fits")] == [None, None]
    assert result.plan.models() == {"scaled": len(result.plan.all_flats) + len(result.plan.objects)}
    header = fits.getheader(tmp_path / "out" / f"{result.plan.objects[0].name}_df.fits")
    assert header["HIERARCH CCDRED DARK_MODEL"] == "scaled"
    assert header["HIERARCH CCDRED OVERSCAN"] == "[57:80,1:40]"
    assert header["HIERARCH CCDRED TRIM"] == "[1:56,1:40]"
    assert "scaled dark bias.fits +" in str(header["HISTORY"])
    assert fits.getdata(tmp_path / "out" / "bias.fits").shape == (40, 56)


@pytest.mark.parametrize("night", SPECS)
def test_objects_are_calibrated_with_the_masters_as_written(nights, tmp_path, night):
    """A user who calibrates a raw frame with the master files on disk gets the product."""
    result = reduce_night([nights / night], tmp_path / "out", memory_budget=BUDGETS["blocks"])
    files = {name: fits.getdata(tmp_path / "out" / name).astype(np.float64)
             for name in result.plan.masters}
    for step in result.plan.calibrations[:3]:
        term = step.term
        if term.model == "exact":
            dark = files[term.dark]
        else:
            dark = files[term.bias] + term.exptime * files[term.current]
        expected = ((step.frame.read() - dark) / files[step.flat]).astype(np.float32)
        product = fits.getdata(tmp_path / "out" / f"{step.frame.name}_df.fits")
        np.testing.assert_array_equal(product, expected, err_msg=step.frame.name)
        assert result.masters[step.flat].data.dtype == np.float32


def test_each_raw_frame_is_read_once_per_process(nights, monkeypatch):
    reads = []
    original = fitsio.read_image

    def counting(path, *args, **kwargs):
        reads.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(fitsio, "read_image", counting)
    MASTERS.clear()
    RAW_FRAMES.clear()
    first = Pipeline(night=str(nights / "real"))
    for name in first.plan.masters:
        first.master(name)
    first.frame_levels()
    second = Pipeline(night=str(nights / "real"), threshold=3.0)
    for name in second.plan.masters:
        second.master(name)
    used = {str(f.path) for m in first.plan.masters.values() for f in m.frames}
    assert sorted(reads) == sorted({*used, *(str(f.path) for f in first.plan.catalogue.frames)})


def test_a_night_drops_what_it_does_not_keep_before_making_more(nights, tmp_path, monkeypatch):
    """A night's peak memory: a flat's stack is freed before its normalised image is made,
    and a flat's un-normalised combination before the next master is made."""
    stacks, combinations, alive = [], [], {"stack at finish": [], "combination at next": []}

    def read_stack(*args, **kwargs):
        stack = real_read_stack(*args, **kwargs)
        stacks.append(weakref.ref(stack))
        return stack

    def finish(master, *args, **kwargs):
        gc.collect()
        alive["stack at finish"].append(stacks[-1]() is not None)
        return real_finish(master, *args, **kwargs)

    def make_master(master, *args, **kwargs):
        gc.collect()
        alive["combination at next"] += [ref() is not None for ref in combinations]
        made = real_make_master(master, *args, **kwargs)
        if getattr(made, "combine", None) is not None:
            combinations.append(weakref.ref(made.combine.data))
        return made

    real_read_stack, real_finish, real_make_master = steps.read_stack, steps.finish, steps.make_master
    monkeypatch.setattr(steps, "read_stack", read_stack)
    monkeypatch.setattr(steps, "finish", finish)
    monkeypatch.setattr(night_module, "make_master", make_master)
    reduce_night([nights / "course"], tmp_path / "out")
    assert len(stacks) == len(alive["stack at finish"]) >= 4  # darks and flats, whole stacks
    assert alive["stack at finish"] == [False] * len(stacks)
    assert len(combinations) == 2 and alive["combination at next"] == [False]
