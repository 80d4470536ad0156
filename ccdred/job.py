"""A reduction job: one "Reduce night" of the dashboard, as ``param`` state.

The job runs the batch reduction (in process, or on the Dask cluster named
by ``CCDRED_SCHEDULER``) in a background thread shared by every session,
and reports its progress, status and output folder as parameters. No Panel.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import param

from . import config
from .errors import InputError, RejectedFlatWarning, SuspectFlatWarning
from .night import create_output, log_to, prepare_night, run_night, summary, warnings_to
from .parameters import ReductionParameters, names

__all__ = ["ReductionJob", "reduce_one_night"]

logger = logging.getLogger(__name__)

#: Warnings the summary says already (as each flat's status).
_IN_SUMMARY = (RejectedFlatWarning, SuspectFlatWarning)

#: Reductions run here, off the server's event loop, shared by all sessions.
_REDUCTIONS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccdred-reduce")


class ReductionJob(param.Parameterized):
    """Reduce a night into a new folder under the output root, in the background."""

    running = param.Boolean(False, constant=True, doc="a reduction is under way")
    done = param.Integer(0, doc="steps done")
    total = param.Integer(1, doc="steps in all")
    status = param.String("", doc="what happened last, for the user")
    error = param.String("", doc="the problems that stopped the last reduction, one per line")
    output = param.String(None, allow_None=True, doc="folder of the last reduction's products")
    products = param.List([], doc="names of the products written")
    summary = param.List([], doc="what the last reduction made: products, dark models, flats")

    def __init__(self, output_root, **params):
        super().__init__(**params)
        self._output_root = Path(output_root)

    async def run(self, night, parameters: ReductionParameters) -> None:
        """Reduce ``night`` with a copy of ``parameters``; progress and result as parameters."""
        night = Path(night)
        stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
        out = self._output_root / f"{night.name}_{stamp}"
        values = ReductionParameters(**{k: getattr(parameters, k) for k in names(ReductionParameters)})

        def progress(step, total, _message):
            self.done, self.total = step, total

        with param.edit_constant(self):
            self.running = True
        self.param.update(done=0, total=1, error="", status=f"Reducing {night.name} ...")
        notes = []
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                _REDUCTIONS, reduce_one_night, night, out, values, progress, notes)
            said = [f"warning: {note.replace(f'{night}/', '')}" for note, category in notes
                    if not issubclass(category, _IN_SUMMARY)]
            self.param.update(output=str(out), products=[p.name for p in result.products],
                              summary=summary(result, values.step_options().limits) + said,
                              status=f"Reduced {night.name}: {len(result.products)} products in "
                                     f"{out.name}, in the server's output folder (its "
                                     f"--output-root); download them below")
        except InputError as err:
            self.param.update(error=str(err), status=f"{night.name} was not reduced")
        finally:
            with param.edit_constant(self):
                self.running = False


    def archive(self) -> io.BytesIO:
        """The last reduction's folder (products and ``ccdred.log``) as a zip file."""
        buffer = io.BytesIO()
        folder = Path(self.output)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    archive.write(path, f"{folder.name}/{path.name}")
        buffer.seek(0)
        return buffer


def reduce_one_night(night: Path, out: Path, parameters, progress, notes=None):
    """Reduce here, or on the Dask cluster named by ``CCDRED_SCHEDULER``; logged to
    ``ccdred.log`` in the output folder, which is made only once the input is accepted.

    The reduction's warnings are logged as WARNING lines and added to ``notes`` as
    ``(message, category)``, once each; none is printed to the server's log.
    """
    notes = [] if notes is None else notes
    with warnings_to(lambda *note: notes.append(note)):
        prepared = prepare_night([night], out, parameters)
    create_output(out, "refuse")
    with log_to(out / "ccdred.log"), warnings_to(lambda *note: _noted(note, notes)):
        logger.info("the same on the command line: %s", parameters.command(night))
        for message, _ in notes:
            logger.warning("%s", message)
        scheduler = config.scheduler()
        if not scheduler:
            return run_night(prepared, parameters, progress=progress)
        from .cluster import connect, reduce_nights_on_cluster

        with connect(scheduler) as client:
            return reduce_nights_on_cluster([([night], out)], client, parameters,
                                            progress=progress)[0]


def _noted(note: tuple, notes: list) -> None:
    """Keep and log a warning of the reduction, unless it was said already."""
    if note not in notes:
        notes.append(note)
        logger.warning("%s", note[0])
