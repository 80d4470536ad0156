"""Sidebar fields: a refused value is said beside the field, and the parameter keeps its value."""

from __future__ import annotations

import panel as pn
import param
import pytest

from ccdred import compat
from ccdred.dashboard import _CLIP_WIDGETS
from ccdred.errors import InputError
from ccdred.fields import Field, fields
from ccdred.pipeline import Pipeline


@pytest.fixture
def pipeline():
    return Pipeline()


@pytest.mark.parametrize(("typed", "said"), [
    (None, "Threshold needs a number (the box was empty, or held no number it takes). Kept: 2.5."),
    (-3.0, "Threshold must be greater than 0, not -3.0. Kept: 2.5."),
    (0.0, "Threshold must be greater than 0, not 0.0. Kept: 2.5."),
])
def test_a_refused_threshold_is_said_and_the_last_good_one_kept(pipeline, typed, said):
    field = fields(pipeline, ["threshold"], _CLIP_WIDGETS)[0]
    with param.edit_constant(field.widget):  # as the page sends it
        field.widget.param.update(value=typed, value_throttled=typed)
    assert pipeline.threshold == 2.5
    assert field.widget.value == 2.5
    assert field.message.visible and field.message.object == said


def test_a_refused_threshold_leaves_the_slider_s_range_as_it_was(pipeline):
    """The slider's text box widens the range in the browser to a value typed outside it,
    refused or not: the range is the slider's own, widened to the value kept only."""
    field = fields(pipeline, ["threshold"], _CLIP_WIDGETS)[0]
    slider, _ = compat.editable_slider_parts(field.widget)
    with param.edit_constant(field.widget):  # as the page sends it
        field.widget.param.update(value=-1.0, value_throttled=-1.0)
    slider.start = -1.0  # the page's own widening, which arrives after the value
    assert (slider.start, slider.end) == (0.5, 5.0)
    with param.edit_constant(field.widget):
        field.widget.param.update(value=7.0, value_throttled=7.0)
    slider.end = 7.0
    assert pipeline.threshold == 7.0 and (slider.start, slider.end) == (0.5, 7.0)
    pipeline.threshold = 2.0  # back inside: the slider's own range again
    assert (slider.start, slider.end) == (0.5, 5.0)


def _typed(text_box, value) -> None:
    """A value typed into an editable slider's text box, as the page sends it."""
    with param.edit_constant(text_box):
        text_box.param.update(value=value, value_throttled=value)


@pytest.mark.parametrize("typed", [0.0, -1.0])
def test_a_refused_value_typed_into_the_slider_s_box_is_said_each_time(pipeline, typed):
    """Typed into the text box (0 first: the box's last typed value was 0), refused and
    typed again: said each time."""
    field = fields(pipeline, ["threshold"], _CLIP_WIDGETS)[0]
    _, text_box = compat.editable_slider_parts(field.widget)
    for _ in range(2):
        _typed(text_box, typed)
        assert field.message.visible and "Kept: 2.5." in field.message.object
        assert pipeline.threshold == 2.5 and text_box.value == 2.5
        _typed(text_box, 2.5)  # the value kept, typed: the message goes
        assert not field.message.visible


def test_a_value_typed_again_after_the_slider_moved_is_taken(pipeline):
    field = fields(pipeline, ["threshold"], _CLIP_WIDGETS)[0]
    _, text_box = compat.editable_slider_parts(field.widget)
    _typed(text_box, 3.0)
    pipeline.threshold = 2.0  # the slider dragged, or a click on the sweep
    _typed(text_box, 3.0)
    assert pipeline.threshold == 3.0 and field.widget.value == 3.0
    _typed(text_box, None)  # emptied
    assert field.message.object == "Threshold needs a number (the box was empty, or held no number it takes). Kept: 3."


@pytest.mark.parametrize(("name", "typed", "said"), [
    ("upper_limit", -1.0, "Upper limit must be greater than 0, not -1.0. Kept: 38000."),
    ("lower_limit", "-5", "Lower limit must be at least 0, not -5.0. Kept: empty."),
])
def test_a_flat_limit_below_zero_is_refused(pipeline, name, typed, said):
    field = Field(pipeline, name)
    field.widget.value = typed
    assert field.message.visible and field.message.object == said


def test_a_lower_limit_above_the_upper_one_is_the_flats_input_error(night_files):
    """Raised first (on the way to raising both): the flats say so, the frames' levels and the
    master dark are still shown."""
    pipeline = Pipeline(night=str(night_files[0].parent), lower_limit=50000.0)
    with pytest.raises(InputError, match="lower limit 50000 is above the upper limit 38000: "
                                         "no flat of filter '.' can be within them"):
        pipeline.shown_flat()
    assert pipeline.frame_levels() and pipeline.shown_dark()[1].data.size


def test_a_value_set_elsewhere_ends_a_refusal(pipeline):
    field = Field(pipeline, "upper_limit")
    field.widget.value = -1.0
    assert field.message.visible
    pipeline.upper_limit = 30000.0  # a drag on the frames plot, say
    assert not field.message.visible and field.widget.value == 30000.0


def test_a_good_value_is_taken_and_clears_the_message(pipeline):
    field = Field(pipeline, "upper_limit")
    field.widget.value = None
    assert field.message.visible and pipeline.upper_limit == 38000
    field.widget.value = 30000.0
    assert pipeline.upper_limit == 30000 and not field.message.visible


def test_an_emptied_optional_number_means_off_and_shows_empty(pipeline):
    """A number that may be unset is typed as text (Panel's number box shows an empty value
    as "NaN"): emptied, it is 'off', and the box shows it empty, not "NaN"."""
    field = fields(pipeline, ["lower_limit"], _CLIP_WIDGETS)[0]
    field.widget.value = "500"
    assert pipeline.lower_limit == 500 and field.widget.value == "500"
    field.widget.value = ""
    assert pipeline.lower_limit is None and field.widget.value == ""
    assert not field.message.visible and field.widget.placeholder == "off"


@pytest.mark.parametrize(("name", "typed", "said"), [
    ("lsigma", "x", "Lsigma must be a number, not 'x'. Kept: 2."),
    ("lsigma", "-1", "Lsigma must be greater than 0, not -1.0. Kept: 2."),
    ("lower_limit", "1e400x", "Lower limit must be a number, not '1e400x'. Kept: 2."),
])
def test_a_refused_optional_number_is_said_and_shown_as_kept(pipeline, name, typed, said):
    pipeline.param.update({name: 2.0})
    field = Field(pipeline, name)
    field.widget.value = typed
    assert getattr(pipeline, name) == 2.0 and field.widget.value == "2"
    assert field.message.visible and field.message.object == said


def test_an_optional_number_set_elsewhere_is_shown_in_full(pipeline):
    field = Field(pipeline, "lower_limit")
    pipeline.lower_limit = 123456789.0
    assert field.widget.value == "123456789"
    pipeline.lower_limit = None
    assert field.widget.value == ""


def test_the_field_follows_the_parameter_set_elsewhere(pipeline):
    """A click on the threshold sweep sets the parameter: the field shows it."""
    field = fields(pipeline, ["threshold"], _CLIP_WIDGETS)[0]
    pipeline.threshold = 3.3
    assert field.widget.value == 3.3 and not field.message.visible


def test_choices_stay_with_pn_param(pipeline):
    shown = fields(pipeline, ["rejection", "threshold", "frame_clip", "keyword_datatype_bias"])
    assert [type(item) for item in shown] == [pn.Param, Field, pn.Param, pn.Param]
