import numpy as np
import pytest

from ccdred.errors import InputError
from ccdred.parameters import ReductionParameters
from ccdred.pipeline import MASTERS, RAW_FRAMES, Pipeline
from ccdred.serve import resolve_under
from ccdred.night import reduce_night

from .conftest import SMALL_SPEC


@pytest.fixture
def pipeline(night_files):
    MASTERS.clear()
    RAW_FRAMES.clear()
    return Pipeline(night=str(night_files[0].parent))


def counts():
    return dict(MASTERS.computed), RAW_FRAMES.computed["read"]


def test_selectors_follow_the_night(pipeline):
    assert pipeline.param.filter.objects == sorted(SMALL_SPEC.filters)
    assert pipeline.calibration == "dark_%08d.fits" % (1000 * min(SMALL_SPEC.dark_exptimes))
    assert pipeline.object_frame.startswith("demo_")


def test_upper_limit_recombines_flats_not_darks(pipeline):
    master = pipeline.master_flat()
    before, reads = counts()
    pipeline.upper_limit = float(master.medians[master.accepted].max()) - 1.0  # one flat fewer
    assert pipeline.master_flat().accepted.sum() == master.accepted.sum() - 1
    after, reads_after = counts()
    assert after["master_flat"] == before["master_flat"] + 1
    assert after["master_dark"] == before["master_dark"]
    assert after["statistics"] == before["statistics"]
    assert reads_after == reads


def test_upper_limit_accepting_the_same_flats_recomputes_nothing(pipeline):
    master = pipeline.master_flat()
    before, _ = counts()
    pipeline.upper_limit = float(master.medians[master.accepted].max()) + 1.0  # the same flats pass
    assert pipeline.master_flat() is master
    assert counts()[0]["master_flat"] == before["master_flat"]


def test_threshold_recomputes_masters_without_reading(pipeline):
    pipeline.master_flat()
    before, reads = counts()
    pipeline.threshold = 3.0
    pipeline.master_flat()
    after, reads_after = counts()
    assert after["master_dark"] == before["master_dark"] + 1
    assert after["master_flat"] == before["master_flat"] + 1
    assert reads_after == reads


def test_unrelated_views_compute_nothing(pipeline):
    pipeline.master_dark()
    before, reads = counts()
    pipeline.master_dark()  # same parameters: memoised
    pipeline.threshold = 3.0
    pipeline.threshold = 2.5  # back: still memoised
    pipeline.master_dark()
    assert counts() == (before, reads)


def test_keyword_change_rescans(pipeline):
    scans = MASTERS.computed["scan"]
    pipeline.keyword_datatype_object = ["NOTHING"]
    assert MASTERS.computed["scan"] == scans + 1
    assert pipeline.param.object_frame.objects == []  # no objects: their filters need no flat
    assert pipeline.object_frame is None


def test_raw_frames_are_shared_between_sessions(night_files):
    RAW_FRAMES.clear()
    MASTERS.clear()
    first = Pipeline(night=str(night_files[0].parent))
    second = Pipeline(night=str(night_files[0].parent), threshold=3.0)
    first.master_dark()
    reads = RAW_FRAMES.computed["read"]
    second.master_dark()
    assert RAW_FRAMES.computed["read"] == reads
    assert MASTERS.computed["master_dark"] == 2
    assert not np.array_equal(first.master_dark().data, second.master_dark().data)
    assert second.threshold == 3.0 and first.threshold == 2.5


@pytest.mark.parametrize("options", [{}, {"threshold": 2.0, "cenfunc": "mean", "upper_limit": 30000.0}])
def test_results_equal_the_batch_reduction(night_files, tmp_path, options):
    pipeline = Pipeline(night=str(night_files[0].parent), **options)
    batch = reduce_night([night_files[0].parent], tmp_path, ReductionParameters(**options))
    # the night keeps its masters as written: float32 by default
    for exptime, master in batch.master_darks.items():
        np.testing.assert_array_equal(pipeline.master_dark(exptime).data.astype(np.float32), master.data)
    for name, master in batch.master_flats.items():
        np.testing.assert_array_equal(pipeline.master_flat(name).data.astype(np.float32), master.data)
    frame = batch.plan.objects[0]
    dark, flat = (batch.master_darks[frame.exptime].data.astype(np.float64),
                  batch.master_flats[frame.filter].data.astype(np.float64))
    expected = (frame.read() - dark) / flat
    np.testing.assert_allclose(pipeline.calibrated(frame.path.name), expected, rtol=1e-12)


def test_frame_levels_mark_rejected_flats(pipeline):
    rows = pipeline.frame_levels()
    rejected = [r for r in rows if r["status"].startswith("rejected")]
    assert len(rejected) == SMALL_SPEC.saturated_flats
    assert "above upper limit 38000" in rejected[0]["status"]
    pipeline.lower_limit = 1000.0
    assert len([r for r in pipeline.frame_levels() if r["status"].startswith("rejected")]) == 2


def test_problems_are_input_errors(pipeline):
    pipeline.upper_limit = 10.0
    with pytest.raises(InputError, match="too few flats of filter 'R' within the limits"):
        pipeline.master_flat()
    with pytest.raises(InputError, match="no object frame named 'nope'"):
        pipeline.calibrated("nope")


def test_resolve_under_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "night1").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)
    assert resolve_under(root, "night1") == (root / "night1").resolve()
    for bad in ["..", "../..", "/etc", "night1/../../x", "link"]:
        with pytest.raises(InputError, match="outside the data root"):
            resolve_under(root, bad)


def test_sessions_asking_at_once_for_the_same_master_share_one_computation(night_files):
    """Eight sessions set the same new threshold at the same moment: the master flat (and the
    master dark and medians it needs) is computed once, and all get that one object."""
    from concurrent.futures import ThreadPoolExecutor

    MASTERS.clear()
    sessions = [Pipeline(night=str(night_files[0].parent)) for _ in range(8)]
    sessions[0].master_flat()  # the night's frames read, the default masters made
    before = dict(MASTERS.computed)

    def move(pipeline):
        pipeline.threshold = 1.9
        return pipeline.master_flat()

    with ThreadPoolExecutor(max_workers=8) as pool:
        flats = list(pool.map(move, sessions))
    assert all(flat is flats[0] for flat in flats)
    computed = {kind: MASTERS.computed[kind] - before.get(kind, 0)
                for kind in ("master_flat", "master_dark", "statistics")}
    # statistics: the darks' own clipping bounds at 1.9 and the flats' medians less that dark
    assert computed == {"master_flat": 1, "master_dark": 1, "statistics": 2}


def test_combining_values_that_cannot_go_together_are_one_input_problem(night_files):
    """Each value is accepted alone, but ClipOptions refuses them: every view says why."""
    pipeline = Pipeline(night=str(night_files[0].parent))
    pipeline.param.update(rejection="pclip", plow=95)
    with pytest.raises(InputError, match=r"plow < phigh"):
        pipeline.shown_dark()
    pipeline.param.update(rejection="sigclip", hsigma=float("inf"))
    with pytest.raises(InputError, match=r"hsigma must be a positive number, got inf"):
        pipeline.frame_levels()


def test_a_section_typed_half_is_one_input_problem_until_corrected(night_files):
    """A trim typed half ('[bad') stopped the scan with a ValueError in the server's log
    (found by the browser walk, tests/test_walk.py); now every view says why."""
    pipeline = Pipeline(night=str(night_files[0].parent))
    pipeline.trim = "[bad"
    with pytest.raises(InputError, match=r"'\[bad'"):
        pipeline.shown_dark()
    pipeline.trim = "auto"
    assert pipeline.shown_dark()[1].data.shape == SMALL_SPEC.shape


def test_a_pipeline_pickles_and_copies_with_its_parameters(night_files):
    import copy
    import pickle

    pipeline = Pipeline(night=str(night_files[0].parent), threshold=3.1)
    for twin in (pickle.loads(pickle.dumps(pipeline)), copy.deepcopy(pipeline)):
        assert (twin.night, twin.threshold) == (pipeline.night, 3.1)
        twin.trim = "none"  # its own lock: a scan runs
        assert twin.catalogue.frames and pipeline.trim == "auto"
