"""Scan raw files into a frame catalogue, reporting every problem at once.

A :class:`Frame` is what the headers say about one file; a :class:`Catalogue`
is the night: the frames that could be read, an
:class:`~ccdred.errors.InputProblem` for each file that could not, and the
:class:`Note` lines the user should read, each said once for the night.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import fitsio
from .errors import InputError, InputProblem
from .keywords import FRAME_TYPES, Keywords, is_placeholder
from .sections import Amplifier, Mosaic, Overscan, Placement, Preprocess, Section, Trim, \
    layout_problems

__all__ = ["Catalogue", "Frame", "Note", "PreprocessOptions", "expand_paths", "fits_files",
           "read_frame", "read_stack", "scan", "stack_dtype"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """What the header of one raw file says.

    Attributes
    ----------
    path : pathlib.Path
        The raw file.
    hdu : int
        Index of the HDU holding the image.
    imagetyp : str
        The frame-type keyword's value as written.
    frame_type : str or None
        'bias', 'dark', 'flat', 'object', or None when not recognised.
    exptime : float or None
        Exposure time (s).
    filter : str or None
        Filter name (flats and objects).
    shape : (int, int)
        Image (rows, columns).
    date_obs : str or None
        DATE-OBS, when present.
    dtype : str
        Type of the image data as read (e.g. 'uint16' for 16-bit raw frames),
        after the preprocessing.
    temperature : float or None
        CCD temperature (CCD-TEMP, else SET-TEMP), degrees C.
    preprocess : Preprocess or Mosaic
        Overscan subtraction and trim applied whenever the image is read
        (in float64; stacks of such frames are float32); ``shape`` is the
        preprocessed image's. A multi-amplifier frame (several image
        extensions) has a :class:`~ccdred.sections.Mosaic`: each amplifier
        preprocessed, then placed by its DETSEC (``hdu`` is the first
        amplifier's).
    type_keyword : str or None
        The keyword ``imagetyp`` was read from: the configured one, or the
        first of its alternatives present (OBSTYPE, ...); None when the header
        has none.
    bayer : str or None
        The colour-filter mosaic (``BAYERPAT``, e.g. 'RGGB') of a one-shot colour
        camera's frame, recorded as is (ccdred calibrates the mosaic, it does not
        debayer); None for a monochrome sensor.
    primary_cards : bool
        The image extension has no frame-type keyword and no ``INHERIT`` card,
        and the primary header has one: the frame's header is the extension's
        plus the primary's cards, as if it said ``INHERIT = T``.
    """

    path: Path
    hdu: int
    imagetyp: str
    frame_type: str | None
    exptime: float | None
    filter: str | None
    shape: tuple[int, int]
    date_obs: str | None = None
    dtype: str = "float64"
    temperature: float | None = None
    preprocess: Preprocess | Mosaic = field(default_factory=Preprocess)
    type_keyword: str | None = None
    bayer: str | None = None
    primary_cards: bool = False

    @property
    def name(self) -> str:
        """File name without folder and FITS suffix (the stem of its products)."""
        return fitsio.product_stem(self.path)

    @property
    def n_amplifiers(self) -> int:
        """The amplifiers the image was read through (its image extensions placed by DETSEC)."""
        return len(self.preprocess.amplifiers) if isinstance(self.preprocess, Mosaic) else 1

    def header(self):
        """The header of the image HDU (read again from the file); a tiled frame's says so."""
        if isinstance(self.preprocess, Mosaic):
            primary, images = fitsio.image_hdus(self.path)
            headers = dict(images)
            return fitsio.tiled_header(primary, [headers[amp.hdu] for amp in
                                                 self.preprocess.amplifiers],
                                       self.shape, self.preprocess.history())
        if self.primary_cards:
            primary, images = fitsio.image_hdus(self.path)
            return fitsio.inherited(primary, dict(images)[self.hdu])
        return fitsio.find_image_hdu(self.path)[1]

    def raw(self):
        """The image as stored: an array, or a tiled frame's amplifier images (a list)."""
        if isinstance(self.preprocess, Mosaic):
            return [fitsio.read_image(self.path, amp.hdu) for amp in self.preprocess.amplifiers]
        return fitsio.read_image(self.path, self.hdu)

    def read(self, rows=None, out=None) -> np.ndarray:
        """The (preprocessed) image, or a block of its ``rows``; stored into ``out`` if given."""
        if not self.preprocess:
            return fitsio.read_image(self.path, self.hdu, rows=rows, out=out)
        raw = self.raw()
        if rows is None:
            return self.preprocess(raw, out=out)
        image = self.preprocess(raw)[rows]
        if out is None:
            return image
        np.copyto(out, image, casting="unsafe")
        return out


@dataclass(frozen=True)
class Catalogue:
    """The frames of a night and the problems met while reading them."""

    frames: tuple[Frame, ...]
    problems: tuple[InputProblem, ...] = ()
    keywords: Keywords = field(default_factory=Keywords)
    notes: tuple[str, ...] = ()

    def of_type(self, frame_type: str) -> list[Frame]:
        """Frames of one type, in path order."""
        return [f for f in self.frames if f.frame_type == frame_type]

    def darks(self, exptime: float) -> list[Frame]:
        """Dark frames with exactly this exposure time."""
        return [f for f in self.of_type("dark") if f.exptime == exptime]

    def flats(self, filter_name: str) -> list[Frame]:
        """Flat frames taken through this filter."""
        return [f for f in self.of_type("flat") if f.filter == filter_name]

    @property
    def exptimes(self) -> list[float]:
        """Exposure times that need a master dark: those of flats and objects."""
        return sorted({f.exptime for f in self.frames if f.frame_type in ("flat", "object")})

    @property
    def filters(self) -> list[str]:
        """Filters that need a master flat: those of object frames."""
        return sorted({f.filter for f in self.of_type("object")})

    def rows(self) -> list[dict]:
        """One dict per frame, for tables."""
        return [{"file": f.path.name, "type": f.frame_type or f"unknown ({f.imagetyp})",
                 "exptime": f.exptime, "filter": f.filter, "shape": "x".join(map(str, f.shape)),
                 "temperature": f.temperature, "date_obs": f.date_obs} for f in self.frames]

    def raise_problems(self) -> None:
        """Raise :class:`~ccdred.errors.InputError` if any file had a problem."""
        if self.problems:
            raise InputError(self.problems)


@dataclass(frozen=True)
class Note:
    """What the user should know of a file, which does not stop it being used.

    Notes are said once for the night (see :func:`scan`): those of one
    ``topic`` in one line naming each ``message`` and its files (``BIASSEC =
    'UNKNOWN'`` in every file, say); a note without a topic once per distinct
    message, naming the first file.
    """

    path: Path
    message: str
    topic: str | None = None


_PLACEHOLDER_SECTIONS = "header sections that are placeholders, not used"
#: The note of frames whose keywords are in the primary header, the image in an extension.
_PRIMARY_CARDS = ("no frame-type keyword in the image extension, nor INHERIT: the primary "
                  "header's keywords read as well")
#: The note of frames whose type value is none of the known ones.
_UNKNOWN_TYPES = "frames of an unknown type, not used"


def stack_dtype(frames) -> np.dtype:
    """A data type that holds the images of all these frames."""
    return np.result_type(*(frame.dtype for frame in frames))


def read_stack(frames, rows=None, map_frames=map, read=None) -> np.ndarray:
    """Raw frames (or a block of their rows) as one stack, in :func:`stack_dtype`.

    Each image is read straight into its slot; ``map_frames`` (e.g. a thread
    pool's ``map``) reads the frames, and ``read(frame, out)``, when given,
    stores a whole frame (e.g. from memory) instead of ``frame.read``.
    """
    height = frames[0].shape[0] if rows is None else len(range(frames[0].shape[0])[rows])
    stack = np.empty((len(frames), height, frames[0].shape[1]), dtype=stack_dtype(frames))

    def store(i):
        if read is None:
            frames[i].read(rows, out=stack[i])
        else:
            read(frames[i], stack[i])

    list(map_frames(store, range(len(frames))))
    return stack


def fits_files(folder) -> list[Path]:
    """The files of a folder that are FITS by content or claim to be by their suffix
    (hidden files left out), sorted."""
    return [p for p in sorted(Path(folder).iterdir())
            if p.is_file() and not p.name.startswith(".")
            and (fitsio.is_fits(p) or fitsio.product_stem(p) != p.name)]


def expand_paths(paths) -> tuple[list[Path], list[InputProblem]]:
    """Files named directly, plus the FITS files inside named folders.

    A named file must exist; in a folder, files that are not FITS by content
    are passed over unless their suffix claims FITS. Duplicates (the same file
    named twice) are dropped with a log message.
    """
    files, problems, seen = [], [], set()
    for path in map(Path, paths):
        if path.is_dir():
            candidates = fits_files(path)
            if not candidates:
                problems.append(InputProblem(path, "no FITS files in this folder"))
        elif path.exists():
            candidates = [path]
        else:
            problems.append(InputProblem(path, "no such file or folder"))
            continue
        for candidate in candidates:
            key = candidate.resolve()
            if key in seen:
                logger.info("%s given more than once; using it once", candidate)
                continue
            seen.add(key)
            files.append(candidate)
    return files, problems


@dataclass(frozen=True)
class PreprocessOptions:
    """Which overscan and trim to apply, before anything else, to every frame.

    A file of several image extensions (amplifiers or CCDs) is read as one
    image: each extension's overscan and trim as below, from its own header,
    then placed by its DETSEC (see :meth:`mosaic`).

    Parameters
    ----------
    overscan : str
        ``'auto'`` (the header's BIASSEC, when it is a valid section of the
        image), ``'none'``, or a FITS section ``[x1:x2,y1:y2]``.
    overscan_function : str
        See :class:`~ccdred.sections.Overscan`.
    trim : str
        ``'auto'`` (TRIMSEC, else DATASEC, when valid), ``'none'``, or a section.
    """

    overscan: str = "auto"
    overscan_function: str = Overscan.function
    trim: str = "auto"

    def __post_init__(self):
        for name in ("overscan", "trim"):
            value = getattr(self, name)
            if value not in ("auto", "none"):
                Section.parse(value)  # ValueError naming the value
        Overscan(Section(1, 1, 1, 1), self.overscan_function)

    def resolve(self, header, shape, problem, note) -> Preprocess:
        """The preprocessing of one frame.

        Header sections that do not fit the image, or are placeholders
        (``BIASSEC = 'UNKNOWN'``), are not used: ``note(message, topic=None)``
        says so; ``problem(message)`` refuses the frame (a given section that
        does not fit).
        """
        overscan = self._section(self.overscan, ("BIASSEC",), header, shape, problem, note)
        trim = self._section(self.trim, ("TRIMSEC", "DATASEC"), header, shape, problem, note)
        return Preprocess(None if overscan is None else Overscan(overscan, self.overscan_function),
                          None if trim is None else Trim(trim))

    def mosaic(self, images, problem, note) -> Mosaic | None:
        """The tiling of a multi-amplifier frame's ``images`` ((index, header) pairs).

        Each extension's overscan and trim are resolved from its own header
        as a frame's are (:meth:`resolve`), and placed by its DETSEC. Every
        problem (no DETSEC, no DATASEC, a trimmed image not the size of its
        DETSEC, DETSECs that overlap or leave holes, an overscan in some
        extensions only) is said with ``problem(message)``, naming the
        extension; None is returned then.
        """
        refused = []

        def refuse(name, message):
            refused.append(name)
            problem(f"extension {name}: {message}")

        amplifiers = [self._amplifier(index, header, refuse, note) for index, header in images]
        if refused:
            return None
        for name, message in layout_problems([amp.placement for amp in amplifiers],
                                             [amp.name for amp in amplifiers]):
            refuse(name, message)
        types = [fitsio.image_dtype(header) for _, header in images]
        for amp, dtype in zip(amplifiers, types, strict=True):
            if dtype != types[0]:
                refuse(amp.name, f"its data type ({dtype}) differs from extension "
                                 f"{amplifiers[0].name}'s ({types[0]})")
        without = [amp for amp in amplifiers if amp.preprocess.overscan is None]
        for amp in without if len(without) < len(amplifiers) else ():
            refuse(amp.name, "no usable BIASSEC, where other extensions have one "
                             "(--overscan none uses none)")
        return None if refused else Mosaic(tuple(amplifiers))

    def _amplifier(self, index, header, refuse, note) -> Amplifier | None:
        """One extension's :class:`~ccdred.sections.Amplifier`, or None (refused)."""
        extname = str(header.get("EXTNAME", "")).strip()
        name = f"{index} ({extname})" if extname else str(index)
        if "DETSEC" not in header:
            refuse(name, "no DETSEC: where it lies on the detector is unknown")
            return None
        try:
            placement = Placement.parse(header["DETSEC"])
        except ValueError as err:
            refuse(name, f"DETSEC: {err}")
            return None
        if header.get("NAXIS") != 2:
            refuse(name, f"image has {header.get('NAXIS')} axes; an amplifier's has 2")
            return None
        shape = (int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0)))
        preprocess = self.resolve(header, shape, lambda message: refuse(name, message), note)
        if self.trim == "auto" and preprocess.trim is None:
            refuse(name, "no usable DATASEC (nor TRIMSEC): which pixels were exposed is unknown")
            return None
        trimmed = preprocess.shape(shape)
        if trimmed != placement.section.shape:
            refuse(name, f"its trimmed image ({trimmed[1]}x{trimmed[0]}) is not the size of "
                         f"its DETSEC {placement} ({placement.section.shape[1]}x"
                         f"{placement.section.shape[0]})")
            return None
        return Amplifier(index, name, preprocess, placement, extname or None)

    @staticmethod
    def _section(choice, keywords, header, shape, problem, note) -> Section | None:
        if choice == "none":
            return None
        if choice != "auto":
            try:
                section = Section.parse(choice)
                section.check(shape)
            except ValueError as err:
                problem(str(err))
                return None
            return section
        for key in keywords:
            if key in header:
                if is_placeholder(header[key]):
                    note(f"{key} = {header[key]!r}", _PLACEHOLDER_SECTIONS)
                    continue
                try:
                    section = Section.parse(header[key])
                    section.check(shape)
                except ValueError as err:
                    note(f"{key} = {header[key]!r} not used: {err}")
                    continue
                return section
        return None


def scan(paths, keywords: Keywords = Keywords(),
         preprocessing: PreprocessOptions = PreprocessOptions()) -> Catalogue:
    """Read the headers of raw files (or folders of them) into a catalogue.

    Parameters
    ----------
    paths : iterable of path-like
        Files and folders.
    keywords : Keywords, optional
        Which header keywords and values mean what.
    preprocessing : PreprocessOptions, optional
        Overscan and trim of every frame.

    Returns
    -------
    Catalogue
        Frames sorted by path, one problem per unreadable or inconsistent
        file (the catalogue never raises for bad input), and the notes of the
        night, each said once however many files it concerns.
    """
    files, problems = expand_paths(paths)
    frames, notes = [], []
    for path in sorted(files, key=str):
        try:
            frames.append(read_frame(path, keywords, preprocessing, notes.append))
        except InputError as err:
            problems.extend(err.problems)
    problems.extend(_shape_problems(frames))
    notes.extend(Note(frame.path, f"{frame.type_keyword} = {frame.imagetyp!r}", _UNKNOWN_TYPES)
                 for frame in frames
                 if frame.frame_type is None and keywords.override(frame.path.name) != "ignore")
    return Catalogue(tuple(frames), _grouped_problems(problems), keywords, _summarise(notes))


#: Files that share one problem, word for word, beyond which it is said once for them all.
PROBLEM_GROUP = 3


def _grouped_problems(problems) -> tuple[InputProblem, ...]:
    """Each problem once: said of more than :data:`PROBLEM_GROUP` files (a night of frames
    all refused alike), it names the first file and counts the others."""
    groups = _grouped(problems, lambda problem: (problem.path is None, problem.message))
    if all(len(group) <= PROBLEM_GROUP for group in groups.values()):
        return tuple(problems)
    said = []
    for group in groups.values():
        if len(group) > PROBLEM_GROUP and group[0].path is not None:
            said.append(InputProblem(group[0].path, group[0].message
                                     + _others(group, " (and {} other files)")))
        else:
            said.extend(group)
    return tuple(said)


def _summarise(notes) -> tuple[str, ...]:
    """One line per topic: the same header section in every file is said once for the night.

    A note without a topic is its own topic: its line names the first file it
    concerns and how many others.
    """
    topics = _grouped(notes, lambda note: note.topic or note.message)
    return tuple(_summary_line(group) for group in topics.values())


def _summary_line(notes) -> str:
    first = notes[0]
    if first.topic is None:
        return f"{first.path}: {first.message}{_others(notes, ' (and {} other files)')}"
    said = (f"{message} in {group[0].path}{_others(group, ' and {} other files')}"
            for message, group in _grouped(notes, lambda note: note.message).items())
    return f"{first.topic}: {'; '.join(said)}"


def _grouped(notes, key) -> dict[str, list[Note]]:
    groups: dict[str, list[Note]] = {}
    for note in notes:
        groups.setdefault(key(note), []).append(note)
    return groups


def _others(notes, template: str) -> str:
    return template.format(len(notes) - 1) if len(notes) > 1 else ""


def read_frame(path, keywords: Keywords = Keywords(),
               preprocessing: PreprocessOptions = PreprocessOptions(), note=None) -> Frame:
    """Classify one raw file from its header; raise InputError listing its problems.

    ``note`` is called with a :class:`Note` for what the user should know but
    does not stop the frame being used (e.g. a header section that does not
    fit the image, or a frame type read from OBSTYPE where IMAGETYP is missing).
    """
    path = Path(path)
    primary, images = fitsio.image_hdus(path)
    problems = []

    def problem(message):
        problems.append(InputProblem(path, message))

    def noted(message, topic=None):
        (note or _ignore)(Note(path, message, topic))

    hdu, header = images[0]
    # several images, one with a DETSEC: a detector's amplifiers (each must say where it lies)
    amplifiers = len(images) > 1 and any("DETSEC" in image for _, image in images)
    if len(images) > 1 and not amplifiers:
        noted(f"{len(images) - 1} more image extensions not read: none has a DETSEC, so they "
              "are not amplifiers of one detector (the first image is the frame)",
              topic="image extensions")
    mosaic = preprocessing.mosaic(images, problem, noted) if amplifiers else None
    if problems:
        raise InputError(problems)
    primary_cards = mosaic is None and _keywords_in_primary(primary, hdu, header, keywords)
    if primary_cards:
        header = fitsio.inherited(primary, header)
        noted(f"extension {hdu}", _PRIMARY_CARDS)
    if mosaic is not None:
        header = fitsio.tiled_header(primary, [image for _, image in images], mosaic.shape())
    naxis = header.get(keywords.naxis, 0)
    if naxis != 2:
        problem(f"image has {naxis} axes ({keywords.naxis}); a 2-D image is needed")
    raw_shape = (int(header.get(keywords.naxis2, 0)), int(header.get(keywords.naxis1, 0)))
    type_keyword, imagetyp = _frame_type_card(header, keywords, noted)
    frame_type = keywords.frame_type_of(path.name, imagetyp)
    if imagetyp is None and frame_type is None:
        others = ", ".join(keywords.imagetyp_keywords()[1:])
        hint = (f" (the primary header has one, but extension {hdu} says INHERIT = F)"
                if hdu > 0 and _has_frame_type(primary, keywords) else "")
        problem(f"no {keywords.imagetyp} keyword (nor {others}): cannot tell bias, dark, "
                f"flat or object apart{hint}")
    exptime = _exptime(header, keywords, problem if frame_type in ("dark", "flat", "object") else None)
    filter_name = _first_present(header, keywords.filter_keywords())[1]
    if frame_type in ("flat", "object") and not filter_name:
        problem(f"no filter keyword ({', '.join(keywords.filter_keywords())}) on a "
                f"{frame_type} frame")
    preprocess = mosaic or preprocessing.resolve(header, raw_shape, problem, noted)
    if problems:
        raise InputError(problems)
    # Overscan-corrected frames are computed in float64 and stacked in float32 (0.002 ADU
    # steps at 30000 ADU), half the memory of float64 stacks.
    dtype = np.float32 if preprocess.overscan else fitsio.image_dtype(header)
    return Frame(path, hdu, str(imagetyp).strip(), frame_type,
                 0.0 if frame_type == "bias" and exptime is None else exptime,
                 filter_name if frame_type in ("flat", "object") else None,
                 preprocess.shape(raw_shape), header.get("DATE-OBS"), np.dtype(dtype).name,
                 _temperature(header), preprocess, type_keyword,
                 str(header["BAYERPAT"]).strip() or None if "BAYERPAT" in header else None,
                 primary_cards)


def _keywords_in_primary(primary, hdu: int, header, keywords: Keywords) -> bool:
    """Whether an image extension's keywords are in the primary header although it does
    not say INHERIT: it has no frame-type keyword, the primary has one."""
    return (hdu > 0 and "INHERIT" not in header and _has_frame_type(primary, keywords)
            and not _has_frame_type(header, keywords))


def _has_frame_type(header, keywords: Keywords) -> bool:
    """Whether the header has one of the frame-type keywords (blank or not)."""
    return any(key in header for key in keywords.imagetyp_keywords())


def _first_present(header, keys) -> tuple[str | None, str | None]:
    """The first of ``keys`` the header gives a non-blank value, and that value (stripped)."""
    for key in keys:
        if key in header and str(header[key]).strip():
            return key, str(header[key]).strip()
    return None, None


def _frame_type_card(header, keywords: Keywords, noted) -> tuple[str | None, str | None]:
    """The frame-type keyword and its value: the configured keyword's, else the first
    alternative present (noted); a blank value of the configured one is an unknown type."""
    key, value = _first_present(header, keywords.imagetyp_keywords())
    if key is None and keywords.imagetyp in header:  # blank: an unknown type, not a missing one
        return keywords.imagetyp, str(header[keywords.imagetyp])
    if key not in (None, keywords.imagetyp):
        noted(key, f"no {keywords.imagetyp} keyword, the frame type read from another")
    return key, value


def _ignore(_):
    pass


def _temperature(header) -> float | None:
    for key in ("CCD-TEMP", "SET-TEMP", "CCDTEMP"):
        try:
            value = float(header[key])
        except (KeyError, TypeError, ValueError):
            continue
        if np.isfinite(value):
            return value
    return None


def _exptime(header, keywords: Keywords, problem) -> float | None:
    for key in keywords.exptime_keywords():
        if key in header:
            value = header[key]
            try:
                exptime = float(value)
            except (TypeError, ValueError):
                if problem:
                    problem(f"{key} = {value!r} is not a number")
                return None
            if not np.isfinite(exptime) or exptime < 0:
                if problem:
                    problem(f"{key} = {value!r} is not a valid exposure time")
                return None
            return exptime
    if problem:
        problem(f"no exposure time ({' or '.join(keywords.exptime_keywords())})")
    return None


def _shape_problems(frames) -> list[InputProblem]:
    """Frames whose (preprocessed) size differs from the night's most common size."""
    used = [f for f in frames if f.frame_type in FRAME_TYPES]
    if not used:
        return []
    common, count = Counter(f.shape for f in used).most_common(1)[0]
    size = "x".join(map(str, common[::-1]))
    return [InputProblem(f.path, f"image size {'x'.join(map(str, f.shape[::-1]))} differs from "
                                 f"the night's {size} ({count} frames)")
            for f in used if f.shape != common]
