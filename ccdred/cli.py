"""Command line: ``ccdred reduce FILES...`` and ``ccdred demo DIR``.

``ccdred reduce`` takes every option of the course script ``nimccdred.py``
under the same names and defaults, plus ccdred's own. Input problems are
printed one per line (also to the log) and exit with status 2.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import gc
import logging
import logging.handlers
import re
import sys
import warnings
from pathlib import Path

from ._version import __version__
from .config import DEMO_SIZE
from .compat import option_strings, parser_options
from .errors import InputError, InputProblem
from .parameters import (CalibrationParameters, DetectorParameters, ReductionParameters, names,
                         option, refusal)

__all__ = ["main"]

logger = logging.getLogger("ccdred")
EXIT_INPUT = 2


def _default_dir() -> str:
    return datetime.datetime.now().strftime("ccdred_%Y%m%d_%H%M%S")


def _aliases(text: str) -> list[str]:
    return [value.strip() for value in text.split(",") if value.strip()]


def _keyword_options(parser, defaults: ReductionParameters) -> None:
    group = parser.add_argument_group("header keywords (as in nimccdred.py)")
    for name in ("naxis", "naxis1", "naxis2", "exptime", "filter", "datatype"):
        param_name = f"keyword_{name}"
        default = getattr(defaults, param_name)
        group.add_argument(f"--keyword-{name}", default=default,
                           help=f"{defaults.param[param_name].doc} (default: {default})")
    for kind in ("bias", "dark", "flat", "object"):
        param_name = f"keyword_datatype_{kind}"
        default = getattr(defaults, param_name)
        group.add_argument(f"--keyword-datatype-{kind}", type=_aliases, default=default,
                           metavar="VALUE[,VALUE...]",
                           help=f"{defaults.param[param_name].doc}; comma-separated "
                                f"(default: {','.join(default)})")


def _clip_options(parser, defaults: ReductionParameters) -> None:
    doc = defaults.param
    group = parser.add_argument_group("combining (as in nimccdred.py)")
    group.add_argument("-t", "--threshold", type=float, default=defaults.threshold,
                       help=f"{doc.threshold.doc} (default: {defaults.threshold})")
    group.add_argument("-c", "--cenfunc", choices=doc.cenfunc.objects, default=defaults.cenfunc,
                       help=f"{doc.cenfunc.doc} (default: {defaults.cenfunc})")
    group.add_argument("-i", "--maxiters", type=int, default=defaults.maxiters,
                       help=f"{doc.maxiters.doc} (default: {defaults.maxiters})")
    group.add_argument("-u", "--upperlimit", type=float, default=defaults.upper_limit,
                       help=f"{doc.upper_limit.doc} (default: {defaults.upper_limit:g})")
    _rejection_options(parser, defaults)
    extra = parser.add_argument_group("beyond nimccdred.py")
    extra.add_argument("--lowerlimit", type=float, default=defaults.lower_limit,
                       help=doc.lower_limit.doc)
    for name in names(DetectorParameters):  # --gain, --read-noise
        extra.add_argument(option(name), type=float, default=getattr(defaults, name),
                           help=doc[name].doc)
    extra.add_argument("--no-frame-clip", dest="frame_clip", action="store_false",
                       help="do not sigma-clip each dark on its own before combining")
    extra.add_argument("--dtype", choices=doc.dtype.objects, default=defaults.dtype,
                       help=f"{doc.dtype.doc} (default: {defaults.dtype})")
    extra.add_argument("--no-intermediate", dest="intermediate", action="store_false",
                       help="do not write the dark-subtracted '_d' files")
    extra.add_argument("--planes", action=argparse.BooleanOptionalAction, default=defaults.planes,
                       help=f"{doc.planes.doc} (default: {'on' if defaults.planes else 'off'})")
    _calibration_options(parser, defaults)
    existing = extra.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true",
                          help="replace products already in the output folder")
    existing.add_argument("--resume", action="store_true",
                          help="keep the products already in the output folder that are intact "
                               "and made with the same inputs and options; make the rest")
    extra.add_argument("--memory-budget", type=int, default=1024, metavar="MB",
                       help="memory a stack may take before it is combined in blocks of rows "
                            "(default: 1024)")
    extra.add_argument("--threads", type=int, default=2,
                       help="object frames calibrated at once (default: 2)")
    extra.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    scale = parser.add_argument_group("several nights, and Dask")
    scale.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on this dask.distributed scheduler (e.g. tcp://host:8786)")
    scale.add_argument("--workers", type=int, metavar="N",
                       help="run on a new local Dask cluster of N worker processes")


def _rejection_options(parser, defaults: ReductionParameters) -> None:
    doc = defaults.param
    group = parser.add_argument_group("rejection methods (beyond nimccdred.py)")
    group.add_argument("--rejection", choices=doc.rejection.objects, default=defaults.rejection,
                       help=f"{doc.rejection.doc} (default: {defaults.rejection})")
    for name, kind in (("lsigma", float), ("hsigma", float), ("stdfunc", str), ("nlow", int),
                       ("nhigh", int), ("plow", float), ("phigh", float), ("snoise", float)):
        default = getattr(defaults, name)
        shown = "" if default is None else f" (default: {default:g})" if kind is not str \
            else f" (default: {default})"
        group.add_argument(f"--{name}", type=kind, default=default,
                           choices=getattr(doc[name], "objects", None), help=doc[name].doc + shown)


def _frame_type(text: str) -> tuple[str, str]:
    glob, sep, kind = text.rpartition("=")
    if not sep or not glob:
        msg = f"expected GLOB=TYPE (e.g. 'flat-*=flat'), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return glob, kind.strip().lower()


def _library_master(text: str) -> tuple[str, str]:
    name, sep, file = text.partition("=")
    if not sep or not name.strip() or not file.strip():
        msg = f"expected NAME=FILE (e.g. 'flat_V=20210214T110200_cam_flat_V.fits'), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return name.strip(), file.strip()


def _one_each(pairs, option: str) -> dict:
    """``NAME=VALUE`` pairs as a dict; ValueError for a name given twice."""
    names = [name for name, _ in pairs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        msg = f"{option}: {', '.join(twice)} given more than once"
        raise ValueError(msg)
    return dict(pairs)


def _calibration_options(parser, defaults: ReductionParameters) -> None:
    doc = defaults.param
    group = parser.add_argument_group("bias, dark model, overscan and trim (beyond nimccdred.py)")
    group.add_argument("--dark-model", choices=doc.dark_model.objects, default=defaults.dark_model,
                       help=f"{doc.dark_model.doc} (default: {defaults.dark_model})")
    for name in ("overscan", "overscan_function", "trim"):
        group.add_argument(f"--{name.replace('_', '-')}", default=getattr(defaults, name),
                           help=f"{doc[name].doc} (default: {getattr(defaults, name)})")
    group.add_argument("--tile", action="store_true", help=doc.tile.doc)
    group.add_argument("--temperature-tolerance", type=float, metavar="DEGREES",
                       default=defaults.temperature_tolerance,
                       help=f"{doc.temperature_tolerance.doc} "
                            f"(default: {defaults.temperature_tolerance:g})")
    group.add_argument("--frame-type", type=_frame_type, action="append", default=[],
                       metavar="GLOB=TYPE", dest="frame_types",
                       help="classify files whose name matches GLOB as TYPE (bias, dark, flat, "
                            "object or ignore), whatever their header says; repeatable")
    _library_options(parser, defaults)


def _library_options(parser, defaults: ReductionParameters) -> None:
    doc = defaults.param
    group = parser.add_argument_group("calibration library (masters of earlier nights)")
    group.add_argument("--library", metavar="DIR", default=defaults.library, help=doc.library.doc)
    group.add_argument("--library-max-age", type=float, metavar="DAYS",
                       default=defaults.library_max_age,
                       help=f"{doc.library_max_age.doc} (default: {defaults.library_max_age:g})")
    group.add_argument("--add-to-library", action="store_true", help=doc.add_to_library.doc +
                       " (needs --library DIR; made if missing)")
    group.add_argument("--library-master", type=_library_master, action="append", default=[],
                       metavar="NAME=FILE", dest="library_choice",
                       help=f"{doc.library_choice.doc}; repeatable")
    group.add_argument("--plan", action="store_true",
                       help="print the plan (each master, from the night's frames or the "
                            "library, and what each frame gets) and write nothing")


def _mask_options(parser, defaults: ReductionParameters) -> None:
    doc = defaults.param
    group = parser.add_argument_group("bad pixels and cosmic rays (beyond nimccdred.py)")
    group.add_argument("--bad-pixels", action="store_true", help=doc.bad_pixels.doc)
    group.add_argument("--bad-pixel-mask", metavar="FILE", default=defaults.bad_pixel_mask,
                       help=doc.bad_pixel_mask.doc)
    group.add_argument("--cosmic-rays", action="store_true",
                       help=f"{doc.cosmic_rays.doc} (from the header, --gain and --read-noise, "
                            "or measured from the night)")
    group.add_argument("--cosmic-ray-replace", action="store_true",
                       help=f"{doc.cosmic_ray_replace.doc} (with --cosmic-rays)")
    group.add_argument("--cosmic-ray-iterations", type=int, metavar="N",
                       default=defaults.cosmic_ray_iterations,
                       help=f"{doc.cosmic_ray_iterations.doc} (default: "
                            f"{defaults.cosmic_ray_iterations})")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, with the closest option or choice."""

    def error(self, message):
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message}{_suggestion(self, message)}\n")


def _suggestion(parser, message: str) -> str:
    """'; did you mean ...?' for a mistyped option or choice, else ''."""
    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        wanted, options = choice.group(1), re.findall(r"[\w.-]+", choice.group(2))
    elif message.startswith("unrecognized arguments:"):
        words = message.split(":", 1)[1].split()
        wanted = next((w.split("=")[0] for w in words if w.startswith("-")), "")
        owners = [prog for prog, options in parser_options(parser).items() if wanted in options]
        if owners:  # an option of another command: no other is "meant"
            return f"; {wanted} is an option of {' and '.join(owners)}"
        options = option_strings(parser)
    else:
        return ""
    close = difflib.get_close_matches(wanted, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    """The ``ccdred`` argument parser, defaults taken from :class:`ReductionParameters`."""
    parser = _Parser(prog="ccdred", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ccdred {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    reduce = commands.add_parser(
        "reduce", help="reduce a night of raw frames",
        description="Data reduction pipeline for 2-dim optical imaging CCD data: master darks "
                    "per exposure time, master flats per filter, calibrated object frames.")
    defaults = ReductionParameters()
    _keyword_options(reduce, defaults)
    reduce.add_argument("-l", "--logfile", help="log file (default: DIR_REDUCED/ccdred.log)")
    reduce.add_argument("-d", "--dir-reduced", default=None,
                        help="folder for the products (default: ccdred_YYYYMMDD_HHMMSS)")
    _clip_options(reduce, defaults)
    _mask_options(reduce, defaults)
    reduce.add_argument("files", nargs="+",
                        help="raw FITS files, or a folder of them; several folders are "
                             "several nights, each reduced into DIR_REDUCED/<folder name>")
    prepare = commands.add_parser(
        "prepare", help="the first-time work, once after install: compile the kernels and "
                        "simulate the dashboard's demo night (about a minute)")
    prepare.add_argument("--cache", help="where the demo night goes (default: CCDRED_CACHE, "
                                         "else ~/.cache/ccdred)")
    demo = commands.add_parser("demo", help="write the simulated demo night")
    demo.add_argument("dir", help="folder to write the raw frames into")
    demo.add_argument("--size", type=int, default=DEMO_SIZE,
                      help=f"image width and height (default {DEMO_SIZE})")
    demo.add_argument("--seed", type=int, default=2021, help="random seed (default 2021)")
    demo.add_argument("--real", action="store_true",
                      help="a night as real cameras take it: overscan strip, drifting bias, more "
                           "biases, darks at fewer exposure times than the objects")
    demo.add_argument("--amplifiers", type=int, choices=(1, 2, 4), default=1,
                      help="read through 2 or 4 amplifiers, an image extension each with its "
                           "own bias level, gain and overscan")
    demo.add_argument("--overwrite", action="store_true",
                      help="write into a folder that already holds files (refused by default)")
    export = commands.add_parser(
        "export", help="run a notebook and write it as one HTML file that shows its plots "
                       "offline (for students)")
    export.add_argument("notebook", help="the .ipynb file")
    export.add_argument("-o", "--output", help="the HTML file (default: beside the notebook)")
    export.add_argument("--solutions", action="store_true",
                        help="keep the exercises' solutions (left out by default)")
    return parser


def _parameters(args) -> ReductionParameters:
    values = {name: getattr(args, name) for name in names(ReductionParameters) if hasattr(args, name)}
    values["upper_limit"], values["lower_limit"] = args.upperlimit, args.lowerlimit
    values["frame_types"] = dict(args.frame_types)
    values["library_choice"] = _one_each(args.library_choice, "--library-master")
    try:
        parameters = ReductionParameters(**values)
    except ValueError as err:  # param names its class and attribute: say the option instead
        raise ValueError(refusal(err, option)) from err
    # check them (the library is opened, and its problems said, with the night's)
    parameters.keywords(), parameters.preprocessing(), CalibrationParameters.plan_options(parameters)
    parameters.step_options()
    return parameters


class _Log:
    """The run's log: kept in memory until the input is accepted, then written to the file.

    A refused input leaves no file behind (nor the output folder).
    """

    def __init__(self, logfile: Path):
        self.logfile = logfile
        self.buffer = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)
        self.file = None
        logger.addHandler(self.buffer)
        logger.setLevel(logging.INFO)

    def open(self) -> None:
        """Start writing the file, beginning with what was logged so far."""
        from .night import log_file

        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self.file = log_file(self.logfile)
        self.buffer.setTarget(self.file)
        self.buffer.flush()
        logger.removeHandler(self.buffer)
        logger.addHandler(self.file)

    def close(self) -> None:
        for handler in (self.buffer, self.file):
            if handler is not None:
                logger.removeHandler(handler)
                handler.close()


class _Bar:
    """The progress bar, made at the first step (when the number of steps is known), on a
    terminal only: redrawn in place there, with warnings printed above it; written to a file
    or a pipe, its redraws would share the warnings' lines."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar = quiet, None

    def __call__(self, done, total, message):
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="step", disable=True if self.quiet else None,
                            file=sys.stderr, leave=False)  # None: off unless a terminal
        self.bar.total = total
        self.bar.set_description_str(message[:40])
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings for the user: one line on stderr (above the progress bar), and in the log."""
    from tqdm import tqdm

    logger.warning("%s", message)
    tqdm.write(f"ccdred: warning: {message}", file=sys.stderr)


def _reduce(args) -> int:
    from .night import existing_policy, prepare_nights, run_night

    try:
        parameters = _parameters(args)
    except ValueError as err:
        print(f"ccdred: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    out = Path(args.dir_reduced or _default_dir())
    log = _Log(Path(args.logfile) if args.logfile else out / "ccdred.log")
    logger.info("ccdred %s: %s", __version__, " ".join(sys.argv))
    bar = _Bar(args.quiet)
    existing = existing_policy(args.overwrite, args.resume)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            nights = _nights(args.files, out)
            prepared = prepare_nights(nights, parameters, "overwrite" if args.plan else existing)
            if args.plan:
                _print_plans(prepared)
                return 0
            log.open()
            options = {"progress": bar, "memory_budget": args.memory_budget << 20}
            if args.scheduler or args.workers:
                results = _on_cluster(nights, parameters, args,
                                      {**options, "overwrite": args.overwrite,
                                       "resume": args.resume})
            else:
                results = [run_night(night, parameters, existing, threads=args.threads, **options)
                           for night in prepared]
    except InputError as err:
        bar.close()
        for problem in err.problems:
            logger.error("%s", problem)
            print(f"ccdred: error: {problem}", file=sys.stderr)
        return EXIT_INPUT
    finally:
        bar.close()
        log.close()
    for result in results:
        models = ", ".join(f"{m} {n}" for m, n in sorted(result.plan.models().items()))
        print(f"ccdred: {len(result.products)} products in {result.output_dir}"
              f"{f' (dark model per frame: {models})' if models else ''}", file=sys.stderr)
    return 0


def _print_plans(prepared) -> None:
    """Each night's plan on stdout (``--plan``)."""
    from .plan import describe_plan

    for result in prepared:
        print(f"plan for {result.output_dir}:")
        print("\n".join(f"  {line}" for line in describe_plan(result.plan)))


def _nights(files, out: Path) -> list[tuple[list, Path]]:
    """Several folders are several nights, each with its own output folder; else one night."""
    folders = [Path(f) for f in files]
    if len(folders) < 2 or not all(f.is_dir() for f in folders):
        return [(files, out)]
    names = [f.resolve().name for f in folders]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise InputError([InputProblem(None, f"several night folders are named {n!r}; their "
                                             f"products would share {out / n}") for n in clashes])
    return [([folder], out / name) for folder, name in zip(folders, names, strict=True)]


def _on_cluster(nights, parameters, args, options):
    from .cluster import connect, reduce_nights_on_cluster

    client = connect(args.scheduler, args.workers)
    try:
        return reduce_nights_on_cluster(nights, client, parameters, **options)
    finally:
        cluster = client.cluster if args.scheduler is None else None
        client.close()
        if cluster is not None:
            cluster.close()


def _prepare_install(args) -> int:
    from .prepare import prepare

    prepare(args.cache, report=lambda line: print(f"ccdred: {line}", file=sys.stderr, flush=True))
    return 0


def _demo(args) -> int:
    from .demo import NightSpec, make_night

    folder = Path(args.dir)
    if folder.is_dir() and any(folder.iterdir()) and not args.overwrite:
        print(f"ccdred: error: {folder}: folder already holds files; use --overwrite to write "
              "the demo night into it anyway", file=sys.stderr)
        return EXIT_INPUT
    try:
        spec = (NightSpec.real if args.real else NightSpec)(
            shape=(args.size, args.size), seed=args.seed, amplifiers=args.amplifiers)
    except ValueError as err:
        print(f"ccdred: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    paths = make_night(args.dir, spec)
    print(f"ccdred: wrote {len(paths)} raw frames to {args.dir}", file=sys.stderr)
    return 0


def _export(args) -> int:
    from .teaching import export_html

    notebook = Path(args.notebook)
    if not notebook.is_file():
        print(f"ccdred: error: {notebook}: no such notebook", file=sys.stderr)
        return 2
    written = export_html(notebook, args.output, solutions=args.solutions)
    print(f"ccdred: wrote {written}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return {"reduce": _reduce, "demo": _demo, "prepare": _prepare_install,
                "export": _export}[args.command](args)
    except KeyboardInterrupt:
        print("ccdred: interrupted; products written so far are complete", file=sys.stderr)
        return 130


def run() -> None:
    """The ``ccdred`` command: :func:`main`, then exit with its status."""
    status = main()
    # The interpreter's last garbage collection walks every object numba and
    # astropy made (~0.35 s); the process ends here, so leave them to the OS.
    gc.freeze()
    sys.exit(status)
