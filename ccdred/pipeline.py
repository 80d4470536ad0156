"""The reactive pipeline: catalogue -> raw stacks -> masters -> calibrated frame.

:class:`Pipeline` holds one user's state as ``param`` parameters and computes
each stage lazily, when asked. Results live in process-wide, size-bounded
caches keyed by exactly what they depend on, so that:

* a raw frame is read once per process and shared by every session;
* changing ``upper_limit`` re-combines flats (when it changes which are used)
  but not darks;
* changing ``threshold`` recomputes masters but reads no file;
* changing a keyword re-scans the headers.

No Panel here: the dashboard wires widgets to these parameters.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import param

from .calibrate import (MasterFlat, calibrate_frame, darks_for_frames, flat_acceptance,
                        frame_medians, master_dark, master_flat)
from .combine import CombineResult, frame_median
from .errors import InputError, InputProblem
from .frames import Catalogue, Frame, read_stack, scan
from .parameters import ReductionParameters

__all__ = ["MASTERS", "RAW_FRAMES", "MemoCache", "Pipeline", "resolve_under"]

_MB = 1 << 20


class MemoCache:
    """A thread-safe memo of computed values, least recently used out first.

    Parameters
    ----------
    budget_bytes : int
        Most bytes of arrays to hold; the oldest entries go when exceeded.

    Attributes
    ----------
    computed : collections.Counter
        How many times each kind of value was computed (a miss).
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.computed = Counter()
        self._items: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self._lock = threading.Lock()
        self._key_locks: dict = {}

    def get(self, key: tuple, compute):
        """The value for ``key``, computing it (once, even across threads) if missing."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = compute()
            self._store(key, value)
        return value

    def _store(self, key, value) -> None:
        with self._lock:
            self.computed[key[0]] += 1
            self._items[key] = value
            self._sizes[key] = _nbytes(value)
            while sum(self._sizes.values()) > self.budget_bytes and len(self._items) > 1:
                oldest, _ = self._items.popitem(last=False)
                del self._sizes[oldest]
            self._key_locks.pop(key, None)

    @property
    def nbytes(self) -> int:
        """Bytes of arrays held now."""
        with self._lock:
            return sum(self._sizes.values())

    def clear(self) -> None:
        """Forget every value and reset the counters."""
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self.computed.clear()


def _nbytes(value) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple | list):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0


def _budget(variable: str, default_mb: int) -> int:
    return int(os.environ.get(variable, default_mb)) * _MB


#: Raw frames, shared by every session of the process (read-only arrays).
RAW_FRAMES = MemoCache(_budget("CCDRED_RAW_CACHE_MB", 4096))
#: Masters and flat medians, memoised on their parameters.
MASTERS = MemoCache(_budget("CCDRED_MASTER_CACHE_MB", 2048))
#: Threads that prepare the frames of a stack side by side, shared by every session.
_FRAME_POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                 thread_name_prefix="ccdred-frames")


def resolve_under(root, path) -> Path:
    """``path`` (relative to ``root``, or absolute) resolved, if it lies inside ``root``.

    Symbolic links are followed before the check, so a link pointing out of
    the root is refused too.

    Raises
    ------
    InputError
        When the resolved path is outside ``root``.
    """
    root = Path(root).resolve()
    resolved = (root / Path(path)).resolve()
    if resolved != root and root not in resolved.parents:
        raise InputError([InputProblem(Path(path), f"outside the data root {root}; refused")])
    return resolved


def _file_key(frame: Frame) -> tuple:
    stat = frame.path.stat()
    return (str(frame.path), frame.hdu, stat.st_mtime_ns, stat.st_size)


def read_raw(frame: Frame) -> np.ndarray:
    """The raw image of a frame from the shared cache (read-only)."""

    def load():
        data = frame.read()
        data.flags.writeable = False
        return data

    return RAW_FRAMES.get(("read", *_file_key(frame)), load)


def raw_median(frame: Frame) -> float:
    """Median of a raw frame, computed once per process."""
    return MASTERS.get(("median", *_file_key(frame)), lambda: frame_median(read_raw(frame)))


class Pipeline(ReductionParameters):
    """One user's reduction state, with lazily computed, cached stages.

    Parameters are those of :class:`~ccdred.parameters.ReductionParameters`
    plus the night folder and what is selected for viewing.
    """

    night = param.String(default=None, allow_None=True, doc="folder of raw frames")
    exptime = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                             doc="exposure time of the master dark to show (s)")
    filter = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                            doc="filter of the master flat to show")
    object_frame = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                                  doc="object frame to calibrate and show")
    catalogue = param.ClassSelector(class_=Catalogue, default=None, allow_None=True,
                                    precedence=-1, doc="the scanned night (output)")

    @param.depends("night", "keyword_naxis", "keyword_naxis1", "keyword_naxis2",
                   "keyword_exptime", "keyword_filter", "keyword_datatype",
                   "keyword_datatype_bias", "keyword_datatype_dark", "keyword_datatype_flat",
                   "keyword_datatype_object", watch=True, on_init=True)
    def _scan(self) -> None:
        if self.night is None:
            return
        MASTERS.computed["scan"] += 1
        catalogue = scan([self.night], self.keywords())
        exptimes = catalogue.exptimes
        filters = catalogue.filters
        objects = [f.path.name for f in catalogue.of_type("object")]
        with param.parameterized.batch_call_watchers(self):
            self.param.exptime.objects = exptimes
            self.param.filter.objects = filters
            self.param.object_frame.objects = objects
            self.exptime = self.exptime if self.exptime in exptimes else next(iter(exptimes), None)
            self.filter = self.filter if self.filter in filters else next(iter(filters), None)
            self.object_frame = (self.object_frame if self.object_frame in objects
                                 else next(iter(objects), None))
            self.catalogue = catalogue

    def _require_catalogue(self) -> Catalogue:
        if self.catalogue is None:
            raise InputError([InputProblem(None, "no night selected")])
        self.catalogue.raise_problems()
        return self.catalogue

    def _dark_key(self, exptime) -> tuple:
        frames = self._require_catalogue().darks(exptime)
        if len(frames) < 2:
            what = "no dark" if not frames else "only one dark"
            raise InputError([InputProblem(frames[0].path if frames else None,
                                           f"{what} for exposure time {exptime:g} s")])
        return ("master_dark", tuple(_file_key(f) for f in frames), self.threshold,
                self.cenfunc, self.maxiters, self.frame_clip)

    def master_dark(self, exptime=None) -> CombineResult:
        """Master dark of an exposure time (the selected one by default)."""
        exptime = self.exptime if exptime is None else exptime
        key = self._dark_key(exptime)
        frames = self.catalogue.darks(exptime)
        return MASTERS.get(key, lambda: master_dark(
            self._raw_stack(frames), frame_clip=self.frame_clip, keep_mask=False,
            **self.clip_options()))

    def _flat_frames(self, filter_name) -> list[Frame]:
        frames = self._require_catalogue().flats(filter_name)
        if len(frames) < 2:
            what = "no flat" if not frames else "only one flat"
            raise InputError([InputProblem(frames[0].path if frames else None,
                                           f"{what} for filter {filter_name!r}")])
        return frames

    def _flat_medians_key(self, frames) -> tuple:
        dark_keys = tuple(self._dark_key(t) for t in sorted({f.exptime for f in frames}))
        return ("flat_medians", tuple(_file_key(f) for f in frames), dark_keys)

    def _raw_stack(self, frames) -> np.ndarray:
        """Raw frames as one stack, read once per process (read-only)."""
        def load():
            stack = read_stack(frames, map_frames=_FRAME_POOL.map)
            stack.flags.writeable = False
            return stack

        return RAW_FRAMES.get(("read", tuple(_file_key(f) for f in frames)), load)

    def _flat_darks(self, frames) -> tuple[np.ndarray, np.ndarray]:
        exptimes = [f.exptime for f in frames]
        return darks_for_frames(exptimes, {t: self.master_dark(t).data for t in set(exptimes)})

    def flat_medians(self, filter_name=None) -> np.ndarray:
        """Medians of the dark-subtracted flats of a filter (the selected one by default)."""
        frames = self._flat_frames(self.filter if filter_name is None else filter_name)
        return self._flat_medians(frames, self._flat_medians_key(frames))

    def _flat_medians(self, frames, key) -> np.ndarray:
        def compute():
            darks, dark_index = self._flat_darks(frames)
            return frame_medians(self._raw_stack(frames), darks, dark_index, _FRAME_POOL.map)

        return MASTERS.get(key, compute)

    def flat_stack(self, filter_name=None) -> tuple[np.ndarray, np.ndarray]:
        """Dark-subtracted flats of a filter (a new float64 stack) and their medians.

        For looking at them: :meth:`master_flat` subtracts the darks as it
        combines the raw flats and makes no such stack.
        """
        frames = self._flat_frames(self.filter if filter_name is None else filter_name)
        darks, dark_index = self._flat_darks(frames)
        return self._raw_stack(frames) - darks[dark_index], self.flat_medians(filter_name)

    def master_flat(self, filter_name=None) -> MasterFlat:
        """Master flat of a filter (the selected one by default)."""
        filter_name = self.filter if filter_name is None else filter_name
        frames = self._flat_frames(filter_name)
        medians_key = self._flat_medians_key(frames)
        medians = self._flat_medians(frames, medians_key)
        # The limits matter only through which flats they accept: a slider move that
        # accepts the same flats finds the master already made.
        accepted = flat_acceptance(medians, upper_limit=self.upper_limit,
                                   lower_limit=self.lower_limit)
        key = ("master_flat", medians_key, self.threshold, self.cenfunc, self.maxiters,
               tuple(accepted.tolist()))

        def compute():
            darks, dark_index = self._flat_darks(frames)
            try:
                return master_flat(self._raw_stack(frames), darks=darks, dark_index=dark_index,
                                   medians=medians, upper_limit=self.upper_limit,
                                   lower_limit=self.lower_limit, keep_mask=False,
                                   **self.clip_options())
            except ValueError as err:
                raise InputError([InputProblem(frames[0].path, f"filter {filter_name!r}: {err}")]) from err

        return MASTERS.get(key, compute)

    def _object(self, name=None) -> Frame:
        name = self.object_frame if name is None else name
        for frame in self._require_catalogue().of_type("object"):
            if frame.path.name == name:
                return frame
        raise InputError([InputProblem(None, f"no object frame named {name!r}")])

    def raw_object(self, name=None) -> np.ndarray:
        """The raw image of an object frame (the selected one by default)."""
        return read_raw(self._object(name))

    def calibrated(self, name=None) -> np.ndarray:
        """An object frame, dark-subtracted and flat-fielded."""
        frame = self._object(name)
        MASTERS.computed["calibrate"] += 1
        return calibrate_frame(read_raw(frame), self.master_dark(frame.exptime).data,
                               self.master_flat(frame.filter).data)

    def frame_levels(self) -> list[dict]:
        """Per-frame medians with their use: flats dark-subtracted, as the limits see them."""
        catalogue = self._require_catalogue()
        rows = []
        for name in catalogue.filters:
            medians = self.flat_medians(name)
            accepted = flat_acceptance(medians, upper_limit=self.upper_limit,
                                       lower_limit=self.lower_limit)
            rows += [_level_row(f, m, "used" if ok else _why_rejected(m, self))
                     for f, m, ok in zip(self._flat_frames(name), medians, accepted, strict=True)]
        for frame in catalogue.frames:
            if frame.frame_type in ("dark", "object"):
                rows.append(_level_row(frame, raw_median(frame), "used"))
        return sorted(rows, key=lambda row: row["file"])


def _level_row(frame: Frame, level: float, status: str) -> dict:
    return {"file": frame.path.name, "type": frame.frame_type, "filter": frame.filter or "",
            "exptime": frame.exptime, "median": level, "status": status}


def _why_rejected(median: float, parameters: ReductionParameters) -> str:
    if median > parameters.upper_limit:
        return f"rejected: above upper limit {parameters.upper_limit:g}"
    return f"rejected: below lower limit {parameters.lower_limit:g}"
