"""The Dask runner: the same plan and steps as :mod:`ccdred.night`, submitted as tasks.

Only this module imports dask, and only ``ccdred reduce`` with ``--scheduler``
or ``--workers`` (or the dashboard with ``CCDRED_SCHEDULER``) imports it.

A master whose stack fits the memory budget is one task
(:func:`~ccdred.steps.make_master`); a larger one is a task per frame for its
statistic, a task per block of rows and a finishing task. Masters of
different exposure times, filters and nights run in parallel; once every
master of every night is known good (input problems stop the run before
anything is written) they are replicated to the workers, and each product
write is a task. Every worker must see the raw files and output folders at
the same paths as the client (a shared filesystem). Products are written
atomically, so a task retried after a worker died never leaves a partial file.
"""

from __future__ import annotations

import logging

from .errors import InputError, InputProblem
from .fitsio import remove_partial_products
from .night import (NightResult, add_masters_to_library, calibrate_object, create_output,
                    existing_policy, log_plan, master_planes, night_mask, night_noise,
                    night_premask, prepare_nights, write_bad_pixels, write_flat_intermediate,
                    write_masters)
from .parameters import ReductionParameters
from .steps import (PREMASK, as_written, choose, file_block, file_statistic, finish,
                    make_master, master_row_blocks, report_master, written_part)

__all__ = ["connect", "reduce_nights_on_cluster"]

logger = logging.getLogger(__name__)

#: A task is retried this often when its worker dies (Dask also reschedules it).
RETRIES = 3
_SUBMIT = {"retries": RETRIES, "pure": False}


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
    results = prepare_nights(nights, parameters, existing_policy(overwrite, resume))
    for result in results:
        create_output(result.output_dir, existing_policy(overwrite, resume))
        log_plan(result.plan)
        result.noise = night_noise(result.plan.catalogue, parameters)  # on the client
    futures = [_submit_masters(result, client, parameters, memory_budget) for result in results]
    _check_masters(futures)
    planes = [_submit_planes(result, masters, client) if parameters.planes else None
              for result, masters in zip(results, futures, strict=True)]
    client.replicate([f for night in futures for f in night.values()])
    products = _submit_products(results, futures, planes, client, parameters,
                                existing_policy(True, resume))
    _collect(products, results, futures, planes, parameters, progress)
    return results


def _submit_masters(result: NightResult, client, parameters, budget) -> dict:
    """A future per master of a night, each depending on the masters it needs."""
    options, futures, premasks = parameters.step_options().with_noise(result.noise), {}, {}
    for name, master in result.plan.masters.items():
        images = {need: client.submit(_written_image, futures[need], parameters.dtype, **_SUBMIT)
                  for need in master.needs}
        mask = _premask_image(result, master, futures, client, parameters, premasks)
        images |= mask
        blocks = master_row_blocks(master, options, budget)
        if len(blocks) == 1:
            futures[name] = client.submit(make_master, master, options, images, budget=budget,
                                          **_SUBMIT)
            continue
        statistics = [client.submit(file_statistic, master, options, i, images, **_SUBMIT)
                      for i in range(len(master.frames))]
        choice = client.submit(choose, master, options, statistics, **_SUBMIT)
        parts = [client.submit(file_block, master, options, rows, choice, images, **_SUBMIT)
                 for rows in blocks]
        futures[name] = client.submit(finish, master, options, parts, choice, mask, **_SUBMIT)
    return futures


def _premask_image(result: NightResult, master, futures, client, parameters, premasks) -> dict:
    """``{PREMASK: a future of the mask}`` when a bad-pixel mask is asked for (see
    :func:`~ccdred.night.night_premask`; the future gives None for a master it does not
    pre-mask), else nothing. One task per kind of master (``premasks``), given the master
    biases (what :func:`~ccdred.night.dark_rate` reads of the masters)."""
    if not parameters.writes_bad_pixels():
        return {}
    kind = (master.kind, master.library is None)
    if kind not in premasks:
        biases = {m.name: futures[m.name] for m in result.plan.of_kind("bias") if m.name in futures}
        premasks[kind] = client.submit(night_premask, result.plan, master, biases, parameters,
                                       result.user_mask, **_SUBMIT)
    return {PREMASK: premasks[kind]}


def _submit_planes(result: NightResult, masters, client) -> dict:
    """A future of each master's :class:`~ccdred.night.MasterPlanes`, from the master's and
    those of the masters it needs."""
    planes = {}
    for name, master in result.plan.masters.items():
        needs = {need: planes[need] for need in master.needs}
        planes[name] = client.submit(master_planes, master, masters[name], result.noise, needs,
                                     **_SUBMIT)
    return planes


def _written_image(master, dtype):
    """A master's image as its product holds it (see :func:`ccdred.steps.as_written`)."""
    return as_written(master.data, dtype)


def _check_masters(futures) -> None:
    """Wait for every master; InputError listing every input problem, other errors raised."""
    from distributed import wait

    every = [f for night in futures for f in night.values()]
    wait(every)
    problems = []
    for future in every:
        if future.status == "error":
            error = future.exception()
            if not isinstance(error, InputError):
                raise error
            problems += error.problems
    if problems:
        raise InputError(list(dict.fromkeys(problems)))


def _submit_products(results, futures, planes, client, parameters, existing) -> list:
    """One task per write. Existing products were refused (or allowed) before anything
    was submitted; the tasks themselves overwrite (or resume), so that a task rerun
    after its worker died may replace what it had already written."""
    tasks = []
    for i, (result, masters, night_planes) in enumerate(zip(results, futures, planes,
                                                             strict=True)):
        plan, out = result.plan, result.output_dir
        images = {name: client.submit(_written_image, future, parameters.dtype, **_SUBMIT)
                  for name, future in masters.items()}
        tasks.append((i, client.submit(write_masters, plan, masters, out, parameters, existing,
                                       result.noise, night_planes, **_SUBMIT)))
        mask = (client.submit(night_mask, plan, masters, parameters, result.user_mask, **_SUBMIT)
                if parameters.writes_bad_pixels() else None)
        if mask is not None:
            tasks.append((i, client.submit(write_bad_pixels, mask, plan, out, parameters,
                                           existing, **_SUBMIT)))
        if parameters.intermediate:
            tasks += [(i, client.submit(write_flat_intermediate, frame, plan.flat_terms[frame.path],
                                        images, out, parameters, existing,
                                        library=plan.library_history(
                                            plan.flat_terms[frame.path].needs),
                                        noise=result.noise, **_SUBMIT))
                      for frame in plan.all_flats]
        tasks += [(i, client.submit(calibrate_object, step, images, out, parameters, existing,
                                    library=plan.library_history((*step.term.needs, step.flat)),
                                    noise=result.noise, planes=night_planes, extra_mask=mask,
                                    **_SUBMIT))
                  for step in plan.calibrations]
    return tasks


def _collect(tasks, results, futures, planes, parameters, progress) -> None:
    """Wait for the product tasks; fetch the masters; keep products in submission order."""
    from distributed import as_completed

    night_of = {future: i for i, future in tasks}
    for done, future in enumerate(as_completed([f for _, f in tasks]), start=1):
        if progress:
            progress(done, len(tasks), f"night {night_of[future] + 1}: product written")
    for i, future in tasks:
        written = future.result()
        results[i].products.extend(written if isinstance(written, list) else [written])
    for result, masters, night_planes in zip(results, futures, planes, strict=True):
        options = parameters.step_options().with_noise(result.noise)
        result.planes = {name: future.result() for name, future in (night_planes or {}).items()}
        for path in remove_partial_products(result.output_dir):
            logger.info("removed %s, left by a worker that died", path)
        result.masters = {name: written_part(future.result(), parameters.dtype)
                          for name, future in masters.items()}
        for name, master in result.plan.masters.items():
            report_master(master, options, result.masters[name])
        logger.info("wrote %d products to %s", len(result.products), result.output_dir)
        add_masters_to_library(result, parameters)
