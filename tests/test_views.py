"""The view scheduler on its own: a tab's views drawn only on show, in their order, each shown
as soon as it is drawn (with what else is ready), overtaken drawings dropped, a failing view
kept."""

from __future__ import annotations

import logging
import threading
import time

import panel as pn
import param
import pytest
from bokeh.document import Document

from ccdred.views import ViewScheduler


class Page(param.Parameterized):
    """What a dashboard holds: the tab on show."""

    tab = param.Selector(default="A", objects=["A", "B"])


class Source(param.Parameterized):
    """What a pipeline holds: parameters, and a method that declares what it depends on."""

    value = param.Number(default=1.0)
    other = param.Number(default=0.0)

    @param.depends("value")
    def shown(self) -> float:
        return self.value


@pytest.fixture
def page():
    return Page()


@pytest.fixture
def source():
    return Source()


@pytest.fixture
def scheduler(page, source):
    scheduler = ViewScheduler(page.param.tab)
    scheduler.follow(source)
    return scheduler


def test_a_view_is_drawn_when_shown_and_again_only_for_what_it_depends_on(scheduler, source):
    drawings = []
    view = scheduler.view("A", lambda: drawings.append(source.value) or len(drawings),
                          depends_on=[source.shown])
    assert scheduler.views == [view] and drawings == []
    assert view.drawn() == view.drawn() == 1  # drawn once, when first shown
    source.other = 5.0
    assert drawings == [1.0] and view.count == 0
    source.value = 2.0
    assert view.drawn() == 2 and view.count == view.requested == 1


def test_a_tab_not_on_show_computes_nothing_and_catches_up_once_when_shown(scheduler, page,
                                                                           source):
    drawings = []
    view = scheduler.view("B", lambda: drawings.append(source.value), depends_on=[source.shown])
    source.value, source.value = 2.0, 3.0
    assert drawings == [] and view.count == 0
    page.tab = "B"
    assert drawings == [3.0] and view.count == 1
    page.tab, page.tab = "A", "B"  # nothing changed meanwhile
    assert drawings == [3.0]


def test_a_change_is_shown_in_one_update_on_the_pages_event_loop(scheduler, source):
    scheduler.page = Document()
    views = [scheduler.view("A", lambda: source.value, depends_on=[source.shown])
             for _ in range(2)]
    text = pn.pane.Markdown("before")
    source.param.watch(lambda event: scheduler.set_with_drawings(text, "object", f"{event.new}"),
                       "value")
    source.value = 2.0
    source.value = 3.0  # before the page's next tick: one update shows the latest
    assert [view.count for view in views] == [0, 0] and text.object == "before"
    [tick] = scheduler.page.session_callbacks
    tick.callback()
    assert [(view.count, view.drawn()) for view in views] == [(2, 3.0), (2, 3.0)]
    assert text.object == "3.0"


def test_a_change_draws_its_views_in_order_the_first_shown_at_once_the_rest_together(
        scheduler, source):
    """The summary and the bars, made first but ordered after the map: the map is drawn
    first and on show (no page: shown at once) while they are drawn; the summary is shown
    with the bars, once both are drawn."""
    events = []

    def summary():
        events.append(("summary drawn; map shows", views["map"].drawn()))
        return f"summary {source.value}"

    def bars():
        events.append(("bars drawn; summary shown", views["summary"].count))
        return f"bars {source.value}"

    views = {"summary": scheduler.view("A", summary, depends_on=[source.shown]),
             "bars": scheduler.view("A", bars, depends_on=[source.shown])}  # order 1
    views["map"] = scheduler.view("A", lambda: events.append(("map drawn", None))
                                  or f"map {source.value}", depends_on=[source.shown], order=0)
    source.value = 2.0
    assert events == [("map drawn", None), ("summary drawn; map shows", "map 2.0"),
                      ("bars drawn; summary shown", 0)]
    assert [views[name].drawn() for name in ("summary", "bars")] == ["summary 2.0", "bars 2.0"]
    with pytest.raises(ValueError, match="order must be an integer from 0 to 9"):
        scheduler.view("A", summary, depends_on=[source.shown], order=10)


def test_a_view_draws_only_the_latest_of_changes_that_overtook_it(scheduler, source):
    """While a session's view computes, two newer changes arrive (in Panel's other threads):
    the overtaken drawing is not shown, the middle change computes nothing, and the last is
    computed and shown."""
    computing, release, built = threading.Event(), threading.Event(), []

    def draw():
        built.append(source.value)
        if source.value == 1.7:
            computing.set()
            release.wait(30)
        return built[-1]

    view = scheduler.view("A", draw, depends_on=[source.shown])
    assert view.drawn() == 1.0  # on show
    shown = []
    view.param.watch(lambda _event: shown.append(view.drawn()), "count")
    threads = [threading.Thread(target=setattr, args=(source, "value", 1.7))]
    threads[0].start()
    assert computing.wait(30)
    for value in (3.1, 3.3):
        threads.append(threading.Thread(target=setattr, args=(source, "value", value)))
        threads[-1].start()
        _wait_until(lambda: view.requested == len(threads))  # its change counted
    release.set()
    for thread in threads:
        thread.join(30)
    assert built == [1.0, 1.7, 3.3]  # 3.1, overtaken before it began, computed nothing
    assert shown == [3.3]  # 1.7, overtaken while computed, never shown


def test_a_view_that_fails_keeps_its_drawing_and_the_others_are_shown(page, source, caplog):
    """A bug in one view is logged with its traceback, by the scheduler's logger; the other
    views of the same change are still drawn and shown."""
    scheduler = ViewScheduler(page.param.tab, logger=logging.getLogger("ccdred.owner"))
    scheduler.follow(source)

    def failing():
        if source.value != 1.0:
            raise RuntimeError("a bug")
        return "first"

    broken = scheduler.view("A", failing, depends_on=[source.shown])
    working = scheduler.view("A", lambda: source.value, depends_on=[source.shown])
    assert (broken.drawn(), working.drawn()) == ("first", 1.0)
    source.value = 3.0
    assert (broken.drawn(), working.drawn()) == ("first", 3.0)
    [record] = caplog.records
    assert record.name == "ccdred.owner" and "could not be drawn" in record.getMessage()
    assert "RuntimeError: a bug" in caplog.text


def test_a_view_of_no_tab_is_refused(scheduler, source):
    with pytest.raises(ValueError, match="no tab 'C': the tabs are A, B"):
        scheduler.view("C", source.shown, depends_on=[source.shown])


def _wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
