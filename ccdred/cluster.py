"""Reduce nights on a Dask cluster (``ccdred reduce --scheduler`` / ``--workers``).

Only this module imports dask, and only ``ccdred reduce`` with ``--scheduler``
or ``--workers`` (or the dashboard with ``CCDRED_SCHEDULER``) imports it.

The work is split the same way as on one machine, into tasks:

* one task per master (per night, exposure time and filter) when its stack
  fits the memory budget; otherwise a task per frame for its whole-frame
  statistics (clipping bounds, medians) and a task per block of rows, so one
  large stack spreads over the workers; the masters of different exposure
  times, filters and nights run in parallel;
* once every master of every night is known good (input problems stop the run
  before anything is written), the masters are replicated to all workers once;
* one task per product write: the masters of a night, each flat's ``_d`` file
  and each object frame (``_d`` and ``_df``).

Every worker must see the raw files and the output folders at the same paths
as the client (a shared filesystem). Products are written atomically, so a
task retried after a worker died never leaves a partial file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import InputError, InputProblem
from .fitsio import remove_partial_products
from .parameters import ReductionParameters
from .reduce import (NightResult, _combine_darks, _combine_flats, calibrate_object,
                     combine_dark_rows, combine_flat_rows, dark_blocks, dark_frame_bounds,
                     existing_policy, finish_master_dark, finish_master_flat, flat_blocks,
                     flat_frame_median, prepare_night, report_flats, write_flat_intermediate,
                     write_masters)

__all__ = ["connect", "reduce_nights_on_cluster"]

logger = logging.getLogger(__name__)

#: A task is retried this often when its worker dies (Dask also reschedules it).
RETRIES = 3


def connect(scheduler: str | None = None, workers: int | None = None, timeout: float = 10.0):
    """A ``distributed.Client`` for a scheduler address, or for a new local cluster.

    Raises
    ------
    InputError
        When the scheduler cannot be reached.
    """
    from distributed import Client, LocalCluster

    if scheduler is None:
        cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster)
    try:
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as err:
        msg = f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s ({err})"
        raise InputError([InputProblem(None, msg)]) from err


def reduce_nights_on_cluster(nights, client, parameters: ReductionParameters | None = None, *,
                             overwrite: bool = False, resume: bool = False,
                             memory_budget: int = 1024 << 20,
                             progress=None) -> list[NightResult]:
    """Reduce several nights on a Dask cluster, each into its own output folder.

    Parameters
    ----------
    nights : list of (paths, output_dir)
        The raw files (or folders) of each night and where its products go.
    client : distributed.Client
        The cluster to use (see :func:`connect`).
    parameters, overwrite, resume, memory_budget, progress
        As for :func:`ccdred.reduce_night`; ``memory_budget`` applies per worker.

    Returns
    -------
    list of NightResult
        One per night, in order, products included.

    Raises
    ------
    InputError
        Every problem of every night, before any product is written.
    """
    parameters = parameters or ReductionParameters()
    results = _prepare(nights, parameters, existing_policy(overwrite, resume))
    _compute_masters(results, client, parameters, memory_budget)
    futures = _submit_products(results, client, parameters, existing_policy(True, resume))
    _collect(futures, results, progress)
    return results


def _prepare(nights, parameters, existing) -> list[NightResult]:
    results, problems = [], []
    for paths, output_dir in nights:
        try:
            results.append(prepare_night(paths, output_dir, parameters, existing))
        except InputError as err:
            problems += err.problems
    if problems:
        raise InputError(problems)
    return results


def _compute_masters(results, client, parameters, memory_budget) -> None:
    from distributed import wait

    darks, flats = {}, {}
    for i, result in enumerate(results):
        for exptime, frames in result.plan.darks.items():
            darks[i, exptime] = _submit_dark(client, frames, parameters, memory_budget)
        for name, frames in result.plan.flats.items():
            needed = {t: darks[i, t] for t in {f.exptime for f in frames}}
            flats[i, name] = _submit_flat(client, frames, needed, parameters, memory_budget)
    wait([*darks.values(), *flats.values()])
    problems = []
    for (i, name), future in flats.items():
        if future.status == "error":
            error = future.exception()
            if not isinstance(error, InputError):
                raise error
            problems += error.problems
    for future in darks.values():
        if future.status == "error":
            raise future.exception()
    if problems:
        raise InputError(problems)
    for (i, exptime), future in darks.items():
        results[i].master_darks[exptime] = future
    for (i, name), future in flats.items():
        results[i].master_flats[name] = future
    client.replicate([*darks.values(), *flats.values()])


def _submit_dark(client, frames, parameters, budget):
    """One task for a stack that fits the budget; else a task per frame and per row block."""
    submit = {"retries": RETRIES, "pure": False}
    blocks = dark_blocks(frames, budget)
    if len(blocks) == 1:
        return client.submit(_combine_darks, frames, parameters, budget, **submit)
    bounds = [client.submit(dark_frame_bounds, frame, parameters, **submit) for frame in frames]
    parts = [client.submit(combine_dark_rows, frames, rows, bounds, parameters, **submit)
             for rows in blocks]
    return client.submit(finish_master_dark, parts, **submit)


def _submit_flat(client, frames, master_darks, parameters, budget):
    """As :func:`_submit_dark`, for the flats of one filter."""
    submit = {"retries": RETRIES, "pure": False}
    blocks = flat_blocks(frames, budget)
    if len(blocks) == 1:
        return client.submit(_combine_flats, frames, master_darks, parameters, budget, **submit)
    medians = [client.submit(flat_frame_median, frame, master_darks[frame.exptime], **submit)
               for frame in frames]
    parts = [client.submit(combine_flat_rows, frames, rows, medians, master_darks, parameters,
                           **submit) for rows in blocks]
    return client.submit(finish_master_flat, parts, medians, parameters, **submit)


def _submit_products(results, client, parameters, existing) -> list:
    """One task per write. Existing products were refused (or allowed) before anything
    was submitted; the tasks themselves overwrite (or resume), so that a task rerun
    after its worker died may replace what it had already written."""
    submit = {"retries": RETRIES, "pure": False}
    futures = []
    for i, result in enumerate(results):
        plan, out = result.plan, result.output_dir
        futures.append((i, None, client.submit(write_masters, plan, result.master_darks,
                                               result.master_flats, out, parameters, existing,
                                               **submit)))
        if parameters.intermediate:
            futures += [(i, None, client.submit(write_flat_intermediate, frame,
                                                result.master_darks[frame.exptime], out,
                                                parameters, existing, **submit))
                        for frame in plan.all_flats]
        futures += [(i, frame, client.submit(calibrate_object, frame,
                                             result.master_darks[frame.exptime],
                                             result.master_flats[frame.filter], out,
                                             parameters, existing, **submit))
                    for frame in plan.objects]
    return futures


def _collect(futures, results, progress) -> None:
    """Wait for the product tasks; fetch the masters; keep products in submission order."""
    from distributed import as_completed

    night_of = {future: i for i, _, future in futures}
    done = 0
    for future in as_completed([f for _, _, f in futures]):
        done += 1
        if progress:
            progress(done, len(futures), f"night {night_of[future] + 1}: product written")
    for i, _, future in futures:
        written = future.result()
        results[i].products.extend(written if isinstance(written, list) else [written])
    for result in results:
        for path in remove_partial_products(result.output_dir):
            logger.info("removed %s, left by a worker that died", path)
        result.master_darks = {t: f.result() for t, f in result.master_darks.items()}
        result.master_flats = {n: f.result() for n, f in result.master_flats.items()}
        for name, master in result.master_flats.items():
            report_flats(result.plan.flats[name], master)
        logger.info("wrote %d products to %s", len(result.products), Path(result.output_dir))
