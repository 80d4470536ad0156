"""Sidebar fields: a refused value is said beside the field, and the parameter keeps its value."""

from __future__ import annotations

import math

import panel as pn
import param
import pytest

from ccdred.dashboard import _CLIP_WIDGETS
from ccdred.fields import Field, fields
from ccdred.pipeline import Pipeline


@pytest.fixture
def pipeline():
    return Pipeline()


@pytest.mark.parametrize(("typed", "said"), [
    (None, "Threshold cannot be empty. Kept: 2.5."),
    (-3.0, "Threshold must be greater than 0, not -3.0. Kept: 2.5."),
    (0.0, "Threshold must be greater than 0, not 0.0. Kept: 2.5."),
])
def test_a_refused_threshold_is_said_and_the_last_good_one_kept(pipeline, typed, said):
    field = fields(pipeline, ["threshold"], _CLIP_WIDGETS)[0]
    with param.edit_constant(field.widget):  # as the page sends it
        field.widget.param.update(value=typed, value_throttled=typed)
    assert pipeline.threshold == 2.5
    assert field.widget.value == 2.5 and field.widget.value_throttled == 2.5
    assert field.message.visible and field.message.object == said


def test_a_good_value_is_taken_and_clears_the_message(pipeline):
    field = Field(pipeline, "upper_limit")
    field.widget.value = None
    assert field.message.visible and pipeline.upper_limit == 38000
    field.widget.value = 30000.0
    assert pipeline.upper_limit == 30000 and not field.message.visible


def test_an_emptied_optional_number_means_off_and_shows_empty(pipeline):
    """An emptied number box sends NaN: for a parameter that may be unset, that is 'off'."""
    field = fields(pipeline, ["lower_limit"], _CLIP_WIDGETS)[0]
    field.widget.value = 500.0
    assert pipeline.lower_limit == 500
    field.widget.value = math.nan
    assert pipeline.lower_limit is None and field.widget.value is None
    assert not field.message.visible


def test_the_field_follows_the_parameter_set_elsewhere(pipeline):
    """A click on the threshold sweep sets the parameter: the field shows it."""
    field = fields(pipeline, ["threshold"], _CLIP_WIDGETS)[0]
    pipeline.threshold = 3.3
    assert field.widget.value == 3.3 and not field.message.visible


def test_choices_stay_with_pn_param(pipeline):
    shown = fields(pipeline, ["rejection", "threshold", "frame_clip", "keyword_datatype_bias"])
    assert [type(item) for item in shown] == [pn.Param, Field, pn.Param, pn.Param]
