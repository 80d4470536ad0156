"""Nothing outside the server: the served dashboard and an exported notebook ask no other host.

A classroom server may have no internet, and every request to another host tells that
host who is in the class. Here Chromium may reach only the server (for an exported
notebook, only the file itself): every other request is aborted and recorded. The page
must ask for nothing else, and still draw its plots with no error in its console.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest

from ccdred.prepare import prepare
from ccdred.teaching import export_html
from ccdred.testing import serve_app

from .conftest import REPO
from .test_browser import browser  # noqa: F401 (a fixture: Chromium, or why it is missing)
from .test_walk import Page, _look_at

pytestmark = pytest.mark.browser

SIZE = 64  # the demo night's frames: small, to keep the test quick
#: Local to a browser, asking no host: the page's own data and objects
_LOCAL_SCHEMES = ("data", "blob")


class Fenced:
    """A browser whose pages reach only what ``allowed(url)`` accepts: every other request
    is aborted and recorded, with every console error and page error (for :class:`Page`)."""

    def __init__(self, browser, allowed):
        self.browser, self.allowed = browser, allowed
        self.blocked: list[str] = []
        self.errors: list[str] = []

    def new_page(self, **options):
        page = self.browser.new_page(**options)
        page.route("**/*", self._route)
        page.on("console", lambda message: self.errors.append(f"console: {message.text}")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        return page

    def _route(self, route):
        if self.allowed(route.request.url):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Kernels compiled and the small demo night simulated, as after ``ccdred prepare``."""
    folder = tmp_path_factory.mktemp("offline-cache")
    prepare(folder, demo_size=SIZE)
    return folder


def test_the_served_page_asks_no_other_host_and_draws_its_plots(browser, cache):  # noqa: F811
    env = {**os.environ, "CCDRED_CACHE": str(cache), "CCDRED_DEMO_SIZE": str(SIZE)}
    with serve_app(env=env) as (_process, url):  # `panel serve app.py`: the demo night
        server = urlsplit(url).netloc
        fenced = Fenced(browser, lambda asked: urlsplit(asked).netloc == server
                        or urlsplit(asked).scheme in _LOCAL_SCHEMES)
        page = Page(fenced, url)
        shown = _look_at(page)  # the Frames and Clipping tabs, drawn
        page.page.close()
    assert fenced.blocked == []
    assert fenced.errors == []
    assert _has_data(shown["Frames"], "median"), shown
    assert _has_data(shown["Clipping"], "image") and _has_data(shown["Clipping"], "rejected"), shown


def test_an_exported_notebook_asks_no_other_host_and_draws_its_plots(browser, cache,  # noqa: F811
                                                                     tmp_path, monkeypatch):
    monkeypatch.delenv("CCDRED_NIGHT", raising=False)
    monkeypatch.setenv("CCDRED_CACHE", str(cache))
    monkeypatch.setenv("CCDRED_DEMO_SIZE", str(SIZE))
    html = export_html(_plot_and_dashboard(tmp_path), timeout=300)
    fenced = Fenced(browser, lambda asked: urlsplit(asked).scheme in ("file", *_LOCAL_SCHEMES))
    page = Page(fenced, html.as_uri())  # waits for the dashboard
    frames, images = page.plots(), _images(page.page)
    page.page.close()
    assert fenced.blocked == []
    assert fenced.errors == []
    assert _has_data(frames, "median"), frames  # the dashboard (Panel's rendering)
    assert images >= 2  # raw and calibrated (HoloViews' own rendering)


def _plot_and_dashboard(folder: Path) -> Path:
    """A notebook of notebook 4's start and first plot, then notebook 5's dashboard cell."""
    four, five = (nbformat.read(next((REPO / "notebooks").glob(f"0{n}-*.ipynb")), as_version=4)
                  for n in (4, 5))
    dashboard = next(cell for cell in five.cells if "Dashboard(" in cell.source)
    products = nbformat.v4.new_code_cell(f"from pathlib import Path\n"
                                         f"out = Path({str(folder / 'reduced')!r})")
    four.cells = [*four.cells[:3], products, dashboard]
    notebook = folder / "plot-and-dashboard.ipynb"
    nbformat.write(four, notebook)
    return notebook


def _has_data(sources: list[str], column: str) -> bool:
    """Whether a data source (as :meth:`Page.plots` describes them: 'name:length:sum ...')
    has a non-empty ``column``."""
    return any(name == column and int(length) > 0
               for source in sources for name, length, _sum in
               (item.split(":") for item in source.split()))


def _images(page) -> int:
    """How many data sources of the page hold a non-empty image."""
    return page.evaluate("""() => {
        let found = 0;
        for (const doc of Bokeh.documents)
            for (const model of doc.all_models) {
                if (!model.data || !model.selected) continue;
                const data = model.data instanceof Map ? Object.fromEntries(model.data)
                                                       : model.data;
                if (data.image && data.image.length) found++;
            }
        return found;
    }""")
