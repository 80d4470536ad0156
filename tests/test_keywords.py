import pytest

from ccdred.keywords import Keywords


@pytest.mark.parametrize("value,expected", [
    ("LIGHT", "object"), (" light frame ", "object"), ("Light  Frame", "object"),
    ("OBJECT", "object"), ("science", "object"), ("DARK", "dark"), ("Dark Frame", "dark"),
    ("FLAT", "flat"), ("Flat Field", "flat"), ("SKYFLAT", "flat"), ("domeflat", "flat"),
    ("BIAS", "bias"), ("Bias Frame", "bias"), ("ZERO", "bias"), ("FOCUS", None), ("", None),
])
def test_default_aliases(value, expected):
    assert Keywords().frame_type(value) == expected


def test_custom_values_replace_the_defaults():
    keywords = Keywords(object=("SCI",), dark="DK")
    assert keywords.frame_type("sci") == "object"
    assert keywords.frame_type("LIGHT") is None
    assert keywords.dark == ("DK",)


def test_exposure_falls_back_to_exposure_keyword():
    assert Keywords().exptime_keywords() == ("EXPTIME", "EXPOSURE")


@pytest.mark.parametrize("kwargs,match", [
    ({"dark": ("FLAT",)}, "claimed by more than one frame type: 'FLAT'"),
    ({"object": ()}, "frame type 'object' needs at least one"),
    ({"filter": " "}, "keyword 'filter' must not be blank"),
])
def test_bad_keywords_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Keywords(**kwargs)
