"""The Panel dashboard: a layout of a :class:`~ccdred.pipeline.Pipeline`'s widgets and views.

Thin by design: the widgets come from the pipeline's parameters
(``pn.Param``), every number from the pipeline's methods (which declare what
they depend on), every picture from :mod:`ccdred.plots`, when each view is drawn
and shown from a :class:`~ccdred.views.ViewScheduler`, and "Reduce night"
from a :class:`~ccdred.job.ReductionJob`. Each browser session gets its own
pipeline; raw frames and masters are shared through the pipeline's caches.
Reads happen only under the data root and writes only under the output root.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import holoviews as hv
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import NumberFormatter

from . import plots
from .badpix import HOT_SIGMA
from .compat import forget_links
from .errors import InputError
from .fields import fields
from .job import ReductionJob
from .keywords import FRAME_TYPES
from .combine import REJECTION_OPTIONS
from .parameters import (CalibrationParameters, ClipParameters, DetectorParameters,
                         KeywordParameters, ReductionParameters, names)
from .pipeline import Pipeline
from .prepare import is_prepared, prepare_in_background
from .serve import app_options, list_nights, page_design, resolve_under
from .views import View, ViewScheduler

__all__ = ["Dashboard"]

_LOG = logging.getLogger(__name__)

_CLIP_WIDGETS = {
    # throttled: a dragged slider sets the threshold once, where it is let go, instead of
    # queueing a recomputation for every position it passes; no fixed start: the
    # parameter alone refuses a value, in words (see ccdred.fields)
    "threshold": {"type": pn.widgets.EditableFloatSlider, "start": 0.5, "end": 5.0, "step": 0.1,
                  "throttled": True, "css_classes": ["ccdred-threshold"]},
    "lsigma": {"placeholder": "as threshold"},
    "hsigma": {"placeholder": "as threshold"},
    "lower_limit": {"placeholder": "off"},
}
#: Combining parameters shown whatever the rejection method (the per-frame clipping of
#: darks reads threshold, cenfunc and maxiters too); the others only with their method.
_ALWAYS_SHOWN = ("rejection", "threshold", "cenfunc", "maxiters", "frame_clip", "upper_limit",
                 "lower_limit")
_TABLE_COLUMNS = ["file", "type", "exptime", "filter", "median", "status", "gets"]
_PREPARING = ("**Preparing ccdred: first run only.** The kernels are being compiled "
              "(one to three minutes on 2 cores); the views appear by themselves when they are "
              "ready. `ccdred prepare` does this once after install.")
#: The tabs, in order; a view is computed only while its tab is on show
_TABS = ("Frames", "Clipping", "Before / after", "Masters", "Explore", "Detector")
_START_HERE = ("**Start here:** pick a night, look at the frames' levels, then move the "
               "threshold and watch the clipped pixels; *Reduce night* writes the products.")


class Dashboard(pn.viewable.Viewer):
    """The ccdred dashboard of one browser session: the layout, and what each view draws.

    When the views are drawn and shown is its ``scheduler``'s (a
    :class:`~ccdred.views.ViewScheduler`), which follows the pipeline's parameters.
    """

    pipeline = param.ClassSelector(class_=Pipeline)
    job = param.ClassSelector(class_=ReductionJob)
    night = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                           doc="night folder under the data root")
    status = param.String(default="", doc="the night on show, or why a choice was refused")
    library_status = param.String(default="", doc="why a library folder was refused")
    tab = param.Selector(default=_TABS[0], objects=list(_TABS), doc="the tab on show")

    def __init__(self, data_root, output_root, night=None, ready=None, **params):
        """``ready``: an event set once the first-time preparation is done (None: it is)."""
        self._ready = ready
        self._data_root = Path(data_root).resolve()
        super().__init__(pipeline=Pipeline(), job=ReductionJob(output_root), **params)
        self.scheduler = ViewScheduler(self.param.tab, logger=_LOG)
        self.scheduler.follow(self.pipeline)
        self.param.night.objects = list_nights(self._data_root, exclude=[output_root])
        self.folder_input = pn.widgets.TextInput(name="or type a folder under the data root",
                                                  placeholder="night folder")
        self.folder_input.param.watch(self._typed_folder, "value")
        self.library_input = pn.widgets.TextInput(name="Library folder, under the data root",
                                                   placeholder="none")
        self.library_input.param.watch(self._typed_library, "value")
        self.night = night if night in self.param.night.objects else next(iter(self.param.night.objects), None)

    @classmethod
    def from_args(cls, argv=None) -> Dashboard:
        """A dashboard configured from ``panel serve app.py --args ...``."""
        options = app_options(argv)
        ready = None if is_prepared(options.cache) else prepare_in_background(
            options.cache, report=lambda line: print(f"ccdred: {line}", flush=True))
        return cls(options.data_root, options.output_root, night=options.night, ready=ready)

    @property
    def views(self) -> list[View]:
        """Every view of the page, as the tabs made them."""
        return self.scheduler.views

    # -- actions (they may set the status; views never do) ----------------------------

    @param.depends("night", watch=True, on_init=True)
    def _open_night(self) -> None:
        if self.night is not None:
            self._set_night(self.night)

    def _typed_folder(self, event) -> None:
        if event.new:
            self._set_night(event.new)

    def _set_night(self, relative) -> None:
        try:
            folder = resolve_under(self._data_root, relative)
        except InputError as err:
            shown = self.status.removeprefix("Night: ") if self.status.startswith("Night: ") else ""
            self.status = f"Error: {err}" + (f" (still showing {shown})" if shown else "")
            return
        self.pipeline.param.update(night=str(folder), library_choice={})  # chosen for another night
        name = folder.relative_to(self._data_root).as_posix()
        # a typed folder that the list does not hold leaves the list empty, not showing
        # the night before (choosing that one again then opens it)
        listed = name if name in self.param.night.objects else None
        if self.night != listed:
            self.night = listed
        self.status = f"Night: {name}"

    def _typed_library(self, event) -> None:
        """Use the calibration library typed (a folder under the data root; empty: none);
        a folder refused keeps the last one, and says why."""
        if not event.new.strip():
            self.pipeline.param.update(library=None, library_choice={})
            self.library_status = ""
            return
        try:
            folder = resolve_under(self._data_root, event.new.strip())
        except InputError as err:
            self.library_status = f"Error: {err}"
            return
        self.pipeline.param.update(library=str(folder), library_choice={})  # chosen in another
        self.library_status = ""

    def _library_choices(self, plan) -> pn.Column:
        """A menu per library master of the plan: every fitting one (taken when, how long
        before the night), the one used selected; choosing another sets the pipeline's
        ``library_choice`` (the nearest, the default, is no choice)."""
        menus = []
        for master in [] if plan is None else [m for m in plan.masters.values() if m.library]:
            menu = pn.widgets.Select(label=f"{master.role} from the library", options={
                f"{c.date_obs} ({c.age_words()}): {c.path.name}": c.path.name
                for c in master.candidates}, value=master.library.path.name,
                sizing_mode="stretch_width")
            menu.param.watch(lambda event, role=master.role, nearest=master.candidates[0]:
                             self._choose_library_master(role, event.new, nearest), "value")
            menus.append(menu)
        return pn.Column(*menus, margin=0, sizing_mode="stretch_width")

    def _choose_library_master(self, role: str, file: str, nearest) -> None:
        choice = {name: chosen for name, chosen in self.pipeline.library_choice.items()
                  if name != role}
        self.pipeline.library_choice = choice if file == nearest.path.name else {**choice,
                                                                                 role: file}

    def _library_view(self, plan, library_status):
        """Where each master of the night comes from: its frames, or the library (which
        file, taken when); and why a library folder was refused."""
        if plan is None:
            sources = "No night chosen."
        else:
            sources = "\n".join(f"- {master.label}: {self._public(master.source())}"
                                for master in plan.masters.values()) or "This night makes no master."
        text = f"**{library_status}**\n\n{sources}" if library_status else sources
        # a library file's long name wraps anywhere rather than leaving the card
        return pn.pane.Markdown(text, sizing_mode="stretch_width",
                                stylesheets=[":host { overflow-wrap: anywhere; }"])

    async def _reduce(self, _event) -> None:
        await self.job.run(self.pipeline.night, self.pipeline)

    # -- views ------------------------------------------------------------------------

    @param.depends("status")
    def _status_view(self):
        if not self.status:
            return pn.Spacer()
        kind = "danger" if self.status.startswith("Error") else "info"
        return pn.pane.Alert(self.status, alert_type=kind, sizing_mode="stretch_width")

    def _job_view(self):
        """The last reduction: progress, then what it made, with the products to download.

        Made once; its parts follow the job's parameters, so that progress
        steps update a bar rather than rebuild the view.
        """
        job = self.job
        finished = pn.bind(lambda output, running, error: bool(output) and not running
                           and not error, job.param.output, job.param.running, job.param.error)
        return pn.Column(
            pn.indicators.Progress(value=job.param.done, max=job.param.total,
                                   visible=job.param.running, sizing_mode="stretch_width"),
            pn.pane.Alert(job.param.status, visible=pn.bind(bool, job.param.status),
                          alert_type=pn.bind(lambda e: "danger" if e else "success",
                                             job.param.error), sizing_mode="stretch_width"),
            pn.pane.Markdown(pn.bind(lambda e: "\n".join(
                f"- {self._public(line)}" for line in e.splitlines()), job.param.error)),
            pn.pane.Markdown(pn.bind(lambda lines: "\n".join(["```text", *lines, "```"]) if lines
                                     else "", job.param.summary), visible=finished),
            pn.widgets.FileDownload(callback=job.archive, filename=pn.bind(
                lambda output: f"{Path(output).name}.zip" if output else "products.zip",
                job.param.output), label="Download the products and ccdred.log (zip)",
                button_type="success", visible=finished),
            sizing_mode="stretch_width")

    def _levels_view(self, levels):
        """The night's problems and notes (what a reduction would warn of), the frames'
        levels, and the frame table."""
        plan = self.pipeline.plan
        alerts = [alert for alert in (
            self._listed("This night cannot be reduced yet:", plan.problems, "warning"),
            self._listed("Notes on this night:", (*plan.catalogue.notes, *plan.notes), "info"))
            if alert is not None]
        if not levels:
            return pn.Column(*alerts, sizing_mode="stretch_width") if len(alerts) > 1 else \
                next(iter(alerts), None)
        return pn.Column(*alerts, plots.frame_levels_plot(levels, self.pipeline.upper_limit,
                                                          self.pipeline.lower_limit),
                         self.frame_table(levels), sizing_mode="stretch_width")

    def _listed(self, title: str, items, alert_type: str) -> pn.pane.Alert | None:
        """An alert listing ``items`` (problems or notes) under ``title``; None for none."""
        lines = [f"- {self._public(str(item))}" for item in items]
        return pn.pane.Alert("\n".join([f"**{title}**", "", *lines]),
                             alert_type=alert_type) if lines else None

    def frame_table(self, levels):
        """The frames, one per row; a frame's type can be changed, or the frame ignored."""
        table = pn.widgets.Tabulator(
            pd.DataFrame(levels, columns=_TABLE_COLUMNS), show_index=False, disabled=False,
            editors={**{c: None for c in _TABLE_COLUMNS}, "type": {
                "type": "list", "values": [*FRAME_TYPES, "ignore"]}},
            formatters={"median": NumberFormatter(format="0.0"),
                        "exptime": NumberFormatter(format="0.[000]")},
            layout="fit_data_stretch", height=420, sizing_mode="stretch_width",
            pagination=None)
        table.on_edit(lambda event: event.column == "type" and self.retype(
            table.value.iloc[event.row]["file"], event.value))
        return pn.Column("Change a frame's **type** here (or *ignore* it); the files are not "
                         "touched.", table, sizing_mode="stretch_width")

    def retype(self, file_name: str, frame_type: str) -> None:
        """Treat one file as another frame type (or 'ignore' it); the file is not touched."""
        self.pipeline.frame_types = {**self.pipeline.frame_types, glob.escape(file_name): frame_type}

    def _before_after_view(self, shown, mask):
        name, raw, calibrated = shown
        layout = plots.before_after(raw, calibrated, name, mask)
        filter_name = self.pipeline.object_filter(name)
        for element in layout:
            self._inspect_on_tap(element, "flat", filter_name)
        return pn.Column(_panes(layout, linked_axes=True),
                         f"Click a pixel to see the samples of the master flat {filter_name} "
                         f"(this frame's) there.", sizing_mode="stretch_width")

    def _inspect_on_tap(self, source, inspect, filter_name=None) -> None:
        """A tap on this image (an element or a DynamicMap of images) inspects that pixel of
        the ``inspect`` ('dark' or 'flat') master (with ``filter_name``: the flat of that
        filter, then on show)."""
        hv.streams.Tap(source=source).add_subscriber(
            lambda x=None, y=None: self.inspect(inspect, x, y, filter_name))

    def _masters_view(self, dark, flat):
        """Each master beside its histogram; the two masters do not share axes."""
        def own_axes(layout):
            return _panes(layout, linked_axes=False)

        label = self.pipeline.plan.masters[dark[0]].label
        dark_preview = plots.master_preview(dark[1].data, f"{label} ({dark[0]})")
        flat_preview = plots.master_preview(flat[1].data, f"master flat {flat[0]}",
                                            label="relative response")
        self._inspect_on_tap(next(iter(dark_preview)), "dark")
        self._inspect_on_tap(next(iter(flat_preview)), "flat")
        return pn.Column("Click a pixel of a master to see its samples below.",
                         own_axes(dark_preview), own_axes(flat_preview),
                         sizing_mode="stretch_width")

    def _clip_view(self):
        """Clip maps and rejected samples per frame, as DynamicMaps: a change sends new data
        to the plots on show instead of new plots; each plot has its own axes."""
        def dynamic(build, shown, empty, order=0):  # the maps: order 0, shown at once
            plot = hv.DynamicMap(self._reactive(build, shown, tab="Clipping", error=empty,
                                                order=order)).opts(framewise=True)
            return pn.pane.HoloViews(plot, linked_axes=False, sizing_mode="stretch_width")

        pipeline = self.pipeline
        # the maps first, each shown as soon as its master is made; then what is drawn from
        # the masters made by then. The summary asks each master itself, to say each one's
        # problem on its own line.
        summary = self.scheduler.view("Clipping", self._clip_summary,
                                      depends_on=[pipeline.shown_dark, pipeline.shown_flat])
        return pn.Column(
            pn.panel(pn.bind(summary.drawn, summary.param.count), lazy=True),
            "The maps and bars count the samples not used: left out before the combination, or "
            "rejected by it. Click a pixel of a map to see its samples below.",
            pn.Row(self._tappable(dynamic(plots.dark_clip_map, pipeline.shown_dark,
                                          plots.empty_image), "dark"),
                   self._tappable(dynamic(plots.flat_clip_map, pipeline.shown_flat,
                                          plots.empty_image), "flat")),
            self._pixel_view("Clipping"),
            pn.Row(dynamic(lambda shown: plots.dark_rejections(shown, pipeline.frames_of(shown[0])),
                           pipeline.shown_dark, plots.empty_bars, order=1),
                   dynamic(lambda shown: plots.flat_rejections(shown, pipeline.flat_frames(shown[0])),
                           pipeline.shown_flat, plots.empty_bars, order=1)),
            sizing_mode="stretch_width")

    def _pixel_view(self, tab: str):
        """The inspected pixel's samples, following the parameters and the taps, on ``tab``
        (drawn after the tab's other views)."""
        plot = hv.DynamicMap(self._reactive(plots.pixel_samples, self.pipeline.shown_pixel,
                                            tab=tab, error=plots.empty_samples))
        return pn.Column(pn.panel(self._reactive(plots.pixel_summary, self.pipeline.shown_pixel,
                                                 tab=tab, error=_said_elsewhere), lazy=True),
                         pn.pane.HoloViews(plot, linked_axes=False))

    def _tappable(self, pane, inspect):
        """``pane`` (a HoloViews pane), its plot inspecting the pixel tapped."""
        self._inspect_on_tap(pane.object, inspect)
        return pane

    def inspect(self, master: str, x, y, filter_name=None) -> None:
        """Show the samples of pixel (x, y) of the 'dark' or 'flat' master on show (with
        ``filter_name``: the master flat of that filter, shown from then on)."""
        if x is not None and y is not None:
            chosen = {} if filter_name is None else {"filter": filter_name}
            self.pipeline.param.update(inspect=master, pixel_x=max(0, round(x)),
                                       pixel_y=max(0, round(y)), **chosen)

    def _explore_view(self):
        """The threshold sweep of the inspected master (a click sets the threshold), the
        inspected pixel, and A/B: the masters' change since the parameters were pinned."""
        def sweep(quantity):
            # A tap on a DynamicMap of overlays reaches the server only as one of the map's
            # own streams (HoloViews 1.23), beside the pipeline's parameters it follows.
            tap = hv.streams.Tap()
            tap.add_subscriber(lambda x=None, y=None: self.set_threshold(x))
            view = self._view(lambda shown: plots.threshold_sweep_plot(shown, quantity),
                              self.pipeline.shown_sweep, tab="Explore",
                              error=lambda _message: plots.empty_sweep(quantity))
            plot = hv.DynamicMap(view.drawn, streams=[tap, hv.streams.Params(view, ["count"])])
            return pn.pane.HoloViews(plot, linked_axes=False, sizing_mode="stretch_width")

        pin = pn.widgets.Button(name="Pin the current parameters as A", button_type="primary")
        pin.on_click(lambda _event: self.pipeline.pin())
        return pn.Column(
            "### Threshold sweep\nThe inspected master (*inspect* in the sidebar) combined with "
            "sigma clipping at thresholds from 1 to 5.75 (its change is from the master on show); "
            "click a point to set the threshold.",
            pn.panel(self._reactive(plots.sweep_summary, self.pipeline.shown_sweep,
                                    tab="Explore"), lazy=True),
            pn.Row(*(sweep(quantity) for quantity in plots.SWEEP_QUANTITIES),
                   sizing_mode="stretch_width"),
            "### The inspected pixel", self._pixel_view("Explore"),
            "### A/B\nPin the parameters as A, change them, and see what changed (B − A).",
            pin, pn.panel(self._reactive(self._differences_view,
                                         self.pipeline.shown_differences,
                                         tab="Explore", error=_said_elsewhere), lazy=True),
            sizing_mode="stretch_width")

    @staticmethod
    def _detector_view(shown):
        """The night's gain and read noise: the header's, the photon transfer curve's, and
        those the reduction uses."""
        header, noise, curve = shown
        parts = [pn.pane.Markdown(
            "### Gain and read noise\nThe difference of two frames at one level cancels what "
            "they share (the bias pattern, the flat field): its variance is the noise alone. "
            "Per frame, the variance of flats grows with their signal as *signal / gain*, on "
            "top of the read noise's variance: a straight line, whose slope gives the gain and "
            "whose intercept the read noise. (The reduction measures the read noise from two "
            "biases directly; the curve's, from its fit's intercept, differs by the fit's "
            "uncertainty.)\n\n" + plots.detector_summary(header, noise, curve))]
        if not isinstance(curve, str):
            parts.append(pn.pane.HoloViews(plots.photon_transfer_plot(curve),
                                           sizing_mode="stretch_width"))
        return pn.Column(*parts, sizing_mode="stretch_width")

    @staticmethod
    def _hot_pixel_view(shown):
        """The dark current from the raw darks, with the hot pixels the bad-pixel mask flags."""
        if shown is None:
            return pn.pane.Markdown("### Hot pixels\nThis night has no darks of its own.")
        return pn.Column(
            pn.pane.Markdown(
                f"### Hot pixels\nDark current per pixel from the raw darks (their median, "
                f"less the bias: a master dark clipped frame by frame leaves hot pixels out). "
                f"Circled: the pixels `ccdred reduce --bad-pixels` flags as hot (above the "
                f"median by {HOT_SIGMA:g} robust standard deviations)."),
            pn.pane.HoloViews(plots.hot_pixel_map(*shown), linked_axes=False),
            sizing_mode="stretch_width")

    def set_threshold(self, x) -> None:
        """Set the threshold from a click on the sweep, to the nearest 0.05 (nothing when the
        click missed)."""
        if x is not None:
            self.pipeline.threshold = max(0.1, round(20 * float(x)) / 20)

    @staticmethod
    def _differences_view(differences):
        if not differences:
            return pn.pane.Markdown("Nothing pinned yet: pin the parameters as A, then change "
                                    "them.")
        return pn.Column(
            pn.pane.Markdown("  \n".join(plots.difference_summary(name, difference)
                                         for name, difference in differences)),
            _panes([plots.difference_image(name, difference) for name, difference in differences],
                   linked_axes=False),
            sizing_mode="stretch_width")

    def _reactive(self, build, *methods, tab: str, error=None, order: int = 1):
        """``build(*the values of methods)``, as a function bound to the view's drawings (see
        :class:`~ccdred.views.View`): drawn again only when its tab is on show, in the thread that made
        the change, for the latest change only, and shown with the change's other views in
        one update.
        An input problem becomes ``error(message)`` (an alert by default), with no
        notification and no status change.
        """
        view = self._view(build, *methods, tab=tab, error=error, order=order)
        return pn.bind(view.drawn, view.param.count)

    def _view(self, build, *methods, tab: str, error=None, order: int = 1) -> View:
        """The :class:`~ccdred.views.View` of ``build(*the values of methods)`` on ``tab``,
        drawn in ``order`` among a change's views (see :meth:`~ccdred.views.ViewScheduler.view`)."""
        def draw():
            try:
                return build(*(method() for method in methods))
            except InputError as err:
                message = self._public(str(err))
                return error(message) if error else pn.pane.Alert(message, alert_type="warning")

        return self.scheduler.view(tab, draw, depends_on=methods, order=order)

    def _clip_summary(self) -> str:
        """One line per master on show: what became of its samples, or its problem (one each)."""
        lines, pipeline = [], self.pipeline
        for master, shown, prefix in (("dark", pipeline.shown_dark, ""),
                                      ("flat", pipeline.shown_flat, "flat ")):
            try:
                (name, made), counts = shown(), pipeline.sample_counts(master)
            except InputError as err:
                lines.append(self._public(str(err)))
                continue
            n_frames = made.combination.n_frames
            lines.append(plots.summary_line(counts, prefix + name)
                         + plots.samuelson_note(n_frames, pipeline.clip()))
        return "  \n".join(dict.fromkeys(lines))  # a problem of both masters, said once

    def _public(self, text: str) -> str:
        """A message as users of a shared server see it: paths relative to the data root."""
        return text.replace(f"{self._data_root}/", "").replace(str(self._data_root), ".")

    # -- layout -----------------------------------------------------------------------

    def _sidebar(self) -> list:
        def card(title, parameters, collapsed=True):
            return pn.Card(*fields(self.pipeline, parameters), title=title, collapsed=collapsed,
                           sizing_mode="stretch_width")

        reduce_button = pn.widgets.Button(name="Reduce night", button_type="primary",
                                          disabled=self.job.param.running)
        reduce_button.on_click(self._reduce)
        def combining(parameters):
            return pn.Column(*fields(self.pipeline, parameters, _CLIP_WIDGETS), margin=0,
                             sizing_mode="stretch_width")

        method_options = [name for name in names(ClipParameters) if name not in _ALWAYS_SHOWN]
        return [pn.widgets.Select.from_param(self.param.night, name="Night"), self.folder_input,
                self._status_view, "### Combining",
                combining(["rejection", "threshold", "cenfunc", "maxiters"]),
                pn.panel(pn.bind(lambda rejection: combining(
                    [n for n in REJECTION_OPTIONS[rejection] if n in method_options]),
                    self.pipeline.param.rejection)),
                combining(["frame_clip", "upper_limit", "lower_limit"]),
                "### Show", pn.Param(self.pipeline, parameters=["calibration", "filter",
                                                                "object_frame", "inspect"],
                                     show_name=False),
                card("Calibration", names(CalibrationParameters)),
                card("Detector", names(DetectorParameters)),
                card("Masks", ["bad_pixels", "cosmic_rays"]),
                pn.Card(self.library_input, *fields(self.pipeline, ["library_max_age"]),
                        pn.panel(pn.bind(self._library_view, self.pipeline.param.plan,
                                         self.param.library_status)),
                        pn.panel(pn.bind(self._library_choices, self.pipeline.param.plan)),
                        title="Calibration library", collapsed=True),
                card("Header keywords", names(KeywordParameters)),
                reduce_button, pn.Card(self._same_elsewhere(), title="The same outside the page",
                                       collapsed=True)]

    def _same_elsewhere(self) -> pn.pane.Markdown:
        """The command and the Python call that make the masters on show (frame-type edits
        included), to copy; they follow the parameters, shown with the views' drawings of
        the same change (one update of the page)."""
        pane = pn.pane.Markdown(self._reproduction(), sizing_mode="stretch_width")
        self.pipeline.param.watch(lambda *_: self.scheduler.set_with_drawings(
            pane, "object", self._reproduction()), ["night", *names(ReductionParameters)])
        return pane

    def _reproduction(self) -> str:
        if self.pipeline.night is None:
            return "Choose a night first."
        night = self._public(self.pipeline.night)
        return (f"In the data folder, on the command line:\n```bash\n"
                f"{self.pipeline.command(night)}\n```\nIn Python:\n```python\nimport ccdred\n"
                f"{self.pipeline.call(night)}\n```")

    def tabs(self) -> pn.Tabs:
        """The views, one tab each. Only the tab on show computes (see :meth:`_reactive`),
        so a parameter change recomputes only what it draws; a tab shown again catches up."""
        pipeline = self.pipeline

        def pane(tab, build, *methods):
            return pn.panel(self._reactive(build, *methods, tab=tab), lazy=True,
                            loading_indicator=True)

        def with_pixel(tab, build, *methods):
            return pn.Column(pane(tab, build, *methods), self._pixel_view(tab),
                             sizing_mode="stretch_width")

        views = {"Frames": pane("Frames", self._levels_view, pipeline.frame_levels),
                 "Clipping": self._clip_view(),
                 "Before / after": with_pixel("Before / after", self._before_after_view,
                                              pipeline.shown_calibrated, pipeline.shown_mask),
                 "Masters": with_pixel("Masters", self._masters_view, pipeline.shown_dark,
                                       pipeline.shown_flat),
                 "Explore": self._explore_view(),
                 "Detector": pn.Column(
                     pane("Detector", self._detector_view, pipeline.shown_detector),
                     pane("Detector", self._hot_pixel_view, pipeline.shown_hot_pixels),
                     sizing_mode="stretch_width")}
        tabs = pn.Tabs(*views.items(), active=_TABS.index(self.tab), dynamic=True,
                       sizing_mode="stretch_width")
        tabs.param.watch(lambda event: setattr(self, "tab", _TABS[event.new]), "active")
        return tabs

    def __panel__(self):
        body = pn.Column(self._job_view(), sizing_mode="stretch_width")
        if self._ready is None or self._ready.is_set():
            body.append(self.tabs())
        else:
            body.append(pn.pane.Alert(_PREPARING, alert_type="info"))
            self._when_ready(lambda: body.__setitem__(-1, self.tabs()))
        sidebar = pn.Column(*self._sidebar(), sizing_mode="stretch_width")
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            self.scheduler.page = pn.state.curdoc
            pn.state.on_session_destroyed(lambda _context: _forget_links(sidebar))
        main = [pn.pane.Markdown(_START_HERE), body]
        if self.scheduler.page is None:  # a notebook: a template's page would load its files from a server
            return pn.Row(pn.Column(sidebar, width=340), pn.Column(*main, sizing_mode="stretch_width"))
        return pn.template.FastListTemplate(
            title="ccdred: CCD reduction", sidebar=[sidebar], main=main, sidebar_width=340,
            accent="#1f5f8b", design=page_design())

    def _when_ready(self, show) -> None:
        """Call ``show`` (in this session) once the first-time preparation has finished."""
        def check():
            if self._ready.is_set():
                self._waiting.stop()
                show()

        # Held here: a periodic callback nothing refers to may be collected before it fires.
        self._waiting = pn.state.add_periodic_callback(check, period=1000)


def _forget_links(layout) -> None:
    """Drop the JavaScript links of ``layout``'s widgets from Panel's class-wide registry.

    A widget's link holds the widgets it links to, and the threshold's
    editable slider links its own text field: so the registry's weak key is
    never released, and with it the session's widgets, pipeline and dashboard
    stayed alive after the session closed (Panel 1.9).
    """
    forget_links(layout.select(pn.widgets.Widget))


def _said_elsewhere(_message: str) -> str:
    """Nothing: the problem is said once, by the tab's first view."""
    return ""


def _panes(elements, linked_axes: bool) -> pn.Row:
    """Plots side by side, one pane each: a HoloViews layout (a Bokeh grid) beside other plots
    in a tab that is not the first one renders empty (Panel 1.9, Bokeh 3.9)."""
    return pn.Row(*(pn.pane.HoloViews(element, linked_axes=linked_axes) for element in elements))
