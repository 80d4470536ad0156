"""The in-process runner: a night's plan made into products on this machine.

:func:`reduce_night` scans and plans a night (every problem reported at
once), makes every master in memory with a thread pool (stacks larger than
the memory budget in blocks of rows), so that a problem found in the data
stops the run before anything is written, then writes the products with
provenance, atomically. The product writers here serve the Dask runner too.
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
from .calibrate import calibration_steps
from .errors import CalibrationWarning, CcdredWarning, InputError, InputProblem
from .frames import Catalogue, Frame, scan
from .library import add_to_library
from .noise import DetectorNoise, central_region, detector_noise, level_pair
from .parameters import ReductionParameters
from .plan import DarkTerm, Master, NightPlan, ObjectStep, plan_night
from .steps import make_master, report_master, written_part

__all__ = [
    "NightResult",
    "add_masters_to_library",
    "calibrate_object",
    "create_output",
    "existing_policy",
    "log_file",
    "log_plan",
    "log_to",
    "night_noise",
    "noise_cards",
    "prepare_night",
    "prepare_nights",
    "reduce_night",
    "run_night",
    "summary",
    "warnings_to",
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
    """

    output_dir: Path
    plan: NightPlan
    masters: dict = field(default_factory=dict)
    products: list = field(default_factory=list)
    noise: DetectorNoise | None = None

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
        problems = []
        for name, master in plan.masters.items():
            if any(need not in result.masters for need in master.needs):
                continue  # a master it needs failed: its problem is reported
            try:
                result.masters[name] = _made(master, options, result.images(), memory_budget,
                                             pool.map, parameters.dtype)
            except InputError as err:
                problems += err.problems
            steps.advance(master.label)
        if problems:
            raise InputError(problems)
        _write_products(result, parameters, existing, steps, pool)
    logger.info("wrote %d products to %s", len(result.products), result.output_dir)
    add_masters_to_library(result, parameters)
    return result


def add_masters_to_library(result: NightResult, parameters: ReductionParameters) -> list[Path]:
    """With ``add_to_library``, copy the masters the night made (not those it took from the
    library) into the library (see :func:`ccdred.library.add_to_library`)."""
    if not parameters.add_to_library:
        return []
    return add_to_library(parameters.library,
                          [result.output_dir / master.name for master in result.plan.made])


def _made(master, options, images, budget: int, map_frames, dtype):
    """Make a master, report it, and return what the night keeps of it, its image as written
    (what it drops is freed before the next master is made)."""
    made = make_master(master, options, images, budget=budget, map_frames=map_frames)
    report_master(master, options, made)
    return written_part(made, dtype)


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
    plan = plan_night(catalogue, parameters.plan_options())
    for note in (*catalogue.notes, *plan.notes):
        warnings.warn(note, CalibrationWarning, stacklevel=2)
    output_dir = Path(output_dir)
    names = plan.product_names(parameters.intermediate)
    if not names:
        raise InputError([_nothing_to_make(catalogue, paths)])
    _check_output(output_dir, names, existing)
    return NightResult(output_dir, plan)


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
                    "card", reason)
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


# -- products: written here by the in-process runner, and by Dask tasks ------------------


#: Unit of each product's data (BUNIT) and its comment, each one astropy reads
#: (``CCDData.read``). A rate takes the FITS standard's 'adu' ('ADU' is read alone, not in
#: 'ADU/s'). A normalised flat is dimensionless: '' is the FITS unit string of a pure number
#: (astropy writes and reads dimensionless so; ``CCDData.read`` refuses a file with no BUNIT).
_UNITS = {"master_bias": ("ADU", "unit of the data"), "master_dark": ("ADU", "unit of the data"),
          "master_dark_current": ("adu/s", "ADU per second of exposure"),
          "master_flat": ("", "dimensionless: normalised to mean 1"),
          "dark_subtracted": ("ADU", "unit of the data"),
          "flat_fielded": ("ADU", "unit of the data")}

#: Each master's frame type (its value under the night's frame-type keyword) and what it is.
_MASTER_TYPES = {"bias": ("bias", "master bias"), "dark": ("dark", "master dark"),
                 "dark_current": ("dark", "master dark current (ADU/s)"),
                 "flat": ("flat", "master flat, normalised")}


def _is_current(out: Path, name, step, inputs, options) -> bool:
    """Whether ``out/name`` is intact and was made by this step, inputs, options and version."""
    return fitsio.is_current_product(out / name,
                                     fitsio.product_digest(step, inputs, options, __version__))


def _write(out: Path, name, data, header, step, inputs, parameters, existing, history=(),
           extra=None, noise=None) -> Path:
    """Write one product, unless resuming and an intact one made the same way is there;
    ``noise`` gives its GAIN and RDNOISE cards (:func:`noise_cards`)."""
    options = _options(parameters, extra)
    if existing == "resume" and _is_current(out, name, step, inputs, options):
        logger.info("kept %s (current)", out / name)
        return out / name
    header = fitsio.add_provenance(header, step=step, inputs=inputs, options=options,
                                   version=__version__, history=history)
    for key, card in noise_cards(noise).items():
        header[key] = card
    header.remove("BUNIT", ignore_missing=True)
    if step in _UNITS:
        header["BUNIT"] = _UNITS[step]
    path = fitsio.write_image(out / name, data, header, dtype=parameters.dtype,
                              overwrite=existing != "refuse")
    logger.info("wrote %s", path)
    return path


def _options(parameters, extra=None) -> dict:
    """The options a product's header records: those that decide its values, the frame-type
    rules that chose its inputs (when there are any, as JSON: glob -> type, first match
    wins), and ``extra`` (the frame's own)."""
    rules = ({"frame_types": json.dumps(parameters.frame_types)} if parameters.frame_types
             else {})
    return {**parameters.provenance(), **rules, **(extra or {})}


def _frame_options(frame: Frame, term: DarkTerm | None = None) -> dict:
    """The per-frame calibration recorded in a product's header."""
    return {**frame.preprocess.describe(), **({"dark_model": term.model} if term else {})}


def write_masters(plan: NightPlan, masters, out, parameters, existing="refuse",
                  noise=None) -> list[Path]:
    """Write every master of a night (``masters``: results by name); returns their paths.

    ``existing`` says what to do with a product already there: 'refuse' (an
    error), 'overwrite', or 'resume' (keep it if intact and made the same way);
    ``noise``: the night's :class:`~ccdred.noise.DetectorNoise` (see :func:`night_noise`).
    """
    return [write_master(master, masters[master.name], out, parameters, existing,
                         plan.library_history(master.needs), noise) for master in plan.made]


def write_master(master: Master, result, out, parameters, existing="refuse", library=(),
                 noise=None) -> Path:
    """Write one master, its inputs and what was subtracted from them in its header
    (``library``: HISTORY lines naming the library masters it used; ``noise``: the night's
    gain and read noise)."""
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
                  {**_frame_options(frames[0]), **matched}, noise)


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


def write_flat_intermediate(frame: Frame, term: DarkTerm, masters, out, parameters,
                            existing="refuse", dark=None, library=(), noise=None) -> Path:
    """Write a flat's dark-subtracted '_d' file, as the course script does.

    ``masters`` maps product names to master images; ``dark`` is the image of
    ``term``, when already made; ``library``: HISTORY lines naming the library masters
    it uses (:meth:`~ccdred.plan.NightPlan.library_history`); ``noise``: the night's gain
    and read noise.
    """
    dark = term.image(masters) if dark is None else dark
    subtracted, _ = calibration_steps(frame.read(), dark,
                                      dtype=fitsio.storage_dtype(parameters.dtype))
    return _write(out, f"{frame.name}_d.fits", subtracted, _frame_header(frame, parameters),
                  "dark_subtracted", [frame.path, *term.needs], parameters, existing,
                  [term.describe(), *library], _frame_options(frame, term), noise)


def calibrate_object(step: ObjectStep, masters, out, parameters, existing="refuse",
                     dark=None, library=(), noise=None) -> list[Path]:
    """Dark-subtract and flat-field one object frame; write its '_d' (optional) and '_df' files.

    ``dark`` is the image of ``step.term``, when already made (frames of one
    exposure time share it); ``library``: HISTORY lines naming the library masters it
    uses; ``noise``: the night's gain and read noise. When resuming and both products are
    intact and current, nothing is read or computed.
    """
    frame, term = step.frame, step.term
    targets = ([(f"{frame.name}_d.fits", "dark_subtracted", [frame.path, *term.needs])]
               if parameters.intermediate else [])
    targets.append((f"{frame.name}_df.fits", "flat_fielded", [frame.path, *term.needs, step.flat]))
    extra = _frame_options(frame, term)
    options = _options(parameters, extra)
    if existing == "resume" and all(_is_current(out, name, kind, inputs, options)
                                    for name, kind, inputs in targets):
        logger.info("kept the products of %s (current)", frame.path)
        return [out / name for name, _, _ in targets]
    dark = term.image(masters) if dark is None else dark
    images = calibration_steps(frame.read(), dark, masters[step.flat],
                               dtype=fitsio.storage_dtype(parameters.dtype),
                               keep_subtracted=parameters.intermediate)
    header = _frame_header(frame, parameters)
    return [_write(out, name, image, header, kind, inputs, parameters, existing,
                   [term.describe(), *library], extra, noise)
            for (name, kind, inputs), image in zip(targets, images[-len(targets):], strict=True)]


def _write_products(result: NightResult, parameters, existing, steps, pool) -> None:
    """Write every product through ``pool``; ``result.products`` keeps the plan's order."""
    plan, out, images, noise = result.plan, result.output_dir, result.images(), result.noise
    terms = [plan.flat_terms[f.path] for f in plan.all_flats] if parameters.intermediate else []
    # Frames of one exposure time share their dark's image (a few images at most).
    distinct = set(terms) | {s.term for s in plan.calibrations}
    darks = {term: term.image(images) for term in distinct} if len(distinct) <= 8 else {}
    masters = pool.submit(write_masters, plan, result.masters, out, parameters, existing, noise)
    flats = [pool.submit(write_flat_intermediate, frame, term, images, out, parameters,
                         existing, darks.get(term), plan.library_history(term.needs), noise)
             for frame, term in zip(plan.all_flats if terms else [], terms, strict=True)]
    objects = pool.map(lambda step: calibrate_object(
        step, images, out, parameters, existing, darks.get(step.term),
        plan.library_history((*step.term.needs, step.flat)), noise), plan.calibrations)
    result.products += masters.result()
    result.products += [flat.result() for flat in flats]
    for step, paths in zip(plan.calibrations, objects, strict=True):
        result.products.extend(paths)
        steps.advance(f"calibrated {step.frame.path.name}")
