"""The calibration library: masters ccdred made on earlier nights, for nights that lack their own.

A library is a folder of master products (``ccdred reduce --add-to-library``
copies a night's masters into it) and an index, ``index.json``, which is a
cache of what their headers say: what decides whether a master fits a frame
(:class:`Setup`: instrument, detector shape, binning, readout mode; and the
master's filter, exposure time and temperature) and when it was taken
(``DATE-OBS``). A missing or stale index is rebuilt from the headers.

:meth:`Library.candidates` lists, for a frame's needs, the fitting masters
nearest in time first (and says why the others were not taken);
:meth:`Library.nearest` is the first of them, and :meth:`Library.chosen`
says whether a master a user names fits. The plan (:mod:`ccdred.plan`) names
the one used as a :class:`LibraryMaster`. :func:`add_to_library`
adds products atomically: each file is written to a temporary file in the
library and renamed, and the index is rewritten the same way under an
exclusive ``fcntl.flock`` on ``.index.lock``, so that nights reduced at once
(threads, processes or Dask clients) never lose each other's entries.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from . import fitsio
from .errors import InputError, InputProblem
from .frames import _temperature
from .keywords import Keywords

__all__ = ["INDEX", "Library", "LibraryEntry", "LibraryMaster", "Setup", "add_to_library",
           "library_name", "night_time", "open_library", "require_writable",
           "setup_of"]

logger = logging.getLogger(__name__)

#: The index file in a library folder, and the lock file its writers take.
INDEX = "index.json"
_LOCK = ".index.lock"
_FORMAT = "ccdred library index 2"  # 2: a setup's amplifiers
#: Master kinds by the product's ``HIERARCH CCDRED STEP``.
_KINDS = {"master_bias": "bias", "master_dark": "dark", "master_dark_current": "dark_current",
          "master_flat": "flat"}
#: Header keywords of the readout mode, in the order they are looked at.
_READOUT = ("READMODE", "READOUTM", "READOUT")
_DAY = 86400.0


@dataclass(frozen=True)
class Setup:
    """What a camera was set to: a master fits a frame only with the same setup.

    Attributes
    ----------
    instrument : str or None
        ``INSTRUME``.
    shape : (int, int)
        The image's (rows, columns), after overscan and trim.
    binning : str or None
        ``'XxY'`` from ``XBINNING``/``YBINNING``, else ``CCDSUM``.
    readout : str or None
        The readout mode (``READMODE``, ``READOUTM`` or ``READOUT``).
    amplifiers : int
        The amplifiers the image was read through (a multi-amplifier frame's
        image extensions; a master's ``CCDRED TILE``), each with its own bias
        level and gain.
    """

    instrument: str | None
    shape: tuple[int, int]
    binning: str | None = None
    readout: str | None = None
    amplifiers: int = 1


def setup_of(header, shape, amplifiers: int | None = None) -> Setup:
    """The :class:`Setup` a header describes, for an image of ``shape`` read through
    ``amplifiers`` (None: as the header's ``CCDRED TILE`` says, else one)."""
    instrument = _text(header.get("INSTRUME"))
    binning = None
    if "XBINNING" in header and "YBINNING" in header:
        binning = f"{int(header['XBINNING'])}x{int(header['YBINNING'])}"
    elif _text(header.get("CCDSUM")):
        binning = "x".join(_text(header["CCDSUM"]).split())
    readout = next((_text(header[key]) for key in _READOUT if _text(header.get(key))), None)
    if amplifiers is None:
        tiled = _text(header.get("HIERARCH CCDRED TILE"))  # 'N amplifiers by DETSEC'
        amplifiers = int(tiled.split()[0]) if tiled else 1
    return Setup(instrument, tuple(int(n) for n in shape), binning, readout, amplifiers)


def _text(value) -> str | None:
    return None if value is None else str(value).strip() or None


@dataclass(frozen=True)
class LibraryEntry:
    """One master in the library, as its header describes it.

    Attributes
    ----------
    file : str
        Its file name in the library folder.
    kind : {'bias', 'dark', 'dark_current', 'flat'}
    setup : Setup
    filter : str or None
        A master flat's filter.
    exptime : float or None
        A master dark's exposure time (s).
    temperature : float or None
        ``CCD-TEMP`` (else ``SET-TEMP``) of its frames, degrees C.
    date_obs : str or None
        ``DATE-OBS`` of its first frame.
    source : str
        The ccdred version and date that made it (its header holds the rest of its
        provenance: inputs, options, HISTORY).
    """

    file: str
    kind: str
    setup: Setup
    filter: str | None = None
    exptime: float | None = None
    temperature: float | None = None
    date_obs: str | None = None
    source: str = ""

    @classmethod
    def from_header(cls, file: str, header) -> LibraryEntry | None:
        """The entry of a product's header; None when it is not a ccdred master."""
        kind = _KINDS.get(str(header.get("HIERARCH CCDRED STEP", "")))
        if kind is None or header.get("NAXIS", 0) != 2:
            return None
        keywords = Keywords()  # for masters written before they said what they matched on
        filter_name = _text(header.get("HIERARCH CCDRED FILTER")) or next(
            (_text(header[k]) for k in keywords.filter_keywords() if _text(header.get(k))), None)
        exptime = next((float(header[k]) for k in ("HIERARCH CCDRED EXPTIME",
                                                   *keywords.exptime_keywords()) if k in header),
                       None)
        made = (f"ccdred {header.get('HIERARCH CCDRED VERSION', '?')} on "
                f"{header.get('HIERARCH CCDRED DATE', '?')}")
        return cls(file, kind, setup_of(header, (header["NAXIS2"], header["NAXIS1"])),
                   filter_name if kind == "flat" else None,
                   exptime if kind == "dark" else None, _temperature(header),
                   _text(header.get("DATE-OBS")), made)

    def as_json(self) -> dict:
        """The entry as the index holds it."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> LibraryEntry:
        """An entry from the index."""
        setup = value["setup"]
        return cls(**{**value, "setup": Setup(**{**setup, "shape": tuple(setup["shape"])})})


@dataclass(frozen=True)
class LibraryMaster:
    """A library master a night uses: its file, when it was taken, and its age.

    Attributes
    ----------
    path : pathlib.Path
    date_obs : str
    age : float
        Days from when it was taken to the night (negative: taken after the night).
    """

    path: Path
    date_obs: str
    age: float

    def describe(self) -> str:
        """Where it comes from, in words, for logs and HISTORY."""
        return f"library master {self.path}, taken {self.date_obs}, {self.age_words()}"

    def age_words(self) -> str:
        """Its age in words: '2.54 days before the night' (or after it)."""
        return f"{abs(self.age):.2f} days {'after' if self.age < 0 else 'before'} the night"


@dataclass(frozen=True)
class Library:
    """A library folder and the masters its index lists (plain, picklable data).

    Examples
    --------
    >>> import tempfile
    >>> library = open_library(tempfile.mkdtemp())
    >>> library.entries
    ()
    """

    folder: Path
    entries: tuple[LibraryEntry, ...] = ()

    def candidates(self, kind: str, setup: Setup, when: datetime.datetime | None, *,
                   max_age: float | None = None, **wanted) -> tuple[list[LibraryMaster], list[str]]:
        """Every fitting master of ``kind``, nearest ``when`` first, and why those of its
        kind and setup that do not fit were left out.

        A master fits when its setup is ``setup``; a flat's filter is ``filter``, a dark's
        exposure time ``exptime``; a bias's or dark's temperature is within ``tolerance``
        of ``temperature`` (or both are unknown); and it was taken at most ``max_age`` days
        from ``when`` (either way).

        Parameters
        ----------
        kind : {'bias', 'dark', 'dark_current', 'flat'}
        setup : Setup
            The frame's.
        when : datetime.datetime or None
            When the night was taken (:func:`night_time`).
        max_age : float or None
            Days; None: any age.
        **wanted
            ``filter`` (flats), ``exptime`` (darks), ``temperature`` (degrees C, or None)
            and ``tolerance`` (degrees, default 1).

        Returns
        -------
        fitting : list of LibraryMaster
            Nearest in time first (ties by file name).
        why : list of str
            Each left-out master of the flat's filter or the dark's exposure time, and why.
        """
        fitting, why = [], []
        for entry in (e for e in self.entries if e.kind == kind and e.setup == setup):
            found, reason = self._judge(entry, when, max_age, **wanted)
            if found is not None:
                fitting.append(found)
            elif wanted.get("filter") in (None, entry.filter) and \
                    wanted.get("exptime") in (None, entry.exptime):
                why.append(f"{self.folder / entry.file} {reason}")
        return sorted(fitting, key=lambda m: (abs(m.age), m.path.name)), why

    def nearest(self, kind: str, setup: Setup, when: datetime.datetime | None,
                **wanted) -> tuple[LibraryMaster | None, list[str]]:
        """The first of :meth:`candidates` (None when none fits), and why others do not fit."""
        fitting, why = self.candidates(kind, setup, when, **wanted)
        return (fitting[0] if fitting else None), why

    def chosen(self, file: str, kind: str, setup: Setup, when: datetime.datetime | None, *,
               max_age: float | None = None, **wanted) -> tuple[LibraryMaster | None, str | None]:
        """The library master named ``file`` (a file name in the library, or its path), if
        it fits what :meth:`candidates` asks of a master (the same parameters).

        Returns
        -------
        found : LibraryMaster or None
        why : str or None
            Why it does not fit, in words to follow its name: "is of filter 'B'", "is a
            master dark, not a master flat", "is of another setup: ...", "is 40.0 days from
            this night (--library-max-age 30)", "is not in the library DIR".
        """
        entry = next((e for e in self.entries if e.file == self._name_in(file)), None)
        if entry is None:
            return None, f"is not in the library {self.folder}"
        if entry.kind != kind:
            return None, f"is a master {_KIND_WORDS[entry.kind]}, not a master {_KIND_WORDS[kind]}"
        if entry.setup != setup:
            return None, f"is of another setup: {_setup_misfit(entry.setup, setup)}"
        return self._judge(entry, when, max_age, **wanted)

    def _name_in(self, file: str) -> str:
        """A file's name in the library: itself, or a path's name when the path lies in the
        library's folder (given from anywhere); else the path as given (in no library)."""
        path = Path(file)
        if len(path.parts) > 1 and path.resolve().parent == Path(self.folder).resolve():
            return path.name
        return file

    def _judge(self, entry: LibraryEntry, when, max_age, filter=None, exptime=None,
               temperature=None, tolerance=1.0) -> tuple[LibraryMaster | None, str | None]:
        """An entry of the right kind and setup as a LibraryMaster, or None and why it does
        not fit."""
        reason = _misfit(entry, filter, exptime, temperature, tolerance)
        taken = _parse_time(entry.date_obs)
        if reason is None and taken is None:
            reason = "has no DATE-OBS"
        elif reason is None and when is None:
            reason = "cannot be dated against this night (its frames have no DATE-OBS)"
        if reason is not None:
            return None, reason
        age = (when - taken).total_seconds() / _DAY
        if max_age is not None and abs(age) > max_age:
            return None, f"is {abs(age):.1f} days from this night (--library-max-age {max_age:g})"
        return LibraryMaster(self.folder / entry.file, entry.date_obs, age), None


#: Master kinds in words.
_KIND_WORDS = {"bias": "bias", "dark": "dark", "dark_current": "dark current", "flat": "flat"}


def _setup_misfit(setup: Setup, wanted: Setup) -> str:
    """How a master's setup differs from the frame's, in words."""
    return "; ".join(f"{name} {getattr(setup, name)!r}, the frame's {getattr(wanted, name)!r}"
                     for name in ("instrument", "shape", "binning", "readout", "amplifiers")
                     if getattr(setup, name) != getattr(wanted, name))


def _misfit(entry: LibraryEntry, filter_name, exptime, temperature, tolerance) -> str | None:
    """Why an entry of the right kind and setup does not fit, or None."""
    if entry.kind == "flat":
        return None if entry.filter == filter_name else f"is of filter {entry.filter!r}"
    if entry.kind == "dark" and entry.exptime != exptime:
        return f"is of exposure time {entry.exptime:g} s"
    if (entry.temperature is None) != (temperature is None):
        return "has a temperature where the frame has none, or none where it has one"
    if temperature is not None and abs(entry.temperature - temperature) > tolerance:
        return f"was taken at {entry.temperature:g} C, not within {tolerance:g} C of {temperature:g} C"
    return None


def _parse_time(text) -> datetime.datetime | None:
    """A DATE-OBS as a naive UTC datetime, or None."""
    if not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return when


def night_time(frames) -> datetime.datetime | None:
    """When a night was taken: the median DATE-OBS of its frames (None if none has one)."""
    times = sorted(t for t in (_parse_time(f.date_obs) for f in frames) if t is not None)
    return times[len(times) // 2] if times else None


def open_library(folder) -> Library:
    """The library in ``folder``, from its index (rebuilt from the headers, and rewritten,
    when it is missing, unreadable or does not list the folder's files; a folder that
    cannot be written, a library shared read-only, is indexed in memory only).

    Raises
    ------
    InputError
        When ``folder`` is not a folder.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise InputError([InputProblem(folder, "no such library folder")])
    index = _current_index(folder)
    if index is None:
        try:
            with _locked(folder):
                index = _current_index(folder) or _rebuild(folder)
        except OSError as err:  # a library shared read-only: indexed for this run alone
            logger.info("the library %s cannot be written (%s): indexed in memory",
                        folder, err.strerror or err)
            index = _rebuild(folder, write=False)
    return Library(folder, tuple(LibraryEntry.from_json(e) for e in index["masters"]))


def require_writable(folder) -> None:
    """InputError unless masters can be added to the library in ``folder`` (an existing
    folder where its index lock can be taken and files made): said before a night is
    reduced, not after."""
    folder = Path(folder)
    try:
        with _locked(folder), tempfile.NamedTemporaryFile(dir=folder, prefix=".",
                                                          suffix=fitsio.PARTIAL_SUFFIX):
            pass  # a new file can be made there, as each master's copy is
    except OSError as err:
        raise InputError([InputProblem(folder, f"the library cannot be written "
                                               f"({err.strerror or err}): --add-to-library "
                                               f"needs a library folder you can write")]) from err


def library_name(header, name: str) -> str:
    """The file name a product ``name`` takes in a library: its DATE-OBS and instrument first,
    so that masters of many nights and cameras sit side by side.

    Examples
    --------
    >>> library_name({"DATE-OBS": "2021-02-14T11:02:00", "INSTRUME": "demo cam"}, "bias.fits")
    '20210214T110200_demo_cam_bias.fits'
    """
    taken = _parse_time(header.get("DATE-OBS"))
    stamp = taken.strftime("%Y%m%dT%H%M%S") if taken else "undated"
    camera = re.sub(r"[^A-Za-z0-9.+-]+", "_", _text(header.get("INSTRUME")) or "camera")
    return f"{stamp}_{camera}_{name}"


def add_to_library(folder, products) -> list[Path]:
    """Copy master products into the library in ``folder`` (made if missing) and index them.

    Each copy is written to a temporary file in the library and renamed into place; the
    index is rewritten the same way under an exclusive lock, so that adds made at once
    (threads, processes) keep every entry. A product added again replaces its copy.

    Returns
    -------
    list of pathlib.Path
        The library files written.
    """
    from astropy.io import fits

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    added = {}
    for product in map(Path, products):
        try:
            header = fits.getheader(product)
            entry = LibraryEntry.from_header(library_name(header, product.name), header)
        except (OSError, ValueError) as err:
            raise InputError([InputProblem(product, f"cannot be added to the library: {err}")]) \
                from err
        if entry is None:
            raise InputError([InputProblem(product, "not a ccdred master: not added to the library")])
        added[entry.file] = (product, entry)
    with _locked(folder):  # the copies too: the index lists every file the folder holds
        index = _current_index(folder) or _rebuild(folder, write=False)
        for product, entry in added.values():
            _copy_atomically(product, folder / entry.file)
        masters = {e["file"]: e for e in index["masters"]}
        masters.update({name: entry.as_json() for name, (_, entry) in added.items()})
        _write_index(folder, list(masters.values()), _fits_files(folder))
    for name in added:
        logger.info("added %s to the library %s", name, folder)
    return [folder / name for name in added]


def _copy_atomically(source: Path, target: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.",
                                     suffix=fitsio.PARTIAL_SUFFIX, delete=False) as handle:
        temporary = handle.name
        with open(source, "rb") as data:
            shutil.copyfileobj(data, handle)
        handle.flush()
        os.fsync(handle.fileno())  # on disk before it is named: a crash leaves no torn master
    try:
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive lock on the library's index (released when the block ends)."""
    with open(folder / _LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fits_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.fits") if not p.name.startswith("."))


def _read_index(folder: Path) -> dict | None:
    try:
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and index.get("format") == _FORMAT else None


def _current_index(folder: Path) -> dict | None:
    """The index, if it lists exactly the folder's files; else None."""
    index = _read_index(folder)
    return index if index is not None and index["listed"] == _fits_files(folder) else None


def _rebuild(folder: Path, write: bool = True) -> dict:
    """The index made anew from the headers of the folder's files (written if ``write``)."""
    from astropy.io import fits

    masters = []
    for name in _fits_files(folder):
        try:
            entry = LibraryEntry.from_header(name, fits.getheader(folder / name))
        except (OSError, ValueError):
            entry = None
        if entry is not None:
            masters.append(entry.as_json())
    logger.info("indexed the library %s: %d masters", folder, len(masters))
    return (_write_index(folder, masters, _fits_files(folder)) if write
            else {"format": _FORMAT, "masters": masters, "listed": _fits_files(folder)})


def _write_index(folder: Path, masters: list, listed: list) -> dict:
    """Write the index atomically (a temporary file, then a rename); the caller holds the lock."""
    index = {"format": _FORMAT, "masters": sorted(masters, key=lambda e: e["file"]),
             "listed": listed}
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{INDEX}.", suffix=".part",
                                     delete=False, encoding="utf-8") as handle:
        json.dump(index, handle, indent=1)
    os.replace(handle.name, folder / INDEX)
    return index
