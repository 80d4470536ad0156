"""A night's plan, written once: which masters, from which frames, what each frame gets.

:func:`build_plan` turns a :class:`~ccdred.frames.Catalogue` and the options
into a :class:`NightPlan`, pure data: the masters in the order they can be
made (bias, darks, dark current, flats), and for every flat and object frame
its :class:`DarkTerm` (what is subtracted from it) and, for objects, its
master flat. Every problem is collected; :func:`plan_night` raises them all
at once. The runners (:mod:`ccdred.night`, :mod:`ccdred.cluster`,
:mod:`ccdred.pipeline`) only decide how the masters are made, through the
functions of :mod:`ccdred.steps`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import InputError, InputProblem
from .frames import Catalogue, Frame
from .library import Library, LibraryMaster, night_time, setup_of

__all__ = [
    "DARK_MODELS",
    "DarkTerm",
    "Master",
    "NightPlan",
    "ObjectStep",
    "build_plan",
    "dark_product_name",
    "describe_plan",
    "flat_product_name",
    "master_role",
    "plan_night",
    "safe_filter_name",
]

#: The dark models: 'auto' picks per frame among the others.
DARK_MODELS = ("auto", "exact", "scaled", "none")


def dark_product_name(exptime: float, group: str = "") -> str:
    """The course script's master dark name: exposure time in ms, truncated, 8 digits."""
    return "dark_%08d%s.fits" % (exptime * 1000, group)


def master_role(kind: str, exptime: float | None = None, filter: str | None = None) -> str:
    """What a master is for, as the night names a master of its own frames, without the
    temperature group and ``.fits`` (see :attr:`Master.role`): the name a user chooses a
    library master by (``--library-master NAME=FILE``).

    Parameters
    ----------
    kind : {'bias', 'dark', 'dark_current', 'flat'}
    exptime : float, optional
        A dark's exposure time (s).
    filter : str, optional
        A flat's filter.

    Returns
    -------
    str

    Examples
    --------
    >>> master_role("dark", exptime=30.0), master_role("flat", filter="V"), master_role("bias")
    ('dark_00030000', 'flat_V', 'bias')
    """
    if kind == "dark":
        return dark_product_name(exptime).removesuffix(".fits")
    return flat_product_name(filter).removesuffix(".fits") if kind == "flat" else kind


def safe_filter_name(filter_name: str) -> str:
    """A filter name fit for a file name: anything but letters, digits and ``._+-`` becomes ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", filter_name.strip())
    return re.sub(r"^\.", "_", safe) or "_"


def flat_product_name(filter_name: str) -> str:
    """The course script's master flat name, with the filter name made safe."""
    return f"flat_{safe_filter_name(filter_name)}.fits"


@dataclass(frozen=True)
class DarkTerm:
    """What is subtracted from a frame of one exposure time before flat-fielding.

    Attributes
    ----------
    model : {'exact', 'scaled', 'none', 'overscan', 'nothing'}
        A master dark of the frame's own exposure time (which includes the
        bias); the master bias plus the dark current times the exposure
        time; the master bias only. In a night without bias and dark frames:
        nothing more than the frame's overscan, already subtracted
        (``'overscan'``, as IRAF's ``ccdproc`` with ``zerocor=no darkcor=no``),
        or nothing at all, so that the bias level stays (``'nothing'``).
    exptime : float
        The frame's exposure time (s).
    dark, bias, current : str or None
        Product names of the masters used.
    shape : tuple of int, optional
        The (preprocessed) frame's shape, for the terms that subtract no master.
    """

    model: str
    exptime: float
    dark: str | None = None
    bias: str | None = None
    current: str | None = None
    shape: tuple[int, int] | None = None

    @property
    def needs(self) -> tuple[str, ...]:
        """The masters this term is made of."""
        return tuple(name for name in (self.dark, self.bias, self.current) if name)

    def image(self, masters, rows=None) -> np.ndarray:
        """The image to subtract, from the masters' images (``masters[name]``).

        For an exact dark, the master dark itself (no copy); else float64 (zeros when
        the term subtracts no master).
        """
        rows = slice(None) if rows is None else rows
        if not self.needs:
            return np.zeros(self.shape, dtype=np.float32)[rows]
        if self.model == "exact":
            return masters[self.dark][rows]
        image = np.array(masters[self.bias][rows], dtype=np.float64)
        if self.model == "scaled":
            image += np.float64(self.exptime) * masters[self.current][rows]  # float64, a float32 image too
        return image

    def describe(self) -> str:
        """The term in words, for logs and HISTORY."""
        if self.model == "exact":
            return f"exact dark {self.dark}"
        if self.model == "scaled":
            return f"scaled dark {self.bias} + {self.exptime:g} s x {self.current}"
        return _UNCALIBRATED.get(self.model, f"bias only {self.bias}")


@dataclass(frozen=True)
class Master:
    """One master to make.

    Attributes
    ----------
    kind : {'bias', 'dark', 'dark_current', 'flat'}
    name : str
        Product file name, which also names the master in the plan.
    frames : tuple of Frame
        The raw frames it is combined from.
    exptime : float or None
        Exposure time of a master dark.
    filter : str or None
        Filter of a master flat.
    bias : str or None
        The master bias subtracted from the frames first (dark current).
    terms : tuple of DarkTerm
        What is subtracted from each flat (master flats).
    library : LibraryMaster or None
        A master read from the calibration library instead of combined (``frames`` is
        empty; ``name`` is its library file's name); the night does not write it.
    candidates : tuple of LibraryMaster
        For a library master: every library master that fits, nearest in time first
        (``library`` is one of them: the nearest, or the one the user chose).
    """

    kind: str
    name: str
    frames: tuple[Frame, ...]
    exptime: float | None = None
    filter: str | None = None
    bias: str | None = None
    terms: tuple[DarkTerm, ...] = ()
    library: LibraryMaster | None = None
    candidates: tuple[LibraryMaster, ...] = ()

    @property
    def role(self) -> str:
        """What the master is for, as the night would name a master of its own frames
        (``bias``, ``dark_00030000``, ``dark_current``, ``flat_V``): the name a library
        choice gives it (:attr:`PlanOptions.library_choice`)."""
        return master_role(self.kind, self.exptime, self.filter)

    @property
    def needs(self) -> tuple[str, ...]:
        """The masters that must be made first."""
        names = [self.bias] if self.bias else []
        for term in self.terms:
            names += term.needs
        return tuple(dict.fromkeys(names))

    @property
    def label(self) -> str:
        """What it is, in words."""
        if self.kind == "dark":
            what = f"master dark {self.exptime:g} s"
        elif self.kind == "flat":
            what = f"master flat {self.filter}"
        else:
            what = f"master {self.kind.replace('_', ' ')}"
        return what + (" (library)" if self.library else "")

    def source(self) -> str:
        """Where it comes from, in words: its frames, or the library."""
        if self.library:
            return self.library.describe()
        return f"from {len(self.frames)} frames"


#: The terms of a night without bias and dark frames, in words.
_UNCALIBRATED = {"overscan": "overscan only (no bias or dark frames)",
                 "nothing": "no bias correction (no bias, dark or overscan: the bias level stays)"}


@dataclass(frozen=True)
class ObjectStep:
    """An object frame to calibrate: what is subtracted, and the master flat it is divided by."""

    frame: Frame
    term: DarkTerm
    flat: str


@dataclass(frozen=True)
class NightPlan:
    """Which frames make which products; pure data.

    Attributes
    ----------
    catalogue : Catalogue
        The scanned night.
    masters : dict of str to Master
        Every master, by product name, in an order in which each master's
        needs come before it.
    flat_terms : dict of Path to DarkTerm
        What is subtracted from each flat (for its '_d' file).
    calibrations : tuple of ObjectStep
        Object frames to calibrate, with what each gets.
    problems : tuple of InputProblem
        Everything that stops the night being reduced.
    notes : tuple of str
        Warnings for the user (e.g. a frame far from its calibration's temperature).
    """

    catalogue: Catalogue
    masters: dict
    flat_terms: dict
    calibrations: tuple[ObjectStep, ...]
    problems: tuple[InputProblem, ...] = ()
    notes: tuple[str, ...] = ()

    def of_kind(self, kind: str) -> list[Master]:
        """The masters of one kind, in plan order."""
        return [m for m in self.masters.values() if m.kind == kind]

    @property
    def darks(self) -> dict:
        """Exact master darks by exposure time (of the first temperature group)."""
        return {m.exptime: m for m in reversed(self.of_kind("dark"))}

    @property
    def flats(self) -> dict:
        """Master flats by filter."""
        return {m.filter: m for m in self.of_kind("flat")}

    @property
    def objects(self) -> list[Frame]:
        """The object frames to calibrate."""
        return [step.frame for step in self.calibrations]

    @property
    def all_flats(self) -> list[Frame]:
        """Every flat with a dark term (each gets a '_d' file)."""
        return [f for f in self.catalogue.of_type("flat") if f.path in self.flat_terms]

    def models(self) -> dict:
        """How many flat and object frames got each dark model."""
        counts = defaultdict(int)
        for term in [*self.flat_terms.values(), *(o.term for o in self.calibrations)]:
            counts[term.model] += 1
        return dict(counts)

    @property
    def made(self) -> list[Master]:
        """The masters this night makes (and writes): not those of the library."""
        return [m for m in self.masters.values() if m.library is None]

    def library_history(self, names) -> list[str]:
        """HISTORY lines naming the library masters among ``names`` and their ages."""
        return [f"{name}: {self.masters[name].library.describe()}" for name in dict.fromkeys(names)
                if name in self.masters and self.masters[name].library is not None]

    def gets(self) -> dict:
        """What each flat and object frame gets, in words, by path; library masters marked
        with their age (the plan's column of the dashboard's frame table)."""
        def marked(text, names):
            for name in dict.fromkeys(names):
                master = self.masters.get(name)
                if master is not None and master.library is not None:
                    text = text.replace(name, f"{name} (library, {master.library.age:.2f} d)")
            return text

        gets = {path: marked(term.describe(), term.needs) for path, term in self.flat_terms.items()}
        gets.update({step.frame.path: marked(f"{step.term.describe()}; {step.flat}",
                                             (*step.term.needs, step.flat))
                     for step in self.calibrations})
        return gets

    def product_names(self, intermediate: bool = True) -> list[str]:
        """The names of every product, in the order they are written."""
        names = [m.name for m in self.made]
        if intermediate:
            names += [f"{frame.name}_d.fits" for frame in self.all_flats]
        for frame in self.objects:
            names += [f"{frame.name}_d.fits"] if intermediate else []
            names.append(f"{frame.name}_df.fits")
        return names

    def raise_problems(self) -> None:
        """Raise :class:`~ccdred.errors.InputError` listing every problem, if any."""
        if self.problems:
            raise InputError(self.problems)


@dataclass(frozen=True)
class PlanOptions:
    """What decides the plan.

    Parameters
    ----------
    dark_model : {'auto', 'exact', 'scaled', 'none'}
        See :class:`DarkTerm`; 'auto' takes 'exact' for a frame whose
        exposure time has two or more darks, else 'scaled' where biases and
        darks exist, else 'none' (bias only).
    temperature_tolerance : float
        Biases and darks within this many degrees (CCD-TEMP, SET-TEMP) form
        one group; each frame uses the nearest group.
    library : Library or None
        Masters of earlier nights, for what the night lacks: a frame without
        biases or darks of its own (or without those its model needs), a filter
        without flats, takes the fitting library master nearest in time.
    library_max_age : float or None
        Library masters taken more than this many days from the night are not used.
    library_choice : tuple of (str, str)
        ``(role, file)`` pairs: the library master (a file name in the library) to use
        for a master's :attr:`~Master.role` instead of the nearest; one that does not
        fit, or a role the night does not take from the library, is a problem.
    """

    dark_model: str = "auto"
    temperature_tolerance: float = 1.0
    library: Library | None = None
    library_max_age: float | None = 30.0
    library_choice: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.dark_model not in DARK_MODELS:
            msg = f"dark model must be one of {DARK_MODELS}, got {self.dark_model!r}"
            raise ValueError(msg)
        if not self.temperature_tolerance >= 0:
            msg = f"temperature tolerance must be >= 0, got {self.temperature_tolerance!r}"
            raise ValueError(msg)
        if self.library_max_age is not None and not self.library_max_age >= 0:
            msg = f"library max age must be >= 0 days, got {self.library_max_age!r}"
            raise ValueError(msg)


def plan_night(catalogue: Catalogue, options: PlanOptions = PlanOptions()) -> NightPlan:
    """The night's plan, or InputError listing every problem at once."""
    plan = build_plan(catalogue, options)
    plan.raise_problems()
    return plan


def build_plan(catalogue: Catalogue, options: PlanOptions = PlanOptions()) -> NightPlan:
    """The night's plan, with the problems that stop it (see :class:`NightPlan`).

    Masters that cannot be made are left out and their problem recorded, so
    that an interactive view can still show the others.
    """
    builder = _Builder(catalogue, options)
    return builder.plan()


@dataclass
class _Group:
    """Biases and darks of one temperature."""

    temperature: float | None
    biases: list = field(default_factory=list)
    darks: list = field(default_factory=list)
    suffix: str = ""


class _Builder:
    """Builds a plan step by step, collecting problems."""

    def __init__(self, catalogue: Catalogue, options: PlanOptions):
        self.catalogue, self.options = catalogue, options
        self.problems = list(catalogue.problems)
        self.masters: dict[str, Master] = {}
        self.groups = _temperature_groups(catalogue, options.temperature_tolerance)
        self.notes: list[str] = []
        self.when = night_time(catalogue.frames) if options.library else None
        self.setups: dict = {}
        self.choice = dict(options.library_choice)

    def plan(self) -> NightPlan:
        flats = self.catalogue.of_type("flat")
        objects = self.catalogue.of_type("object")
        terms = self._terms([*flats, *objects])
        flat_masters = {}
        for filter_name in sorted({*self.catalogue.filters, *(f.filter for f in flats)}):
            master = self._flat(filter_name, terms)
            if master is not None:
                flat_masters[filter_name] = master
        self.masters.update({m.name: m for m in flat_masters.values()})
        steps = tuple(ObjectStep(f, terms[f.path], flat_masters[f.filter].name) for f in objects
                      if f.path in terms and f.filter in flat_masters)
        plan = NightPlan(self.catalogue, self._ordered(),
                         {f.path: terms[f.path] for f in flats if f.path in terms}, steps)
        problems = (*self.problems, *self._unused_choices(), *_clash_problems(plan))
        return replace(plan, problems=tuple(dict.fromkeys(problems)),
                       notes=tuple(dict.fromkeys(self.notes)))

    def _ordered(self) -> dict:
        order = {"bias": 0, "dark": 1, "dark_current": 2, "flat": 3}
        return dict(sorted(self.masters.items(), key=lambda item: order[item[1].kind]))

    # -- dark terms -------------------------------------------------------------

    def _terms(self, frames) -> dict:
        """Each frame's DarkTerm; frames needing what is missing are problems, by exptime."""
        terms, missing = {}, defaultdict(list)
        for frame in frames:
            group = self._nearest_group(frame)
            term, problem = self._term(frame, group)
            if term is None:
                missing[(frame.exptime, problem)].append(frame)
            else:
                terms[frame.path] = term
        for (_, (path, message)), users in missing.items():
            self.problems.append(InputProblem(path or users[0].path,
                                              f"{message} (needed by {_names(users)})"))
        return terms

    def _term(self, frame: Frame, group: _Group):
        """A frame's DarkTerm from the night's own frames, else from the library, else
        (without bias and dark frames) its overscan or nothing; or the problem."""
        own = group.biases or group.darks or self.options.dark_model in ("exact", "scaled")
        term, problem = self._own_term(frame, group) if own else (None, None)
        if term is not None:
            return term, None
        term, why = self._library_term(frame)
        if term is not None:
            return term, None
        if problem is None and not why:
            return self._uncalibrated(frame), None
        problem = problem or (None, "no bias or dark frames")
        return None, (problem[0], problem[1] + "".join(f"; library: {w}" for w in why))

    def _own_term(self, frame: Frame, group: _Group):
        model, exptime = self.options.dark_model, frame.exptime
        darks = [f for f in group.darks if f.exptime == exptime]
        if model == "exact" or (model == "auto" and len(darks) >= 2) or (
                model == "auto" and not group.biases):
            if len(darks) >= 2:
                return DarkTerm("exact", exptime, dark=self._dark(exptime, darks, group)), None
            what = "no dark" if not darks else "only one dark"
            hint = "" if model == "exact" else "; and no bias to scale darks or subtract alone"
            return None, (darks[0].path if darks else None,
                          f"{what} for exposure time {exptime:g} s{hint}")
        if not group.biases:
            return None, (None, f"no bias frames for the {model!r} dark model")
        bias = self._bias(group)
        scalable = [f for f in group.darks if f.exptime and f.exptime > 0]
        if model == "none" or not scalable:
            return DarkTerm("none", exptime, bias=bias), None
        return DarkTerm("scaled", exptime, bias=bias,
                        current=self._current(scalable, bias, group)), None

    def _library_term(self, frame: Frame) -> tuple[DarkTerm | None, list[str]]:
        """A frame's DarkTerm from library masters (the dark model's choice among them, as
        'auto' chooses among the night's own), and why fitting ones were left out."""
        model, exptime = self.options.dark_model, frame.exptime
        why = []
        if model in ("auto", "exact"):
            dark, why = self._borrow("dark", frame, exptime=exptime)
            if dark or model == "exact":
                return (DarkTerm("exact", exptime, dark=dark) if dark else None), why
        bias, why_bias = self._borrow("bias", frame)
        if not bias:
            return None, [*why, *why_bias]
        if model != "none":
            current, why_current = self._borrow("dark_current", frame)
            if current:
                return DarkTerm("scaled", exptime, bias=bias, current=current), []
            if model == "scaled":
                return None, why_current
        return DarkTerm("none", exptime, bias=bias), []

    def _borrow(self, kind: str, frame: Frame, **wanted) -> tuple[str | None, list[str]]:
        """The name of the library master of ``kind`` for ``frame`` (planned as a master read
        from the library): the user's choice, else the fitting one nearest in time; or
        None and why those near it do not fit."""
        library, options = self.options.library, self.options
        if library is None:
            return None, []
        if frame.path not in self.setups:
            self.setups[frame.path] = setup_of(frame.header(), frame.shape, frame.n_amplifiers)
        need = {"kind": kind, "setup": self.setups[frame.path], "when": self.when,
                "max_age": options.library_max_age, "temperature": frame.temperature,
                "tolerance": options.temperature_tolerance, **wanted}
        fitting, why = library.candidates(**need)
        found = self._chosen(master_role(kind, **wanted), need) or next(iter(fitting), None)
        if found is None:
            return None, why
        return self._add(Master(kind, found.path.name, (), library=found,
                                candidates=tuple(fitting), **wanted)), []

    def _chosen(self, role: str, need: dict) -> LibraryMaster | None:
        """The library master the user chose for ``role``, if it fits ``need``; else None,
        and a problem says why (so that the nearest stands in only for the views)."""
        file = self.choice.get(role)
        if file is None:
            return None
        found, reason = self.options.library.chosen(file, **need)
        if found is None:
            self.problems.append(InputProblem(self.options.library.folder / file,
                                              f"chosen as library master {role}, but it {reason}"))
        return found

    def _unused_choices(self) -> list[InputProblem]:
        """A problem for each library choice whose role the night does not take from the
        library: it makes that master from its own frames, or needs no such master."""
        taken = {m.role for m in self.masters.values() if m.library is not None}
        own = {m.role for m in self.masters.values() if m.library is None}
        problems = []
        for role, file in self.choice.items():
            if role in taken:
                continue
            if self.options.library is None:
                why = "no library is given (--library DIR)"
            elif role in own:
                why = f"this night makes {role} from its own frames, which win over the library"
            else:
                why = (f"this night takes no master {role} from the library (it takes: "
                       f"{', '.join(sorted(taken)) or 'none'})")
            where = self.options.library.folder / file if self.options.library else Path(file)
            problems.append(InputProblem(where, f"chosen as library master {role}, but {why}"))
        return problems

    def _uncalibrated(self, frame: Frame) -> DarkTerm:
        """The term of a frame in a night without bias and dark frames: its overscan, if it
        has one, is its only bias correction; else it has none (a note says so, once)."""
        if frame.preprocess.overscan is not None:
            self.notes.append("no bias or dark frames: the overscan is the only bias correction "
                              "of the flats and objects")
            return DarkTerm("overscan", frame.exptime, shape=frame.shape)
        self.notes.append("no bias, dark or overscan: the flats and objects are flat-fielded "
                          "only, and their bias level stays in the products")
        return DarkTerm("nothing", frame.exptime, shape=frame.shape)

    def _nearest_group(self, frame: Frame) -> _Group:
        known = [g for g in self.groups if g.temperature is not None]
        if frame.temperature is None or not known:
            return max(self.groups, key=lambda g: len(g.biases) + len(g.darks))
        group = min(known, key=lambda g: abs(g.temperature - frame.temperature))
        if abs(group.temperature - frame.temperature) > self.options.temperature_tolerance:
            self.notes.append(f"{frame.path}: taken at {frame.temperature:g} C, nearest "
                                 f"calibration at {group.temperature:g} C")
        return group

    # -- masters ---------------------------------------------------------------

    def _add(self, master: Master) -> str:
        self.masters.setdefault(master.name, master)
        return master.name

    def _bias(self, group: _Group) -> str:
        return self._add(Master("bias", f"bias{group.suffix}.fits", tuple(group.biases)))

    def _dark(self, exptime, darks, group: _Group) -> str:
        return self._add(Master("dark", dark_product_name(exptime, group.suffix), tuple(darks),
                                exptime=exptime))

    def _current(self, darks, bias, group: _Group) -> str:
        return self._add(Master("dark_current", f"dark_current{group.suffix}.fits", tuple(darks),
                                bias=bias))

    def _flat(self, filter_name, terms) -> Master | None:
        frames = [f for f in self.catalogue.flats(filter_name) if f.path in terms]
        if not self.catalogue.flats(filter_name):
            users = [f for f in self.catalogue.of_type("object") if f.filter == filter_name]
            name, why = self._borrow("flat", users[0], filter=filter_name)
            if name is not None:
                return self.masters[name]
            self.problems.append(InputProblem(users[0].path, f"no flat for filter {filter_name!r} "
                                                             f"(needed by {_names(users)})"
                                              + "".join(f"; library: {w}" for w in why)))
            return None
        if not frames:
            return None  # their dark terms are missing: already a problem
        return Master("flat", flat_product_name(filter_name), tuple(frames), filter=filter_name,
                      terms=tuple(terms[f.path] for f in frames))


def describe_plan(plan: NightPlan) -> list[str]:
    """The plan in lines of words: each master and where it comes from (for a library master,
    also every fitting one, with its age), then what each flat and object frame gets
    (``ccdred reduce --plan``), before anything is computed."""
    lines = []
    for master in plan.masters.values():
        lines.append(f"{master.label}: {master.name} {master.source()}")
        lines += [f"  {line}" for line in _candidate_lines(master)]
    lines += [f"{path.name}: {gets}" for path, gets in sorted(plan.gets().items())]
    return lines + [f"note: {note}" for note in plan.notes]


def _candidate_lines(master: Master) -> list[str]:
    """A library master's candidates, nearest first, the one used marked."""
    if master.library is None:
        return []
    lines = [f"{master.role} candidates (choose with --library-master {master.role}=FILE):"]
    for candidate in master.candidates:
        used = ", used" if candidate.path == master.library.path else ""
        lines.append(f"  {candidate.path.name}: taken {candidate.date_obs}, "
                     f"{candidate.age_words()}{used}")
    return lines


def _names(frames, most: int = 5) -> str:
    """The first file names of some frames, for messages: 'a.fits, b.fits ...'."""
    return ", ".join(f.path.name for f in frames[:most]) + (" ..." if len(frames) > most else "")


def _temperature_groups(catalogue: Catalogue, tolerance: float) -> list[_Group]:
    """Biases and darks grouped by temperature (one group when none is recorded)."""
    frames = [f for f in catalogue.frames if f.frame_type in ("bias", "dark")]
    temperatures = sorted({f.temperature for f in frames if f.temperature is not None})
    starts = []
    for t in temperatures:
        if not starts or t - starts[-1] > tolerance:
            starts.append(t)
    groups = [_Group(t, suffix=f"_{t:+.0f}C" if len(starts) > 1 else "") for t in starts]
    groups = groups or [_Group(None)]
    for frame in frames:
        group = groups[0] if frame.temperature is None else min(
            groups, key=lambda g: abs(g.temperature - frame.temperature))
        (group.biases if frame.frame_type == "bias" else group.darks).append(frame)
    for group in groups:
        members = [f.temperature for f in (*group.biases, *group.darks) if f.temperature is not None]
        if members:
            group.temperature = float(np.mean(members))
    return groups


def _clash_problems(plan: NightPlan) -> list[InputProblem]:
    owners: dict = {}
    problems = []
    for master in plan.of_kind("flat"):
        other = owners.setdefault(master.name, master.filter)
        if other != master.filter:
            problems.append(InputProblem(None, f"filters {other!r} and {master.filter!r} both "
                                               f"make {master.name}"))
    for frame in [*plan.all_flats, *plan.objects]:
        other = owners.setdefault(f"{frame.name}_d.fits", frame)
        if other is not frame:
            problems.append(InputProblem(frame.path, f"same file name as {other.path}; "
                                                     f"both would write {frame.name}_d.fits"))
    return problems
