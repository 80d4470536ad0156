"""The exception and warning classes of ccdred, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BadPixelWarning", "CalibrationWarning", "CcdredWarning", "InputError", "InputProblem",
           "NoiseWarning", "RejectedFlatWarning", "SingleFlatWarning", "SuspectFlatWarning"]


@dataclass(frozen=True)
class InputProblem:
    """One thing wrong with the input: which file (or None for the night) and what."""

    path: Path | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path is not None else self.message


class InputError(ValueError):
    """The input cannot be reduced; carries every problem found, each naming its file.

    Parameters
    ----------
    problems : list of InputProblem
        All the problems found, so that a user can fix them in one go.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self):
        return (type(self), (self.problems,))


class CcdredWarning(UserWarning):
    """Base class of the warnings ccdred gives its users."""


class RejectedFlatWarning(CcdredWarning):
    """A flat frame was left out of its master because of its median level."""


class SuspectFlatWarning(CcdredWarning):
    """A flat within the limits whose level is far from its filter's: worth a look."""


class SingleFlatWarning(CcdredWarning):
    """Only one flat of a filter was usable: it is normalised without clipping."""


class CalibrationWarning(CcdredWarning):
    """A calibration choice the user should know of (a header section not used,
    a frame far from its calibration's temperature)."""


class BadPixelWarning(CcdredWarning):
    """Pixels of a master had no usable value and were given a neutral one."""


class NoiseWarning(CcdredWarning):
    """A gain or read noise measured from the night far from the header's value."""
