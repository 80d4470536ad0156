"""The whole-night reduction: plan, masters, products.

:func:`plan_night` checks a catalogue and reports every problem at once;
:func:`reduce_night` computes all masters in memory (so that a problem found
in the data, such as every flat of a filter being over the limit, stops the run
before anything is written), then writes the course script's products with
provenance, atomically.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, fitsio
from .calibrate import (MasterFlat, calibration_steps, combine_darks, combine_flats,
                        darks_for_frames, fill_rejected, flat_acceptance, frame_medians,
                        master_flat, normalise_flat, require_two_flats)
from .combine import CombineResult, concatenate_rows, frame_clip_bounds, frame_median
from .errors import BadPixelWarning, InputError, InputProblem, RejectedFlatWarning
from .frames import Catalogue, Frame, read_stack, scan, stack_dtype
from .parameters import ReductionParameters

__all__ = [
    "NightPlan",
    "NightResult",
    "dark_product_name",
    "flat_product_name",
    "plan_night",
    "reduce_night",
]

logger = logging.getLogger(__name__)

_MB = 1 << 20
#: Bytes per sample when combining darks: the raw value (up to 4) and its mask.
_DARK_SAMPLE_BYTES = 5


def dark_product_name(exptime: float) -> str:
    """The course script's master dark name: exposure time in ms, truncated, 8 digits."""
    return "dark_%08d.fits" % (exptime * 1000)


def safe_filter_name(filter_name: str) -> str:
    """A filter name fit for a file name: anything but letters, digits and ``._+-`` becomes ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", filter_name.strip())
    return re.sub(r"^\.", "_", safe) or "_"


def flat_product_name(filter_name: str) -> str:
    """The course script's master flat name, with the filter name made safe."""
    return f"flat_{safe_filter_name(filter_name)}.fits"


@dataclass(frozen=True)
class NightPlan:
    """Which frames make which products.

    Attributes
    ----------
    catalogue : Catalogue
        The scanned night.
    darks : dict of float to list of Frame
        Darks per exposure time that needs a master dark.
    flats : dict of str to list of Frame
        Flats per filter that needs a master flat.
    objects : list of Frame
        Object frames to calibrate.
    """

    catalogue: Catalogue
    darks: dict
    flats: dict
    objects: list

    @property
    def all_flats(self) -> list[Frame]:
        """Every flat, also of filters no object uses (they still get a '_d' file)."""
        return self.catalogue.of_type("flat")

    def product_names(self, intermediate: bool = True) -> list[str]:
        """The names of every product, in the order they are written."""
        names = [dark_product_name(t) for t in self.darks]
        names += [flat_product_name(f) for f in self.flats]
        if intermediate:
            names += [f"{frame.name}_d.fits" for frame in self.all_flats]
        for frame in self.objects:
            names += [f"{frame.name}_d.fits"] if intermediate else []
            names.append(f"{frame.name}_df.fits")
        return names


def plan_night(catalogue: Catalogue) -> NightPlan:
    """Decide the masters and products of a night, or raise every problem at once.

    Raises
    ------
    InputError
        Listing the catalogue's problems and the night's: an exposure time
        with no (or one) dark, a filter with no (or one) flat, two inputs that
        would write the same product.
    """
    problems = list(catalogue.problems)
    darks = {t: catalogue.darks(t) for t in catalogue.exptimes}
    flats = {f: catalogue.flats(f) for f in catalogue.filters}
    for exptime, frames in darks.items():
        users = [f for f in catalogue.frames if f.frame_type in ("flat", "object") and f.exptime == exptime]
        problems += _count_problems(frames, users, f"dark for exposure time {exptime:g} s")
    for name, frames in flats.items():
        users = [f for f in catalogue.of_type("object") if f.filter == name]
        problems += _count_problems(frames, users, f"flat for filter {name!r}")
    plan = NightPlan(catalogue, darks, flats, catalogue.of_type("object"))
    problems += _clash_problems(plan)
    if problems:
        raise InputError(problems)
    return plan


def _count_problems(frames, users, what) -> list[InputProblem]:
    if not frames:
        needed_by = ", ".join(f.path.name for f in users[:5]) + (" ..." if len(users) > 5 else "")
        return [InputProblem(users[0].path, f"no {what} (needed by {needed_by})")]
    if len(frames) < 2:
        return [InputProblem(frames[0].path, f"only one {what}; at least 2 are needed to combine")]
    return []


def _clash_problems(plan: NightPlan) -> list[InputProblem]:
    owners: dict[str, Frame | str] = {}
    problems = []
    for filter_name in plan.flats:
        other = owners.setdefault(flat_product_name(filter_name), filter_name)
        if other != filter_name:
            problems.append(InputProblem(None, f"filters {other!r} and {filter_name!r} both make "
                                               f"{flat_product_name(filter_name)}"))
    for frame in [*plan.all_flats, *plan.objects]:
        other = owners.setdefault(f"{frame.name}_d.fits", frame)
        if other is not frame:
            problems.append(InputProblem(frame.path, f"same file name as {other.path}; "
                                                     f"both would write {frame.name}_d.fits"))
    return problems


@dataclass
class NightResult:
    """What a reduction made.

    Attributes
    ----------
    output_dir : pathlib.Path
    products : list of pathlib.Path
        Every file written, in order.
    master_darks : dict of float to CombineResult
    master_flats : dict of str to MasterFlat
    plan : NightPlan
    """

    output_dir: Path
    plan: NightPlan
    master_darks: dict = field(default_factory=dict)
    master_flats: dict = field(default_factory=dict)
    products: list = field(default_factory=list)


def reduce_night(paths, output_dir, parameters: ReductionParameters | None = None, *,
                 overwrite: bool = False, resume: bool = False, progress=None,
                 memory_budget: int = 1024 * _MB, threads: int = 2) -> NightResult:
    """Reduce a night: master darks, master flats, calibrated object frames.

    Parameters
    ----------
    paths : iterable of path-like
        Raw files and folders of them.
    output_dir : path-like
        Where products go; created if missing.
    parameters : ReductionParameters, optional
        Keywords, clipping and limits; the course script's defaults if omitted.
    overwrite : bool, optional
        Replace products already in ``output_dir``; otherwise they are an error.
    resume : bool, optional
        Keep the products already in ``output_dir`` that are intact and were
        made from the same inputs and options (checked through their
        checksums and provenance); make the rest. The result equals an
        uninterrupted run.
    progress : callable, optional
        Called as ``progress(done, total, message)`` after each step.
    memory_budget : int, optional
        Bytes a stack may take; larger stacks are combined in blocks of rows.
    threads : int, optional
        Object frames calibrated and written at once.

    Returns
    -------
    NightResult

    Raises
    ------
    InputError
        Every problem with the input, before any product is written.
    """
    parameters = parameters or ReductionParameters()
    existing = existing_policy(overwrite, resume)
    result = prepare_night(paths, output_dir, parameters, existing)
    plan = result.plan
    steps = _Progress(progress, len(plan.darks) + len(plan.flats) + len(plan.objects))
    with _pool(threads) as pool:
        for exptime, frames in plan.darks.items():
            result.master_darks[exptime] = _combine_darks(frames, parameters, memory_budget,
                                                          pool.map)
            steps.advance(f"master dark {exptime:g} s")
        problems = []
        for filter_name, frames in plan.flats.items():
            try:
                result.master_flats[filter_name] = _combine_flats(
                    frames, result.master_darks, parameters, memory_budget, pool.map)
                report_flats(frames, result.master_flats[filter_name])
            except InputError as err:
                problems += err.problems
            steps.advance(f"master flat {filter_name}")
        if problems:
            raise InputError(problems)
        _write_products(result, parameters, existing, steps, pool)
    logger.info("wrote %d products to %s", len(result.products), output_dir)
    return result


@contextlib.contextmanager
def _pool(threads: int):
    """A thread pool whose queued tasks are dropped when the run fails or is interrupted."""
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ccdred") as pool:
        try:
            yield pool
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def existing_policy(overwrite: bool, resume: bool) -> str:
    """What to do with products already in the output folder: refuse, overwrite or resume."""
    return "resume" if resume else "overwrite" if overwrite else "refuse"


def prepare_night(paths, output_dir, parameters: ReductionParameters,
                  existing: str = "refuse") -> NightResult:
    """Scan and plan a night and check its output folder; nothing computed or written yet.

    Raises
    ------
    InputError
        Every problem with the input or the output folder.
    """
    plan = plan_night(scan(paths, parameters.keywords()))
    output_dir = Path(output_dir)
    _check_output(output_dir, plan.product_names(parameters.intermediate), existing)
    if existing == "resume":
        for path in fitsio.remove_partial_products(output_dir):
            logger.info("removed %s, left by an interrupted run", path)
    _log_plan(plan)
    return NightResult(output_dir, plan)


class _Progress:
    def __init__(self, callback, total):
        self.callback, self.total, self.done = callback, total, 0

    def advance(self, message):
        self.done += 1
        if self.callback:
            self.callback(self.done, self.total, message)


def _check_output(output_dir: Path, names, existing) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output_dir).close()
    except OSError as err:
        raise InputError([InputProblem(output_dir, f"output folder is not writable ({err.strerror})")]) from err
    present = [name for name in names if (output_dir / name).exists()]
    if present and existing == "refuse":
        msg = (f"output folder already holds {len(present)} of this night's products "
               f"(e.g. {present[0]}); use --resume to keep the intact ones or --overwrite "
               f"to replace them")
        raise InputError([InputProblem(output_dir, msg)])


def _log_plan(plan: NightPlan) -> None:
    logger.info("input files")
    for frame in plan.catalogue.frames:
        logger.info("  %s  type=%s exptime=%s filter=%s size=%dx%d", frame.path,
                    frame.frame_type or frame.imagetyp, frame.exptime, frame.filter,
                    frame.shape[1], frame.shape[0])
    logger.info("exposure times needing a master dark: %s s",
                ", ".join(f"{t:g}" for t in plan.darks))
    logger.info("filters needing a master flat: %s", ", ".join(plan.flats))


def row_blocks(shape, n_frames: int, bytes_per_sample: int, budget: int) -> list[slice]:
    """Row slices such that a block of the whole stack fits in ``budget`` bytes."""
    rows, cols = shape
    step = max(1, min(rows, budget // max(1, n_frames * cols * bytes_per_sample)))
    return [slice(start, min(rows, start + step)) for start in range(0, rows, step)]


def dark_blocks(frames, budget) -> list[slice]:
    """Row blocks for combining these darks within ``budget`` bytes."""
    return row_blocks(frames[0].shape, len(frames), _DARK_SAMPLE_BYTES, budget)


def flat_blocks(frames, budget) -> list[slice]:
    """Row blocks for combining these (raw) flats within ``budget`` bytes."""
    return row_blocks(frames[0].shape, len(frames), stack_dtype(frames).itemsize, budget)


def _combine_darks(frames, parameters, budget, map_frames=map) -> CombineResult:
    logger.info("combining %d darks of %g s", len(frames), frames[0].exptime)
    blocks = dark_blocks(frames, budget)
    if len(blocks) == 1:
        stack = read_stack(frames, map_frames=map_frames)
        bounds = None
        if parameters.frame_clip:
            bounds = list(map_frames(lambda dark: frame_clip_bounds(
                dark, **parameters.clip_options()), stack))
        return fill_rejected(combine_darks(stack, frame_clip=parameters.frame_clip,
                                           frame_bounds=bounds, keep_mask=False,
                                           **parameters.clip_options()))
    bounds = [dark_frame_bounds(frame, parameters) for frame in frames]
    return finish_master_dark([combine_dark_rows(frames, rows, bounds, parameters)
                               for rows in blocks])


def _combine_flats(frames, master_darks, parameters, budget, map_frames=map) -> MasterFlat:
    blocks = flat_blocks(frames, budget)
    if len(blocks) == 1:
        stack = read_stack(frames, map_frames=map_frames)
        darks, dark_index = _flat_darks(frames, master_darks)
        medians = frame_medians(stack, darks, dark_index, map_frames)
        _accepted_flats(frames, medians, parameters)
        return master_flat(stack, darks=darks, dark_index=dark_index, medians=medians,
                           upper_limit=parameters.upper_limit,
                           lower_limit=parameters.lower_limit, keep_mask=False,
                           **parameters.clip_options())
    medians = [flat_frame_median(frame, master_darks[frame.exptime]) for frame in frames]
    return finish_master_flat([combine_flat_rows(frames, rows, medians, master_darks, parameters)
                               for rows in blocks], medians, parameters)


# -- the row-block steps: whole-frame statistics first, then one block of rows at a time.
# Each is a task of its own on a Dask cluster, so one large stack spreads over workers.

def dark_frame_bounds(frame: Frame, parameters) -> tuple[float, float] | None:
    """A dark's own clipping bounds, from the whole frame (None without frame clipping)."""
    if not parameters.frame_clip:
        return None
    return frame_clip_bounds(frame.read(), **parameters.clip_options())


def combine_dark_rows(frames, rows: slice, bounds, parameters) -> CombineResult:
    """The clipped mean of one block of rows of the darks."""
    return combine_darks(read_stack(frames, rows), frame_clip=parameters.frame_clip,
                         frame_bounds=bounds if parameters.frame_clip else None,
                         keep_mask=False, **parameters.clip_options())


def finish_master_dark(parts) -> CombineResult:
    """Join the row blocks of a master dark; fully rejected pixels take its mean."""
    return fill_rejected(concatenate_rows(parts))


def flat_frame_median(frame: Frame, master_dark: CombineResult) -> float:
    """Median of a dark-subtracted flat, from the whole frame."""
    return frame_median(frame.read(), master_dark.data)


def combine_flat_rows(frames, rows: slice, medians, master_darks, parameters) -> CombineResult:
    """The scaled, clipped, weighted mean of one block of rows of the accepted flats."""
    medians = np.asarray(medians, dtype=np.float64)
    accepted = _accepted_flats(frames, medians, parameters)
    used = [frame for frame, ok in zip(frames, accepted, strict=True) if ok]
    darks, dark_index = _flat_darks(used, master_darks, rows)
    return combine_flats(read_stack(used, rows), medians[accepted], darks=darks,
                         dark_index=dark_index, keep_mask=False, **parameters.clip_options())


def finish_master_flat(parts, medians, parameters) -> MasterFlat:
    """Join the row blocks of a master flat and normalise it."""
    medians = np.asarray(medians, dtype=np.float64)
    combined = concatenate_rows(parts)
    normalised, n_bad = normalise_flat(combined.data)
    accepted = flat_acceptance(medians, upper_limit=parameters.upper_limit,
                               lower_limit=parameters.lower_limit)
    return MasterFlat(normalised, combined, medians, accepted, n_bad)


def _flat_darks(frames, master_darks, rows=None) -> tuple[np.ndarray, np.ndarray]:
    return darks_for_frames([frame.exptime for frame in frames],
                            {t: master.data for t, master in master_darks.items()}, rows)


def _accepted_flats(frames, medians, parameters) -> np.ndarray:
    """The flats within the limits; InputError naming them all when fewer than two are."""
    accepted = flat_acceptance(medians, upper_limit=parameters.upper_limit,
                               lower_limit=parameters.lower_limit)
    try:
        require_two_flats(accepted, medians)
    except ValueError as err:
        details = ", ".join(f"{f.path.name} {m:.0f}" for f, m in zip(frames, medians, strict=True))
        msg = (f"too few flats of filter {frames[0].filter!r} within the limits "
               f"(upper {parameters.upper_limit:g}, lower {parameters.lower_limit}): {details}")
        raise InputError([InputProblem(frames[0].path, msg)]) from err
    return accepted


def report_flats(frames, master: MasterFlat) -> None:
    """Log every flat's median; warn about rejected flats and unusable master pixels."""
    for frame, median, ok in zip(frames, master.medians, master.accepted, strict=True):
        logger.info("  %s: median = %.1f%s", frame.path, median, "" if ok else " (REJECTED)")
        if not ok:
            warnings.warn(f"{frame.path}: flat median {median:.1f} outside the limits; not used",
                          RejectedFlatWarning, stacklevel=3)
    if master.n_bad_pixels:
        warnings.warn(f"master flat {frames[0].filter!r}: {master.n_bad_pixels} pixels had no "
                      f"usable value (NaN, zero or negative in every flat) and were set to 1.0",
                      BadPixelWarning, stacklevel=3)


def _write_products(result: NightResult, parameters, existing, steps, pool) -> None:
    """Write every product through ``pool``; ``result.products`` keeps the plan's order."""
    plan, out = result.plan, result.output_dir
    masters = pool.submit(write_masters, plan, result.master_darks, result.master_flats, out,
                          parameters, existing)
    flats = [pool.submit(write_flat_intermediate, frame, result.master_darks[frame.exptime], out,
                         parameters, existing)
             for frame in (plan.all_flats if parameters.intermediate else [])]
    objects = pool.map(lambda frame: calibrate_object(
        frame, result.master_darks[frame.exptime], result.master_flats[frame.filter], out,
        parameters, existing), plan.objects)
    result.products += masters.result()
    result.products += [flat.result() for flat in flats]
    for frame, paths in zip(plan.objects, objects, strict=True):
        result.products.extend(paths)
        steps.advance(f"calibrated {frame.path.name}")


def _is_current(out: Path, name, step, inputs, parameters) -> bool:
    digest = fitsio.product_digest(step, inputs, parameters.provenance(), __version__)
    return fitsio.is_current_product(out / name, digest)


def _write(out: Path, name, data, header, step, inputs, parameters, existing) -> Path:
    """Write one product, unless resuming and an intact one made the same way is there."""
    if existing == "resume" and _is_current(out, name, step, inputs, parameters):
        logger.info("kept %s (current)", out / name)
        return out / name
    header = fitsio.add_provenance(header, step=step, inputs=inputs,
                                   options=parameters.provenance(), version=__version__)
    path = fitsio.write_image(out / name, data, header, dtype=parameters.dtype,
                              overwrite=existing != "refuse")
    logger.info("wrote %s", path)
    return path


def write_masters(plan: NightPlan, master_darks, master_flats, out, parameters,
                  existing="refuse") -> list[Path]:
    """Write the master darks and flats of a night; returns their paths.

    ``existing`` says what to do with a product already there: 'refuse' (an
    error), 'overwrite', or 'resume' (keep it if intact and made the same way).
    """
    paths = []
    for exptime, master in master_darks.items():
        frames = plan.darks[exptime]
        paths.append(_write(out, dark_product_name(exptime), master.data, frames[0].header(),
                            "master_dark", [f.path for f in frames], parameters, existing))
    for filter_name, master in master_flats.items():
        used = [f for f, ok in zip(plan.flats[filter_name], master.accepted, strict=True) if ok]
        paths.append(_write(out, flat_product_name(filter_name), master.data, used[0].header(),
                            "master_flat", [f.path for f in used], parameters, existing))
    return paths


def write_flat_intermediate(frame: Frame, master_dark: CombineResult, out, parameters,
                            existing="refuse") -> Path:
    """Write a flat's dark-subtracted '_d' file, as the course script does."""
    subtracted, _ = calibration_steps(frame.read(), master_dark.data,
                                      dtype=fitsio.storage_dtype(parameters.dtype))
    return _write(out, f"{frame.name}_d.fits", subtracted, frame.header(), "dark_subtracted",
                  [frame.path, dark_product_name(frame.exptime)], parameters, existing)


def calibrate_object(frame: Frame, master_dark: CombineResult, master_flat: MasterFlat, out,
                     parameters, existing="refuse") -> list[Path]:
    """Dark-subtract and flat-field one object frame; write its '_d' (optional) and '_df' files.

    When resuming and both products are intact and current, nothing is read or computed.
    """
    dark_name, flat_name = dark_product_name(frame.exptime), flat_product_name(frame.filter)
    targets = ([(f"{frame.name}_d.fits", "dark_subtracted", [frame.path, dark_name])]
               if parameters.intermediate else [])
    targets.append((f"{frame.name}_df.fits", "flat_fielded", [frame.path, dark_name, flat_name]))
    if existing == "resume" and all(_is_current(out, *t, parameters) for t in targets):
        logger.info("kept the products of %s (current)", frame.path)
        return [out / name for name, _, _ in targets]
    images = calibration_steps(frame.read(), master_dark.data, master_flat.data,
                               dtype=fitsio.storage_dtype(parameters.dtype))
    header = frame.header()
    return [_write(out, name, image, header, step, inputs, parameters, existing)
            for (name, step, inputs), image in zip(targets, images[-len(targets):], strict=True)]
