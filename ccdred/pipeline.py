"""The interactive runner: a night's plan, made lazily and memoised, as ``param`` state.

:class:`Pipeline` holds one user's parameters and selections. Its plan is
the batch reduction's (:func:`~ccdred.plan.build_plan`), and its masters are
made by the same steps (:mod:`ccdred.steps`), from raw stacks read once per
process. Results live in process-wide, size-bounded caches keyed by what
decides them: a master's key holds its frames' files, its combiner (the
frozen options object) and the keys of the masters it needs, so that

* a raw frame is read once per process and shared by every session;
* changing ``upper_limit`` re-combines flats (when it changes which are used)
  but not darks;
* changing ``threshold`` recomputes masters but reads no file;
* changing a keyword re-scans the headers.

The methods that produce what a view shows (:meth:`shown_dark`,
:meth:`shown_flat`, :meth:`shown_calibrated`, :meth:`frame_levels`) declare
their dependencies with ``param.depends``. No Panel here.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import param

from . import config
from .badpix import hot_pixels, read_bad_pixel_mask
from .cache import MemoCache
from .calibrate import calibrate_frame, calibration_steps
from .combiners import FrameChoice, MasterFlat
from .combine import CombineResult, frame_median
from .cosmics import LACosmic
from .errors import InputError, InputProblem
from .fitsio import storage_dtype
from .frames import Catalogue, Frame, read_stack, scan
from .night import (MasterPlanes, dark_rate, frame_cosmic_rays, frame_planes, frame_saturation,
                    master_planes, night_bad_pixels, night_noise, night_photon_transfer,
                    night_premask, read_samples, term_variance)
from .noise import DetectorNoise, PhotonTransferCurve, header_noise
from .parameters import (CalibrationParameters, ClipParameters, KeywordParameters,
                         MaskParameters, ReductionParameters, names)
from .plan import Master, NightPlan, build_plan
from .steps import (PREMASK, UNKNOWN_NOISE, PixelStack, SampleCounts, StepOptions, as_written,
                    choose, make_master, pixel_stack, sample_counts, stack_statistics,
                    threshold_sweep)

__all__ = ["MASTERS", "RAW_FRAMES", "SWEEP_SAMPLES", "Pipeline", "raw_median", "read_raw", "read_raw_stack"]

_MB = 1 << 20



#: Raw frames, shared by every session of the process (read-only arrays).
RAW_FRAMES = MemoCache(config.raw_cache_mb() * _MB)
#: Masters and flat medians, memoised on what decides them.
MASTERS = MemoCache(config.master_cache_mb() * _MB)
#: Threads that prepare the frames of a stack side by side, shared by every session.
_FRAME_POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                 thread_name_prefix="ccdred-frames")

#: Most samples a threshold sweep combines at once; a larger stack is swept on every n-th row.
SWEEP_SAMPLES = 1 << 24

_SCAN = ("night", *names(KeywordParameters), "overscan", "overscan_function", "trim")
_PLAN = ("plan",)
#: What decides the masters once the plan is made: the combining, and the type the masters
#: are applied in (flats and objects are calibrated with the masters as written)
_COMBINE = (*_PLAN, *names(ClipParameters), "dtype")


def _file_key(frame: Frame) -> tuple:
    stat = frame.path.stat()
    return (str(frame.path), frame.hdu, stat.st_mtime_ns, stat.st_size, frame.preprocess)


#: Where each raw frame's image is held: file key -> (cache key, index in that stack or None).
_HELD: dict = {}


def _held_image(frame: Frame) -> np.ndarray | None:
    """A frame's image if the raw cache holds it (alone or in a stack), else None."""
    place = _HELD.get(_file_key(frame))
    if place is None:
        return None
    value = RAW_FRAMES.peek(place[0])
    return None if value is None else value if place[1] is None else value[place[1]]


def _copy_or_read(frame: Frame, out: np.ndarray) -> None:
    held = _held_image(frame)
    if held is None:
        frame.read(out=out)
    else:
        np.copyto(out, held, casting="unsafe")


def read_raw(frame: Frame) -> np.ndarray:
    """The (preprocessed) image of a frame from the shared cache (read-only).

    A frame already held in a cached stack is not read again.
    """
    held = _held_image(frame)
    if held is not None:
        return held
    key = ("read", *_file_key(frame))

    def load():
        data = frame.read()
        data.flags.writeable = False
        _HELD[_file_key(frame)] = (key, None)
        return data

    return RAW_FRAMES.get(key, load)


def read_raw_stack(frames) -> np.ndarray:
    """Frames as one stack from the shared cache (read-only); frames held already are copied
    from memory, not read again."""
    key = ("read", tuple(_file_key(f) for f in frames))

    def load():
        stack = read_stack(frames, map_frames=_FRAME_POOL.map, read=_copy_or_read)
        stack.flags.writeable = False
        for i, frame in enumerate(frames):
            _HELD[_file_key(frame)] = (key, i)
        return stack

    return RAW_FRAMES.get(key, load)


def _require_frames(master: Master) -> None:
    """InputError for a library master: its frames, and so its samples, are not here."""
    if master.library is not None:
        msg = f"{master.name} is a library master: its frames are not in this night"
        raise InputError([InputProblem(master.library.path, msg)])


def raw_median(frame: Frame) -> float:
    """Median of a (preprocessed) raw frame, computed once per process."""
    return MASTERS.get(("median", *_file_key(frame)), lambda: frame_median(read_raw(frame)))


class Pipeline(ReductionParameters):
    """One user's reduction state, with lazily computed, cached stages.

    Parameters are those of :class:`~ccdred.parameters.ReductionParameters`
    plus the night folder and what is selected for viewing.
    """

    night = param.String(default=None, allow_None=True, doc="folder of raw frames")
    calibration = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                                 doc="bias, dark or dark-current master to show")
    filter = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                            doc="filter of the master flat to show")
    object_frame = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                                  doc="object frame to calibrate and show")
    inspect = param.Selector(default="flat", objects=["flat", "dark"],
                             doc="master whose pixel is inspected: the master flat on show, or "
                                 "the calibration master on show")
    pixel_x = param.Integer(default=None, allow_None=True, bounds=(0, None),
                            doc="column of the inspected pixel; unset: the pixel with the most "
                                "rejected samples")
    pixel_y = param.Integer(default=None, allow_None=True, bounds=(0, None),
                            doc="row of the inspected pixel; unset: as pixel_x")
    pinned = param.ClassSelector(class_=StepOptions, default=None, allow_None=True, precedence=-1,
                                 doc="the combining parameters pinned as 'A' (see pin)")
    catalogue = param.ClassSelector(class_=Catalogue, default=None, allow_None=True,
                                    precedence=-1, doc="the scanned night (output)")
    plan = param.ClassSelector(class_=NightPlan, default=None, allow_None=True, precedence=-1,
                               doc="the night's plan (output)")

    def __init__(self, **params):
        # one scan or plan at a time: a server handles a session's changes in several
        # threads, and a scan of older parameters must not replace a newer one's
        self._deriving = threading.RLock()
        super().__init__(**params)

    def __getstate__(self):
        """Picklable (a notebook may send a Pipeline to Dask): its lock is made anew."""
        state = super().__getstate__()
        state.pop("_deriving", None)
        return state

    def __setstate__(self, state):
        self._deriving = threading.RLock()
        super().__setstate__(state)

    @param.depends(*_SCAN, watch=True, on_init=True)
    def _scan(self) -> None:
        with self._deriving:
            if self.night is None:
                return
            MASTERS.computed["scan"] += 1
            try:
                keywords, preprocessing = self.keywords(), self.preprocessing()
            except ValueError as err:  # e.g. a trim section typed half: every view says so
                self.catalogue = Catalogue((), (InputProblem(None, str(err)),))
                return
            self.catalogue = scan([self.night], keywords, preprocessing)

    @param.depends("catalogue", *names(CalibrationParameters), "library", "library_max_age",
                   "library_choice", watch=True, on_init=True)
    def _plan(self) -> None:
        with self._deriving:
            self._make_plan()

    def _make_plan(self) -> None:
        """The plan of the catalogue, and the choices of what to show that it offers."""
        if self.catalogue is None:
            return
        try:
            plan = build_plan(self.catalogue, self.plan_options())
        except InputError as err:  # e.g. no such library folder: every view says so
            plan = NightPlan(self.catalogue, {}, {}, (), tuple(err.problems))
        calibrations = [m.name for m in plan.masters.values() if m.kind != "flat"]
        filters = list(plan.flats)
        objects = [step.frame.path.name for step in plan.calibrations]
        with param.parameterized.batch_call_watchers(self):
            for name, values in (("calibration", calibrations), ("filter", filters),
                                 ("object_frame", objects)):
                self.param[name].objects = values
                if getattr(self, name) not in values:
                    setattr(self, name, next(iter(values), None))
            self.plan = plan

    # -- the plan's masters, memoised -------------------------------------------------

    def _require_plan(self) -> NightPlan:
        if self.plan is None:
            raise InputError([InputProblem(None, "no night selected")])
        return self.plan

    def _master_of(self, name) -> Master:
        plan = self._require_plan()
        if name not in plan.masters:
            missing = (f"no master {name!r} in this night" if name is not None else
                       "no bias or dark frames in this night, so no calibration master to show")
            problems = plan.problems or (InputProblem(None, missing),)
            raise InputError(problems)
        return plan.masters[name]

    def _key(self, name, options: StepOptions) -> tuple:
        """What decides a master: its kind, files, combiner, the keys of its needs, and the
        frames chosen (a slider move that accepts the same flats finds the master made)."""
        master = self._master_of(name)
        if master.library is not None:
            stat = master.library.path.stat()
            return ("library", str(master.library.path), stat.st_mtime_ns, stat.st_size)
        return (f"master_{master.kind}", self._files(master), master.terms,
                options.combiner(master).combination_key(), self._needs_key(master, options),
                tuple(self._choice(name, options).used.tolist()))

    @staticmethod
    def _files(master: Master) -> tuple:
        return tuple(_file_key(f) for f in master.frames)

    def _needs_key(self, master: Master, options: StepOptions) -> tuple:
        """What decides the images a master is made with: its needs, the type they are
        applied in (see :func:`~ccdred.steps.as_written`), and the bad-pixel mask it
        leaves out."""
        needs = tuple(self._key(need, options) for need in master.needs)
        premask = self._premask_key(master, options)
        needs += (premask,) if premask else ()
        return (self.dtype, *needs) if needs else ()

    def _images(self, master: Master, options: StepOptions) -> dict:
        """The images of the masters ``master`` needs, as the night's products hold them, and
        the bad-pixel mask its combination leaves out (as :data:`~ccdred.steps.PREMASK`)."""
        images = {need: self._written(need, options) for need in master.needs}
        key = self._premask_key(master, options)
        mask = MASTERS.get(key, lambda: self._premask(master, options)) if key else None
        return images if mask is None else images | {PREMASK: mask}

    def _premask_key(self, master: Master, options: StepOptions) -> tuple:
        """What decides the bad-pixel mask a master's combination leaves out (see
        :func:`~ccdred.night.night_premask`): the user's mask file, or the hot pixels of the
        night's darks less its master bias for a master flat; () for none."""
        if master.library is not None or not self.writes_bad_pixels():
            return ()
        if self.bad_pixel_mask is not None:
            return ("premask", self._bad_pixels_key())
        if master.kind != "flat":
            return ()
        return ("premask", "hot", self._frames_key(), self.dtype,
                tuple(self._key(m.name, options) for m in self.plan.of_kind("bias")))

    def _premask(self, master: Master, options: StepOptions) -> np.ndarray | None:
        """The bad-pixel mask a master's combination leaves out, as a night finds it: the
        user's, or the hot pixels of the darks less the master bias (the masters it needs
        are made only then: the user's mask pre-masks the bias itself)."""
        plan = self._require_plan()
        if self.bad_pixel_mask is not None:  # read, no master made
            return night_premask(plan, master, {}, self, self.night_bad_pixels())
        biases = {m.name: self.master(m.name, options) for m in plan.of_kind("bias")}
        return night_premask(plan, master, biases, self)

    def _written(self, name, options: StepOptions) -> np.ndarray:
        """A master's image as its product holds it (see :func:`~ccdred.steps.as_written`),
        converted once: a threshold move makes the flats with it several times."""
        image = self.master(name, options).data
        if image.dtype == np.dtype(self.dtype):
            return image
        key = ("as_written", self.dtype, self._key(name, options))
        return MASTERS.get(key, lambda: as_written(image, self.dtype))

    def _stack(self, master: Master) -> np.ndarray:
        """A master's raw frames as one stack, read once per process (read-only)."""
        _require_frames(master)
        return read_raw_stack(master.frames)

    def _statistics(self, name, options: StepOptions) -> list:
        """A master's per-frame statistics, memoised: a master flat's medians (flats less their
        dark terms), a frame-clipped dark's clipping bounds of each frame."""
        master = self._master_of(name)
        key = ("statistics", master.kind, self._files(master), master.terms,
               options.combiner(master).statistic_key(), self._needs_key(master, options))
        return MASTERS.get(key, lambda: stack_statistics(
            master, options, self._stack(master), self._images(master, options), _FRAME_POOL.map))

    def _choice(self, name, options: StepOptions) -> FrameChoice:
        """The frames that enter a master (see :func:`~ccdred.steps.choose`)."""
        return choose(self._master_of(name), options, self._statistics(name, options))

    def master(self, name, options: StepOptions | None = None) -> CombineResult | MasterFlat:
        """A master of the plan, by product name (e.g. ``'bias.fits'``, ``'flat_V.fits'``).

        ``options`` (:class:`~ccdred.steps.StepOptions`) make it otherwise than the
        current parameters do, e.g. the parameters pinned for an A/B comparison.
        """
        options = self.step_options() if options is None else options
        master, key = self._master_of(name), self._key(name, options)
        if master.library is not None:
            return MASTERS.get(key, lambda: make_master(master, options, {}))
        return MASTERS.get(key, lambda: make_master(
            master, options, self._images(master, options), map_frames=_FRAME_POOL.map,
            stack=self._stack(master), statistics=self._statistics(name, options)))

    def pixel_stack(self, master, x: int, y: int) -> PixelStack:
        """One pixel's samples across a master's frames, and why each was used or rejected.

        Parameters
        ----------
        master : str
            ``'dark'`` (the selected calibration master), ``'flat'`` (the
            selected filter's master flat), or a product name.
        x, y : int
            Column and row, 0-based, as the images show them.

        Returns
        -------
        PixelStack
            The kernel's decisions for that pixel, with each iteration's bounds, and the
            measured and noise-model sigmas (the night's :meth:`detector_noise`).
        """
        name, options = self._name(master), self.step_options()
        plan_master = self._master_of(name)
        try:
            return pixel_stack(plan_master, options, self._stack(plan_master),
                               self._choice(name, options), self._images(plan_master, options),
                               self.master(name, options), int(x), int(y),
                               self.detector_noise())
        except ValueError as err:
            raise InputError([InputProblem(None, str(err))]) from err

    def master_dark(self, exptime=None) -> CombineResult:
        """Master dark of an exposure time; the selected calibration master by default."""
        if exptime is None:
            return self.master(self.calibration)
        darks = self._require_plan().darks
        if exptime not in darks:
            raise InputError([InputProblem(None, f"no master dark for exposure time {exptime:g} s")])
        return self.master(darks[exptime].name)

    def threshold_sweep(self, master, thresholds=None) -> dict:
        """How a master depends on the sigma-clipping threshold (see
        :func:`~ccdred.steps.threshold_sweep`), memoised.

        Parameters
        ----------
        master : str
            ``'dark'``, ``'flat'`` or a product name, as for :meth:`pixel_stack`.
        thresholds : sequence of float, optional
            1 to 5.75 in steps of 0.25 by default (below 1 sigma, clipping a few samples
            degenerates), and the current threshold.

        Returns
        -------
        dict
            Equal-length arrays ``threshold``, ``rejected_fraction``, ``noise``,
            ``change``; ``left_out_fraction`` (see
            :class:`~ccdred.steps.SampleCounts`), and ``row_step``: the sweep combines every
            ``row_step``-th row (1 unless the stack holds more than
            :data:`SWEEP_SAMPLES` samples).
        """
        name, options = self._name(master), self.step_options()
        plan_master = self._master_of(name)
        if thresholds is None:
            thresholds = sorted({*(1.0 + 0.25 * np.arange(20)).tolist(), self.threshold})
        thresholds = tuple(thresholds)
        stack = self._stack(plan_master)  # (InputError for a library master: no frames here)
        step = max(1, -(-stack.size // SWEEP_SAMPLES))
        key = ("sweep", self._key(name, options), thresholds, step)
        return MASTERS.get(key, lambda: threshold_sweep(
            plan_master, options, stack, self._choice(name, options),
            self._images(plan_master, options), thresholds, slice(None, None, step))
            | {"row_step": step})

    def sample_counts(self, master) -> SampleCounts:
        """How many of a master's samples were left out before its combination, and how many
        the combination rejected (:class:`~ccdred.steps.SampleCounts`): its combination
        counts both.

        ``master``: ``'dark'``, ``'flat'`` or a product name, as for :meth:`pixel_stack`.
        """
        name = self._name(master)
        _require_frames(self._master_of(name))
        return sample_counts(self.master(name).combination)

    def _name(self, master) -> str:
        """A product name from 'dark' (the selected calibration master), 'flat' (the selected
        filter's master flat), or a product name."""
        if master == "dark":
            return self.calibration
        return self._flat_name() if master == "flat" else master

    def _flat_name(self, filter_name=None) -> str:
        filter_name = self.filter if filter_name is None else filter_name
        flats = self._require_plan().flats
        if filter_name not in flats:
            raise InputError(self.plan.problems or [InputProblem(
                None, f"no master flat for filter {filter_name!r}")])
        return flats[filter_name].name

    def master_flat(self, filter_name=None) -> MasterFlat:
        """Master flat of a filter (the selected one by default)."""
        return self.master(self._flat_name(filter_name))

    def flat_medians(self, filter_name=None) -> np.ndarray:
        """Medians of the flats of a filter less their dark terms, as the limits see them."""
        return np.asarray(self._statistics(self._flat_name(filter_name), self.step_options()),
                          dtype=np.float64)

    def flat_stack(self, filter_name=None) -> tuple[np.ndarray, np.ndarray]:
        """Flats of a filter less their dark terms (a new float64 stack), and their medians.

        For looking at them: :meth:`master_flat` subtracts the dark terms as it
        combines the raw flats and makes no such stack.
        """
        master = self._master_of(self._flat_name(filter_name))
        images = self._images(master, self.step_options())
        stack = np.array(self._stack(master), dtype=np.float64)
        for flat, term in zip(stack, master.terms, strict=True):
            flat -= term.image(images)
        return stack, self.flat_medians(filter_name)

    def flat_frames(self, filter_name=None) -> list[Frame]:
        """The flats of a filter's master flat."""
        return list(self._master_of(self._flat_name(filter_name)).frames)

    def frames_of(self, name) -> list[Frame]:
        """The frames a master is combined from."""
        return list(self._master_of(name).frames)

    # -- objects -----------------------------------------------------------------------

    def _object(self, name=None):
        name = self.object_frame if name is None else name
        for step in self._require_plan().calibrations:
            if step.frame.path.name == name:
                return step
        raise InputError([InputProblem(None, f"no object frame named {name!r}")])

    def object_filter(self, name=None) -> str | None:
        """The filter of the master flat an object frame is divided by (the selected one by
        default): the ``filter`` that shows and inspects that flat."""
        return self._require_plan().masters[self._object(name).flat].filter

    def raw_object(self, name=None) -> np.ndarray:
        """The (preprocessed) raw image of an object frame (the selected one by default)."""
        return read_raw(self._object(name).frame)

    def calibrated(self, name=None) -> np.ndarray:
        """An object frame, calibrated: less its dark term, divided by its master flat (the
        masters as the night's products hold them)."""
        step = self._object(name)
        options = self.step_options()
        images = {need: self._written(need, options) for need in (*step.term.needs, step.flat)}
        MASTERS.computed["calibrate"] += 1
        return calibrate_frame(read_raw(step.frame), step.term.image(images), images[step.flat])

    def master_planes(self, name, options: StepOptions | None = None) -> MasterPlanes:
        """A master's planes (its variance and rejected samples, as a night writes them; see
        :func:`~ccdred.night.master_planes`), memoised."""
        options = self.step_options() if options is None else options
        master, noise = self._master_of(name), self.detector_noise()
        key = ("planes", self._key(name, options),
               None if noise is None else (noise.gain, noise.read_noise))
        return MASTERS.get(key, lambda: master_planes(
            master, self.master(name, options), noise,
            {need: self.master_planes(need, options) for need in master.needs}))

    def calibrated_planes(self, name=None) -> dict:
        """The planes of an object frame's flat-fielded product (``uncertainty`` and
        ``mask``, as a night with these options writes them; see
        :func:`~ccdred.night.frame_planes`): the mask with the night's bad pixels
        (:meth:`night_bad_pixels`) and, with ``cosmic_rays``, the rays found in the frame."""
        return self._calibrated_with_planes(name)[1]

    def _calibrated_with_planes(self, name=None) -> tuple[np.ndarray, dict]:
        """An object frame's flat-fielded image as its product holds it, and its planes."""
        step, options = self._object(name), self.step_options()
        needs = (*step.term.needs, step.flat)
        images = {need: self._written(need, options) for need in needs}
        planes = {need: self.master_planes(need, options) for need in needs}
        image, samples = read_samples(step.frame)
        dark, flat = step.term.image(images), images[step.flat]
        _, flat_fielded = calibration_steps(image, dark, flat, dtype=storage_dtype(self.dtype),
                                            keep_subtracted=False)
        noise, bad_pixels = self.detector_noise(), self.night_bad_pixels()
        written = frame_planes(
            samples, image, dark, term_variance(step.term, planes), flat_fielded, noise,
            frame_saturation(step.frame.header(), samples), flat, planes[step.flat].variance,
            bad_pixels, dtype=self.dtype)
        if self.cosmic_rays:
            if noise is None:
                raise InputError([InputProblem(None, f"cosmic rays {UNKNOWN_NOISE}")])
            written["mask"] |= frame_cosmic_rays(flat_fielded, written, noise, bad_pixels,
                                                 LACosmic(niter=self.cosmic_ray_iterations)).bits()
        return flat_fielded, written

    def object_mask(self, name=None) -> np.ndarray:
        """The ``MASK`` plane of an object frame's flat-fielded product (the selected one
        by default; see :meth:`calibrated_planes`), memoised on the frame, its masters,
        the night's bad-pixel mask, the detector's noise and the mask options.

        Returns
        -------
        numpy.ndarray of uint8
            :class:`~ccdred.planes.MaskBit` bits per pixel.
        """
        step, options = self._object(name), self.step_options()
        noise = self.detector_noise()
        key = ("object_mask", _file_key(step.frame), self.dtype, step.term,
               tuple(sorted(self.mask_options().items())), self._bad_pixels_key(),
               tuple(self._key(need, options) for need in (*step.term.needs, step.flat)),
               None if noise is None else (noise.gain, noise.read_noise))
        return MASTERS.get(key, lambda: self.calibrated_planes(name)["mask"])

    def night_bad_pixels(self) -> np.ndarray | None:
        """The night's bad-pixel mask as its reduction writes it (see
        :func:`~ccdred.night.night_mask`), memoised.

        Returns
        -------
        numpy.ndarray of uint8 or None
            The user's mask file (``bad_pixel_mask``), else with ``bad_pixels`` the hot
            pixels from the raw darks and the defects of the master flats; None when
            neither is asked for.
        """
        if not self.writes_bad_pixels():
            return None
        plan = self._require_plan()
        if self.bad_pixel_mask is not None:
            return MASTERS.get(self._bad_pixels_key(), lambda: read_bad_pixel_mask(
                self.bad_pixel_mask, plan.catalogue.frames[0].shape))
        options = self.step_options()
        masters = {name: self.master(name, options) for name in self._bad_pixel_masters()}
        return MASTERS.get(self._bad_pixels_key(),
                           lambda: night_bad_pixels(plan, masters, self.dtype))

    def _bad_pixel_masters(self) -> list[str]:
        """The masters the night's bad-pixel mask is made with: the bias and the flats."""
        return [m.name for m in self._require_plan().masters.values()
                if m.kind in ("bias", "flat")]

    def _bad_pixels_key(self) -> tuple | None:
        """What decides :meth:`night_bad_pixels` (None when there is none): the user's
        mask file (its path and contents) and the night's image shape, or every frame of
        the night (its raw darks) and the masters it is made with."""
        if not self.writes_bad_pixels():
            return None
        shape = next((f.shape for f in self._require_plan().catalogue.frames), None)
        if self.bad_pixel_mask is not None:
            return ("user_mask", tuple(sorted(self.mask_options().items())), shape)
        options = self.step_options()
        return ("bad_pixels", self._frames_key(), self.dtype,
                tuple(self._key(name, options) for name in self._bad_pixel_masters()))

    def step_options(self) -> StepOptions:
        """The options that decide the masters (see
        :meth:`~ccdred.parameters.ClipParameters.step_options`), with the night's gain and
        read noise (:meth:`detector_noise`) in a ``ccdclip`` rejection, as a reduction's."""
        options = super().step_options()
        if options.clip.rejection != "ccdclip":
            return options
        return options.with_noise(self.detector_noise())

    def detector_noise(self) -> DetectorNoise | None:
        """The night's gain and read noise, as a reduction's products say them (see
        :func:`~ccdred.night.night_noise`; None when unknown), memoised on the frames, the
        ``gain`` and ``read_noise`` options and the flat limits."""
        catalogue = self._require_plan().catalogue
        key = ("detector_noise", self._frames_key(), self.gain, self.read_noise,
               self.flat_limits())
        return MASTERS.get(key, lambda: night_noise(catalogue, self))

    def photon_transfer(self) -> PhotonTransferCurve:
        """The night's photon transfer curve (:func:`~ccdred.night.night_photon_transfer`),
        memoised on the frames and the flat limits; InputError when the night has too few
        biases or flats for one."""
        catalogue, limits = self._require_plan().catalogue, self.flat_limits()
        return MASTERS.get(("photon_transfer", self._frames_key(), limits),
                           lambda: night_photon_transfer(catalogue, limits))

    def dark_rate(self) -> np.ndarray | None:
        """The night's dark current (ADU/s) from its raw darks, hot pixels kept
        (:func:`~ccdred.night.dark_rate`; None without darks), memoised on the frames and
        the master bias it subtracts."""
        plan, options = self._require_plan(), self.step_options()
        biases = {m.name: self.master(m.name, options) for m in plan.of_kind("bias")}
        key = ("dark_rate", self._frames_key(), self.dtype,
               tuple(self._key(name, options) for name in biases))
        return MASTERS.get(key, lambda: dark_rate(plan, biases, self.dtype))

    def _frames_key(self) -> tuple:
        """What decides a measurement of the night's frames: each frame's file and type."""
        return tuple((_file_key(f), f.frame_type, f.filter) for f in self.plan.catalogue.frames)

    def pin(self) -> None:
        """Pin the current combining parameters as 'A', to compare masters made otherwise with."""
        self.pinned = self.step_options()

    def difference(self, master) -> np.ndarray:
        """The master made with the current parameters less the one made with the pinned ones
        (B - A); master flats normalised, as they are."""
        if self.pinned is None:
            raise InputError([InputProblem(None, "nothing pinned yet: pin the parameters as A")])
        name = self._name(master)
        return self.master(name).data - self.master(name, self.pinned).data

    # -- what the views show, with their dependencies -----------------------------------

    @param.depends(*_COMBINE, "calibration", "filter", "inspect", "pixel_x", "pixel_y")
    def shown_pixel(self) -> PixelStack:
        """The inspected pixel's samples; the pixel with most rejected samples when none is set."""
        x, y = self.pixel_x, self.pixel_y
        if x is None or y is None:
            name = self._name(self.inspect)
            self._stack(self._master_of(name))  # InputError for a library master: no frames here
            n_rejected = self.master(name).combination.n_rejected
            y, x = np.unravel_index(np.argmax(n_rejected), n_rejected.shape)
        return self.pixel_stack(self.inspect, x, y)

    @param.depends(*_COMBINE, "calibration", "filter", "inspect")
    def shown_sweep(self) -> tuple[str, dict, float]:
        """The inspected master's name, its threshold sweep, and the current threshold."""
        return self._name(self.inspect), self.threshold_sweep(self.inspect), self.threshold

    @param.depends(*_COMBINE, "calibration", "filter", "pinned")
    def shown_differences(self) -> list[tuple[str, np.ndarray]]:
        """(name, B - A) of the calibration master and the master flat on show; none while
        nothing is pinned."""
        if self.pinned is None:
            return []
        return [(self._name(master), self.difference(master)) for master in ("dark", "flat")]

    @param.depends(*_COMBINE, "calibration")
    def shown_dark(self) -> tuple[str, CombineResult]:
        """The selected bias, dark or dark-current master, with its name."""
        return self.calibration, self.master_dark()

    @param.depends(*_COMBINE, "filter")
    def shown_flat(self) -> tuple[str, MasterFlat]:
        """The selected filter's master flat, with the filter."""
        return self.filter, self.master_flat()

    @param.depends(*_COMBINE, "object_frame")
    def shown_calibrated(self) -> tuple[str, np.ndarray, np.ndarray]:
        """The selected object frame: name, raw (preprocessed) and calibrated images."""
        return self.object_frame, self.raw_object(), self.calibrated()

    @param.depends(*_COMBINE, "object_frame", *names(MaskParameters), "gain", "read_noise")
    def shown_mask(self) -> np.ndarray | None:
        """The selected object frame's mask plane (:meth:`object_mask`) when a bad-pixel
        mask or cosmic rays are asked for; None (nothing computed) otherwise."""
        if not (self.writes_bad_pixels() or self.cosmic_rays):
            return None
        return self.object_mask()

    @param.depends("plan", "gain", "read_noise", "upper_limit", "lower_limit")
    def shown_detector(self) -> tuple:
        """What the night says of its detector: the gain and read noise of its first frame's
        header (each (value, keyword) or None), those the reduction uses
        (:class:`~ccdred.noise.DetectorNoise` or None), and the photon transfer curve (or,
        when the night has too few frames for one, why)."""
        plan = self._require_plan()
        first = next(iter(plan.catalogue.frames), None)
        header = header_noise(first.header() if first is not None else {})
        try:
            curve = self.photon_transfer()
        except InputError as err:
            curve = str(err)
        return header, self.detector_noise(), curve

    @param.depends(*_COMBINE)
    def shown_hot_pixels(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The night's dark current from its raw darks (see :meth:`dark_rate`) and its hot
        pixels (:func:`~ccdred.badpix.hot_pixels`); None without darks."""
        rate = self.dark_rate()
        return None if rate is None else (rate, hot_pixels(rate))

    @param.depends(*_COMBINE)
    def frame_levels(self) -> list[dict]:
        """Each frame's median (flats less their dark terms), its use, and what it gets."""
        plan = self._require_plan()
        limits, rows = self.step_options().limits, []
        gets = plan.gets()
        flat_levels = {}
        for master in (m for m in plan.of_kind("flat") if m.library is None):
            medians = self._statistics(master.name, self.step_options())
            flat_levels.update(zip(master.frames, zip(medians, limits.statuses(medians)),
                                   strict=True))
        for frame in plan.catalogue.frames:
            if frame.frame_type is None:
                ignored = plan.catalogue.keywords.override(frame.path.name) == "ignore"
                unknown = f"not used: unknown type {frame.imagetyp or '(none)'}"
                rows.append({"file": frame.path.name, "type": "ignore", "filter": "",
                             "exptime": frame.exptime, "median": None,
                             "status": "ignored (its type set to ignore)" if ignored else unknown,
                             "gets": ""})
                continue
            level, status = flat_levels.get(frame, (None, "used"))
            rows.append({"file": frame.path.name, "type": frame.frame_type,
                         "filter": frame.filter or "", "exptime": frame.exptime,
                         "median": level if level is not None else raw_median(frame),
                         "status": status, "gets": gets.get(frame.path, "")})
        return sorted(rows, key=lambda row: row["file"])
