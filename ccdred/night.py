"""The in-process runner: a night's plan made into products on this machine.

:func:`reduce_night` scans and plans a night (every problem reported at
once), makes every master in memory with a thread pool (stacks larger than
the memory budget in blocks of rows), so that a problem found in the data
stops the run before anything is written, then writes the products with
provenance, atomically (with their uncertainty and mask planes when asked:
:func:`master_planes`, :func:`frame_planes`). The product writers here serve the Dask
runner too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import fitsio
from ._version import __version__
from .badpix import HOT_SIGMA, bad_pixel_mask, flat_defects, hot_pixels, read_bad_pixel_mask
from .calibrate import calibration_steps, calibration_uncertainty
from .cosmics import CosmicRays, LACosmic, cosmic_ray_mask
from .errors import CalibrationWarning, CcdredWarning, InputError, InputProblem
from .frames import Catalogue, Frame, scan
from .library import add_to_library
from .noise import (DetectorNoise, PhotonTransferCurve, central_region, detector_noise, level_pair,
                    photon_transfer_curve)
from .parameters import ReductionParameters
from .plan import DarkTerm, Master, NightPlan, ObjectStep, plan_night
from .planes import (MaskBit, combined_variance, dark_current_bias_share,
                     dark_current_variance, flat_term_share, flat_variance, frame_mask,
                     frame_variance, normalised_variance, saturation_level, scaled_variance)
from .sections import Mosaic
from .steps import (PREMASK, UNKNOWN_NOISE, as_written, make_master, report_master,
                    written_part)

__all__ = [
    "BAD_PIXELS",
    "MasterPlanes",
    "NightResult",
    "add_masters_to_library",
    "calibrate_object",
    "create_output",
    "dark_rate",
    "existing_policy",
    "frame_cosmic_rays",
    "frame_planes",
    "frame_saturation",
    "log_file",
    "log_plan",
    "log_to",
    "master_planes",
    "night_bad_pixels",
    "night_mask",
    "night_noise",
    "night_premask",
    "noise_cards",
    "prepare_night",
    "prepare_nights",
    "read_samples",
    "reduce_night",
    "run_night",
    "summary",
    "term_variance",
    "warnings_to",
    "write_bad_pixels",
    "write_flat_intermediate",
    "write_masters",
]

logger = logging.getLogger(__name__)

_MB = 1 << 20


@dataclass
class NightResult:
    """What a reduction made.

    Attributes
    ----------
    output_dir : pathlib.Path
    plan : NightPlan
    masters : dict of str to CombineResult or MasterFlat
        Every master, by product name, its image as written (in the products'
        dtype, which the night calibrated with; see :func:`ccdred.steps.as_written`).
    products : list of pathlib.Path
        Every file written, in order.
    noise : DetectorNoise or None
        The gain and read noise the products' ``GAIN`` and ``RDNOISE`` cards say (see
        :func:`night_noise`); None when unknown.
    user_mask : numpy.ndarray or None
        The user's bad-pixel mask (``--bad-pixel-mask``), read when the night is prepared
        (:func:`~ccdred.badpix.read_bad_pixel_mask`); None without one.
    planes : dict of str to MasterPlanes
        Every master's planes, by product name, when the night writes planes.
    """

    output_dir: Path
    plan: NightPlan
    masters: dict = field(default_factory=dict)
    products: list = field(default_factory=list)
    noise: DetectorNoise | None = None
    user_mask: np.ndarray | None = None
    planes: dict = field(default_factory=dict)

    @property
    def master_darks(self) -> dict:
        """Exact master darks by exposure time."""
        return {t: self.masters[m.name] for t, m in self.plan.darks.items() if m.name in self.masters}

    @property
    def master_flats(self) -> dict:
        """Master flats by filter."""
        return {f: self.masters[m.name] for f, m in self.plan.flats.items() if m.name in self.masters}

    def images(self) -> dict:
        """The masters' images, by product name."""
        return {name: master.data for name, master in self.masters.items()}


def reduce_night(paths, output_dir, parameters: ReductionParameters | None = None, *,
                 overwrite: bool = False, resume: bool = False, progress=None,
                 memory_budget: int = 1024 * _MB, threads: int = 2) -> NightResult:
    """Reduce a night: masters, then calibrated object frames.

    Parameters
    ----------
    paths : iterable of path-like
        Raw files and folders of them.
    output_dir : path-like
        Where products go; created if missing.
    parameters : ReductionParameters, optional
        Keywords, calibration, clipping and limits; the course script's
        defaults if omitted.
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
        Frames read, measured and calibrated at once.

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
    return run_night(result, parameters, existing, progress=progress,
                     memory_budget=memory_budget, threads=threads)


def run_night(result: NightResult, parameters: ReductionParameters, existing: str = "refuse", *,
              progress=None, memory_budget: int = 1024 * _MB, threads: int = 2) -> NightResult:
    """Make the masters and products of a prepared night (see :func:`prepare_night`).

    The output folder is created here; a problem found in the data (e.g. no
    flat of a filter within the limits) stops the run before any product is
    written.
    """
    plan = result.plan
    create_output(result.output_dir, existing)
    log_plan(plan)
    result.noise = night_noise(plan.catalogue, parameters)
    options = parameters.step_options().with_noise(result.noise)
    steps = _Progress(progress, len(plan.masters) + len(plan.calibrations))
    with _pool(threads) as pool:
        problems, premasks = [], {}
        for name, master in plan.masters.items():
            if any(need not in result.masters for need in master.needs):
                continue  # a master it needs failed: its problem is reported
            try:
                images = result.images() | _premask_image(master, result, parameters, premasks)
                result.masters[name], planes = _made(
                    master, options, images, memory_budget, pool.map,
                    parameters.dtype, result.planes if parameters.planes else None, result.noise)
                if planes is not None:
                    result.planes[name] = planes
            except InputError as err:
                problems += err.problems
            steps.advance(master.label)
        if problems:
            raise InputError(problems)
        _write_products(result, parameters, existing, steps, pool)
    logger.info("wrote %d products to %s", len(result.products), result.output_dir)
    add_masters_to_library(result, parameters)
    return result


def _premask_image(master, result: NightResult, parameters, premasks: dict) -> dict:
    """``{PREMASK: mask}`` when the bad-pixel mask pre-masks ``master`` (see
    :func:`night_premask`), else nothing; ``premasks`` keeps the masks found, by kind of
    master, so that the darks are read once."""
    kind = (master.kind, master.library is None)
    if kind not in premasks:
        premasks[kind] = night_premask(result.plan, master, result.masters, parameters,
                                       result.user_mask)
    mask = premasks[kind]
    return {} if mask is None else {PREMASK: mask}


def add_masters_to_library(result: NightResult, parameters: ReductionParameters) -> list[Path]:
    """With ``add_to_library``, copy the masters the night made (not those it took from the
    library) into the library (see :func:`ccdred.library.add_to_library`)."""
    if not parameters.add_to_library:
        return []
    return add_to_library(parameters.library,
                          [result.output_dir / master.name for master in result.plan.made])


def _made(master, options, images, budget: int, map_frames, dtype, planes=None, noise=None):
    """Make a master, report it, and return what the night keeps of it: its image as
    written (what it drops is freed before the next master is made) and, given the planes
    of the masters made before it (``planes``), its :class:`MasterPlanes` (else None)."""
    made = make_master(master, options, images, budget=budget, map_frames=map_frames)
    report_master(master, options, made)
    kept = None if planes is None else master_planes(master, made, noise, planes)
    return written_part(made, dtype), kept


def summary(result: NightResult, limits) -> list[str]:
    """What a reduction made, in a few lines: products, dark models, flats used and rejected."""
    models = ", ".join(f"{m} {n}" for m, n in sorted(result.plan.models().items()))
    lines = [f"{len(result.products)} products" + (f"; dark model per frame: {models}" if models else "")]
    for name, master in result.plan.masters.items():
        made = result.masters.get(name)
        if master.kind != "flat" or made is None or master.library is not None:
            continue
        statuses = limits.statuses(made.medians)
        lines.append(f"{master.label}: {int(made.accepted.sum())} of {len(master.frames)} flats used")
        lines += [f"  {frame.path.name}: {status}" for frame, status in
                  zip(master.frames, statuses, strict=True) if status != "used"]
    return lines


def log_file(path) -> logging.FileHandler:
    """A handler writing a new log file (``ccdred.log``) in lines ``# time LEVEL message``:
    the command line's log and :func:`log_to`'s."""
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("# %(asctime)s %(levelname)s %(message)s"))
    return handler


@contextlib.contextmanager
def log_to(path: Path):
    """Log this thread's reduction (and its worker threads') to a file, e.g. ``ccdred.log``."""
    handler = log_file(path)
    caller = threading.get_ident()
    handler.addFilter(lambda record: record.thread == caller
                      or record.threadName.startswith(_POOL_PREFIX))
    root = logging.getLogger("ccdred")
    root.addHandler(handler)
    # INFO goes to the file only, not to the application's console (a server's log).
    level, propagate = root.level, root.propagate
    root.setLevel(logging.INFO)
    root.propagate = False
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        root.propagate = propagate
        handler.close()


#: Names of the threads of a night's pool.
_POOL_PREFIX = "ccdred-night"


@contextlib.contextmanager
def warnings_to(note):
    """Hand the warnings raised in this thread to ``note(message, category)`` instead of
    showing them.

    For front ends that say ccdred's warnings themselves (a reduction's log and page):
    every warning this thread raises (a rejected flat, a header section not used) reaches
    ``note`` as its message and class, each time it is raised, and none is printed. Other
    threads' warnings are shown by the hook they had, so a server's sessions are left alone
    (unlike :class:`warnings.catch_warnings`, which swaps the hook for every thread); from
    the first call on, ccdred's own warnings are shown each time they are raised, in every
    thread (Python would show a warning once per place: a second reduction of the same night
    would say nothing).

    Examples
    --------
    >>> said = []
    >>> with warnings_to(lambda message, category: said.append((message, category.__name__))):
    ...     warnings.warn("flat suspect", CalibrationWarning)
    >>> said
    [('flat suspect', 'CalibrationWarning')]
    """
    _route_warnings()
    thread = threading.get_ident()
    before = _NOTES.get(thread)
    _NOTES[thread] = note
    try:
        yield
    finally:
        if before is None:
            del _NOTES[thread]
        else:
            _NOTES[thread] = before


#: Where each thread's warnings go, by thread id (see :func:`warnings_to`).
_NOTES: dict = {}


def _route_warnings() -> None:
    """Put :func:`_show_or_note` in as Python's warning hook (once; again if someone
    restored the hook they had), and let ccdred's warnings through each time."""
    warnings.filterwarnings("always", category=CcdredWarning)
    if warnings.showwarning is not _show_or_note:
        _show_or_note.shown = warnings.showwarning
        warnings.showwarning = _show_or_note


def _show_or_note(message, category, filename, lineno, file=None, line=None):
    """The warning hook: a thread's warnings to its note (see :func:`warnings_to`), other
    threads' shown by the hook this one replaced."""
    note = _NOTES.get(threading.get_ident())
    if note is None:
        _show_or_note.shown(message, category, filename, lineno, file, line)
    else:
        note(str(message), category)


@contextlib.contextmanager
def _pool(threads: int):
    """A thread pool whose queued tasks are dropped when the run fails or is interrupted."""
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix=_POOL_PREFIX) as pool:
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
    catalogue = scan(paths, parameters.keywords(), parameters.preprocessing())
    for note in catalogue.notes:  # said even if the plan fails: frames of an unknown type
        warnings.warn(note, CalibrationWarning, stacklevel=2)
    plan = plan_night(catalogue, parameters.plan_options())
    for note in plan.notes:
        warnings.warn(note, CalibrationWarning, stacklevel=2)
    output_dir = Path(output_dir)
    names = plan.product_names(parameters.intermediate)
    if not names:
        raise InputError([_nothing_to_make(catalogue, paths)])
    _require_planes(parameters)
    _require_one_image_for_library(plan, parameters)
    _require_noise(catalogue, parameters, Path(paths[0]) if len(paths) == 1 else None)
    user_mask = (read_bad_pixel_mask(parameters.bad_pixel_mask, catalogue.frames[0].shape)
                 if parameters.bad_pixel_mask else None)
    _check_output(output_dir, names + ([BAD_PIXELS] if parameters.writes_bad_pixels() else []),
                  existing)
    return NightResult(output_dir, plan, user_mask=user_mask)


def _require_planes(parameters: ReductionParameters) -> None:
    """InputError when cosmic rays are asked for without the planes their bits go to, or
    their replacement without them."""
    if parameters.cosmic_ray_replace and not parameters.cosmic_rays:
        msg = "--cosmic-ray-replace needs --cosmic-rays: it replaces the rays those find"
        raise InputError([InputProblem(None, msg)])
    if parameters.cosmic_rays and not parameters.planes:
        msg = ("--cosmic-rays needs --planes: the rays are marked in the products' MASK "
               "plane (bit 16), which only --planes writes")
        raise InputError([InputProblem(None, msg)])


def _require_one_image_for_library(plan: NightPlan, parameters: ReductionParameters) -> None:
    """InputError when masters written an extension per amplifier would go to the library,
    which keeps (and reads back) masters of one image."""
    if not parameters.add_to_library:
        return
    split = next((frame for master in plan.made for frame in master.frames
                  if _layout(frame, parameters) is not None), None)
    if split is not None:
        msg = (f"{len(split.preprocess.amplifiers)} image extensions (amplifiers): "
               "--add-to-library keeps masters of one image; give --tile with it to write "
               "the masters as one image placed by their DETSECs")
        raise InputError([InputProblem(split.path, msg)])


def _require_noise(catalogue: Catalogue, parameters: ReductionParameters, where) -> None:
    """InputError, before anything is written, when ``ccdclip`` or cosmic rays need a gain
    and read noise this night cannot give (``where``: the night's folder, for the message)."""
    needs = [what for what, asked in (("ccdclip", parameters.rejection == "ccdclip"),
                                      ("--cosmic-rays", parameters.cosmic_rays)) if asked]
    if not needs:
        return
    with warnings.catch_warnings():  # said again, into the log, when the night is run
        warnings.simplefilter("ignore")
        noise = night_noise(catalogue, parameters)
    if noise is None:
        raise InputError([InputProblem(where, f"{' and '.join(needs)} {UNKNOWN_NOISE}")])


def _nothing_to_make(catalogue, paths) -> InputProblem:
    """The problem of a night that yields no product: what it holds, and how to map it."""
    found = Counter(frame.frame_type or (f"unknown {frame.type_keyword or catalogue.keywords.imagetyp}"
                                         f" = {frame.imagetyp!r}") for frame in catalogue.frames)
    held = ", ".join(f"{count} {kind}" for kind, count in sorted(found.items())) or "no frames"
    where = Path(paths[0]) if len(paths) == 1 else None
    return InputProblem(where, f"nothing to make: the night holds {held}; it needs flats or "
                               "object frames. Map other values with --keyword-datatype-flat "
                               "or --keyword-datatype-object VALUE, or files by name with "
                               "--frame-type 'GLOB=TYPE'")


def prepare_nights(nights, parameters: ReductionParameters, existing: str = "refuse") -> list:
    """:func:`prepare_night` for each ``(paths, output_dir)``; InputError with every
    problem of every night."""
    prepared, problems = [], []
    for paths, output_dir in nights:
        try:
            prepared.append(prepare_night(paths, output_dir, parameters, existing))
        except InputError as err:
            problems += err.problems
    if problems:
        raise InputError(problems)
    return prepared


class _Progress:
    def __init__(self, callback, total):
        self.callback, self.total, self.done = callback, total, 0

    def advance(self, message):
        self.done += 1
        if self.callback:
            self.callback(self.done, self.total, message)


def _check_output(output_dir: Path, names, existing) -> None:
    """InputError unless ``output_dir`` is (or can be made as) a writable folder; nothing made."""
    existing_part = next((p for p in (output_dir, *output_dir.parents) if p.exists()), Path("."))
    if not existing_part.is_dir():
        msg = "output folder is not writable (Not a directory)"
        raise InputError([InputProblem(output_dir, msg)])
    if not os.access(existing_part, os.W_OK | os.X_OK):
        msg = f"output folder is not writable (Permission denied: {existing_part})"
        raise InputError([InputProblem(output_dir, msg)])
    present = [name for name in names if (output_dir / name).exists()]
    if present and existing == "refuse":
        msg = (f"output folder already holds {len(present)} of this night's products "
               f"(e.g. {present[0]}); use --resume to keep the intact ones or --overwrite "
               f"to replace them")
        raise InputError([InputProblem(output_dir, msg)])


def create_output(output_dir: Path, existing: str) -> None:
    """Make the output folder (InputError if it cannot be written); when resuming, remove
    the temporary files an interrupted run left there."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output_dir).close()
    except OSError as err:
        msg = f"output folder is not writable ({err.strerror})"
        raise InputError([InputProblem(output_dir, msg)]) from err
    if existing == "resume":
        for path in fitsio.remove_partial_products(output_dir):
            logger.info("removed %s, left by an interrupted run", path)


def log_plan(plan: NightPlan) -> None:
    """Log the night's frames, masters and what each object frame gets."""
    logger.info("input files")
    for frame in plan.catalogue.frames:
        logger.info("  %s  type=%s exptime=%s filter=%s size=%dx%d", frame.path,
                    frame.frame_type or frame.imagetyp, frame.exptime, frame.filter,
                    frame.shape[1], frame.shape[0])
    for master in plan.masters.values():
        logger.info("%s %s", master.label, master.source())
    models = ", ".join(f"{model} {count}" for model, count in sorted(plan.models().items()))
    logger.info("dark model per frame: %s", models or "none needed")
    for step in plan.calibrations:
        logger.info("  %s: %s, %s", step.frame.path.name, step.term.describe(), step.flat)


# -- the detector's gain and read noise: once per night, for both runners --------------

#: The measured block: the central half of each axis, at most this many pixels along each
#: (512² pixels measure the gain to about 0.5 %, in a tenth of a second).
NOISE_PIXELS = 512
#: The most flats read to find two of one filter at one level.
NOISE_FLATS = 8


def night_noise(catalogue: Catalogue, parameters: ReductionParameters) -> DetectorNoise | None:
    """The night's gain and read noise: an option's, else the first frame's header's, else
    measured; logged in one line, with where each came from.

    Unless both are options, they are measured (see :func:`ccdred.noise.detector_noise`)
    from the night's first two biases and, for the gain, two flats of one filter at one
    level (signals within 10 %, within the flat limits), on the central block of each
    frame (:data:`NOISE_PIXELS`) as :meth:`~ccdred.frames.Frame.read` gives it (overscan
    subtracted, trimmed): a measured value far from the header's is a
    :class:`~ccdred.errors.NoiseWarning`. When either stays unknown (no option, no header
    value, too few frames), the log says so and None is returned: the night is reduced
    all the same.

    Raises
    ------
    InputError
        When an option is not finite.
    """
    options = parameters.detector_options()
    biases, flats = (_noise_frames(catalogue, parameters.flat_limits())
                     if None in options.values() else ([], []))
    first = next(iter(catalogue.frames), None)  # None: a folder without frames (Pipeline's)
    noise, reason = _chosen_noise(first, biases, flats, options)
    if noise is None:
        logger.info("gain and read noise unknown (%s); the products get no GAIN or RDNOISE "
                    "card%s", reason, ", and no UNCERT plane (MASK only)" if parameters.planes
                    else "")
    else:
        logger.info("gain %.3g e-/ADU (%s), read noise %.3g e- (%s)", noise.gain,
                    noise.gain_source, noise.read_noise, noise.read_noise_source)
    return noise


def noise_cards(noise: DetectorNoise | None) -> dict:
    """The ``GAIN`` and ``RDNOISE`` cards of a night's products, each with a comment naming
    its source; measured values to 4 significant digits. None gives no card.

    Examples
    --------
    >>> noise_cards(DetectorNoise(2.06, 13.81234, "header EGAIN", "measured from 2 biases"))
    {'GAIN': (2.06, 'e-/ADU, header EGAIN'), 'RDNOISE': (13.81, 'e-, measured from 2 biases')}
    """
    if noise is None:
        return {}
    cards = {}
    for key, value, unit, source in (("GAIN", noise.gain, "e-/ADU", noise.gain_source),
                                     ("RDNOISE", noise.read_noise, "e-", noise.read_noise_source)):
        shown = float(f"{value:.4g}") if source.startswith("measured") else value
        cards[key] = (shown, f"{unit}, {source}")
    return cards


def _chosen_noise(first: Frame | None, biases, flats, options) -> tuple[DetectorNoise | None, str]:
    """:func:`~ccdred.noise.detector_noise` with the first frame's header and these frames
    (the whole of each), again without the flats should they not measure (no brighter than
    the biases); (None, why) when a value stays unknown."""
    header, path = (first.header(), first.path) if first is not None else ({}, None)
    reason = ""
    for some_flats in ([flats, []] if flats else [[]]):
        try:
            return detector_noise(header, biases=biases, flats=some_flats, path=path,
                                  region=(slice(None), slice(None)), **options), ""
        except ValueError as err:
            reason = str(err)
    return None, reason


def _noise_frames(catalogue: Catalogue, limits) -> tuple[list, list]:
    """The central blocks of the night's first two biases (of one shape) and of its first
    two flats of one filter at one level; none (or no flats) where the night has too few."""
    biases = _first_two(catalogue.of_type("bias"), key=lambda frame: frame.shape)
    if not biases:
        return [], []
    region = central_region(biases[0].shape, most=NOISE_PIXELS)
    bias_images = [_central(frame, region) for frame in biases]
    bias_level = float(np.median(bias_images[0]))
    flats = [f for f in catalogue.of_type("flat") if f.shape == biases[0].shape][:NOISE_FLATS]
    read = {}  # filter -> [(image, signal)] of the flats within the limits
    for frame in flats:
        image = _central(frame, region)
        signal = float(np.median(image)) - bias_level
        if not limits.accepts([signal])[0]:
            continue
        same = read.setdefault(frame.filter, [])
        same.append((image, signal))
        pair = level_pair([level for _, level in same])
        if pair is not None:
            return bias_images, [same[i][0] for i in pair]
    return bias_images, []


def night_photon_transfer(catalogue: Catalogue, limits) -> PhotonTransferCurve:
    """The night's photon transfer curve (:func:`ccdred.noise.photon_transfer_curve`): its
    first two biases of one shape, and the first two flats of each level (signals within
    10 % of each other, within the flat limits, of any filter), on the central block of
    each frame (:data:`NOISE_PIXELS`).

    Raises
    ------
    InputError
        When the night lacks two biases of one shape, or two levels of two flats each.
    """
    biases = _first_two(catalogue.of_type("bias"), key=lambda frame: frame.shape)
    if not biases:
        raise InputError([InputProblem(None, "the photon transfer curve needs two biases of "
                                             "one shape: this night has none")])
    region = central_region(biases[0].shape, most=NOISE_PIXELS)
    bias_images = [_central(frame, region) for frame in biases]
    bias_level = float(np.median(bias_images[0]))
    levels = []  # (first signal, images) of each level
    flats = [f for f in catalogue.of_type("flat") if f.shape == biases[0].shape]
    for frame in flats:
        image = _central(frame, region)
        signal = float(np.median(image)) - bias_level
        if not limits.accepts([signal])[0]:
            continue
        same = next((images for level, images in levels if level_pair([level, signal])), None)
        if same is None:
            levels.append((signal, [image]))
        elif len(same) < 2:
            same.append(image)
    pairs = [images for _, images in levels if len(images) == 2]
    if len(pairs) < 2:
        msg = (f"the photon transfer curve needs flats at two or more levels, two at each "
               f"(signals within 10 %): this night's {len(flats)} flats have {len(pairs)}")
        raise InputError([InputProblem(None, msg)])
    return photon_transfer_curve(pairs, bias_images, region=(slice(None), slice(None)))


def _first_two(frames, key) -> list:
    """The first two ``frames`` with one ``key``; [] when no two share one."""
    seen = {}
    for frame in frames:
        group = seen.setdefault(key(frame), [])
        group.append(frame)
        if len(group) == 2:
            return group
    return []


def _central(frame: Frame, region) -> np.ndarray:
    """A frame's image (overscan subtracted, trimmed) within ``region``: its rows read alone
    where the file allows it."""
    rows, columns = region
    return frame.read(rows=rows)[:, columns]


# -- the products' planes: uncertainty, mask and rejected samples, for every runner ------

#: The header keyword of the level at and above which a raw sample is saturated (ADU).
SATURATION_KEYWORD = "SATURATE"


@dataclass(frozen=True)
class MasterPlanes:
    """A master's planes: its variance, which every product it calibrates inherits, and
    its count of rejected samples per pixel.

    Attributes
    ----------
    variance : numpy.ndarray or None
        Float64 (ADU², or (ADU/s)² for a dark current); None when the gain and read noise
        are unknown, or for a library master written without planes (one written with
        them gives its ``UNCERT`` squared).
    n_rejected : numpy.ndarray or None
        Samples not used per pixel (IRAF's ``nrejmasks``), in the type they are written in
        (:data:`~ccdred.fitsio.REJECTED_DTYPE`); None for a library master.
    """

    variance: np.ndarray | None
    n_rejected: np.ndarray | None


def master_planes(master: Master, made, noise: DetectorNoise | None, planes) -> MasterPlanes:
    """The planes of a master just made (its full result: a flat's combination kept).

    Parameters
    ----------
    master : Master
    made : CombineResult or MasterFlat
        What :func:`~ccdred.steps.make_master` returned.
    noise : DetectorNoise or None
        The night's gain and read noise; None: no variance.
    planes : mapping of str to MasterPlanes
        The planes of the masters it needs (at least).
    """
    if master.library is not None:  # its UNCERT, if it was made with planes
        uncertainty = fitsio.read_planes(master.library.path).get("UNCERT")
        return MasterPlanes(None if uncertainty is None else
                            np.square(uncertainty, dtype=np.float64), None)
    combination = made.combination
    n_rejected = combination.n_rejected.astype(fitsio.REJECTED_DTYPE)
    if noise is None or any(planes[need].variance is None for need in master.needs):
        return MasterPlanes(None, n_rejected)
    return MasterPlanes(_master_variance(master, made, noise, planes), n_rejected)


def _master_variance(master: Master, made, noise: DetectorNoise, planes) -> np.ndarray:
    """A master's variance: its combination's, from the noise model and the samples each
    pixel used, plus what its frames shared (the master bias, a flat's dark term); a
    flat's normalised."""
    combination, gain, read_noise = made.combination, noise.gain, noise.read_noise
    if master.kind == "dark_current":
        exptimes = [frame.exptime for frame in master.frames]
        model = dark_current_variance(combination.data, combination.n_used,
                                      combination.n_frames, exptimes, gain, read_noise)
        return model + scaled_variance(
            planes[master.bias].variance, dark_current_bias_share(exptimes))
    if master.kind == "flat":
        medians = made.medians[made.accepted]
        terms = {term for term, used in zip(master.terms, made.accepted, strict=True) if used}
        variance = flat_variance(combination.data, combination.n_used, medians, gain,
                                 read_noise)
        variance += scaled_variance(_mean_term_variance(terms, planes),
                                    flat_term_share(medians))
        return normalised_variance(variance, combination.data, made.data)
    # a bias or a dark: less its bias it is all signal; with its bias in (the course's
    # darks), the median (of every 4th row and column) stands for the bias level (a
    # typical pixel's dark current is then taken for bias; a hot pixel's is signal)
    variance = (np.array(combination.data, dtype=np.float64) if master.bias else
                np.subtract(combination.data, np.median(combination.data[::4, ::4]),
                            dtype=np.float64))
    combined_variance(frame_variance(variance, gain, read_noise, out=variance),
                      combination.n_used, out=variance)
    if master.bias:
        variance += planes[master.bias].variance
    return variance


def _mean_term_variance(terms, planes):
    """The mean variance of a flat's dark terms (:func:`term_variance`): one, mostly."""
    variances = [term_variance(term, planes) for term in terms]
    return variances[0] if len(variances) == 1 else sum(variances) / len(variances)


def term_variance(term: DarkTerm, planes):
    """The variance of what a :class:`~ccdred.plan.DarkTerm` subtracts, from its masters'
    (``planes``: :class:`MasterPlanes` by name), as :meth:`~ccdred.plan.DarkTerm.image`
    makes its image: an exact dark's own; the bias's plus the dark current's times the
    exposure time squared; the bias's; 0 (the overscan's, of many pixels, is left out).
    None when one is unknown."""
    variances = {name: planes[name].variance for name in term.needs}
    if any(variance is None for variance in variances.values()):
        return None
    if term.model == "exact":
        return variances[term.dark]
    if not term.needs:
        return 0.0
    variance = variances[term.bias]
    if term.model == "scaled":
        variance = variance + scaled_variance(variances[term.current], term.exptime)
    return variance


def read_samples(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """A frame's image as :meth:`~ccdred.frames.Frame.read` gives it, and its raw samples
    (before the overscan's subtraction) of the same pixels, for its saturated ones."""
    raw = frame.raw()
    if not frame.preprocess:
        return raw, raw
    return frame.preprocess(raw), frame.preprocess.samples(raw)


def frame_planes(samples, image, dark, dark_var, flat_fielded, noise: DetectorNoise | None,
                 saturation: float | None, flat, flat_var, extra_mask=None,
                 dtype="float32") -> dict:
    """The planes of a flat-fielded frame, as the keywords :func:`~ccdred.fitsio.write_image`
    takes: ``uncertainty`` (in ``dtype``; None where the noise or a master's variance is
    unknown) and ``mask``. (A '_d' file, an intermediate, has none: see
    :func:`calibrate_object`.)

    Parameters
    ----------
    samples : numpy.ndarray
        The raw samples (:func:`read_samples`).
    image, dark, flat : numpy.ndarray
        The preprocessed frame and the masters it was calibrated with.
    dark_var, flat_var : numpy.ndarray or None
        Their variances (:func:`term_variance`, :class:`MasterPlanes`).
    flat_fielded : numpy.ndarray
        The frame calibrated, as its product holds it.
    saturation : float or None
        See :func:`ccdred.planes.saturation_level`.
    extra_mask : numpy.ndarray, optional
        Mask bits the caller adds (a bad-pixel mask, cosmic rays).
    """
    uncertainty = None
    if noise is not None and dark_var is not None and flat_var is not None:
        _, uncertainty = calibration_uncertainty(
            image, dark, dark_var, flat, flat_var, gain=noise.gain, read_noise=noise.read_noise,
            dtype=fitsio.storage_dtype(dtype), keep_subtracted=False)
    return {"uncertainty": uncertainty,
            "mask": frame_mask(samples, flat_fielded, saturation, uncertainty, extra_mask)}


def frame_saturation(header, samples) -> float | None:
    """The saturation level of a frame with this header (``SATURATE``) and these raw
    samples (see :func:`ccdred.planes.saturation_level`)."""
    return saturation_level(header.get(SATURATION_KEYWORD), samples.dtype)


# -- products: written here by the in-process runner, and by Dask tasks ------------------


#: Unit of each product's data (BUNIT) and its comment, each one astropy reads
#: (``CCDData.read``). A rate takes the FITS standard's 'adu' ('ADU' is read alone, not in
#: 'ADU/s'). A normalised flat is dimensionless: '' is the FITS unit string of a pure number
#: (astropy writes and reads dimensionless so; ``CCDData.read`` refuses a file with no BUNIT).
_UNITS = {"master_bias": ("ADU", "unit of the data"), "master_dark": ("ADU", "unit of the data"),
          "master_dark_current": ("adu/s", "ADU per second of exposure"),
          "master_flat": ("", "dimensionless: normalised to mean 1"),
          "dark_subtracted": ("ADU", "unit of the data"),
          "flat_fielded": ("ADU", "unit of the data"),
          "bad_pixels": ("", "dimensionless: bits of ccdred.planes.MaskBit")}

#: Each master's frame type (its value under the night's frame-type keyword) and what it is.
_MASTER_TYPES = {"bias": ("bias", "master bias"), "dark": ("dark", "master dark"),
                 "dark_current": ("dark", "master dark current (ADU/s)"),
                 "flat": ("flat", "master flat, normalised")}


def _is_current(out: Path, name, step, inputs, options) -> bool:
    """Whether ``out/name`` is intact and was made by this step, inputs, options and version."""
    return fitsio.is_current_product(out / name,
                                     fitsio.product_digest(step, inputs, options, __version__))


def _write(out: Path, name, data, header, step, inputs, parameters, existing, history=(),
           extra=None, noise=None, planes=None, dtype=None, layout=None) -> Path:
    """Write one product, unless resuming and an intact one made the same way is there;
    ``noise`` gives its GAIN and RDNOISE cards (:func:`noise_cards`), ``planes`` its planes
    (:func:`~ccdred.fitsio.write_image`'s keywords); ``dtype``: the stored type, the
    products' (``parameters.dtype``) by default; ``layout``: the amplifiers it is written
    as, an extension each (:func:`_layout`)."""
    options = _options(parameters, extra)
    if existing == "resume" and _is_current(out, name, step, inputs, options):
        logger.info("kept %s (current)", out / name)
        return out / name
    if layout is not None:
        history = [*history, f"written as {len(layout.amplifiers)} image extensions, one per "
                             "amplifier (--tile: one image)"]
    header = fitsio.add_provenance(header, step=step, inputs=inputs, options=options,
                                   version=__version__, history=history)
    for key, card in noise_cards(noise).items():
        header[key] = card
    header.remove("BUNIT", ignore_missing=True)
    if step in _UNITS:
        header["BUNIT"] = _UNITS[step]
    if planes is not None and planes.get("uncertainty") is None:
        header.add_comment("No UNCERT plane: the gain and read noise are unknown (or a "
                           "library master's variance).")
    path = fitsio.write_image(out / name, data, header, dtype=dtype or parameters.dtype,
                              overwrite=existing != "refuse", mosaic=layout, **(planes or {}))
    logger.info("wrote %s", path)
    return path


def _options(parameters, extra=None) -> dict:
    """The options a product's header records: those that decide its values, the frame-type
    rules that chose its inputs (when there are any, as JSON: glob -> type, first match
    wins), and ``extra`` (the frame's own)."""
    rules = ({"frame_types": json.dumps(parameters.frame_types)} if parameters.frame_types
             else {})
    return {**parameters.provenance(), **rules, **(extra or {})}


def _frame_options(frame: Frame, parameters, term: DarkTerm | None = None) -> dict:
    """The per-frame calibration recorded in a product's header, and its extensions (one
    per amplifier, see :func:`_layout`) when it has several."""
    layout = _layout(frame, parameters)
    return {**frame.preprocess.describe(), **({"dark_model": term.model} if term else {}),
            **({"extensions": len(layout.amplifiers)} if layout is not None else {})}


def _layout(frame: Frame, parameters) -> Mosaic | None:
    """The amplifiers the products of ``frame`` are written as, an image extension each
    (:func:`~ccdred.fitsio.write_image`): a multi-amplifier frame's, unless ``tile``;
    None (one image) for a frame of one image.

    Either way the night is computed on the tiled image: a master's pixel combines the
    same samples as the amplifier's alone would, and a master flat is normalised over the
    whole detector, so that the amplifiers' gain differences are flat-fielded out.
    """
    mosaic = frame.preprocess
    return mosaic if isinstance(mosaic, Mosaic) and not parameters.tile else None


def write_masters(plan: NightPlan, masters, out, parameters, existing="refuse",
                  noise=None, planes=None) -> list[Path]:
    """Write every master of a night (``masters``: results by name); returns their paths.

    ``existing`` says what to do with a product already there: 'refuse' (an
    error), 'overwrite', or 'resume' (keep it if intact and made the same way);
    ``noise``: the night's :class:`~ccdred.noise.DetectorNoise` (see :func:`night_noise`);
    ``planes``: the masters' :class:`MasterPlanes` by name, when the night writes planes.
    """
    return [write_master(master, masters[master.name], out, parameters, existing,
                         plan.library_history(master.needs), noise,
                         None if planes is None else planes[master.name])
            for master in plan.made]


def write_master(master: Master, result, out, parameters, existing="refuse", library=(),
                 noise=None, planes: MasterPlanes | None = None) -> Path:
    """Write one master, its inputs and what was subtracted from them in its header
    (``library``: HISTORY lines naming the library masters it used; ``noise``: the night's
    gain and read noise), with its planes (``UNCERT``, ``NREJ``) when given."""
    frames = master.frames
    if master.kind == "flat":
        frames = [f for f, ok in zip(frames, result.accepted, strict=True) if ok]
    history = [f"subtracted {master.bias} from every frame"] if master.bias else []
    history += sorted({f"subtracted {t.describe()}" for t in master.terms}) + list(library)
    header = _master_header(master.kind, frames[0].header(), parameters.keywords())
    # what the calibration library matches the master on, whatever keywords the night read
    matched = {"filter": master.filter} if master.filter else {}
    matched |= {"exptime": master.exptime} if master.exptime is not None else {}
    return _write(out, master.name, result.data, header, f"master_{master.kind}",
                  [f.path for f in frames], parameters, existing, history,
                  {**_frame_options(frames[0], parameters), **matched}, noise,
                  _master_written(planes, parameters.dtype),
                  layout=_layout(frames[0], parameters))


def _master_written(planes: MasterPlanes | None, dtype) -> dict | None:
    """A master's planes as :func:`~ccdred.fitsio.write_image` takes them (its standard
    deviation made in the products' type)."""
    if planes is None:
        return None
    uncertainty = None
    if planes.variance is not None:
        uncertainty = np.sqrt(planes.variance, out=np.empty(planes.variance.shape,
                                                            fitsio.storage_dtype(dtype)))
    return {"uncertainty": uncertainty, "n_rejected": planes.n_rejected}


def _master_header(kind: str, header, keywords):
    """The first input's header, made to say what the master is.

    The night's frame-type keyword (IMAGETYP) gets the first value the night gives that
    type ('BIAS', 'DARK', 'FLAT' by default, as the course script's masters copy from their
    inputs), whatever the inputs said (flats taken as 'Light Frame', say); a dark current is
    a rate, so its exposure-time cards are dropped.
    """
    frame_type, what = _MASTER_TYPES[kind]
    header[keywords.imagetyp] = (getattr(keywords, frame_type)[0], what)
    if kind == "dark_current":
        for key in (keywords.exptime, *keywords.exptime_fallbacks):
            header.remove(key, ignore_missing=True, remove_all=True)
        header.add_comment("Dark current in ADU per second of exposure: no exposure time. "
                           "A frame's dark is the bias + its exposure time x this.")
    return header


def _frame_header(frame: Frame, parameters):
    """The frame's header; its frame-type keyword names the type the night took it for
    when a file-name rule (``--frame-type``) overrode what the header said."""
    header, keywords = frame.header(), parameters.keywords()
    if keywords.frame_type(frame.imagetyp) != frame.frame_type:
        header[keywords.imagetyp] = (getattr(keywords, frame.frame_type)[0],
                                     "set by a --frame-type rule")
        header.add_history(f"{keywords.imagetyp} was {frame.imagetyp!r}; a --frame-type rule "
                           f"took the file for {frame.frame_type}")
    return header


#: The bad-pixel mask's product.
BAD_PIXELS = "bad_pixels.fits"


def night_bad_pixels(plan: NightPlan, masters, dtype="float32") -> np.ndarray:
    """The night's bad-pixel mask (uint8 :class:`~ccdred.planes.MaskBit` bits): hot pixels
    from its raw darks (:func:`dark_rate`), defects from each master flat as written in
    ``dtype`` (:func:`~ccdred.badpix.flat_defects`); ``masters``: results by name."""
    rate = dark_rate(plan, masters, dtype)
    defects = [flat_defects(as_written(masters[m.name].data, dtype))
               for m in plan.of_kind("flat") if m.name in masters]
    return bad_pixel_mask(hot=None if rate is None else hot_pixels(rate),
                          defects=np.logical_or.reduce(defects) if defects else None,
                          shape=plan.catalogue.frames[0].shape)


def dark_rate(plan: NightPlan, masters, dtype="float32") -> np.ndarray | None:
    """Dark current (ADU/s) per pixel from the night's raw darks, hot pixels kept.

    A master dark cannot tell: clipping each dark on its own (``frame_clip``, the course's
    way) leaves its hot pixels out. Here: the per-pixel median of the darks of the longest
    exposure time that has :data:`RATE_MIN_DARKS` of them (else of the longest), less the
    master bias (as written in ``dtype``) or else the median of the darks of the shortest
    exposure time, per second between them; with neither, the bias level stays in (a
    constant the hot-pixel threshold ignores). Each median takes at most :data:`RATE_DARKS`
    frames. None when the night has no darks of its own.
    """
    darks = _darks_by_exptime(plan)
    longest = max([t for t, frames in darks.items() if len(frames) >= RATE_MIN_DARKS]
                  or darks, default=0.0)
    if longest <= 0:
        return None
    bias = next((m.name for m in plan.of_kind("bias") if m.name in masters), None)
    shortest = min(darks)
    if bias is not None:
        reference, start = as_written(masters[bias].data, dtype), 0.0
    elif shortest < longest:
        reference, start = _median_frame(darks[shortest]), shortest
    else:
        reference, start = 0.0, 0.0
    return (_median_frame(darks[longest]) - reference) / (longest - start)


def _darks_by_exptime(plan: NightPlan) -> dict:
    """The night's raw darks (of its dark and dark-current masters), by exposure time."""
    darks = {}
    for master in plan.masters.values():
        if master.kind in ("dark", "dark_current"):
            for frame in master.frames:
                darks.setdefault(frame.exptime, {})[frame.path] = frame
    return {exptime: list(frames.values()) for exptime, frames in darks.items()}


#: The most darks of one exposure time :func:`dark_rate` reads: their median rejects the
#: cosmic rays, and the memory it takes stays bounded.
RATE_DARKS = 9
#: Darks of one exposure time whose median :func:`dark_rate` prefers to longer ones': the
#: median of three leaves out a cosmic ray that hits one of them.
RATE_MIN_DARKS = 3


def _median_frame(frames) -> np.ndarray:
    """The per-pixel median of the first :data:`RATE_DARKS` frames, as they are read."""
    return np.median(np.stack([frame.read() for frame in frames[:RATE_DARKS]]), axis=0)


def night_premask(plan: NightPlan, master, masters, parameters,
                  user_mask=None) -> np.ndarray | None:
    """The bad-pixel mask (uint8 :class:`~ccdred.planes.MaskBit` bits) whose pixels the
    combination of ``master`` leaves out (:func:`~ccdred.steps.premask`), or None.

    - The user's mask (``user_mask``, from ``--bad-pixel-mask``): every master the night
      makes, bias to flats.
    - The mask found (``--bad-pixels``): its hot pixels, from the raw darks and the master
      bias (the ``HOT`` bits of :func:`night_bad_pixels`, ``masters``: results by name, the
      master bias among them), pre-mask the master flats, made after them. Its defects are
      found in the master flats themselves, which leaves no later combination for them
      (the objects are calibrated, not combined).
    - Otherwise nothing: a night without a mask is made as it always was.

    Masters read from the library are not combined: nothing.
    """
    if master.library is not None:
        return None
    if user_mask is not None:
        return user_mask
    if not (parameters.bad_pixels and master.kind == "flat"):
        return None
    rate = dark_rate(plan, masters, parameters.dtype)
    return None if rate is None else bad_pixel_mask(hot=hot_pixels(rate))


def night_mask(plan: NightPlan, masters, parameters, user_mask=None) -> np.ndarray:
    """The night's bad-pixel mask (uint8 :class:`~ccdred.planes.MaskBit` bits):
    ``user_mask`` when the user gave one (:func:`~ccdred.badpix.read_bad_pixel_mask`), else
    :func:`night_bad_pixels` of ``masters`` (results by name)."""
    return user_mask if user_mask is not None else night_bad_pixels(plan, masters,
                                                                    parameters.dtype)


def write_bad_pixels(mask, plan: NightPlan, out, parameters, existing="refuse") -> Path:
    """Write the night's bad-pixel mask (:data:`BAD_PIXELS`, uint8; see :func:`night_mask`)."""
    from astropy.io import fits

    header = fits.Header()
    for bit in (MaskBit.HOT, MaskBit.DEFECT, MaskBit.USER):
        header.add_comment(f"mask bit {bit.value} {bit.name}: {bit.__doc__}")
    if parameters.bad_pixel_mask is not None:
        inputs = [Path(parameters.bad_pixel_mask)]
        history, extra = ["the user's bad-pixel mask: non-zero pixels are USER"], {}
    else:
        inputs = [frame.path for master in plan.made for frame in master.frames]
        history = ["HOT: dark current above the median + hot_sigma x mad_std (raw darks)",
                   "DEFECT: flat/median(flat) beyond ccdmask's thresholds, grown along columns"]
        extra = {"hot_sigma": HOT_SIGMA}
    counts = ", ".join(f"{np.count_nonzero(mask & bit):,} {bit.name.lower()}"
                       for bit in (MaskBit.HOT, MaskBit.DEFECT, MaskBit.USER)
                       if np.count_nonzero(mask & bit))
    logger.info("bad-pixel mask: %s", counts or "no bad pixel")
    return _write(out, BAD_PIXELS, mask, header, "bad_pixels", inputs, parameters, existing,
                  history, extra, dtype="uint8")


def write_flat_intermediate(frame: Frame, term: DarkTerm, masters, out, parameters,
                            existing="refuse", dark=None, library=(), noise=None) -> Path:
    """Write a flat's dark-subtracted '_d' file, as the course script does: an
    intermediate, without planes (see :func:`calibrate_object`).

    ``masters`` maps product names to master images; ``dark`` is the image of
    ``term``, when already made; ``library``: HISTORY lines naming the library masters
    it uses (:meth:`~ccdred.plan.NightPlan.library_history`); ``noise``: the night's gain
    and read noise (for the header).
    """
    dark = term.image(masters) if dark is None else dark
    subtracted, _ = calibration_steps(frame.read(), dark,
                                      dtype=fitsio.storage_dtype(parameters.dtype))
    return _write(out, f"{frame.name}_d.fits", subtracted, _frame_header(frame, parameters),
                  "dark_subtracted", [frame.path, *term.needs], parameters, existing,
                  [term.describe(), *library], _frame_options(frame, parameters, term), noise,
                  layout=_layout(frame, parameters))


def calibrate_object(step: ObjectStep, masters, out, parameters, existing="refuse",
                     dark=None, library=(), noise=None, planes=None,
                     extra_mask=None) -> list[Path]:
    """Dark-subtract and flat-field one object frame; write its '_d' (optional) and '_df' files.

    ``dark`` is the image of ``step.term``, when already made (frames of one
    exposure time share it); ``library``: HISTORY lines naming the library masters it
    uses; ``noise``: the night's gain and read noise; ``planes``: the masters'
    :class:`MasterPlanes` by name, when the night writes planes (``UNCERT``, ``MASK``), and
    ``extra_mask`` bits added to the mask (a bad-pixel mask, the frame's cosmic rays). The
    planes go with the '_df' file, the one measured; the '_d' file, an intermediate the
    course script writes, is its bare image (the planes would more than double a night's
    bytes, ``benchmarks/README.md``). When resuming and both products are intact and
    current, nothing is read or computed.
    """
    frame, term = step.frame, step.term
    targets = ([(f"{frame.name}_d.fits", "dark_subtracted", [frame.path, *term.needs])]
               if parameters.intermediate else [])
    targets.append((f"{frame.name}_df.fits", "flat_fielded", [frame.path, *term.needs, step.flat]))
    extra = _frame_options(frame, parameters, term)
    options = _options(parameters, extra)
    if existing == "resume" and all(_is_current(out, name, kind, inputs, options)
                                    for name, kind, inputs in targets):
        logger.info("kept the products of %s (current)", frame.path)
        return [out / name for name, _, _ in targets]
    dark = term.image(masters) if dark is None else dark
    image, samples = read_samples(frame) if planes is not None else (frame.read(), None)
    images = calibration_steps(image, dark, masters[step.flat],
                               dtype=fitsio.storage_dtype(parameters.dtype),
                               keep_subtracted=parameters.intermediate)
    header = _frame_header(frame, parameters)
    flat_fielded_planes = None
    if planes is not None:
        flat_fielded_planes = frame_planes(
            samples, image, dark, term_variance(term, planes), images[-1], noise,
            frame_saturation(header, samples), masters[step.flat], planes[step.flat].variance,
            extra_mask, parameters.dtype)
    if parameters.cosmic_rays and planes is not None:  # (prepare_night requires the planes)
        rays = frame_cosmic_rays(images[-1], flat_fielded_planes, noise, extra_mask,
                                 LACosmic(niter=parameters.cosmic_ray_iterations))
        logger.info("%s: %d pixels of cosmic rays%s", frame.path.name,
                    np.count_nonzero(rays.mask),
                    ", replaced" if parameters.cosmic_ray_replace else "")
        flat_fielded_planes["mask"] |= rays.bits()
        if parameters.cosmic_ray_replace:
            images = (*images[:-1], rays.cleaned.astype(images[-1].dtype, copy=False))
    written = [*[None] * (len(targets) - 1), flat_fielded_planes]  # no planes on a '_d' file
    return [_write(out, name, image, header, kind, inputs, parameters, existing,
                   [term.describe(), *library], extra, noise, product_planes,
                   layout=_layout(frame, parameters))
            for (name, kind, inputs), image, product_planes
            in zip(targets, images[-len(targets):], written, strict=True)]


def frame_cosmic_rays(flat_fielded, planes, noise, bad_pixels,
                      lacosmic: LACosmic = LACosmic()) -> CosmicRays:
    """LACosmic on a flat-fielded frame (:func:`~ccdred.cosmics.cosmic_ray_mask`): its
    uncertainty plane squared the noise model, its bad pixels left out of the search.

    Parameters
    ----------
    flat_fielded : numpy.ndarray
        The frame as its product holds it.
    planes : dict
        Its planes (:func:`frame_planes`): the ``uncertainty`` is used where known.
    noise : DetectorNoise
    bad_pixels : numpy.ndarray or None
        The night's bad-pixel mask (:func:`night_mask`).
    lacosmic : LACosmic, optional
        LACosmic's thresholds and iterations (``--cosmic-ray-iterations``).

    Returns
    -------
    CosmicRays
        Where the rays are (``.bits()`` for the mask), and the frame with them replaced
        (``--cosmic-ray-replace``).
    """
    variance = None if planes.get("uncertainty") is None else np.square(
        planes["uncertainty"], dtype=np.float64)
    return cosmic_ray_mask(np.asarray(flat_fielded), noise.gain, noise.read_noise,
                           lacosmic=lacosmic, bad_pixels=bad_pixels, variance=variance)


def _write_products(result: NightResult, parameters, existing, steps, pool) -> None:
    """Write every product through ``pool``; ``result.products`` keeps the plan's order."""
    plan, out, images, noise = result.plan, result.output_dir, result.images(), result.noise
    terms = [plan.flat_terms[f.path] for f in plan.all_flats] if parameters.intermediate else []
    # Frames of one exposure time share their dark's image (a few images at most).
    distinct = set(terms) | {s.term for s in plan.calibrations}
    darks = {term: term.image(images) for term in distinct} if len(distinct) <= 8 else {}
    planes = result.planes if parameters.planes else None
    masters = pool.submit(write_masters, plan, result.masters, out, parameters, existing, noise,
                          planes)
    mask = (night_mask(plan, result.masters, parameters, result.user_mask)
            if parameters.writes_bad_pixels() else None)
    bad_pixels = (pool.submit(write_bad_pixels, mask, plan, out, parameters, existing)
                  if mask is not None else None)
    flats = [pool.submit(write_flat_intermediate, frame, term, images, out, parameters,
                         existing, darks.get(term), plan.library_history(term.needs), noise)
             for frame, term in zip(plan.all_flats if terms else [], terms, strict=True)]
    objects = pool.map(lambda step: calibrate_object(
        step, images, out, parameters, existing, darks.get(step.term),
        plan.library_history((*step.term.needs, step.flat)), noise, planes, mask),
        plan.calibrations)
    result.products += masters.result()
    result.products += [bad_pixels.result()] if bad_pixels is not None else []
    result.products += [flat.result() for flat in flats]
    for step, paths in zip(plan.calibrations, objects, strict=True):
        result.products.extend(paths)
        steps.advance(f"calibrated {step.frame.path.name}")
