"""When the dashboard's views are drawn and shown: one browser session's view scheduler.

A :class:`ViewScheduler` makes the views of a session's tabs (:class:`View`),
each drawn by a function and drawn again when a parameter it depends on
changes, but only while its tab is on show. A drawing is computed in the
thread that made the change, one at a time per session, in the views' order
(what is seen first, first), and dropped when a newer change overtakes it.
Drawings are shown on the server's event loop: a view of order 0 as soon as it
is drawn, the others together once the change's drawings are all drawn, each
time with whatever else was drawn by then, in one update of the page. The
:class:`~ccdred.dashboard.Dashboard` owns one and says only what to draw.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable

import panel as pn
import param

from . import compat

__all__ = ["View", "ViewScheduler"]

_LOG = logging.getLogger(__name__)

#: A view not drawn yet (a drawing may be None)
_NOT_DRAWN = object()
#: The precedence of the watchers that show a change's drawings, after the views' own
#: (whose precedences are their orders, below this)
_AFTER_VIEWS = 10


class ViewScheduler:
    """The views of one session's tabs, and when they are drawn and shown.

    Parameters
    ----------
    tab : param.Selector
        The parameter that holds the name of the tab on show, its objects the
        tabs (e.g. ``dashboard.param.tab``).
    logger : logging.Logger, optional
        Where a view that could not be drawn is reported, with its traceback
        (default: this module's).

    Attributes
    ----------
    tab_parameter : param.Selector
        ``tab``.
    views : list of View
        Every view made, in order.
    page : bokeh.document.Document or None
        The served page, on whose event loop the drawings are shown; None (a
        notebook, or no page): they are shown at once, in the thread that
        handled the change.
    logger : logging.Logger
        ``logger``.
    """

    def __init__(self, tab: param.Selector, logger: logging.Logger = _LOG):
        self.tab_parameter, self.views, self.page, self.logger = tab, [], None, logger
        self._computing = threading.RLock()  # one view of this session drawn at a time
        self._outbox, self._outbox_lock, self._flush_pending = {}, threading.Lock(), False
        self.follow(tab.owner, [tab.name])

    @property
    def tab(self) -> str:
        """The name of the tab on show."""
        return getattr(self.tab_parameter.owner, self.tab_parameter.name)

    def follow(self, owner: param.Parameterized, names: Iterable[str] | None = None) -> None:
        """Show the drawings of every change of ``owner``'s parameters once it is handled.

        Parameters
        ----------
        owner : param.Parameterized
            The object whose parameters the views depend on (the tab's owner is
            followed already).
        names : iterable of str, optional
            Only these parameters (default: all).

        Notes
        -----
        A watcher that runs after the views' own (a higher precedence) shows
        the change's drawings (those of order 0 were shown as soon as drawn).
        """
        owner.param.watch(self._flush, list(names or owner.param), precedence=_AFTER_VIEWS)

    def view(self, tab: str, draw: Callable[[], object], depends_on: Iterable,
             order: int = 1) -> View:
        """A new view of ``tab``, drawn by ``draw``.

        Parameters
        ----------
        tab : str
            The tab the view is on, one of the tab parameter's objects.
        draw : callable
            Draws the view now, without arguments (the drawing may be None).
        depends_on : iterable of methods
            Methods declared with ``param.depends``, of followed objects (see
            :meth:`follow`): a change of a parameter any of them depends on
            draws the view again.

        Returns
        -------
        View
            The view, also appended to :attr:`views`.

        Raises
        ------
        ValueError
            If there is no tab ``tab``.
        """
        tabs = self.tab_parameter.objects
        if tab not in tabs:
            raise ValueError(f"no tab {tab!r}: the tabs are {', '.join(tabs)}")
        if order not in range(_AFTER_VIEWS):
            raise ValueError(f"order must be an integer from 0 to {_AFTER_VIEWS - 1}, not {order!r}")
        view = View(self, tab, draw, _dependencies(depends_on), order)
        self.views.append(view)
        return view

    def set_with_drawings(self, target: param.Parameterized, name: str, value) -> None:
        """Set ``target.name`` to ``value`` when the drawings of the change being handled
        are shown, in the same update of the page.

        Parameters
        ----------
        target : param.Parameterized
            A pane or widget that follows the parameters beside the views.
        name : str
            The parameter of ``target`` to set (e.g. ``"object"``).
        value : object
            Its new value; a later call for the same change replaces it.

        Notes
        -----
        Call it from a watcher of a followed object's parameters (see :meth:`follow`).
        """
        self._deliver((target, name), functools.partial(setattr, target, name, value))

    def _deliver(self, key, show: Callable[[], None]) -> None:
        """Keep ``show`` (of a new drawing) until the change that asked for it has been handled."""
        with self._outbox_lock:
            self._outbox[key] = show

    def _flush(self, *_events) -> None:
        """Show what was drawn on the server's event loop, in one update of the page: what
        is drawn before that update is sent goes with it."""
        with self._outbox_lock:
            if not self._outbox or self._flush_pending:
                return
            self._flush_pending = True
        if self.page is None:
            self._show_drawings()
        else:
            self.page.add_next_tick_callback(self._show_drawings)

    def _show_drawings(self) -> None:
        with self._outbox_lock:
            outbox, self._outbox, self._flush_pending = self._outbox, {}, False
        # one message, and a walk of the page's models only if a drawing replaced some
        with pn.io.hold(self.page), compat.held_models(self.page):
            for show in outbox.values():
                show()


class View(param.Parameterized):
    """One view of a tab, and when it is drawn (made by :meth:`ViewScheduler.view`).

    Drawn when first shown; afterwards, when a parameter it depends on
    changes while its tab is on show, and once when its tab is shown again
    after such a change: so a tab not on show computes nothing. A drawing is
    computed in the thread that made the change (one of Panel's, not the
    server's event loop), one at a time per session, and only for the latest
    change: a drawing overtaken by a newer change, before or while it is
    computed, is dropped. It is shown on the event loop, with the other views
    drawn for the same change, in one update of the page (see
    :meth:`ViewScheduler.follow`). A drawing that fails is logged with its
    traceback, by the scheduler's logger; the view keeps its drawing, and the
    change's other views are shown. The views a change draws are drawn in
    their ``order`` (see :meth:`ViewScheduler.view`).

    Parameters
    ----------
    scheduler : ViewScheduler
        The scheduler of the view's session.
    tab : str
        The view's tab.
    draw : callable
        Draws the view now, without arguments.
    dependencies : list of param.Parameter
        The parameters whose change draws the view again.
    order : int
        Its place among the views a change draws (lower first).

    Attributes
    ----------
    count : int
        Numbers the drawings shown (a parameter: watch it, or bind to it, to
        show :meth:`drawn` again).
    requested : int
        Numbers the latest drawing asked for.
    tab : str
        The view's tab.
    draw : callable
        Draws the view now (what :meth:`drawn` shows once a change has been handled).
    order : int
        ``order``.
    """

    count = param.Integer(default=0, doc="numbers the drawings shown")

    def __init__(self, scheduler: ViewScheduler, tab: str, draw: Callable[[], object],
                 dependencies: list, order: int = 1):
        super().__init__()
        self._scheduler, self.tab, self.draw, self._missed = scheduler, tab, draw, False
        self.order = order
        self._shown = _NOT_DRAWN
        self.requested, self._numbering = 0, threading.Lock()
        owners = {}
        for dependency in dependencies:
            owners.setdefault(id(dependency.owner), (dependency.owner, []))[1].append(dependency.name)
        for owner, names in owners.values():
            owner.param.watch(self._changed, names, precedence=order)
        scheduler.tab_parameter.owner.param.watch(self._shown_again, scheduler.tab_parameter.name,
                                                  precedence=order)

    def drawn(self, *_streams, **_values):
        """What is on show.

        Parameters
        ----------
        *_streams, **_values
            Ignored: what a ``pn.bind`` or a HoloViews stream passes.

        Returns
        -------
        object
            The last drawing shown, or the first one, drawn now.
        """
        if self._shown is _NOT_DRAWN:
            with self._scheduler._computing:
                if self._shown is _NOT_DRAWN:
                    self._shown = self.draw()
        return self._shown

    def _show(self, number: int, drawing) -> None:
        """Show a drawing (on the page's event loop)."""
        self._shown = drawing
        self.count = number

    def _changed(self, *_events) -> None:
        if self._scheduler.tab == self.tab:
            self._redraw()
        else:
            self._missed = True

    def _shown_again(self, event) -> None:
        if event.new == self.tab and self._missed:
            self._missed = False
            self._redraw()

    def _redraw(self) -> None:
        with self._numbering:  # two threads' changes get two numbers
            self.requested += 1
            number = self.requested
        with self._scheduler._computing:
            if number != self.requested:
                return  # overtaken before it began
            try:
                drawing = self.draw()
            except Exception:  # a failing view keeps its drawing; the change's others show
                self._scheduler.logger.exception("ccdred: a view of the %s tab could not be "
                                                 "drawn", self.tab)
                return
            if number == self.requested:  # not overtaken while drawn
                self._scheduler._deliver(self, functools.partial(self._show, number, drawing))
                if self.order == 0:  # seen first: shown now, not with the change's others
                    self._scheduler._flush()


def _dependencies(methods: Iterable) -> list:
    """The parameters that ``param.depends``-declared methods depend on, each once."""
    dependencies = []
    for method in methods:
        owner = method.__self__
        for info in owner.param.method_dependencies(method.__name__):
            dependencies.append(info.inst.param[info.name])
    return list(dict.fromkeys(dependencies))
