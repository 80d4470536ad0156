"""ccdred: fast, interactive, reproducible CCD data reduction for optical imaging.

The library is layered: ``fitsio`` (the only FITS I/O), ``frames`` (catalogue),
``combine`` (stack kernels), ``calibrate`` (master dark/flat, calibration),
``reduce`` (whole night), ``pipeline`` (reactive, param), ``plots``
(HoloViews) and ``dashboard`` (Panel). Importing ``ccdred`` loads neither
HoloViews nor Panel.
"""

import logging

__version__ = "0.1.0"

from .calibrate import MasterFlat, calibrate_frame, master_dark, master_flat, subtract_dark  # noqa: E402
from .combine import CombineResult, frame_clip_mask, sigma_clip_combine  # noqa: E402
from .errors import CcdredWarning, InputError, InputProblem, RejectedFlatWarning  # noqa: E402
from .frames import Catalogue, Frame, scan  # noqa: E402
from .keywords import Keywords  # noqa: E402
from .parameters import ReductionParameters  # noqa: E402
from .pipeline import Pipeline  # noqa: E402
from .reduce import NightPlan, NightResult, plan_night, reduce_night  # noqa: E402

__all__ = [
    "Catalogue", "CcdredWarning", "CombineResult", "Frame", "InputError", "InputProblem",
    "Keywords", "MasterFlat", "NightPlan", "NightResult", "Pipeline", "ReductionParameters",
    "RejectedFlatWarning", "calibrate_frame", "frame_clip_mask", "master_dark", "master_flat",
    "plan_night", "reduce_night", "scan", "sigma_clip_combine", "subtract_dark",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
