"""The dashboard in a real browser: ``panel serve app.py`` driven by headless Chromium.

Screenshots go to ``test-artifacts/``. In CI (``CCDRED_REQUIRE_BROWSER=1``) a
missing Chromium fails these tests instead of skipping them.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.stats import sigma_clip

from ccdred.demo import NightSpec, make_night
from ccdred.frames import scan
from ccdred.prepare import prepare
from ccdred.testing import (CHROMIUM, CHROMIUM_ARGS, clip_summary, rejected_counts, serve_app,
                            set_threshold, sidebar_field, threshold_field)

from .conftest import REPO, unavailable
from .oracles import flat_samples, master_dark, raw_stack

ARTIFACTS = REPO / "test-artifacts"
#: What the Explore tab's sweep summary says (and the Clipping tab's does not)
SWEEP_SUMMARY = "(of those that entered it"
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("data-root")
    make_night(root / "night1", NightSpec(shape=(128, 128), seed=5))
    make_night(root / "night2", NightSpec(shape=(128, 128), seed=6, filters=("B", "V")))
    make_night(root / "zz-long", NightSpec(shape=(512, 512), seed=7, n_objects=90))
    output_root = tmp_path_factory.mktemp("output-root")
    prepare(root.parent)  # as after `ccdred prepare`: kernels compiled, the demo night there
    log = open(tmp_path_factory.mktemp("log") / "serve.log", "w+")
    try:
        with serve_app(["--data-root", root, "--output-root", output_root], log=log,
                       env={**os.environ, "CCDRED_CACHE": str(root.parent)}) as (_process, url):
            yield {"url": url, "root": root, "output_root": output_root}
    finally:
        log.seek(0)
        text = log.read()
        assert "Traceback" not in _without_closed_sockets(text), text[-3000:]


def _without_closed_sockets(log: str) -> str:
    """The server log less tornado's reports of a page closed while an update was on its way
    (users close pages at any moment; that is not an error of the app)."""
    return re.sub(r"Task exception was never retrieved\nfuture: <Task finished name='[^']*' "
                  r"coro=<WebSocketProtocol13\.write_message.*?tornado\.websocket\."
                  r"WebSocketClosedError\n", "", log, flags=re.S)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)",
                    "CCDRED_REQUIRE_BROWSER")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server["url"])
    page.wait_for_selector("text=Reduce night", timeout=60_000)
    return page


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def show_clipping(page) -> str:
    page.get_by_text("Clipping", exact=True).first.click()
    page.wait_for_selector("text=samples rejected", timeout=60_000)
    return clip_summary(page)


def wait_for_change(page, old: str, timeout=30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = clip_summary(page)
        if text != old and len(rejected_counts(text)) == 2:  # the whole new summary
            return text
        time.sleep(0.2)
    raise AssertionError(f"clip summary did not change from {old!r}")


def test_page_loads_with_widgets_and_plots(browser, server):
    page = open_page(browser, server)
    for label in ("Threshold", "Cenfunc", "Maxiters", "Upper limit", "Header keywords"):
        assert page.get_by_text(label).count() >= 1, label
    page.wait_for_selector("canvas", timeout=30_000)
    page.wait_for_selector("text=demo_0004.fits", timeout=30_000)  # the frame table
    assert threshold_field(page).input_value() == "2.5"
    screenshot(page, "frames")
    page.close()


def test_threshold_moves_the_clipped_pixel_map(browser, server):
    page = open_page(browser, server)
    before = show_clipping(page)
    screenshot(page, "clipping-2.5")
    set_threshold(page, 1.5)
    after = wait_for_change(page, before)
    screenshot(page, "clipping-1.5")
    assert all(b > a for a, b in zip(rejected_counts(before), rejected_counts(after),
                                     strict=True)), (before, after)
    time.sleep(1)  # the plots' update came with the summary's; let the page draw it
    assert hidden_data(page) == []  # bars and the inspected pixel followed the move
    page.close()


def test_sessions_do_not_share_parameters(browser, server):
    first, second = open_page(browser, server), open_page(browser, server)
    first_before, second_before = show_clipping(first), show_clipping(second)
    assert first_before == second_before
    set_threshold(first, 1.2)
    wait_for_change(first, first_before)
    time.sleep(1.0)
    assert clip_summary(second) == second_before
    assert threshold_field(second).input_value() == "2.5"
    first.close()
    second.close()


def test_folder_outside_the_data_root_is_refused(browser, server):
    page = open_page(browser, server)
    folder = page.locator("input").nth(0)
    for outside in ("..", "/etc", "night1/../../"):
        folder.fill(outside)
        folder.press("Enter")
        page.wait_for_selector("text=outside the data root", timeout=10_000)
    screenshot(page, "refused")
    folder.fill("night2")
    folder.press("Enter")
    page.wait_for_selector("text=Night: night2", timeout=10_000)
    page.close()


def test_reduce_night_writes_under_the_output_root(browser, server):
    page = open_page(browser, server)
    page.get_by_text("Reduce night").first.click()
    page.wait_for_selector("text=products in", timeout=120_000)
    screenshot(page, "reduced")
    outputs = list(server["output_root"].glob("night1_*"))
    assert len(outputs) == 1
    assert {p.name for p in outputs[0].glob("flat_*.fits")} == {"flat_R.fits", "flat_V.fits"}
    shutil.rmtree(outputs[0])
    page.close()


def test_a_long_reduction_does_not_freeze_other_sessions(browser, server):
    reducer, other = open_page(browser, server), open_page(browser, server)
    folder = reducer.locator("input").nth(0)
    folder.fill("zz-long")
    folder.press("Enter")
    reducer.wait_for_selector("text=Night: zz-long", timeout=30_000)
    before = show_clipping(other)
    reducer.get_by_text("Reduce night").first.click()
    reducer.wait_for_selector("text=Reducing zz-long", timeout=10_000)
    set_threshold(other, 1.7)
    wait_for_change(other, before)
    still_running = reducer.get_by_text("Reducing zz-long").count() == 1
    reducer.wait_for_selector("text=products in", timeout=300_000)
    assert still_running, "the other session only updated after the reduction had finished"
    screenshot(reducer, "long-reduction-done")
    reducer.close()
    other.close()


def test_a_limit_round_trip_gives_one_message_and_no_page_errors(browser, server):
    page = open_page(browser, server)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    before = show_clipping(page)
    limit = sidebar_field(page, "Upper limit")
    assert limit.input_value() == "38000"
    limit.fill("200")
    limit.press("Enter")
    page.wait_for_selector("text=too few flats", timeout=30_000)
    time.sleep(2)  # every view has answered the change by now
    screenshot(page, "limit-200")
    assert page.get_by_text("too few flats").count() == 1  # one message for one problem
    limit.fill("38000")
    limit.press("Enter")
    page.wait_for_selector("text=samples rejected", timeout=30_000)
    time.sleep(2)
    assert rejected_counts(clip_summary(page)) == rejected_counts(before)
    screenshot(page, "limit-restored")
    assert page.get_by_text("too few flats").count() == 0
    assert errors == []
    page.wait_for_load_state("networkidle")
    page.close()


def test_a_mistyped_folder_is_refused_and_the_page_recovers_without_a_reload(browser, server):
    page = open_page(browser, server)
    folder = page.locator("input").nth(0)
    folder.fill("night1-typo")
    folder.press("Enter")
    page.wait_for_selector("text=no such folder under the data root", timeout=10_000)
    assert page.get_by_text("Night: night1-typo").count() == 0
    page.locator("select").first.select_option("night2")
    page.wait_for_selector("text=Night: night2", timeout=10_000)
    assert page.get_by_text("no such folder").count() == 0  # the error is gone with its cause
    assert len(rejected_counts(show_clipping(page))) == 2
    page.wait_for_load_state("networkidle")
    page.close()


# -- exploring the rejection: the pixel inspector, the sweep, A/B -------------------------


def pixel_line(page) -> str:
    """The inspected pixel's summary line ('<master> pixel (x=.., y=..): k of n samples ...')."""
    return page.get_by_text("samples used, combined").first.inner_text()


def wait_for_text_change(read, old: str, timeout=30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read()
        if text and text != old:
            return text
        time.sleep(0.2)
    raise AssertionError(f"did not change from {old!r}")


def pixel_plot_view(page) -> dict:
    """The pixel plot's title and the value range its y axis shows."""
    return page.evaluate("""() => {
        for (const doc of Bokeh.documents)
            for (const model of doc.all_models)
                if (model.title && model.title.text && model.title.text.includes("pixel (x=")
                        && model.y_range)
                    return {title: model.title.text, y: [model.y_range.start, model.y_range.end]};
        return null;
    }""")


def hidden_data(page) -> list[str]:
    """The plots on the page with a point (a glyph's ``y``) outside the range their y axis
    shows: a plot that kept the range of what it showed before."""
    return page.evaluate("""() => {
        const hidden = [];
        for (const doc of Bokeh.documents)
            for (const plot of doc.all_models) {
                if (!plot.renderers || !plot.y_range || plot.y_range.start === undefined) continue;
                const [low, high] = [plot.y_range.start, plot.y_range.end].sort((a, b) => a - b);
                for (const renderer of plot.renderers) {
                    const field = renderer.glyph && renderer.glyph.y && renderer.glyph.y.field;
                    const data = field && renderer.data_source && renderer.data_source.data[field];
                    if (!data) continue;
                    for (const y of data)
                        if (Number.isFinite(y) && (y < low || y > high)) {
                            hidden.push((plot.title && plot.title.text) || "untitled");
                            break;
                        }
                }
            }
        return hidden;
    }""")


def plot_boxes(page) -> list[dict]:
    """Where each plot is on the page, in page order (a Bokeh plot draws on stacked canvases)."""
    boxes = []
    for i in range(page.locator("canvas").count()):
        box = page.locator("canvas").nth(i).bounding_box()
        if box and box["width"] > 50 and box not in boxes:
            boxes.append(box)
    return boxes


_PIXEL_LINE = re.compile(r"(\S+) pixel \(x=(\d+), y=(\d+)\): (\d+) of (\d+) samples used, "
                         r"combined (\S+)")


def shown_pixel(line: str) -> tuple[str, int, int, int, int, float]:
    """The inspected pixel's line read: master, x, y, samples used, samples, combined value."""
    match = _PIXEL_LINE.search(line)
    assert match, line
    name, *numbers, combined = match.groups()
    return (name, *map(int, numbers), float(combined))


@functools.lru_cache(maxsize=4)  # a test waiting for the page asks again and again
def astropy_flat(night: Path, name: str, threshold: float):
    """A master flat's samples made from the files with astropy (see :mod:`tests.oracles`),
    masked where sigma_clip rejects them at ``threshold``; and the flats' medians."""
    catalogue = scan([night])
    flats = catalogue.flats(name.removeprefix("flat_").removesuffix(".fits"))
    dark = master_dark(raw_stack(catalogue.darks(flats[0].exptime)), threshold).astype(np.float32)
    samples, medians = flat_samples(raw_stack(flats), dark)
    return sigma_clip(samples, sigma=threshold, maxiters=10, axis=0), medians


def assert_pixel_as_astropy(line: str, night: Path, threshold: float) -> tuple[int, int]:
    """The pixel line's counts and combined value are astropy's for that pixel of the master
    flat it names; returns the pixel (x, y)."""
    name, x, y, used, samples, combined = shown_pixel(line)
    assert name.startswith("flat_"), line
    clipped, medians = astropy_flat(night, name, threshold)
    kept = ~np.ma.getmaskarray(clipped[:, y, x])
    assert (used, samples) == (kept.sum(), kept.size), line
    expected = np.average(clipped.data[kept, y, x], weights=medians[kept])
    assert combined == pytest.approx(expected, rel=1e-5), line  # printed to 6 digits
    return x, y


def wait_for_pixel_as_astropy(page, night: Path, threshold: float, pixel: tuple[int, int],
                              timeout=30.0) -> None:
    """Wait until the page's pixel line names ``pixel`` and says astropy's numbers for it at
    ``threshold`` (a tab shown again may still show the line of the previous threshold for a
    moment); then the last line's mismatch, if any, fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        line = pixel_line(page)
        try:
            assert assert_pixel_as_astropy(line, night, threshold) == pixel, line
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_tap_on_the_master_flat_shows_that_pixels_samples(browser, server):
    page = open_page(browser, server)
    page.get_by_text("Masters", exact=True).first.click()
    page.wait_for_selector("text=samples used, combined", timeout=60_000)
    before = pixel_line(page)
    flat_image = plot_boxes(page)[2]  # dark image, dark histogram, flat image, ...
    page.mouse.click(flat_image["x"] + 0.4 * flat_image["width"],
                     flat_image["y"] + 0.5 * flat_image["height"])
    tapped = wait_for_text_change(lambda: pixel_line(page), before)
    screenshot(page, "pixel-tapped")
    match = re.search(r"(\S+) pixel \(x=(\d+), y=(\d+)\)", tapped)
    assert match and match[1].startswith("flat_"), tapped
    x, y = int(match[2]), int(match[3])
    assert 20 < x < 108 and 20 < y < 108, tapped  # inside the 128 x 128 flat, not an edge
    assert assert_pixel_as_astropy(tapped, server["root"] / "night1", 2.5) == (x, y)

    set_threshold(page, 1.3)
    moved = wait_for_text_change(lambda: pixel_line(page), tapped)
    assert assert_pixel_as_astropy(moved, server["root"] / "night1", 1.3) == (x, y)
    assert moved != tapped
    page.close()


def test_the_sweep_is_drawn_and_agrees_with_the_clipping_summary(browser, server):
    page = open_page(browser, server)
    summary = show_clipping(page)
    page.get_by_text("Explore", exact=True).first.click()
    line = page.get_by_text(SWEEP_SUMMARY).first
    line.wait_for(timeout=60_000)
    flat_percent = re.search(r"flat \S+\*?\*?: [\d,]+ of [\d,]+ samples rejected by the "
                             r"combination \(([\d.]+) %\)", summary)
    swept = re.search(r"at threshold 2.5: samples rejected by the combination ([\d.]+) %",
                      line.inner_text())
    assert flat_percent and swept, (summary, line.inner_text())
    assert swept[1] == flat_percent[1]
    boxes = plot_boxes(page)
    assert len(boxes) == 4  # three sweep plots and the pixel's samples
    screenshot(page, "explore")
    rejected = boxes[0]  # a click on the sweep sets the threshold there
    page.mouse.click(rejected["x"] + 0.75 * rejected["width"],
                     rejected["y"] + 0.5 * rejected["height"])
    moved = wait_for_text_change(lambda: line.inner_text(), line.inner_text())
    threshold = float(re.search(r"at threshold ([\d.]+):", moved)[1])
    assert 3.0 < threshold < 5.75
    field = threshold_field(page)
    assert wait_for_text_change(field.input_value, "2.5") == f"{threshold:g}"
    time.sleep(1)  # the plots' update came with the summary's; let the page draw it
    assert hidden_data(page) == []
    page.close()


def test_the_explore_tab_says_a_problem_once_and_recovers(browser, server):
    page = open_page(browser, server)
    page.get_by_text("Explore", exact=True).first.click()
    summary = page.get_by_text(SWEEP_SUMMARY).first
    summary.wait_for(timeout=60_000)
    limit = sidebar_field(page, "Upper limit")
    limit.fill("200")
    limit.press("Enter")
    page.wait_for_selector("text=too few flats", timeout=30_000)
    time.sleep(2)  # every view has answered the change by now
    assert page.get_by_text("too few flats").count() == 1
    limit.fill("38000")
    limit.press("Enter")
    page.get_by_text(SWEEP_SUMMARY).first.wait_for(timeout=30_000)
    assert page.get_by_text("too few flats").count() == 0
    page.close()


def test_pinning_shows_no_difference_until_the_parameters_change(browser, server):
    page = open_page(browser, server)
    page.get_by_text("Explore", exact=True).first.click()
    page.get_by_text("Nothing pinned yet").first.wait_for(timeout=60_000)
    page.get_by_text("Pin the current parameters as A").first.click()
    changed = page.get_by_text("pixels changed").first
    changed.wait_for(timeout=60_000)
    assert re.findall(r": ([\d,]+) of [\d,]+ pixels changed", changed.inner_text()) == [
        "0", "0"], changed.inner_text()
    set_threshold(page, 1.5)
    changed_counts = wait_for_text_change(lambda: " ".join(re.findall(
        r": ([\d,]+) of [\d,]+ pixels changed", changed.inner_text())), "0 0")
    assert all(count != "0" for count in changed_counts.split()), changed_counts
    screenshot(page, "a-b")
    # the inspected pixel (the one with most rejected samples) changed with the threshold:
    # its plot shows its samples, not the range of the pixel shown before
    pixel = pixel_plot_view(page)
    combined = float(re.search(r"combined ([\d.]+)", pixel_line(page))[1])
    assert f"combined {combined:g}" in pixel["title"].replace(",", ""), pixel
    assert pixel["y"][0] < combined < pixel["y"][1], pixel
    assert hidden_data(page) == []
    page.close()


def _slider_ranges(page) -> list:
    return page.evaluate("""() => Bokeh.documents.flatMap((doc) => [...doc.all_models])
        .filter((m) => m.type !== undefined && m.type.endsWith("Slider"))
        .map((m) => [m.start, m.end])""")


def test_a_refused_threshold_is_said_and_leaves_the_slider_as_it_was(browser, server):
    """Each refused value typed is said beside the field, the value kept shown in the box
    (0 first: the box's own last typed value; the same refused value twice; an emptied
    box); the kept value typed ends the message. The slider's text box widens the slider
    in the browser to any value typed: the slider keeps its range."""
    page = open_page(browser, server)
    before = show_clipping(page)
    ranges = _slider_ranges(page)
    assert [0.5, 5] in ranges, ranges
    field = threshold_field(page)
    for typed, said in (("0", "must be greater than 0, not 0"),
                        ("-1", "must be greater than 0, not -1"),
                        ("-1", "must be greater than 0, not -1"), ("", "needs a number")):
        field.fill(typed)
        field.press("Enter")
        page.get_by_text(f"Threshold {said}").first.wait_for(timeout=30_000)
        assert wait_for_text_change(field.input_value, typed) == "2.5"
        deadline = time.monotonic() + 10
        while _slider_ranges(page) != ranges and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _slider_ranges(page) == ranges, typed
        screenshot(page, "threshold-refused")
        set_threshold(page, 2.5)  # the value kept, typed: the refusal is over
        page.get_by_text("Kept: 2.5.").first.wait_for(state="hidden", timeout=30_000)
    set_threshold(page, 1.5)  # the slider still moves the masters
    wait_for_change(page, before)
    page.close()


def test_a_dragged_threshold_is_computed_once_where_it_is_let_go(browser, server):
    """A drag passes many thresholds; only the one it ends on is computed (no queue)."""
    page = open_page(browser, server)
    before = show_clipping(page)
    handle = page.locator(".ccdred-threshold .noUi-handle").first.bounding_box()
    x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    changes_while_dragging = 0
    for step in range(1, 16):
        page.mouse.move(x - 6 * step, y)
        time.sleep(0.1)
        changes_while_dragging += clip_summary(page) != before
    page.mouse.up()
    after = wait_for_change(page, before)
    assert changes_while_dragging == 0
    assert float(threshold_field(page).input_value()) < 2.5
    # a lower threshold: the flat's combination rejects more (a dark's may reject fewer, its
    # frame clipping leaving out more before it)
    assert rejected_counts(after)[1] > rejected_counts(before)[1], (before, after)
    page.close()


def test_a_tab_shown_again_draws_what_changed_while_it_was_hidden(browser, server):
    """Only the tab on show computes: the Masters and Before / after tabs, shown after the
    threshold moved on the Clipping tab, draw their images and the inspected pixel for the
    new threshold."""
    page = open_page(browser, server)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    for tab in ("Masters", "Before / after"):
        page.get_by_text(tab, exact=True).first.click()
        page.wait_for_selector("text=samples used", timeout=60_000)
    before = show_clipping(page)
    set_threshold(page, 1.9)
    wait_for_change(page, before)
    night = server["root"] / "night1"
    for tab, name in (("Masters", "masters-after-move"), ("Before / after", "before-after-move")):
        page.get_by_text(tab, exact=True).first.click()
        page.wait_for_selector("text=Click a pixel", timeout=60_000)
        page.wait_for_selector("canvas", timeout=60_000)  # the tab's images drawn
        # the pixel with most rejected samples at the new threshold, as astropy counts them
        clipped, _ = astropy_flat(night, shown_pixel(pixel_line(page))[0], 1.9)
        rejected = np.ma.getmaskarray(clipped).sum(axis=0)
        y, x = np.unravel_index(np.argmax(rejected), rejected.shape)
        wait_for_pixel_as_astropy(page, night, 1.9, (x, y))
        time.sleep(1)  # the pixel's plot caught up with its text; let the page draw it
        assert hidden_data(page) == [], tab
        screenshot(page, name)
    assert not errors, errors
    page.close()


def legend_labels(page) -> list[str]:
    """The labels of every plot legend's entries on the page."""
    return page.evaluate("""() => {
        const labels = [];
        for (const doc of Bokeh.documents)
            for (const model of doc.all_models)
                if (model.renderers && model.label && typeof model.label.value === "string")
                    labels.push(model.label.value);
        return labels;
    }""")


def test_the_masks_card_marks_the_bad_pixels_on_the_calibrated_frame(browser, server, tmp_path):
    """Bad pixels asked for in the Masks card are marked on the Before / after tab's
    calibrated frame: as many hot pixels as the bad_pixels.fits a reduction of the night
    with --bad-pixels writes; unticked, no mask is drawn."""
    from astropy.io import fits

    from ccdred.night import BAD_PIXELS, reduce_night
    from ccdred.parameters import ReductionParameters
    from ccdred.planes import MaskBit

    reduce_night([server["root"] / "night1"], tmp_path / "out",
                 ReductionParameters(bad_pixels=True))
    hot = int(np.count_nonzero(fits.getdata(tmp_path / "out" / BAD_PIXELS) & MaskBit.HOT))
    assert hot > 0
    page = open_page(browser, server)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.get_by_text("Before / after", exact=True).first.click()
    page.wait_for_selector("text=Click a pixel", timeout=60_000)
    assert not [label for label in legend_labels(page) if "hot pixel" in label]
    page.get_by_text("Masks", exact=True).first.click()
    bad_pixels = page.locator(".bk-Checkbox").filter(has_text="Bad pixels").locator("input")
    bad_pixels.check()
    deadline = time.monotonic() + 60
    while not (marked := [label for label in legend_labels(page) if "hot pixel" in label]):
        assert time.monotonic() < deadline, legend_labels(page)
        time.sleep(0.3)
    assert marked == [f"hot pixel ({hot})"]
    screenshot(page, "before-after-masks")
    bad_pixels.uncheck()
    deadline = time.monotonic() + 60
    while [label for label in legend_labels(page) if "hot pixel" in label]:
        assert time.monotonic() < deadline, "the marks stayed after unticking"
        time.sleep(0.3)
    assert not errors, errors
    page.close()
