"""Which header keywords, and which of their values, mean what.

The course script reads NAXIS, NAXIS1, NAXIS2, EXPTIME, FILTER and IMAGETYP
and recognises exactly one value per frame type. :class:`Keywords` keeps every
one of those names configurable, tries the usual alternatives of the exposure
time, filter and frame-type keywords when the configured one is missing, and
lets each frame type carry a list of aliases, matched case-insensitively after
trimming, so that the conventions of common cameras and observatories work out
of the box. The course script's names and values come first, so that its
nights are read as it reads them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, fields

__all__ = ["FRAME_TYPES", "Keywords", "is_placeholder"]

#: The frame types ccdred knows, in the order it processes them.
FRAME_TYPES = ("bias", "dark", "flat", "object")

#: Header values that stand for "not known" (``BIASSEC = 'UNKNOWN'``), compared casefolded.
PLACEHOLDERS = frozenset({"", "unknown", "n/a", "na", "none", "null", "undefined", "-", "?"})


@dataclass(frozen=True)
class Keywords:
    """Header keyword names and the IMAGETYP values of each frame type.

    Parameters
    ----------
    naxis, naxis1, naxis2 : str
        Keywords for the number of axes and the image width and height.
    exptime : str
        Exposure time keyword (seconds).
    exptime_fallbacks : tuple of str
        Keywords tried in turn when ``exptime`` is missing.
    filter : str
        Filter name keyword.
    filter_fallbacks : tuple of str
        Keywords tried in turn when ``filter`` is missing or blank.
    imagetyp : str
        Frame type keyword (the course script's ``--keyword-datatype``).
    imagetyp_fallbacks : tuple of str
        Keywords tried in turn when ``imagetyp`` is missing or blank: OBSTYPE
        (LCO, Gemini, ESO-style headers), FRAMETYP.
    bias, dark, flat, object : tuple of str
        Values of the frame-type keyword meaning each frame type; the first is
        the course script's default.
    frame_types : tuple of (str, str)
        ``(glob, type)`` pairs that classify files by name whatever their
        header says (the first matching glob wins); type is one of the frame
        types or ``'ignore'`` (the file is left out).

    Examples
    --------
    >>> Keywords().frame_type(" light frame ")
    'object'
    >>> Keywords(dark=("DK",)).frame_type("Dark") is None
    True
    >>> Keywords().imagetyp_keywords()
    ('IMAGETYP', 'OBSTYPE', 'FRAMETYP')
    """

    naxis: str = "NAXIS"
    naxis1: str = "NAXIS1"
    naxis2: str = "NAXIS2"
    exptime: str = "EXPTIME"
    exptime_fallbacks: tuple[str, ...] = ("EXPOSURE",)
    filter: str = "FILTER"
    filter_fallbacks: tuple[str, ...] = ("FILTER", "FILTNAME", "INSFLNAM", "FILTER1", "FILT1")
    imagetyp: str = "IMAGETYP"
    imagetyp_fallbacks: tuple[str, ...] = ("IMAGETYP", "OBSTYPE", "FRAMETYP")
    bias: tuple[str, ...] = ("BIAS", "Bias Frame", "ZERO", "Zero Frame", "OFFSET")
    dark: tuple[str, ...] = ("DARK", "Dark Frame", "Dark Current")
    flat: tuple[str, ...] = ("FLAT", "Flat Field", "Flat Frame", "FLATFIELD", "SKYFLAT",
                             "DOMEFLAT", "TWIFLAT", "LAMPFLAT", "TWILIGHT", "Sky Flat",
                             "Dome Flat", "Twilight Flat", "Lamp Flat")
    object: tuple[str, ...] = ("LIGHT", "Light Frame", "OBJECT", "SCIENCE", "Science Frame",
                               "EXPOSE", "STANDARD")
    frame_types: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        for name in FRAME_TYPES:
            values = getattr(self, name)
            if isinstance(values, str):
                values = (values,)
            values = tuple(str(v) for v in values)
            if not values or not all(_normalise(v) for v in values):
                msg = f"frame type {name!r} needs at least one non-blank value, got {values!r}"
                raise ValueError(msg)
            object.__setattr__(self, name, values)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and not value.strip():
                msg = f"keyword {f.name!r} must not be blank"
                raise ValueError(msg)
        for glob, kind in self.frame_types:
            if kind not in (*FRAME_TYPES, "ignore") or not glob:
                msg = (f"frame type override {glob}={kind}: the type must be one of "
                       f"{', '.join(FRAME_TYPES)} or ignore")
                raise ValueError(msg)
        clashes = _shared_aliases(self)
        if clashes:
            msg = f"IMAGETYP values claimed by more than one frame type: {', '.join(clashes)}"
            raise ValueError(msg)

    def frame_type(self, value) -> str | None:
        """The frame type ('bias', 'dark', 'flat', 'object') of an IMAGETYP value, or None."""
        wanted = _normalise(value)
        for name in FRAME_TYPES:
            if wanted in {_normalise(v) for v in getattr(self, name)}:
                return name
        return None

    def frame_type_of(self, file_name: str, imagetyp) -> str | None:
        """A file's frame type: by its name's override if any, else by its IMAGETYP value.

        Returns None for an unknown or ignored frame.
        """
        kind = self.override(file_name)
        if kind is not None:
            return None if kind == "ignore" else kind
        return None if imagetyp is None else self.frame_type(imagetyp)

    def override(self, file_name: str) -> str | None:
        """The frame type a file-name rule gives a file (a type, or 'ignore'); None if no
        rule matches its name."""
        for glob, kind in self.frame_types:
            if fnmatch.fnmatch(file_name, glob):
                return kind
        return None

    def filter_keywords(self) -> tuple[str, ...]:
        """The filter keywords to try, in order: the configured one first."""
        return _in_turn(self.filter, self.filter_fallbacks)

    def exptime_keywords(self) -> tuple[str, ...]:
        """The exposure-time keywords to try, in order: the configured one first."""
        return _in_turn(self.exptime, self.exptime_fallbacks)

    def imagetyp_keywords(self) -> tuple[str, ...]:
        """The frame-type keywords to try, in order: the configured one first."""
        return _in_turn(self.imagetyp, self.imagetyp_fallbacks)


def is_placeholder(value) -> bool:
    """Whether a header value stands for "not known" ('UNKNOWN', 'N/A', blank, ...).

    Examples
    --------
    >>> is_placeholder(" unknown "), is_placeholder("[1:10,1:20]")
    (True, False)
    """
    return _normalise(value) in PLACEHOLDERS


def _in_turn(keyword: str, fallbacks) -> tuple[str, ...]:
    """``keyword``, then its fallbacks, each once."""
    return tuple(dict.fromkeys((keyword, *fallbacks)))


def _normalise(value) -> str:
    return " ".join(str(value).split()).casefold()


def _shared_aliases(keywords: Keywords) -> list[str]:
    owner: dict[str, str] = {}
    clashes = []
    for name in FRAME_TYPES:
        for value in getattr(keywords, name):
            key = _normalise(value)
            if owner.setdefault(key, name) != name:
                clashes.append(repr(value))
    return clashes
