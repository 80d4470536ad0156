import numpy as np
import pytest
from astropy.io import fits

from ccdred.demo import NightSpec, make_night
from ccdred.parameters import ReductionParameters
from ccdred.frames import scan
from ccdred.night import reduce_night
from ccdred.plan import plan_night
from ccdred.steps import master_row_blocks

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
    assert all(len(master_row_blocks(m, 20_000)) > 1 for m in whole.plan.masters.values())
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
        blocks = master_row_blocks(master, budget)
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
