"""Sidebar fields that refuse a value in words: the parameter keeps its last good value.

A widget linked by ``pn.Param`` passes a refused value (an emptied box, a
negative threshold) to ``param``, whose ``ValueError`` ends in the server's log
while the box snaps back without a word; a widget with bounds refuses in the
browser, silently. A :class:`Field` has no bounds of its own: the parameter
alone decides, and a refusal is said beside the field, with the value kept.
A number that may be left empty ("off", "as threshold") is typed as text:
Panel's number box shows an empty value as "NaN" (Panel 1.9).
"""

from __future__ import annotations

import math

import panel as pn
import param

from . import compat
from .parameters import refusal

__all__ = ["Field", "fields"]


class Field(pn.viewable.Viewer):
    """One parameter's widget and, beside it, why the last value typed was refused.

    Parameters
    ----------
    owner : param.Parameterized
        Whose parameter the field sets (a :class:`~ccdred.pipeline.Pipeline`).
    name : str
        The parameter.
    widget_type : type, optional
        A Panel widget; by the parameter's type by default (a number or text input).
    **options
        The widget's own options (``placeholder``, ``css_classes``, ...).
    """

    def __init__(self, owner: param.Parameterized, name: str, widget_type=None, **options):
        super().__init__()
        self._owner, self._name, self._showing = owner, name, False
        parameter = owner.param[name]
        widget_type = widget_type or _widget_type(parameter)
        self._event = "value_throttled" if options.pop("throttled", False) else "value"
        if "description" in widget_type.param:  # the "?" beside the label
            options.setdefault("description", parameter.doc)
        self._as_text = widget_type is pn.widgets.TextInput and isinstance(parameter, param.Number)
        self.widget = widget_type(label=parameter.label, value=self._shown(getattr(owner, name)),
                                  **options)
        self.message = pn.pane.Alert("", alert_type="warning", visible=False, margin=(0, 10),
                                     css_classes=["ccdred-refused"])
        self.widget.param.watch(self._typed, self._event)
        owner.param.watch(self._taken_elsewhere, name)
        self._slider, self._text_box = compat.editable_slider_parts(self.widget) or (None, None)
        if self._slider is not None:
            self._slider.param.watch(self._fit_range, ["start", "end"])
            self._show(getattr(owner, name))  # its text box's last value typed: none yet

    def _typed(self, event) -> None:
        if self._showing:
            return
        value = None if _empty(event.new) else event.new
        try:
            self._owner.param.update({self._name: self._number(value) if self._as_text else value})
        except ValueError as err:
            kept, label = getattr(self._owner, self._name), self.widget.label
            why = (self._nothing_typed() if value is None
                   else refusal(err, lambda _name: label))
            self.message.object = f"{why} Kept: {_in_words(kept)}."
            self.message.visible = True
            self._show(kept)  # (a range widened to the value refused: see _fit_range)
        else:
            self.message.visible = False
            if value is not event.new or self._as_text:  # as the parameter took it
                self._show(getattr(self._owner, self._name))

    def _show(self, value) -> None:
        """Show the parameter's value in the widget without setting the parameter again."""
        self._showing = True
        try:
            with param.parameterized.edit_constant(self.widget):
                self.widget.param.update(dict.fromkeys({"value", self._event}, self._shown(value)))
            if self._text_box is not None:
                # nothing typed since (NaN): any value typed, the one shown too, is a change
                with param.parameterized.edit_constant(self._text_box), \
                        param.parameterized.edit_constant(self.widget):
                    self._text_box.value_throttled = self.widget.value_throttled = math.nan
        finally:
            self._showing = False

    def _taken_elsewhere(self, event) -> None:
        """The parameter set (typed here and taken, or set by a slider or a click): shown,
        and a refusal said before is over."""
        self._show(event.new)
        self.message.visible = False
        if self._slider is not None:
            self._fit_range()

    def _nothing_typed(self) -> str:
        """Why no value was taken: a number box sends nothing for an empty box and for text
        that is no number alike ('abc', or '1e9' in a box of whole numbers)."""
        label = self.widget.label
        return f"{label} cannot be empty." if self._as_text else \
            f"{label} needs a number (the box was empty, or held no number it takes)."

    def _fit_range(self, *_events) -> None:
        """An editable slider's range: its own, widened to the parameter's value only. Its
        text box widens it in the browser to any value typed, also to one refused: that
        widening reaches the inner slider, whose watcher calls this, in whichever order it
        comes with the refused value (a refusal does not change the parameter's value)."""
        kept = getattr(self._owner, self._name)
        start, end = self.widget.start, self.widget.end
        if kept is not None:
            start, end = min(start, kept), max(end, kept)
        self._slider.param.update(start=start, end=end)

    def _shown(self, value):
        """The widget's value for a parameter's value."""
        return ("" if value is None else _in_words(value)) if self._as_text else value

    def _number(self, text: str | None) -> float | None:
        """The number typed as text (None: empty); ValueError saying what was typed."""
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:
            msg = f"{self.widget.label} must be a number, not {text.strip()!r}."
            raise ValueError(msg) from None

    def __panel__(self):
        return pn.Column(self.widget, self.message, margin=0, sizing_mode="stretch_width")


def fields(owner: param.Parameterized, names, widgets=None) -> list:
    """A :class:`Field` for each number or text parameter of ``names``; the others (choices,
    switches, lists) as ``pn.Param`` shows them, whose widgets cannot hold a bad value."""
    widgets = widgets or {}
    shown = []
    for name in names:
        parameter = owner.param[name]
        if isinstance(parameter, (param.Number, param.String)) and \
                not isinstance(parameter, param.Selector):
            options = dict(widgets.get(name, {}))
            shown.append(Field(owner, name, options.pop("type", None), **options))
        else:
            shown.append(pn.Param(owner, parameters=[name], show_name=False,
                                  widgets={k: v for k, v in widgets.items() if k == name}))
    return shown


def _in_words(value) -> str:
    """A parameter's value as a field says it: numbers in full, with no trailing '.0'."""
    if value in (None, ""):
        return "empty"
    return f"{value:.12g}" if isinstance(value, float) else str(value)


def _empty(value) -> bool:
    """An emptied box: no value, empty text, or the NaN an emptied number box sends."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _widget_type(parameter):
    if isinstance(parameter, param.Number) and parameter.allow_None:
        return pn.widgets.TextInput
    if isinstance(parameter, param.Integer):
        return pn.widgets.IntInput
    if isinstance(parameter, param.Number):
        return pn.widgets.FloatInput
    return pn.widgets.TextInput
