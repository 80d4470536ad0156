import pytest

from ccdred.keywords import FRAME_TYPES, Keywords, is_placeholder


@pytest.mark.parametrize("value,expected", [
    ("LIGHT", "object"), (" light frame ", "object"), ("Light  Frame", "object"),
    ("OBJECT", "object"), ("science", "object"), ("DARK", "dark"), ("Dark Frame", "dark"),
    ("FLAT", "flat"), ("Flat Field", "flat"), ("SKYFLAT", "flat"), ("domeflat", "flat"),
    ("BIAS", "bias"), ("Bias Frame", "bias"), ("ZERO", "bias"), ("FOCUS", None), ("", None),
    ("zero", "bias"), ("object", "object"), ("EXPOSE", "object"), ("STANDARD", "object"),
    ("LAMPFLAT", "flat"), ("DOMEFLAT", "flat"), ("TWILIGHT", "flat"), ("Lamp Flat", "flat"),
    ("ARC", None),
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


@pytest.mark.parametrize("kwargs,expected", [
    ({}, ("IMAGETYP", "OBSTYPE", "FRAMETYP")),
    ({"imagetyp": "OBSTYPE"}, ("OBSTYPE", "IMAGETYP", "FRAMETYP")),
    ({"imagetyp": "TYPE", "imagetyp_fallbacks": ()}, ("TYPE",)),
])
def test_frame_type_keywords_tried_in_turn(kwargs, expected):
    assert Keywords(**kwargs).imagetyp_keywords() == expected


def test_the_course_script_values_come_first():
    keywords = Keywords()
    assert [getattr(keywords, kind)[0] for kind in FRAME_TYPES] == ["BIAS", "DARK", "FLAT", "LIGHT"]
    assert keywords.imagetyp == "IMAGETYP"


@pytest.mark.parametrize("value,expected", [
    ("UNKNOWN", True), (" n/a ", True), ("", True), (None, True), ("NONE", True),
    ("[1:10,1:20]", False), ("[0,513:0,1536]", False),
])
def test_placeholders(value, expected):
    assert is_placeholder(value) is expected


@pytest.mark.parametrize("kwargs,match", [
    ({"dark": ("FLAT",)}, "claimed by more than one frame type: 'FLAT'"),
    ({"object": ()}, "frame type 'object' needs at least one"),
    ({"filter": " "}, "keyword 'filter' must not be blank"),
])
def test_bad_keywords_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Keywords(**kwargs)
