"""Which flats a master flat may use: limits on their medians, and flats that look wrong.

:class:`FlatLimits` holds the validated limits (the course script's upper limit,
and a lower one) and says, for each flat, whether it is used and why not;
:func:`suspect_levels` marks used flats far from their filter's level, which
changes nothing in the combination but tells the user which flat to look at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError, InputProblem

__all__ = ["SUSPECT_FACTOR", "FlatLimits", "suspect_levels", "suspect_reason"]


@dataclass(frozen=True)
class FlatLimits:
    """Which flats a master flat may use, judged by their (dark-subtracted) medians.

    Parameters
    ----------
    upper : float
        Reject flats whose median is above this (saturation, non-linearity).
    lower : float or None
        Reject flats whose median is below this (under-exposed); off when None.

    Examples
    --------
    >>> FlatLimits(upper=10).accepts([5.0, 50.0, float("nan")]).tolist()
    [True, False, False]
    >>> FlatLimits(upper=10).verdict(50.0)
    'rejected: above upper limit 10'
    """

    upper: float = 38000.0
    lower: float | None = None

    def __post_init__(self):
        for name in ("upper", "lower"):
            value = getattr(self, name)
            if value is None and name == "lower":
                continue
            if not isinstance(value, int | float | np.number) or math.isnan(value):
                msg = f"{name} limit must be a number, got {value!r}"
                raise ValueError(msg)
            object.__setattr__(self, name, float(value))

    def accepts(self, medians) -> np.ndarray:
        """Bool per flat: its median lies within the limits (a NaN median never does)."""
        medians = np.asarray(medians, dtype=np.float64)
        accepted = medians <= self.upper
        if self.lower is not None:
            accepted &= medians >= self.lower
        return accepted

    def verdict(self, median: float) -> str:
        """'used', or why a flat of this median is rejected."""
        if not np.isfinite(median):
            return "rejected: median is not a number"
        if median > self.upper:
            return f"rejected: above upper limit {self.upper:g}"
        if self.lower is not None and median < self.lower:
            return f"rejected: below lower limit {self.lower:g}"
        return "used"

    def describe(self) -> str:
        """The limits in words, for messages."""
        lower = "off" if self.lower is None else f"{self.lower:g}"
        return f"upper {self.upper:g}, lower {lower}"

    def statuses(self, medians) -> list[str]:
        """Each flat's :meth:`verdict`, as :meth:`select` decides (a lone flat is used),
        with used flats far from their filter's level marked suspect."""
        medians = np.asarray(medians, dtype=np.float64)
        if _lone_usable(medians):
            return ["used (the only flat; outside the limits)"
                    if self.verdict(medians[0]) != "used" else "used"]
        statuses = [self.verdict(m) for m in medians]
        used = np.array([status == "used" for status in statuses])
        for i in np.flatnonzero(suspect_levels(medians, used)):
            statuses[i] = f"used, suspect: {suspect_reason(medians[i], medians[used])}"
        return statuses

    def select(self, medians, paths, filter_name) -> np.ndarray:
        """The accepted flats; InputError naming every flat and its median when none is.

        The limits choose among flats: a filter's only flat (with a finite
        median) is used even outside them, since there is no other to choose.

        Parameters
        ----------
        medians : array_like
            Median of each flat.
        paths : sequence of path-like
            The flats' files (or names), for the message.
        filter_name : str
            Their filter, for the message.
        """
        if self.lower is not None and self.lower > self.upper:  # the flats' problem alone
            msg = (f"lower limit {self.lower:g} is above the upper limit {self.upper:g}: "
                   f"no flat of filter {filter_name!r} can be within them")
            raise InputError([InputProblem(None, msg)])
        accepted = self.accepts(medians) | _lone_usable(medians)
        if not accepted.any():
            details = ", ".join(f"{_file_name(p)} {m:.0f}" for p, m in zip(paths, medians, strict=True))
            msg = (f"too few flats of filter {filter_name!r} within the limits "
                   f"({self.describe()}): {details}")
            raise InputError([InputProblem(paths[0] if _is_path(paths[0]) else None, msg)])
        dark = [InputProblem(p if _is_path(p) else None,
                             f"flat of filter {filter_name!r} has median {m:.1f} ADU less its "
                             "dark term (not positive), so it cannot be scaled or weighted: "
                             "is it a flat, and are the bias and darks right?")
                for p, m, used in zip(paths, medians, accepted, strict=True) if used and m <= 0]
        if dark:
            raise InputError(dark)
        return accepted


#: A used flat whose level differs from its filter's median level by more than this
#: factor is suspect (a robust rule: the median of the group is not moved by one outlier).
SUSPECT_FACTOR = 10.0


def suspect_levels(medians, used) -> np.ndarray:
    """Bool per flat: used, and more than :data:`SUSPECT_FACTOR` from the used flats' median.

    Flagging changes nothing in the combination (the course's products stay as
    they are); it tells the user which flat to look at.
    """
    medians, used = np.asarray(medians, dtype=np.float64), np.asarray(used, dtype=bool)
    if used.sum() < 3:
        return np.zeros(medians.shape, dtype=bool)
    level = np.median(medians[used])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(np.log(medians / level))
    return used & (ratio > np.log(SUSPECT_FACTOR))


def suspect_reason(median, used_medians) -> str:
    """Why a flat is suspect, in words."""
    level = float(np.median(used_medians))
    factor = level / median if median < level else median / level
    return (f"median {median:.0f}, {factor:.0f}x {'below' if median < level else 'above'} the "
            f"filter's {level:.0f}")


def _lone_usable(medians) -> bool:
    medians = np.asarray(medians, dtype=np.float64)
    return medians.size == 1 and bool(np.isfinite(medians[0]))


def _file_name(path) -> str:
    return getattr(path, "name", str(path))


def _is_path(value) -> bool:
    return hasattr(value, "name")
