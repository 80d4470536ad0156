"""The Panel dashboard: widgets wired to a :class:`~ccdred.pipeline.Pipeline`.

Thin by design: every number comes from the pipeline, every picture from
:mod:`ccdred.plots`. Each browser session gets its own ``Pipeline`` (its own
parameters, selections and errors); raw frames and masters are shared through
the pipeline's process-wide caches. Reads happen only under the data root and
writes only under the output root.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import holoviews as hv
import numpy as np
import panel as pn
import param

from . import plots
from .demo import NightSpec, demo_night
from .errors import InputError
from .parameters import ClipParameters, KeywordParameters, ReductionParameters
from .pipeline import Pipeline, resolve_under
from .reduce import reduce_night

__all__ = ["Dashboard", "app_options"]

#: Reductions run here, off the server's event loop, shared by all sessions.
_REDUCTIONS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccdred-reduce")
_CLIP = ("pipeline.catalogue", "pipeline.threshold", "pipeline.cenfunc", "pipeline.maxiters",
         "pipeline.frame_clip")
_DARK_PARAMETERS = (*_CLIP, "pipeline.exptime")
_FLAT_PARAMETERS = (*_CLIP, "pipeline.filter", "pipeline.upper_limit", "pipeline.lower_limit")
_CLIP_WIDGETS = {
    "threshold": {"type": pn.widgets.EditableFloatSlider, "fixed_start": 0.1},
    "upper_limit": pn.widgets.FloatInput,
    "lower_limit": pn.widgets.FloatInput,
}


def app_options(argv=None) -> argparse.Namespace:
    """Options of ``panel serve app.py --args ...`` (environment variables as defaults)."""
    cache = Path(os.environ.get("CCDRED_CACHE", Path.home() / ".cache" / "ccdred"))
    parser = argparse.ArgumentParser(prog="app.py")
    parser.add_argument("--data-root", default=os.environ.get("CCDRED_DATA_ROOT"),
                        help="folder whose sub-folders are nights (default: the demo night)")
    parser.add_argument("--output-root", default=os.environ.get("CCDRED_OUTPUT_ROOT",
                                                                cache / "products"),
                        help="folder under which 'Reduce night' writes products")
    parser.add_argument("--demo-size", type=int, default=int(os.environ.get("CCDRED_DEMO_SIZE", 1024)),
                        help="width and height of the demo night's frames")
    parser.add_argument("--cache", default=cache, help="where the demo night is generated")
    options = parser.parse_args(argv)
    if options.data_root is None:
        night = demo_night(options.cache, NightSpec(shape=(options.demo_size, options.demo_size)))
        options.data_root = night.parent
        options.night = night.name
    else:
        options.night = None
    return options


def _nights(root: Path) -> list[str]:
    """Sub-folders of the data root (and the root itself, '.') that hold files."""
    names = [p.name for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    loose_files = any(p.is_file() for p in root.iterdir())
    return (["."] if loose_files else []) + names


class Dashboard(pn.viewable.Viewer):
    """The ccdred dashboard of one browser session."""

    pipeline = param.ClassSelector(class_=Pipeline)
    night = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                           doc="night folder under the data root")
    status = param.String(default="", doc="last message for the user")
    tab = param.Integer(default=0, doc="index of the tab on show; only it is computed")

    def __init__(self, data_root, output_root, night=None, **params):
        self._data_root = Path(data_root).resolve()
        self._output_root = Path(output_root)
        super().__init__(pipeline=Pipeline(), **params)
        self.param.night.objects = _nights(self._data_root)
        self._folder_input = pn.widgets.TextInput(name="or type a folder under the data root",
                                                  placeholder="night folder")
        self._folder_input.param.watch(self._typed_folder, "value")
        self._progress = pn.indicators.Progress(value=0, max=1, visible=False, sizing_mode="stretch_width")
        self._reduce_button = pn.widgets.Button(name="Reduce night", button_type="primary")
        self._reduce_button.on_click(self._reduce)
        self.night = night if night in self.param.night.objects else next(iter(self.param.night.objects), None)

    @classmethod
    def from_args(cls, argv=None) -> Dashboard:
        """A dashboard configured from ``panel serve app.py --args ...``."""
        options = app_options(argv)
        return cls(options.data_root, options.output_root, night=options.night)

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
            self._report(str(err))
            return
        self.pipeline.night = str(folder)
        self.status = f"Night: {folder.name}"

    def _report(self, message: str) -> None:
        self.status = f"Error: {message}"
        if pn.state.notifications is not None:
            pn.state.notifications.error(message, duration=8000)

    # -- views -----------------------------------------------------------------

    def _guarded(self, tab: int, build):
        """Build a view, unless its tab is hidden (it is built when shown)."""
        if self.tab != tab:
            raise param.Skip
        try:
            return build()
        except InputError as err:
            self._report(str(err))
            return pn.pane.Alert(str(err), alert_type="danger")

    @param.depends("status")
    def _status_view(self):
        kind = "danger" if self.status.startswith("Error") else "info"
        return pn.pane.Alert(self.status, alert_type=kind) if self.status else pn.Spacer()

    @param.depends("tab", "pipeline.catalogue", "pipeline.threshold", "pipeline.cenfunc",
                   "pipeline.maxiters", "pipeline.frame_clip", "pipeline.upper_limit",
                   "pipeline.lower_limit")
    def _levels_view(self):
        def build():
            rows = self.pipeline.frame_levels()
            return pn.Column(
                plots.frame_levels_plot(rows, self.pipeline.upper_limit, self.pipeline.lower_limit),
                plots.frame_table(rows), sizing_mode="stretch_width")
        return self._guarded(0, build)

    # The clipping tab is made of DynamicMaps: a change updates the data of the plots
    # on show instead of rebuilding them, and each depends only on what it draws.

    def _master_or_none(self, getter):
        try:
            return getter()
        except InputError as err:
            self._report(str(err))
            return None

    @param.depends(*_DARK_PARAMETERS)
    def _dark_clip_map(self):
        dark = self._master_or_none(self.pipeline.master_dark)
        if dark is None:
            return plots.clip_map(np.zeros((1, 1)), 1, "no master dark")
        return plots.clip_map(dark.n_rejected, dark.n_frames,
                              f"dark {self.pipeline.exptime:g} s: rejected fraction")

    @param.depends(*_FLAT_PARAMETERS)
    def _flat_clip_map(self):
        flat = self._master_or_none(self.pipeline.master_flat)
        if flat is None:
            return plots.clip_map(np.zeros((1, 1)), 1, "no master flat")
        return plots.clip_map(flat.combine.n_rejected, flat.combine.n_frames,
                              f"flat {self.pipeline.filter}: rejected fraction")

    @param.depends(*_DARK_PARAMETERS)
    def _dark_rejections(self):
        dark = self._master_or_none(self.pipeline.master_dark)
        if dark is None:
            return plots.rejected_per_frame([], [], "no master dark")
        names = [f.path.name for f in self.pipeline.catalogue.darks(self.pipeline.exptime)]
        return plots.rejected_per_frame(dark.n_rejected_per_frame, names,
                                        f"dark {self.pipeline.exptime:g} s")

    @param.depends(*_FLAT_PARAMETERS)
    def _flat_rejections(self):
        flat = self._master_or_none(self.pipeline.master_flat)
        if flat is None:
            return plots.rejected_per_frame([], [], "no master flat")
        frames = self.pipeline.catalogue.flats(self.pipeline.filter)
        names = [f.path.name for f, ok in zip(frames, flat.accepted, strict=True) if ok]
        return plots.rejected_per_frame(flat.combine.n_rejected_per_frame, names,
                                        f"flat {self.pipeline.filter}")

    @param.depends(*dict.fromkeys(_DARK_PARAMETERS + _FLAT_PARAMETERS))
    def _clip_summary(self) -> str:
        dark = self._master_or_none(self.pipeline.master_dark)
        flat = self._master_or_none(self.pipeline.master_flat)
        lines = [_summary_line(dark, f"dark {self.pipeline.exptime:g} s") if dark else "",
                 _summary_line(flat.combine, f"flat {self.pipeline.filter}") if flat else ""]
        return "  \n".join(line for line in lines if line)

    def _clip_view(self):
        def dynamic(method):
            return pn.pane.HoloViews(hv.DynamicMap(method).opts(framewise=True),
                                     sizing_mode="stretch_width")

        return pn.Column(
            pn.pane.Markdown(self._clip_summary),
            pn.Row(dynamic(self._dark_clip_map), dynamic(self._flat_clip_map)),
            pn.Row(dynamic(self._dark_rejections), dynamic(self._flat_rejections)),
            sizing_mode="stretch_width")

    @param.depends("tab", "pipeline.catalogue", "pipeline.object_frame", "pipeline.threshold",
                   "pipeline.cenfunc", "pipeline.maxiters", "pipeline.frame_clip",
                   "pipeline.upper_limit", "pipeline.lower_limit")
    def _before_after_view(self):
        def build():
            name = self.pipeline.object_frame
            return plots.before_after(self.pipeline.raw_object(), self.pipeline.calibrated(), name)
        return self._guarded(2, build)

    @param.depends("tab", "pipeline.catalogue", "pipeline.exptime", "pipeline.filter",
                   "pipeline.threshold", "pipeline.cenfunc", "pipeline.maxiters",
                   "pipeline.frame_clip", "pipeline.upper_limit", "pipeline.lower_limit")
    def _masters_view(self):
        def build():
            dark = plots.master_preview(self.pipeline.master_dark().data,
                                        f"master dark {self.pipeline.exptime:g} s")
            flat = plots.master_preview(self.pipeline.master_flat().data,
                                        f"master flat {self.pipeline.filter}", label="relative response")
            return pn.Column(dark, flat, sizing_mode="stretch_width")
        return self._guarded(3, build)

    # -- reduction -------------------------------------------------------------

    async def _reduce(self, event) -> None:
        night = Path(self.pipeline.night)
        stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
        out = self._output_root / f"{night.name}_{stamp}"
        values = {k: getattr(self.pipeline, k) for k in _names(ReductionParameters)}
        done = {"done": 0, "total": 1}

        def progress(step, total, _message):
            done.update(done=step, total=total)

        self._reduce_button.disabled = True
        self._progress.visible = True
        self.status = f"Reducing {night.name} ..."
        future = asyncio.get_running_loop().run_in_executor(
            _REDUCTIONS, _reduce_one_night, night, out, ReductionParameters(**values), progress)
        try:
            while not future.done():
                self._progress.max, self._progress.value = done["total"], done["done"]
                await asyncio.sleep(0.25)
            result = await future
            self.status = f"Reduced {night.name}: {len(result.products)} products in {out}"
        except InputError as err:
            self._report(str(err))
        finally:
            self._reduce_button.disabled = False
            self._progress.visible = False

    # -- layout ----------------------------------------------------------------

    def _sidebar(self) -> list:
        clip = pn.Param(self.pipeline, parameters=_names(ClipParameters),
                        widgets=_CLIP_WIDGETS, show_name=False, name="Combining")
        select = pn.Param(self.pipeline, parameters=["exptime", "filter", "object_frame"],
                          show_name=False)
        keywords = pn.Card(pn.Param(self.pipeline, parameters=_names(KeywordParameters),
                                    show_name=False),
                           title="Header keywords", collapsed=True)
        return [pn.widgets.Select.from_param(self.param.night, name="Night"), self._folder_input,
                "### Combining", clip, "### Show", select, keywords,
                self._reduce_button, self._progress, self._status_view]

    def __panel__(self):
        tabs = pn.Tabs(
            ("Frames", pn.panel(self._levels_view, defer_load=False, loading_indicator=True)),
            ("Clipping", self._clip_view()),
            ("Before / after", pn.panel(self._before_after_view, loading_indicator=True)),
            ("Masters", pn.panel(self._masters_view, loading_indicator=True)),
            dynamic=True, sizing_mode="stretch_width")
        tabs.link(self, active="tab")
        return pn.template.FastListTemplate(
            title="ccdred: CCD reduction", sidebar=self._sidebar(), main=[tabs],
            sidebar_width=340, accent="#1f5f8b")


def _reduce_one_night(night: Path, out: Path, parameters, progress):
    """Reduce here, or on the Dask cluster named by ``CCDRED_SCHEDULER``."""
    scheduler = os.environ.get("CCDRED_SCHEDULER")
    if not scheduler:
        return reduce_night([night], out, parameters, progress=progress)
    from .cluster import connect, reduce_nights_on_cluster

    with connect(scheduler) as client:
        return reduce_nights_on_cluster([([night], out)], client, parameters, progress=progress)[0]


def _names(parameters: type[param.Parameterized]) -> list[str]:
    return [name for name in parameters.param if name != "name"]


def _summary_line(result, title: str) -> str:
    rejected = int(np.sum(result.n_rejected))
    total = result.n_frames * result.n_used.size
    return f"**{title}**: {rejected:,} of {total:,} samples rejected ({100 * rejected / total:.2f} %)"

