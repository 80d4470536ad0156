"""A seeded random walk of the served dashboard in headless Chromium, as a class pokes at it.

Each step types a value (good, boundary, empty or bad) into a field, picks an
option, switches tab, clicks a map or opens another night. After every step:
no error on the page, no traceback in the server's log. At the end everything
is set back, and the page shows what a fresh page shows: the clip summary, the
clip maps' and bar charts' data and the frames' levels. A failure prints the
steps taken, to replay them (``WALK_STEPS`` steps per seed, ``WALK_SEEDS``).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from ccdred.demo import NightSpec, make_night
from ccdred.prepare import prepare
from ccdred.testing import CHROMIUM, CHROMIUM_ARGS, clip_summary, serve_app, sidebar_field

from .conftest import REPO, unavailable

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "test-artifacts"  # screenshots of a failed walk
WALK_SEEDS = (1, 2)
WALK_STEPS = int(os.environ.get("CCDRED_WALK_STEPS", 45))
#: The sidebar's fields and what a student types into them; the first value is the default.
FIELDS = {
    "Threshold": ["2.5", "1.7", "3.3", "0.05", "-3", "", "abc", "25"],
    "Lsigma": ["", "2", "4", "0", "-1", "x"],
    "Hsigma": ["", "2", "4", "0", "-1"],
    "Upper limit": ["38000", "100", "40000", "", "-5", "1e9"],
    "Lower limit": ["", "100", "40000", "0", "-1"],
    "Keyword exptime": ["EXPTIME", "EXPOSURE", "NOPE", ""],
    "Keyword datatype": ["IMAGETYP", "OBSTYPE", ""],
    "Trim": ["auto", "none", "[1:64,1:64]", "[bad"],
    "Overscan": ["auto", "none", "[1:2,1:128]"],
}
#: The sidebar's selections; the first option is the default.
SELECTS = {
    "Rejection": ["sigclip", "minmax", "pclip"],
    "Cenfunc": ["median", "mean"],
    "Stdfunc": ["std", "mad_std"],
    "Dark model": ["auto", "exact", "scaled", "none"],
    "Inspect": ["flat", "dark"],
}
NIGHTS = ["night1", "night2", "zz-empty"]  # a fresh page opens on the first
TABS = ["Frames", "Clipping", "Before / after", "Masters", "Explore", "Detector"]
#: The columns that identify the plots compared at the end (clip maps, bar charts, levels).
COMPARED_COLUMNS = ("image", "rejected", "median")


@pytest.fixture(scope="module")
def walk_server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} not found: install Debian's chromium", "CCDRED_REQUIRE_BROWSER")
    root = tmp_path_factory.mktemp("walk-root")
    make_night(root / "night1", NightSpec(shape=(96, 96), seed=5))
    make_night(root / "night2", NightSpec(shape=(64, 80), seed=6, filters=("B", "V")))
    (root / "zz-empty").mkdir()
    prepare(root.parent)
    log_path = tmp_path_factory.mktemp("walk-log") / "serve.log"
    with open(log_path, "w+") as log, serve_app(
            ["--data-root", root, "--output-root", tmp_path_factory.mktemp("walk-out")],
            log=log, env={**os.environ, "CCDRED_CACHE": str(root.parent)}) as (_process, url):
        yield url, log_path


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A served page and what went wrong on it (page errors, console errors)."""

    def __init__(self, browser, url):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.outside: set[str] = set()  # other hosts the page asked for (reported elsewhere)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("console", self._console)
        self.page.on("requestfailed", lambda request: self.outside.add(request.url)
                     if "127.0.0.1" not in request.url else None)
        self.page.goto(url)
        self.page.wait_for_selector("text=Reduce night", timeout=120_000)
        for card in ("Calibration", "Header keywords"):  # open the collapsed cards
            self.page.locator(".card-header", has_text=card).first.click()

    def _console(self, message):
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(f"console: {message.text}")

    def type(self, label, value) -> bool:
        """Type into a field, if it is on show (lsigma and hsigma are for sigclip only)."""
        field = sidebar_field(self.page, label) if label != "Threshold" else \
            self.page.locator(".ccdred-threshold input").first
        if not field.is_visible():
            return False
        field.fill(value)
        field.press("Enter")
        return True

    def select(self, label, option):
        box = self.page.locator(".bk-input-group", has_text=label).locator("select").first
        if option in box.locator("option").all_inner_texts():
            box.select_option(option)

    def tab(self, name):
        self.page.get_by_text(name, exact=True).first.click()

    def click_a_map(self, rng):
        canvases = [c for c in self.page.locator("canvas").all() if c.is_visible()]
        if canvases:
            box = rng.choice(canvases).bounding_box()
            if box and box["width"] > 10:
                self.page.mouse.click(box["x"] + rng.uniform(0.1, 0.9) * box["width"],
                                      box["y"] + rng.uniform(0.1, 0.9) * box["height"])

    def settle(self, seconds=0.8):
        time.sleep(seconds)

    def plots(self) -> list:
        """The data of the compared plots of the tab on show: each source's columns, lengths
        and sums, sorted."""
        return sorted(self.page.evaluate("""(wanted) => {
            const out = [];
            for (const doc of Bokeh.documents)
                for (const tabs of doc.all_models) {
                    if (!tabs.tabs || tabs.active === undefined) continue;
                    for (const model of tabs.tabs[tabs.active].child.references()) {
                    if (!model.data || !model.selected) continue;
                    const data = model.data instanceof Map ? Object.fromEntries(model.data)
                                                           : model.data;
                    const names = Object.keys(data).sort();
                    if (!names.some(name => wanted.includes(name))) continue;
                    out.push(names.map(name => {
                        const column = Array.from(data[name]).flatMap(
                            v => ArrayBuffer.isView(v) ? Array.from(v) : [v]).flat(Infinity);
                        const numbers = column.filter(v => typeof v === "number" && isFinite(v));
                        const sum = numbers.reduce((a, b) => a + b, 0);
                        return `${name}:${column.length}:${sum.toPrecision(8)}`;
                    }).join(" "));
                    }
                }
            return out;
        }""", list(COMPARED_COLUMNS)))


def _step(page: Page, rng: random.Random) -> str:
    """One random action; its description."""
    kind = rng.choice(["type", "type", "type", "select", "tab", "click", "night"])
    if kind == "type":
        label = rng.choice(sorted(FIELDS))
        value = rng.choice(FIELDS[label])
        return f"type {value!r} into {label}" + ("" if page.type(label, value) else " (hidden)")
    if kind == "select":
        label = rng.choice(sorted(SELECTS))
        option = rng.choice(SELECTS[label])
        page.select(label, option)
        return f"select {option!r} in {label}"
    if kind == "tab":
        name = rng.choice(TABS)
        page.tab(name)
        return f"tab {name}"
    if kind == "click":
        page.click_a_map(rng)
        return "click a map"
    night = rng.choice(NIGHTS)
    page.select("Night", night)
    return f"night {night}"


def _set_back(page: Page) -> None:
    """Everything as a fresh page has it, as a student would set it back."""
    page.select("Night", "night1")
    page.select("Rejection", "sigclip")  # first: sigma clipping's own options come with it
    page.settle()
    for label, options in SELECTS.items():
        page.select(label, options[0])
    page.settle()
    for label, values in FIELDS.items():
        page.type(label, values[0])
    page.settle(1.5)


def _look_at(page: Page) -> dict:
    """The Frames and Clipping tabs as the page shows them."""
    shown = {}
    for tab, drawn in (("Frames", "text=Change a frame"), ("Clipping", "text=samples rejected")):
        page.tab(tab)
        page.page.wait_for_selector(drawn, timeout=60_000)
        page.settle(2.0)
        shown[tab] = page.plots()
    shown["summary"] = clip_summary(page.page)
    return shown


@pytest.mark.parametrize("seed", WALK_SEEDS)
def test_a_random_walk_leaves_no_error_and_sets_back_to_a_fresh_page(walk_server, chromium, seed):
    url, log_path = walk_server
    rng, page, steps = random.Random(seed), Page(chromium, url), []
    logged = log_path.read_text()
    for _ in range(WALK_STEPS):
        steps.append(_step(page, rng))
        page.settle()
        new_log, logged = log_path.read_text()[len(logged):], log_path.read_text()
        replay = f"seed {seed}, steps:\n  " + "\n  ".join(steps)
        assert not page.errors, f"{page.errors[0]}\n{replay}"
        assert "Traceback" not in new_log and "ERROR" not in new_log, f"{new_log}\n{replay}"
    try:
        _set_back(page)
        walked = _look_at(page)
        fresh = Page(chromium, url)
        shown = _look_at(fresh)
        differences = {key: (sorted(set(shown[key]) - set(walked[key])),
                             sorted(set(walked[key]) - set(shown[key])))
                       for key in shown if shown[key] != walked[key]}
    except Exception as err:
        _failed(err, seed, steps, page, locals().get("fresh"), log_path.read_text()[len(logged):])
    if differences:
        _failed(AssertionError(f"set back, the page differs from a fresh page: {differences}"),
                seed, steps, page, fresh, log_path.read_text()[len(logged):])
    for opened in (page, fresh):
        opened.page.close()


def _failed(err, seed, steps, *pages_and_log):
    """Screenshots of the pages, then the error with the steps that led to it."""
    *pages, log = pages_and_log
    ARTIFACTS.mkdir(exist_ok=True)
    for name, opened in zip(("walked", "fresh"), pages):
        if opened is not None:
            opened.page.screenshot(path=str(ARTIFACTS / f"walk-{seed}-{name}.png"))
    raise AssertionError(f"{err}\nseed {seed}, steps:\n  " + "\n  ".join(steps)
                         + f"\nserver log since:\n{log[-3000:]}") from err


def test_the_bar_charts_follow_a_night_chosen_on_another_tab(walk_server, chromium):
    """The shortest sequence the walk found: the Clipping tab shown on a night that cannot
    be reduced, then another tab, a good night chosen there, and Clipping again."""
    url, _log = walk_server
    page = Page(chromium, url)
    page.tab("Clipping")
    page.page.wait_for_selector("text=samples rejected", timeout=60_000)
    page.select("Night", "zz-empty")
    page.settle(2.0)
    page.tab("Frames")
    page.select("Night", "night1")
    page.settle(2.0)
    page.tab("Clipping")
    page.page.wait_for_selector("text=samples rejected", timeout=60_000)
    page.settle(3.0)
    bars = [source for source in page.plots() if "rejected:" in source]
    page.page.close()
    # It failed in the browser (Bokeh 3.9): the legend read a colour per sample of the
    # new samples before Bokeh had them, and the rest of that update was lost.
    assert not page.errors, page.errors
    assert len(bars) == 2 and not any(source.startswith("file:0:") for source in bars), bars


def test_an_emptied_number_field_shows_its_placeholder_not_nan(walk_server, chromium):
    """Emptied by hand, a number that may be unset shows 'off' / 'as threshold' (Panel's
    number box showed "NaN"); a word typed in it is refused beside it."""
    url, _log = walk_server
    page = Page(chromium, url)
    shown = {}
    for label in ("Lsigma", "Hsigma", "Lower limit"):
        page.type(label, "2")
        page.settle(1.0)
        page.type(label, "")
        page.settle(1.0)
        field = sidebar_field(page.page, label)
        shown[label] = (field.input_value(), field.get_attribute("placeholder"))
    page.type("Lsigma", "x")
    page.settle(1.0)
    refused = page.page.get_by_text("Lsigma must be a number").all_inner_texts()
    page.page.close()
    assert shown == {"Lsigma": ("", "as threshold"), "Hsigma": ("", "as threshold"),
                     "Lower limit": ("", "off")}
    assert refused == ["Lsigma must be a number, not 'x'. Kept: empty."], refused
    assert not page.errors, page.errors
