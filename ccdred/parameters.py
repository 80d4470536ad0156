"""The reduction's parameters, declared once.

These ``param`` declarations (bounds, docs) feed the command line's options
and help, the dashboard's widgets and the provenance written into every
product. Their defaults are read from the option objects of the steps
(:class:`~ccdred.combine.ClipOptions`, :class:`~ccdred.limits.FlatLimits`,
:class:`~ccdred.plan.PlanOptions`, :class:`~ccdred.frames.PreprocessOptions`,
:class:`~ccdred.keywords.Keywords`), so that each default is written in one
place; they equal the course script's.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import shlex
from dataclasses import replace
from pathlib import Path

import param

from .combine import ClipOptions
from .limits import FlatLimits
from .combine import CENFUNCS, REJECTION_OPTIONS, REJECTIONS, STDFUNCS
from .errors import InputError, InputProblem
from .frames import PreprocessOptions
from .keywords import Keywords
from .library import Library, open_library, require_writable
from .noise import GAIN_KEYWORDS, READ_NOISE_KEYWORDS
from .plan import DARK_MODELS, PlanOptions
from .steps import StepOptions

__all__ = ["CalibrationParameters", "ClipParameters", "DetectorParameters", "KeywordParameters",
           "LibraryParameters", "MaskParameters", "ReductionParameters",
           "names", "option", "refusal"]


#: A parameter as param's messages name it ("Number parameter 'ClipParameters.threshold'")
_PARAMETER = re.compile(r"\w+ parameter '\w+\.(\w+)'")
#: The command line's options named otherwise than their parameters (the course script's
#: names, and one ``--frame-type GLOB=TYPE`` per rule)
_OPTIONS = {"upper_limit": "--upperlimit", "lower_limit": "--lowerlimit",
            "frame_types": "--frame-type", "library_choice": "--library-master"}


def option(name: str) -> str:
    """The ``ccdred reduce`` option of a parameter.

    Examples
    --------
    >>> option("dark_model"), option("upper_limit")
    ('--dark-model', '--upperlimit')
    """
    return _OPTIONS.get(name, "--" + name.replace("_", "-"))


def refusal(err: Exception, name_for) -> str:
    """Why param refused a value, with the parameter named as its user knows it.

    Parameters
    ----------
    err : Exception
        param's error (``Number parameter 'Pipeline.threshold' must be ...``).
    name_for : callable
        The name to say for a parameter's attribute name (an option, a label).

    Examples
    --------
    >>> refusal(ValueError("Number parameter 'P.threshold' must be greater than 0, not -1."),
    ...         lambda name: "--" + name)
    '--threshold must be greater than 0, not -1.'
    """
    return _PARAMETER.sub(lambda match: name_for(match[1]), str(err))


def names(parameters: type[param.Parameterized]) -> list[str]:
    """The parameters a class declares (not 'name'), in declaration order."""
    return [name for name in parameters.param if name != "name"]


class KeywordParameters(param.Parameterized):
    """Header keywords and the frame-type values they take."""

    keyword_naxis = param.String(Keywords.naxis, doc="FITS keyword for the number of axes")
    keyword_naxis1 = param.String(Keywords.naxis1, doc="FITS keyword for the image width")
    keyword_naxis2 = param.String(Keywords.naxis2, doc="FITS keyword for the image height")
    keyword_exptime = param.String(Keywords.exptime, doc="FITS keyword for the exposure time (s)")
    keyword_filter = param.String(Keywords.filter, doc="FITS keyword for the filter name (then "
                                  + ", ".join(Keywords.filter_fallbacks[1:]) + ")")
    keyword_datatype = param.String(Keywords.imagetyp, doc="FITS keyword for the frame type")
    keyword_datatype_bias = param.List(list(Keywords.bias), item_type=str,
                                       doc="values meaning a bias frame (any case)")
    keyword_datatype_dark = param.List(list(Keywords.dark), item_type=str,
                                       doc="values meaning a dark frame (any case)")
    keyword_datatype_flat = param.List(list(Keywords.flat), item_type=str,
                                       doc="values meaning a flat frame (any case)")
    keyword_datatype_object = param.List(list(Keywords.object), item_type=str,
                                         doc="values meaning an object frame (any case)")
    frame_types = param.Dict(default={}, doc="file-name glob -> frame type (bias, dark, flat, "
                                             "object or ignore), whatever the header says")

    def keywords(self) -> Keywords:
        """The :class:`~ccdred.keywords.Keywords` these parameters describe."""
        return Keywords(
            naxis=self.keyword_naxis, naxis1=self.keyword_naxis1, naxis2=self.keyword_naxis2,
            exptime=self.keyword_exptime, filter=self.keyword_filter,
            imagetyp=self.keyword_datatype,
            bias=tuple(self.keyword_datatype_bias), dark=tuple(self.keyword_datatype_dark),
            flat=tuple(self.keyword_datatype_flat), object=tuple(self.keyword_datatype_object),
            frame_types=tuple(self.frame_types.items()),
        )


class CalibrationParameters(param.Parameterized):
    """Which calibration steps a frame gets: overscan, trim, bias and dark."""

    dark_model = param.Selector(default=PlanOptions.dark_model, objects=list(DARK_MODELS),
                                doc="exact: a master dark per exposure time; scaled: bias + "
                                    "dark current x time; none: bias only; auto: exact where "
                                    "there are darks of the frame's exposure time, else scaled")
    overscan = param.String(PreprocessOptions.overscan,
                            doc="overscan strip: auto (BIASSEC), none, or [x1:x2,y1:y2]")
    overscan_function = param.String(PreprocessOptions.overscan_function,
                                      doc="overscan per row/column: median, mean or legendre:N")
    trim = param.String(PreprocessOptions.trim,
                        doc="section to keep: auto (TRIMSEC, else DATASEC), none, or [x1:x2,y1:y2]")
    tile = param.Boolean(False,
                         doc="write the products of a night of several image extensions "
                             "(amplifiers) as one image, each amplifier placed by its DETSEC, "
                             "instead of an extension per amplifier (either way each is "
                             "overscan-corrected and trimmed by its own BIASSEC and DATASEC "
                             "and the night is calibrated as one detector image)")
    temperature_tolerance = param.Number(PlanOptions.temperature_tolerance, bounds=(0, None),
                                         softbounds=(0, 10), step=0.5,
                                         doc="biases and darks within this many degrees C form "
                                             "one temperature group")

    def plan_options(self) -> PlanOptions:
        """The options that decide the plan."""
        return PlanOptions(self.dark_model, self.temperature_tolerance)

    def preprocessing(self) -> PreprocessOptions:
        """The overscan and trim options."""
        return PreprocessOptions(self.overscan, self.overscan_function, self.trim)


class LibraryParameters(param.Parameterized):
    """The calibration library: masters of earlier nights for what a night lacks."""

    library = param.String(default=None, allow_None=True,
                           doc="folder of masters ccdred made on earlier nights: a night "
                               "without its own biases, darks or flats takes the fitting one "
                               "nearest in time (the night's own frames win)")
    library_max_age = param.Number(PlanOptions.library_max_age, bounds=(0, None),
                                   allow_None=True, softbounds=(0, 365), step=1,
                                   doc="library masters taken more than this many days from "
                                       "the night are not used")
    add_to_library = param.Boolean(False, doc="add the masters the night makes to the library")
    library_choice = param.Dict(default={}, doc="master (bias, dark_00030000, dark_current, "
                                                "flat_V: as --plan names it) -> the library "
                                                "file to use for it instead of the nearest")

    def open_library(self):
        """The :class:`~ccdred.library.Library` named (None without one); InputError when
        it cannot be used."""
        if self.library is None:
            if self.add_to_library:
                raise InputError([InputProblem(None, "--add-to-library needs --library DIR")])
            return None
        if self.add_to_library and not os.path.isdir(self.library):
            return Library(Path(self.library))  # made when the night's masters are added
        if self.add_to_library:
            require_writable(self.library)
        return open_library(self.library)


class ClipParameters(param.Parameterized):
    """How masters are combined: the rejection of samples, and which flats are used."""

    rejection = param.Selector(default=ClipOptions.rejection, objects=list(REJECTIONS),
                               doc="how samples are rejected: sigclip (sigma clipping, as the "
                                   "course script), minmax (drop the nlow lowest and nhigh "
                                   "highest), pclip (keep those between two percentiles), "
                                   "ccdclip (sigma clipping with the sigma of the detector's "
                                   "noise model, from its gain and read noise, as IRAF's)")
    threshold = param.Number(ClipOptions.threshold, bounds=(0, None), inclusive_bounds=(False, True),
                             softbounds=(1.0, 5.0), step=0.1,
                             doc="sigma-clipping threshold, in standard deviations")
    cenfunc = param.Selector(default=ClipOptions.cenfunc, objects=list(CENFUNCS),
                             doc="centre of the clipping bounds")
    maxiters = param.Integer(ClipOptions.maxiters, bounds=(1, None), softbounds=(1, 20),
                             doc="maximum number of clipping iterations")
    lsigma = param.Number(ClipOptions.lsigma, allow_None=True, bounds=(0, None),
                          inclusive_bounds=(False, True), step=0.1,
                          doc="low sigma-clipping threshold (as IRAF's); the threshold when unset")
    hsigma = param.Number(ClipOptions.hsigma, allow_None=True, bounds=(0, None),
                          inclusive_bounds=(False, True), step=0.1,
                          doc="high sigma-clipping threshold (as IRAF's); the threshold when unset")
    stdfunc = param.Selector(default=ClipOptions.stdfunc, objects=list(STDFUNCS),
                             doc="spread of the clipping bounds: std, or mad_std (1.4826 x the "
                                 "median absolute deviation: robust to the outliers)")
    nlow = param.Integer(ClipOptions.nlow, bounds=(0, None), softbounds=(0, 5),
                         doc="minmax: lowest samples dropped per pixel")
    nhigh = param.Integer(ClipOptions.nhigh, bounds=(0, None), softbounds=(0, 5),
                          doc="minmax: highest samples dropped per pixel")
    plow = param.Number(ClipOptions.plow, bounds=(0, 100), step=1,
                        doc="pclip: percentile below which samples are rejected")
    phigh = param.Number(ClipOptions.phigh, bounds=(0, 100), step=1,
                         doc="pclip: percentile above which samples are rejected")
    snoise = param.Number(ClipOptions.snoise, bounds=(0, None), softbounds=(0, 0.1), step=0.005,
                          doc="ccdclip: noise proportional to the signal, as a fraction of it "
                              "(IRAF's snoise: flat-field and scaling errors)")
    frame_clip = param.Boolean(StepOptions.frame_clip,
                               doc="sigma-clip each dark on its own first (masks hot pixels, "
                                   "as the course script does)")
    upper_limit = param.Number(FlatLimits.upper, bounds=(0, None), inclusive_bounds=(False, True),
                               softbounds=(0, 65535), step=500,
                               doc="reject flats whose median is above this (ADU)")
    lower_limit = param.Number(FlatLimits.lower, allow_None=True, bounds=(0, None),
                               softbounds=(0, 65535), step=500,
                               doc="reject flats whose median is below this (ADU); off by default")

    def clip(self) -> ClipOptions:
        """The rejection, with only the options its method reads (and the per-frame clipping's),
        so that an option the method ignores decides nothing."""
        names = {"threshold", "cenfunc", "maxiters", *REJECTION_OPTIONS[self.rejection]}
        return ClipOptions(rejection=self.rejection, **{name: getattr(self, name) for name in names})

    def step_options(self) -> StepOptions:
        """Everything that decides the masters' values; an InputError saying which value is
        wrong when they cannot go together (``plow`` above ``phigh``, an infinite sigma)."""
        try:
            return StepOptions(self.clip(), self.frame_clip, self.flat_limits())
        except ValueError as err:
            raise InputError([InputProblem(None, str(err))]) from err

    def flat_limits(self) -> FlatLimits:
        """The limits on the flats' medians (also what the gain is measured from; see
        :func:`ccdred.night.night_noise`); an InputError when they cannot go together."""
        try:
            return FlatLimits(self.upper_limit, self.lower_limit)
        except ValueError as err:
            raise InputError([InputProblem(None, str(err))]) from err


class DetectorParameters(param.Parameterized):
    """The detector's gain and read noise, when the user knows them better than the header.

    They change no image: products carry them as ``GAIN`` and ``RDNOISE`` cards (see
    :func:`ccdred.night.night_noise`).
    """

    gain = param.Number(None, allow_None=True, bounds=(0, None), inclusive_bounds=(False, True),
                        softbounds=(0.1, 10), step=0.1,
                        doc="gain (e-/ADU) the products' GAIN card says; by default the header's "
                            f"({', '.join(GAIN_KEYWORDS)}), else measured from two biases and "
                            "two flats")
    read_noise = param.Number(None, allow_None=True, bounds=(0, None),
                              inclusive_bounds=(False, True), softbounds=(0, 30), step=0.5,
                              doc="read noise (e-) the products' RDNOISE card says; by default "
                                  f"the header's ({', '.join(READ_NOISE_KEYWORDS)}), else "
                                  "measured from two biases")

    def detector_options(self) -> dict:
        """The user's ``gain`` and ``read_noise`` (None where unset); InputError naming an
        infinite one (param's bounds let infinity through)."""
        values = {"gain": self.gain, "read_noise": self.read_noise}
        bad = [f"{option(name)} must be a finite number, not {value}"
               for name, value in values.items() if value is not None and not math.isfinite(value)]
        if bad:
            raise InputError([InputProblem(None, message) for message in bad])
        return values


class MaskParameters(param.Parameterized):
    """The pixels not to trust: the night's bad-pixel mask, and cosmic rays in object frames.

    Off by default: the course's nights and scripts know neither, the mask costs a median
    filter per master flat (seconds at 2048²) and LACosmic about 0.3 s of CPU per object
    frame (one iteration, :mod:`ccdred.cosmics`).
    """

    bad_pixels = param.Boolean(False, doc="write the night's bad-pixel mask (bad_pixels.fits): "
                                          "hot pixels from the darks, dead and deviant pixels "
                                          "from the master flats (as IRAF's ccdmask)")
    bad_pixel_mask = param.String(None, allow_None=True,
                                  doc="a FITS bad-pixel mask of your own (non-zero: bad), used "
                                      "instead of the night's and written as bad_pixels.fits")
    cosmic_rays = param.Boolean(False, doc="find cosmic rays in the object frames (LACosmic), "
                                           "with the gain and read noise")
    cosmic_ray_replace = param.Boolean(
        False, doc="replace the cosmic rays' pixels in the flat-fielded frames by the mean of "
                   "the good pixels of their 5x5 box (LACosmic's cleaned image); MASK still "
                   "marks them")
    cosmic_ray_iterations = param.Integer(
        1, bounds=(1, 10), doc="LACosmic's iterations: 1 is compiled (about 0.3 s of CPU a "
                               "2048x2048 frame) and finds the demo night's rays as 4 do; more "
                               "run astroscrappy (about 3 s an iteration)")

    def writes_bad_pixels(self) -> bool:
        """Whether the night writes its bad-pixel mask: asked for, or the user's mask given."""
        return self.bad_pixels or self.bad_pixel_mask is not None

    def mask_options(self) -> dict:
        """The mask options that are on, for product headers (their values go into the
        masks of the products, so that resuming with other ones makes them again); the
        user's mask as its path and its contents' SHA-256."""
        options = {name: True for name in ("bad_pixels", "cosmic_rays", "cosmic_ray_replace")
                   if getattr(self, name)}
        if self.cosmic_rays:
            options["cosmic_ray_iterations"] = self.cosmic_ray_iterations
        if self.bad_pixel_mask is not None:
            options |= {"bad_pixel_mask": self.bad_pixel_mask,
                        "bad_pixel_mask_sha256": _file_digest(self.bad_pixel_mask)}
        return options


def _file_digest(path) -> str:
    """The SHA-256 of a file's bytes, once per version of the file (every product's header
    asks); '' when it cannot be read (reading it says why)."""
    try:
        stat = os.stat(path)
    except OSError:
        return ""
    return _digest_of(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _digest_of(path: str, _mtime_ns: int, _size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ReductionParameters(KeywordParameters, CalibrationParameters, ClipParameters,
                          LibraryParameters, DetectorParameters, MaskParameters):
    """Everything that decides a night's products."""

    def plan_options(self) -> PlanOptions:
        """The options that decide the plan, the library's masters included."""
        return replace(CalibrationParameters.plan_options(self), library=self.open_library(),
                       library_max_age=self.library_max_age,
                       library_choice=tuple(self.library_choice.items()))

    dtype = param.Selector(default="float32", objects=["float32", "float64"],
                           doc="data type of the products")
    intermediate = param.Boolean(True, doc="write the dark-subtracted '_d' files")
    planes = param.Boolean(False, doc="write uncertainty (UNCERT) and mask (MASK) planes in "
                                      "the masters and flat-fielded frames (not the '_d' "
                                      "intermediates), and each master's rejected samples "
                                      "(NREJ)")

    def changed(self) -> dict:
        """The parameters whose values are not the defaults, by name."""
        defaults = ReductionParameters()
        return {name: getattr(self, name) for name in names(ReductionParameters)
                if getattr(self, name) != getattr(defaults, name)}

    def command_options(self) -> list[str]:
        """The ``ccdred reduce`` options that set these parameters (the defaults left out).

        Examples
        --------
        >>> ReductionParameters(threshold=3.0, frame_clip=False,
        ...                     frame_types={"flat*.fits": "ignore"}).command_options()
        ['--threshold=3.0', '--no-frame-clip', '--frame-type=flat*.fits=ignore']
        """
        options = []
        for name, value in self.changed().items():
            if isinstance(value, dict):  # --frame-type GLOB=TYPE, --library-master NAME=FILE
                options += [f"{option(name)}={key}={item}" for key, item in value.items()]
            elif isinstance(value, bool):  # a switch turned on, or one on by default turned off
                options.append(option(name) if value else option(name).replace("--", "--no-", 1))
            elif isinstance(value, list):
                options.append(f"{option(name)}={','.join(value)}")
            else:
                options.append(f"{option(name)}={value}")
        return options

    def command(self, night) -> str:
        """The ``ccdred reduce`` command that makes the products of folder ``night`` with
        these parameters, as a shell line.

        Examples
        --------
        >>> ReductionParameters(cenfunc="mean").command("nights/2024-03-01")
        'ccdred reduce nights/2024-03-01 --cenfunc=mean'
        """
        return shlex.join(["ccdred", "reduce", str(night), *self.command_options()])

    def call(self, night) -> str:
        """The Python call of a :class:`~ccdred.pipeline.Pipeline` of folder ``night`` with
        these parameters.

        Examples
        --------
        >>> ReductionParameters(threshold=3.0).call("night1")
        "ccdred.Pipeline(night='night1', threshold=3.0)"
        """
        arguments = [f"night={str(night)!r}",
                     *(f"{name}={value!r}" for name, value in self.changed().items())]
        return f"ccdred.Pipeline({', '.join(arguments)})"

    def provenance(self) -> dict:
        """The options that decide product values (and the GAIN and RDNOISE cards), for
        product headers."""
        return {**self.step_options().provenance(), "dtype": self.dtype, "planes": self.planes,
                "temperature_tolerance": self.temperature_tolerance,
                **self.detector_options(), **self.mask_options()}
