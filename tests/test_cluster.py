"""Reduction on a real dask.distributed cluster (process workers on this machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits

from ccdred.demo import NightSpec, make_night
from ccdred.night import reduce_night

from .conftest import assert_same_products, write_nights

distributed = pytest.importorskip("distributed")

NIGHTS = {"night-a": NightSpec(shape=(40, 56), seed=31),
          "night-b": NightSpec(shape=(40, 56), seed=32, filters=("B", "V"))}


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    return write_nights(tmp_path_factory.mktemp("nights"), NIGHTS)


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "ccdred", "reduce", "-q", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


def test_cluster_products_equal_the_local_run(nights, client, tmp_path):
    from ccdred.cluster import reduce_nights_on_cluster

    jobs = [([nights / name], tmp_path / "cluster" / name) for name in NIGHTS]
    results = reduce_nights_on_cluster(jobs, client)
    assert [r.output_dir.name for r in results] == list(NIGHTS)
    for name, result in zip(NIGHTS, results, strict=True):
        local = reduce_night([nights / name], tmp_path / "local" / name)
        assert sorted(p.name for p in result.products) == sorted(p.name for p in local.products)
        assert_same_products(tmp_path / "local" / name, tmp_path / "cluster" / name)
        for exptime, master in local.master_darks.items():
            np.testing.assert_array_equal(result.master_darks[exptime].data, master.data)


def test_cluster_reports_input_problems_before_writing(nights, client, tmp_path):
    from ccdred.cluster import reduce_nights_on_cluster
    from ccdred.errors import InputError
    from ccdred.parameters import ReductionParameters

    jobs = [([nights / name], tmp_path / name) for name in NIGHTS]
    with pytest.raises(InputError, match="too few flats of filter") as raised:
        reduce_nights_on_cluster(jobs, client, ReductionParameters(upper_limit=100.0))
    assert len(raised.value.problems) == 4  # two filters in each of two nights
    assert not list(tmp_path.rglob("*.fits"))


def test_cli_workers_reduces_each_night_into_its_own_folder(nights, tmp_path):
    done = run_cli("--workers", "2", "-d", tmp_path / "out", nights / "night-a", nights / "night-b")
    assert done.returncode == 0, done.stderr
    for name in NIGHTS:
        assert f"products in {tmp_path / 'out' / name}" in done.stderr
        local = run_cli("-d", tmp_path / "local" / name, nights / name)
        assert local.returncode == 0
        assert_same_products(tmp_path / "local" / name, tmp_path / "out" / name)


def test_several_nights_without_dask_import_no_dask(nights, tmp_path):
    code = ("import sys; from ccdred.cli import main; "
            f"status = main(['reduce', '-q', '-d', {str(tmp_path)!r}, {str(nights / 'night-a')!r}, "
            f"{str(nights / 'night-b')!r}]); "
            "print(status, 'dask' in sys.modules, 'distributed' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["0", "False", "False"], done.stderr
    assert {p.name for p in tmp_path.iterdir()} >= set(NIGHTS)


def test_wrong_scheduler_address_is_one_clear_line(nights, tmp_path):
    done = run_cli("--scheduler", "tcp://127.0.0.1:9", "-d", tmp_path / "out", nights / "night-a")
    assert done.returncode == 2
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in done.stderr
    assert "Traceback" not in done.stderr


def test_killed_worker_loses_no_product(tmp_path):
    """SIGKILL a worker mid-run: Dask reruns its tasks; every product is complete and right."""
    night = tmp_path / "night"
    make_night(night, NightSpec(shape=(256, 256), seed=41, n_objects=25))
    expected = tmp_path / "expected"
    assert run_cli("-d", expected, night).returncode == 0
    total = len(list(expected.glob("*.fits")))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        out = tmp_path / "out"
        run = subprocess.Popen([sys.executable, "-m", "ccdred", "reduce", "-q", "--scheduler",
                                cluster.scheduler_address, "-d", str(out), str(night)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(list(out.glob("*_df.fits"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        written_at_kill = len(list(out.glob("*.fits")))
        running_at_kill = run.poll() is None
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        _, stderr = run.communicate(timeout=300)
    cluster.close()
    assert running_at_kill and written_at_kill < total, "the run ended before the kill"
    assert run.returncode == 0, stderr
    assert not list(out.glob(".*.part"))
    for path in out.glob("*.fits"):
        with fits.open(path, checksum=True) as hdus:
            assert hdus[0].verify_checksum() == 1, path.name
    assert_same_products(expected, out)


def test_dashboard_reduces_on_the_configured_scheduler(nights, client, tmp_path, monkeypatch):
    from ccdred.job import reduce_one_night
    from ccdred.parameters import ReductionParameters

    monkeypatch.setenv("CCDRED_SCHEDULER", client.scheduler.address)
    def transitions(dask_scheduler):
        return dask_scheduler.transition_counter

    before = client.run_on_scheduler(transitions)
    result = reduce_one_night(nights / "night-a", tmp_path / "out", ReductionParameters(), None)
    assert sorted(p.name for p in result.products) == sorted(result.plan.product_names())
    assert client.run_on_scheduler(transitions) > before + len(result.products)  # ran there
    local = reduce_night([nights / "night-a"], tmp_path / "local")
    assert_same_products(tmp_path / "local", tmp_path / "out")
    assert len(local.products) == len(result.products)


def test_a_stack_over_the_budget_is_split_into_row_block_tasks(nights, client, tmp_path):
    from ccdred.cluster import reduce_nights_on_cluster

    def transitions(dask_scheduler):
        return dask_scheduler.transition_counter

    whole = reduce_nights_on_cluster([([nights / "night-a"], tmp_path / "whole")], client)
    before = client.run_on_scheduler(transitions)
    reduce_nights_on_cluster([([nights / "night-a"], tmp_path / "blocks")], client,
                             memory_budget=8_000)
    tasks = client.run_on_scheduler(transitions) - before
    assert tasks > 3 * len(whole[0].products)  # per-frame and per-block tasks, not one per master
    local = tmp_path / "local"
    reduce_night([nights / "night-a"], local, memory_budget=8_000)
    assert_same_products(local, tmp_path / "blocks")
    for name in ("flat_V.fits", "flat_R.fits", "dark_00060000.fits"):
        np.testing.assert_allclose(fits.getdata(tmp_path / "blocks" / name),
                                   fits.getdata(tmp_path / "whole" / name), rtol=1e-6)
