"""The dashboard as a state machine: any sequence of what a class does to it, without a browser.

Hypothesis drives one :class:`~ccdred.dashboard.Dashboard` (and its
:class:`~ccdred.pipeline.Pipeline`) through random sequences of the sidebar's
parameters (good, boundary, empty and bad values), night switches (a folder
with no frames, one whose frames are unusable, the data root itself), frame-type
edits, pixel taps, clicks on the threshold sweep, pin / A-B, tab switches and
setting everything back. After every step:

* no exception escapes an action, and a refused value leaves its parameter as it was;
* every view of the pipeline gives either data equal to what a fresh ``Pipeline`` with
  the same parameters computes from an empty cache, or an input problem (one message);
* every view of the tab on show shows what drawing it now would give (nothing stale);
* no view logged a failure.

Deterministic per run (``derandomize``); a failure prints the sequence of steps that
reproduces it, to paste into a test.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ccdred.dashboard import Dashboard
from ccdred.demo import NightSpec, make_night
from ccdred.errors import InputError
from ccdred.keywords import FRAME_TYPES
from ccdred.parameters import ReductionParameters, names
from ccdred.pipeline import MASTERS, RAW_FRAMES, Pipeline

hv.extension("bokeh", logo=False)

#: Values a student may put in a field: good, boundary, empty and bad ones.
NUMBERS = {
    "threshold": [2.5, 1.7, 3.2, 0.1, 0.05, 1e-9, 0, -3, None, math.inf, math.nan, 25.0],
    "maxiters": [1, 3, 10, 0, -1, None, 100],
    "lsigma": [None, 2.0, 4.0, 0, -1, math.nan],
    "hsigma": [None, 2.0, 4.0, 0, -1, math.inf],
    "nlow": [0, 1, 2, 3, 20, -1],
    "nhigh": [0, 1, 2, 3, 20, -1],
    "plow": [10, 0, 50, 95, 100, -5, None],
    "phigh": [90, 100, 50, 5, 0, 120],
    "snoise": [0.0, 0.02, -0.1, None, math.inf],
    "upper_limit": [38000, 100, 40000, 65535, 0, -1, None, math.nan],
    "lower_limit": [None, 100, 40000, 0, -1, math.inf],
    "temperature_tolerance": [1, 0, 5, -1, None],
}
CHOICES = {
    "rejection": ["sigclip", "minmax", "pclip", "ccdclip", "avsigclip"],
    "cenfunc": ["median", "mean", "mode"],
    "stdfunc": ["std", "mad_std", "var"],
    "frame_clip": [True, False],
    "dark_model": ["auto", "exact", "scaled", "none"],
    "dtype": ["float32", "float64"],
    "trim": ["auto", "none", "[1:10,1:12]", "[bad", ""],
    "overscan": ["auto", "none", "[1:2,1:20]", "[0:3,1:2]"],
    "overscan_function": ["median", "mean", "legendre:2", "cubic"],
    "keyword_exptime": ["EXPTIME", "EXPOSURE", "NOPE", ""],
    "keyword_datatype": ["IMAGETYP", "OBSTYPE", ""],
    "keyword_filter": ["FILTER", "FILTNAME", ""],
}
#: The pipeline's views, as the dashboard's tabs draw them.
VIEWS = ("frame_levels", "shown_dark", "shown_flat", "shown_calibrated", "shown_pixel",
         "shown_sweep", "shown_differences")
#: What decides a pipeline's views, besides its reduction parameters.
SELECTIONS = ("night", "calibration", "filter", "object_frame", "inspect", "pixel_x", "pixel_y",
              "pinned")
TABS = ("Frames", "Clipping", "Before / after", "Masters", "Explore")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("states")
    make_night(root / "night1", NightSpec(shape=(20, 24), seed=8))
    make_night(root / "night2", NightSpec(shape=(16, 20), seed=9, filters=("B", "V")))
    (root / "empty").mkdir()
    unusable = root / "unusable"
    unusable.mkdir()
    fits.PrimaryHDU(np.zeros((8, 8), np.uint16)).writeto(unusable / "no-type.fits")
    (unusable / "broken.fits").write_bytes(b"SIMPLE  = T / not really FITS")
    output_root = root / "products"
    output_root.mkdir()
    return root, output_root


class DashboardMachine(RuleBasedStateMachine):
    """One session's dashboard, acted on as a student would."""

    data_root = output_root = None  # set by the test before the machine runs

    def __init__(self):
        super().__init__()
        MASTERS.clear()
        self.dashboard = Dashboard(self.data_root, self.output_root, night="night1")
        self.pipeline = self.dashboard.pipeline
        self.dashboard.tabs()  # the views exist, as on a page
        self.failures = _Failures()
        logging.getLogger("ccdred.dashboard").addHandler(self.failures)

    def teardown(self):
        logging.getLogger("ccdred.dashboard").removeHandler(self.failures)

    # -- rules: what a student does --------------------------------------------------

    @rule(data=st.data(), name=st.sampled_from(sorted(NUMBERS)))
    def type_a_number(self, data, name):
        self._set(name, data.draw(st.sampled_from(NUMBERS[name]), label=name))

    @rule(data=st.data(), name=st.sampled_from(sorted(CHOICES)))
    def choose(self, data, name):
        self._set(name, data.draw(st.sampled_from(CHOICES[name]), label=name))

    @rule(night=st.sampled_from(["night1", "night2", "empty", "unusable", ".", "nope", "../.."]))
    def open_night(self, night):
        if night in self.dashboard.param.night.objects:
            self.dashboard.night = night
        else:
            self.dashboard.folder_input.value = night

    @rule(data=st.data(), frame_type=st.sampled_from([*FRAME_TYPES, "ignore"]))
    def retype_a_frame(self, data, frame_type):
        levels = _outcome(self.pipeline.frame_levels)
        if levels[0] == "ok" and levels[1]:
            row = data.draw(st.sampled_from(levels[1]), label="frame")
            self.dashboard.retype(row["file"], frame_type)

    @rule(master=st.sampled_from(["dark", "flat"]),
          x=st.sampled_from([0, 3.4, 11, -2, 1e6, None]), y=st.sampled_from([0, 7.6, -1, 1e6]))
    def tap_a_pixel(self, master, x, y):
        self.dashboard.inspect(master, x, y)

    @rule(x=st.sampled_from([None, 1.0, 2.26, 5.75, 0.01, -1.0, 40.0]))
    def click_the_sweep(self, x):
        self.dashboard.set_threshold(x)

    @rule()
    def pin(self):
        self.pipeline.pin()

    @rule(data=st.data(), name=st.sampled_from(["calibration", "filter", "object_frame"]))
    def show(self, data, name):
        objects = self.pipeline.param[name].objects
        if objects:
            setattr(self.pipeline, name, data.draw(st.sampled_from(objects), label=name))

    @rule(tab=st.sampled_from(TABS))
    def switch_tab(self, tab):
        self.dashboard.tab = tab

    @rule()
    def set_everything_back(self):
        defaults = {name: self.pipeline.param[name].default
                    for name in names(ReductionParameters)}
        self.pipeline.param.update(**defaults, pixel_x=None, pixel_y=None, pinned=None,
                                   inspect=self.pipeline.param.inspect.default)
        self.dashboard.night = "night1"
        for name in ("calibration", "filter", "object_frame"):  # the first of each list
            setattr(self.pipeline, name, next(iter(self.pipeline.param[name].objects), None))
        fresh = Dashboard(self.data_root, self.output_root, night="night1").pipeline
        for name in (*names(ReductionParameters), *SELECTIONS):
            assert _same(getattr(self.pipeline, name), getattr(fresh, name)), name

    def _set(self, name, value):
        """Set a parameter as its field does; a refused value leaves the last good one."""
        before = getattr(self.pipeline, name)
        try:
            setattr(self.pipeline, name, value)
        except ValueError:
            assert _same(getattr(self.pipeline, name), before), (name, value)

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def views_equal_a_fresh_pipelines(self):
        seen = {view: _outcome(getattr(self.pipeline, view)) for view in VIEWS}
        MASTERS.clear()
        RAW_FRAMES.clear()
        fresh = Pipeline(**{name: getattr(self.pipeline, name)
                            for name in (*names(ReductionParameters), "night")})
        fresh.param.update(**{name: getattr(self.pipeline, name) for name in SELECTIONS[1:]})
        for view in VIEWS:
            assert _same(seen[view], _outcome(getattr(fresh, view))), view

    @invariant()
    def no_view_failed(self):
        assert not self.failures.records, self.failures.records[0].getMessage()

    @invariant()
    def the_tab_on_show_is_up_to_date(self):
        for view in self.dashboard.views:
            if view.tab == self.dashboard.tab:
                assert _same(_content(view.drawn()), _content(view.draw())), view.tab


class _Failures(logging.Handler):
    """The dashboard's logged failures (a view that could not be drawn)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _outcome(view):
    """('ok', value) or ('message', text): an input problem is a message; anything else fails."""
    try:
        return ("ok", view())
    except InputError as err:
        return ("message", str(err))


def _same(a, b) -> bool:
    """Equal values: arrays (NaN equal to NaN), dataclasses, containers, numbers."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (np.shape(a) == np.shape(b)
                and np.array_equal(np.asarray(a), np.asarray(b),
                                   equal_nan=np.asarray(a).dtype.kind == "f"))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _content(drawing):
    """What a drawing shows, comparable: text, plot titles and data, recursively."""
    if isinstance(drawing, hv.DynamicMap):
        return _content(drawing[()]) if drawing.streams == [] else ("dynamic",)
    if isinstance(drawing, (hv.core.Overlay, hv.core.Layout)):
        return ("plots", [_content(item) for item in drawing])
    if isinstance(drawing, hv.core.Element):
        title = hv.Store.lookup_options("bokeh", drawing, "plot").kwargs.get("title")
        return (type(drawing).__name__, drawing.label, title,
                [np.asarray(drawing.dimension_values(d)) for d in drawing.dimensions()])
    if isinstance(drawing, pn.layout.ListLike):
        return ("layout", [_content(item) for item in drawing])
    if isinstance(drawing, pn.pane.PaneBase):
        return (type(drawing).__name__, _content(drawing.object))
    if isinstance(drawing, param.Parameterized):  # a widget: its value
        return (type(drawing).__name__, _content(getattr(drawing, "value", None)))
    if isinstance(drawing, pd.DataFrame):
        return drawing.to_dict("records")
    return drawing


@pytest.mark.slow
def test_any_sequence_of_a_class_s_actions(data_root):
    DashboardMachine.data_root, DashboardMachine.output_root = data_root
    run_state_machine_as_test(DashboardMachine, settings=settings(
        max_examples=20, stateful_step_count=10, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]))
