"""FITS image sections, overscan subtraction and trim: the preprocessing of every frame.

A :class:`Section` is a FITS ``[x1:x2,y1:y2]`` section; :class:`Overscan`
subtracts the bias level read from an overscan strip, :class:`Trim` keeps the
exposed pixels, and :class:`Preprocess` applies both, first and identically to
every frame type. Each is a small frozen object holding its validated options.
A multi-amplifier frame is a :class:`Mosaic`: each :class:`Amplifier`'s image
preprocessed on its own, then placed on the detector by its ``DETSEC`` (a
:class:`Placement`, which may be flipped) with :func:`tile`; :func:`untile` cuts a
detector image back into the amplifiers' images, as they were read out.

Arrays in, new arrays (or views) out: inputs are never changed, and nothing here
touches files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Amplifier", "Mosaic", "Overscan", "Placement", "Preprocess", "Section", "Trim",
           "layout_problems", "tile", "untile"]

_SECTION = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")


@dataclass(frozen=True)
class Section:
    """A FITS image section, ``[x1:x2,y1:y2]``: 1-based, inclusive, column first.

    Examples
    --------
    >>> s = Section.parse("[1:100, 11:20]")
    >>> s.slices
    (slice(10, 20, None), slice(0, 100, None))
    >>> str(s)
    '[1:100,11:20]'
    """

    x1: int
    x2: int
    y1: int
    y2: int

    @classmethod
    def parse(cls, text: str) -> Section:
        """The section a string describes; ValueError naming it when it does not parse."""
        match = _SECTION.match(str(text).strip())
        if not match:
            msg = f"{text!r} is not a FITS section [x1:x2,y1:y2]"
            raise ValueError(msg)
        x1, x2, y1, y2 = map(int, match.groups())
        if min(x1, x2, y1, y2) < 1 or x1 > x2 or y1 > y2:
            msg = f"{text!r} is not a FITS section: 1-based and x1 <= x2, y1 <= y2 are needed"
            raise ValueError(msg)
        return cls(x1, x2, y1, y2)

    def check(self, shape) -> None:
        """ValueError unless the section lies inside an image of ``shape`` (rows, columns)."""
        if self.x2 > shape[1] or self.y2 > shape[0]:
            msg = f"{self} does not lie inside the {shape[1]}x{shape[0]} image"
            raise ValueError(msg)

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, columns) slices into a numpy image."""
        return slice(self.y1 - 1, self.y2), slice(self.x1 - 1, self.x2)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the section."""
        return self.y2 - self.y1 + 1, self.x2 - self.x1 + 1

    def __str__(self) -> str:
        return f"[{self.x1}:{self.x2},{self.y1}:{self.y2}]"


OVERSCAN_FUNCTIONS = ("median", "mean")


@dataclass(frozen=True)
class Overscan:
    """Subtract the bias level read from an overscan strip, per row or per column.

    The strip's long side gives the readout direction: a strip of columns
    (taller than wide) is reduced to one value per row, a strip of rows to
    one value per column, like astropy ccdproc's ``subtract_overscan``.

    Parameters
    ----------
    section : Section
        The overscan strip.
    function : str
        ``'median'``, ``'mean'`` (per row or column of the strip), or
        ``'legendre:N'``: the means, fitted by a Legendre polynomial of
        degree N along the readout direction.
    """

    section: Section
    function: str = "median"

    def __post_init__(self):
        name, _, degree = self.function.partition(":")
        valid = (self.function in OVERSCAN_FUNCTIONS
                 or (name == "legendre" and degree.isdigit() and int(degree) <= 20))
        if not valid:
            msg = (f"overscan function must be median, mean or legendre:N (N <= 20), "
                   f"got {self.function!r}")
            raise ValueError(msg)

    @property
    def along_rows(self) -> bool:
        """True for a strip of columns: one overscan value per row."""
        rows, cols = self.section.shape
        return rows >= cols

    def level(self, raw) -> np.ndarray:
        """The bias level to subtract, broadcastable to ``raw`` (float64)."""
        strip = np.asarray(raw[self.section.slices], dtype=np.float64)
        axis = 1 if self.along_rows else 0
        name, _, degree = self.function.partition(":")
        if name == "median":
            values = np.median(strip, axis=axis)
        else:
            values = np.mean(strip, axis=axis)
        if name == "legendre":
            position = np.arange(values.size, dtype=np.float64)
            values = np.polynomial.Legendre.fit(position, values, int(degree))(position)
        return values[:, None] if self.along_rows else values[None, :]


@dataclass(frozen=True)
class Trim:
    """Keep only a section of the image (the exposed pixels)."""

    section: Section


@dataclass(frozen=True)
class Preprocess:
    """Overscan subtraction then trim: applied first, identically to every frame type.

    Examples
    --------
    >>> raw = np.arange(12.0).reshape(3, 4)
    >>> Preprocess(trim=Trim(Section.parse("[2:3,1:2]")))(raw).tolist()
    [[1.0, 2.0], [5.0, 6.0]]
    """

    overscan: Overscan | None = None
    trim: Trim | None = None

    def __bool__(self) -> bool:
        return self.overscan is not None or self.trim is not None

    def __call__(self, raw, out=None) -> np.ndarray:
        """The preprocessed image: float64 after an overscan, else a view of ``raw``.

        With ``out``, the result is stored there (computed in float64, then cast
        to ``out``'s type), which spares a temporary image.
        """
        image = np.asarray(raw)
        rows, cols = (slice(None), slice(None)) if self.trim is None else self.trim.section.slices
        if self.overscan is None:
            if out is None:
                return image[rows, cols]
            np.copyto(out, image[rows, cols], casting="unsafe")
            return out
        level = self.overscan.level(image)
        level = level[rows] if self.overscan.along_rows else level[:, cols]
        return np.subtract(image[rows, cols], level, out=out, dtype=np.float64, casting="unsafe")

    def samples(self, raw) -> np.ndarray:
        """The raw values (no overscan subtracted) of the pixels the preprocessed image keeps."""
        rows, cols = (slice(None), slice(None)) if self.trim is None else self.trim.section.slices
        return np.asarray(raw)[rows, cols]

    def shape(self, raw_shape) -> tuple[int, int]:
        """Shape of a preprocessed image of a raw ``raw_shape``."""
        return tuple(raw_shape) if self.trim is None else self.trim.section.shape

    def describe(self) -> dict:
        """The overscan and trim used, for product headers."""
        return {"overscan": "none" if self.overscan is None else str(self.overscan.section),
                "overscan_function": None if self.overscan is None else self.overscan.function,
                "trim": "none" if self.trim is None else str(self.trim.section)}


@dataclass(frozen=True)
class Placement:
    """Where an amplifier's image goes on the detector: its ``DETSEC``, perhaps flipped.

    A ``DETSEC`` whose range runs backwards (``[2048:1025,1:4096]``) says the
    amplifier's first column lands on the detector's column 2048: its image is
    flipped left to right before it is placed (rows likewise).

    Examples
    --------
    >>> p = Placement.parse("[4:1,1:2]")
    >>> p.section, p.flip_x, p.flip_y
    (Section(x1=1, x2=4, y1=1, y2=2), True, False)
    >>> str(p)
    '[4:1,1:2]'
    """

    section: Section
    flip_x: bool = False
    flip_y: bool = False

    @classmethod
    def parse(cls, text: str) -> Placement:
        """The placement a ``DETSEC`` describes; ValueError naming it when it does not parse."""
        match = _SECTION.match(str(text).strip())
        if not match or min(map(int, match.groups())) < 1:
            msg = f"{text!r} is not a FITS section [x1:x2,y1:y2] (1-based)"
            raise ValueError(msg)
        x1, x2, y1, y2 = map(int, match.groups())
        return cls(Section(min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)), x1 > x2, y1 > y2)

    def oriented(self, image) -> np.ndarray:
        """``image`` turned the detector's way (a view)."""
        return np.asarray(image)[::-1 if self.flip_y else 1, ::-1 if self.flip_x else 1]

    def __str__(self) -> str:
        s = self.section
        x = (s.x2, s.x1) if self.flip_x else (s.x1, s.x2)
        y = (s.y2, s.y1) if self.flip_y else (s.y1, s.y2)
        return f"[{x[0]}:{x[1]},{y[0]}:{y[1]}]"


def _bounds(placements) -> Section:
    """The smallest section holding every placement: the tiled image's extent."""
    sections = [p.section for p in placements]
    return Section(min(s.x1 for s in sections), max(s.x2 for s in sections),
                   min(s.y1 for s in sections), max(s.y2 for s in sections))


def tile(images, placements, out=None) -> np.ndarray:
    """Place amplifier images into one detector image, each where its placement says.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Each amplifier's (preprocessed) image, as read out.
    placements : sequence of Placement
        Each image's ``DETSEC``; together they must cover their extent once
        (see :func:`layout_problems`).
    out : numpy.ndarray, optional
        Store the tiled image here (values cast to its type).

    Returns
    -------
    numpy.ndarray
        The image of the smallest section holding every placement, in the
        images' common type (or ``out``'s).

    Raises
    ------
    ValueError
        When an image's shape differs from its placement's.

    Examples
    --------
    >>> left, right = np.array([[1, 2]]), np.array([[3, 4]])
    >>> tile([left, right], [Placement.parse("[1:2,1:1]"), Placement.parse("[4:3,1:1]")])
    array([[1, 2, 4, 3]])
    """
    bounds = _bounds(placements)
    if out is None:
        out = np.empty(bounds.shape, np.result_type(*images))
    for image, placement in zip(images, placements, strict=True):
        if np.shape(image) != placement.section.shape:
            msg = (f"an image of {np.shape(image)[1]}x{np.shape(image)[0]} pixels cannot be "
                   f"placed at {placement} ({_size(placement.section)})")
            raise ValueError(msg)
        np.copyto(out[_within(placement.section, bounds)], placement.oriented(image),
                  casting="unsafe")
    return out


def untile(image, placements) -> list[np.ndarray]:
    """Cut a detector image into the amplifiers' images: the inverse of :func:`tile`.

    Parameters
    ----------
    image : numpy.ndarray
        The detector image, as :func:`tile` made it from images placed by ``placements``.
    placements : sequence of Placement
        Each amplifier's ``DETSEC``.

    Returns
    -------
    list of numpy.ndarray
        Each amplifier's image (a view of ``image``), in its readout orientation: the
        flips of its placement undone, so that ``tile(untile(image, p), p)`` equals
        ``image``.

    Raises
    ------
    ValueError
        When ``image`` is not the shape of the placements' extent.

    Examples
    --------
    >>> placements = [Placement.parse("[1:2,1:1]"), Placement.parse("[4:3,1:1]")]
    >>> [part.tolist() for part in untile(np.array([[1, 2, 4, 3]]), placements)]
    [[[1, 2]], [[3, 4]]]
    """
    image = np.asarray(image)
    bounds = _bounds(placements)
    if image.shape != bounds.shape:
        msg = (f"an image of {image.shape[1]}x{image.shape[0]} pixels is not the "
               f"{_size(bounds)} of the DETSECs' extent {bounds}")
        raise ValueError(msg)
    return [placement.oriented(image[_within(placement.section, bounds)])
            for placement in placements]


def _within(section: Section, bounds: Section) -> tuple[slice, slice]:
    """(rows, columns) slices of ``section`` in the image of ``bounds``."""
    return (slice(section.y1 - bounds.y1, section.y2 - bounds.y1 + 1),
            slice(section.x1 - bounds.x1, section.x2 - bounds.x1 + 1))


def _size(section: Section) -> str:
    return f"{section.shape[1]}x{section.shape[0]}"


def layout_problems(placements, names) -> list[tuple[str, str]]:
    """What keeps placements from tiling one image: (name, problem) pairs.

    Each pair of overlapping placements is named once (by the later of the
    two); holes (pixels of the extent that no placement covers) are counted
    and named by the first of ``names``.

    Parameters
    ----------
    placements : sequence of Placement
    names : sequence of str
        One per placement, to name it by (e.g. ``'2 (AMP2)'``).

    Returns
    -------
    list of (str, str)
        Empty when the placements tile their extent exactly once.

    Examples
    --------
    >>> layout_problems([Placement.parse("[1:2,1:1]"), Placement.parse("[4:4,1:1]")], "ab")
    [('a', 'the DETSECs [1:2,1:1], [4:4,1:1] leave 1 of the 4 pixels of [1:4,1:1] uncovered')]
    """
    problems = []
    for later, (placement, name) in enumerate(zip(placements, names, strict=True)):
        for other, other_name in zip(placements[:later], names, strict=False):
            if _overlap(placement.section, other.section):
                problems.append((name, f"DETSEC {placement} overlaps {other_name}'s {other}"))
    if not problems:
        bounds = _bounds(placements)
        covered = sum(p.section.shape[0] * p.section.shape[1] for p in placements)
        total = bounds.shape[0] * bounds.shape[1]
        if covered < total:
            listed = ", ".join(map(str, placements))
            problems.append((names[0], f"the DETSECs {listed} leave {total - covered} of the "
                                       f"{total} pixels of {bounds} uncovered"))
    return problems


def _overlap(a: Section, b: Section) -> bool:
    return a.x1 <= b.x2 and b.x1 <= a.x2 and a.y1 <= b.y2 and b.y1 <= a.y2


@dataclass(frozen=True)
class Amplifier:
    """One amplifier's (or CCD's) image extension of a multi-amplifier frame.

    Attributes
    ----------
    hdu : int
        Index of its image extension.
    name : str
        How messages and headers name it (its EXTNAME, else its index).
    preprocess : Preprocess
        Its own overscan (its BIASSEC) and trim (its DATASEC or TRIMSEC).
    placement : Placement
        Its DETSEC.
    extname : str or None
        Its EXTNAME (None when it has none): the name of its extension in products.
    """

    hdu: int
    name: str
    preprocess: Preprocess
    placement: Placement
    extname: str | None = None


@dataclass(frozen=True)
class Mosaic:
    """A multi-amplifier frame read as one image: each amplifier preprocessed, then tiled.

    It stands where a :class:`Preprocess` does, taking the list of the
    amplifiers' raw images (in the order of :attr:`amplifiers`) for one.

    Examples
    --------
    >>> amp = lambda hdu, detsec: Amplifier(hdu, str(hdu), Preprocess(trim=Trim(
    ...     Section.parse("[1:2,1:1]"))), Placement.parse(detsec))
    >>> mosaic = Mosaic((amp(1, "[1:2,1:1]"), amp(2, "[4:3,1:1]")))
    >>> mosaic([np.array([[1, 2, 0]]), np.array([[3, 4, 0]])]).tolist()
    [[1, 2, 4, 3]]
    """

    amplifiers: tuple[Amplifier, ...]

    def __call__(self, raws, out=None) -> np.ndarray:
        """The tiled image of the amplifiers' preprocessed images (stored into ``out`` if given)."""
        images = [amp.preprocess(raw) for amp, raw in zip(self.amplifiers, raws, strict=True)]
        return tile(images, self.placements, out=out)

    def samples(self, raws) -> np.ndarray:
        """The raw values (no overscan subtracted) of the tiled image's pixels."""
        images = [amp.preprocess.samples(raw)
                  for amp, raw in zip(self.amplifiers, raws, strict=True)]
        return tile(images, self.placements)

    @property
    def placements(self) -> list[Placement]:
        """The amplifiers' DETSECs, in order."""
        return [amp.placement for amp in self.amplifiers]

    def split(self, image) -> list[np.ndarray]:
        """A tiled image (a product's) cut back into the amplifiers' images, each as it was
        read out (see :func:`untile`)."""
        return untile(image, self.placements)

    @property
    def overscan(self) -> Overscan | None:
        """The first amplifier's overscan: each has its own, or none has (None)."""
        return self.amplifiers[0].preprocess.overscan

    def shape(self, raw_shape=None) -> tuple[int, int]:
        """Shape of the tiled image (``raw_shape``, that of a plain frame, is not needed)."""
        return _bounds(self.placements).shape

    def describe(self) -> dict:
        """The tiling, overscan and trim used, for product headers."""
        first = self.amplifiers[0].preprocess.describe()
        return {"overscan": "per amplifier (BIASSEC)" if self.overscan else "none",
                "overscan_function": first["overscan_function"],
                "trim": "per amplifier",
                "tile": f"{len(self.amplifiers)} amplifiers by DETSEC"}

    def history(self) -> list[str]:
        """HISTORY lines saying how the image was tiled: each extension and its sections."""
        lines = [f"tiled from {len(self.amplifiers)} image extensions, placed by DETSEC"]
        for amp in self.amplifiers:
            done = amp.preprocess.describe()
            lines += [f"extension {amp.name} placed at DETSEC {amp.placement}",
                      f"  its trim {done['trim']}, overscan {done['overscan']}"]
        return lines
