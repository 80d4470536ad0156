"""FITS image sections, overscan subtraction and trim: the preprocessing of every frame.

A :class:`Section` is a FITS ``[x1:x2,y1:y2]`` section; :class:`Overscan`
subtracts the bias level read from an overscan strip, :class:`Trim` keeps the
exposed pixels, and :class:`Preprocess` applies both, first and identically to
every frame type. Each is a small frozen object holding its validated options.

Arrays in, new arrays (or views) out: inputs are never changed, and nothing here
touches files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Overscan", "Preprocess", "Section", "Trim"]

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

    def shape(self, raw_shape) -> tuple[int, int]:
        """Shape of a preprocessed image of a raw ``raw_shape``."""
        return tuple(raw_shape) if self.trim is None else self.trim.section.shape

    def describe(self) -> dict:
        """The overscan and trim used, for product headers."""
        return {"overscan": "none" if self.overscan is None else str(self.overscan.section),
                "overscan_function": None if self.overscan is None else self.overscan.function,
                "trim": "none" if self.trim is None else str(self.trim.section)}
