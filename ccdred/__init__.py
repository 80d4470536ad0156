"""ccdred: fast, interactive, reproducible CCD data reduction for optical imaging.

The library is layered: ``fitsio`` (the only FITS I/O), ``sections`` (overscan
and trim), ``frames`` (catalogue), ``combine`` (stack kernels), ``limits`` (which
flats are used), ``combiners`` (one protocol for every master), ``calibrate`` (in
one call, and calibrating a frame), ``plan`` (what a night makes from what), ``steps``
(making a planned master), ``night`` and ``cluster`` (runners), ``pipeline``
(reactive, param), ``plots`` (HoloViews) and ``dashboard`` (Panel). Names are
imported on first use, so that ``import ccdred`` stays light and loads neither
HoloViews nor Panel.
"""

import importlib
import logging

from ._version import __version__

#: Public name -> the module that defines it.
_PUBLIC = {
    "CombineResult": "combine", "frame_clip_mask": "combine", "sigma_clip_combine": "combine",
    "RejectionTrace": "combine", "trace_rejection": "combine",
    "ClipOptions": "combine", "FlatLimits": "limits", "FlatCombiner": "combiners",
    "MasterFlat": "combiners", "StackCombiner": "combiners", "DarkCurrentCombiner": "combiners",
    "FrameChoice": "combiners", "Section": "sections",
    "calibrate_frame": "calibrate", "master_bias": "calibrate", "master_dark": "calibrate",
    "master_flat": "calibrate", "subtract_dark": "calibrate",
    "CcdredWarning": "errors", "InputError": "errors", "InputProblem": "errors",
    "RejectedFlatWarning": "errors",
    "Catalogue": "frames", "Frame": "frames", "PreprocessOptions": "frames", "scan": "frames",
    "Keywords": "keywords",
    "NightPlan": "plan", "PlanOptions": "plan", "build_plan": "plan", "plan_night": "plan",
    "StepOptions": "steps", "make_master": "steps", "PixelStack": "steps",
    "ReductionParameters": "parameters",
    "NightResult": "night", "reduce_night": "night",
    "Pipeline": "pipeline",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name):
    if name not in _PUBLIC:
        msg = f"module 'ccdred' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


logging.getLogger(__name__).addHandler(logging.NullHandler())
