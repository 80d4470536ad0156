"""The night's gain and read noise in the products: measured, from the header or given.

A demo night made with a known gain and read noise, its GAIN card removed, is reduced
by the command line: the products' GAIN and RDNOISE cards recover the truth and name
their source; options give exactly their values and change no image; a header GAIN far
from the measured one is a warning; both runners write the same cards.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from astropy.io import fits

from ccdred.cli import main
from ccdred.demo import NightSpec, make_night, night_truth
from ccdred.noise import DetectorNoise

#: A gain and read noise not the demo's default; three flats of one filter, two at one level.
SPEC = NightSpec(shape=(320, 352), seed=2929, gain=2.3, read_noise=11.5, n_bias=3, n_darks=2,
                 filters=("V",), object_exptimes=(30.0,), n_objects=2,
                 flat_levels=(20000.0, 20600.0, 30000.0))
TRUTH = night_truth(SPEC)
MEASURED = {"GAIN": "e-/ADU, measured from 2 biases and 2 flats",
            "RDNOISE": "e-, measured from 2 biases"}


def set_header(folder, **cards):
    """Set (a value) or remove (None) cards of every raw frame of ``folder``."""
    for path in sorted(folder.glob("*.fits")):
        for key, value in cards.items():
            if value is None:
                fits.delval(path, key)
            else:
                fits.setval(path, key, value=value)


def reduce(night, out, *options):
    assert main(["reduce", "-q", "-d", str(out), *options, str(night)]) == 0
    return out


def cards(out) -> dict:
    """(value, comment) of the GAIN and RDNOISE cards of every product, by name."""
    found = {}
    for path in sorted(out.glob("*.fits")):
        header = fits.getheader(path)
        found[path.name] = {key: (header.get(key), header.comments[key] if key in header else None)
                            for key in ("GAIN", "RDNOISE")}
    return found


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """The night without a GAIN card: its gain can only be measured."""
    folder = tmp_path_factory.mktemp("detector") / "raw"
    make_night(folder, SPEC)
    set_header(folder, GAIN=None)
    return folder


@pytest.fixture(scope="module")
def reduced(night, tmp_path_factory):
    """The night reduced without, then with, the options."""
    out = tmp_path_factory.mktemp("reduced")
    return {"plain": reduce(night, out / "plain"),
            "options": reduce(night, out / "options", "--gain", "2.0", "--read-noise", "10")}


def test_the_raw_frames_keep_their_data_without_the_gain_card(night):
    path = sorted(night.glob("*.fits"))[0]
    assert "GAIN" not in fits.getheader(path)
    assert fits.getdata(path).dtype == np.uint16


def test_products_carry_the_measured_gain_and_read_noise_within_5_percent(reduced):
    found = cards(reduced["plain"])
    assert len(found) == 10  # 2 darks, a flat, 3 flats' _d, 2 objects' _d and _df
    for name, card in found.items():
        assert card["GAIN"][0] == pytest.approx(TRUTH.gain, rel=0.05), name
        assert card["RDNOISE"][0] == pytest.approx(TRUTH.read_noise, rel=0.05), name
        assert {key: comment for key, (_, comment) in card.items()} == MEASURED, name
    assert len({tuple(card.items()) for card in found.values()}) == 1  # one night, one value


def test_the_log_says_both_values_and_their_sources(reduced):
    log = (reduced["plain"] / "ccdred.log").read_text()
    assert "e-/ADU (measured from 2 biases and 2 flats), read noise " in log
    assert "e- (measured from 2 biases)" in log


def test_options_give_exactly_their_cards(reduced):
    for name, card in cards(reduced["options"]).items():
        assert card == {"GAIN": (2.0, "e-/ADU, option"), "RDNOISE": (10.0, "e-, option")}, name
    header = fits.getheader(next(reduced["options"].glob("*_df.fits")))
    assert (header["HIERARCH CCDRED GAIN"], header["HIERARCH CCDRED READ_NOISE"]) == (2.0, 10.0)
    log = (reduced["options"] / "ccdred.log").read_text()
    assert "gain 2 e-/ADU (option), read noise 10 e- (option)" in log


def test_options_change_no_image(reduced):
    plain = sorted(reduced["plain"].glob("*.fits"))
    assert [p.name for p in plain] == sorted(p.name for p in reduced["options"].glob("*.fits"))
    for path in plain:
        assert fits.getdata(path).tobytes() == \
            fits.getdata(reduced["options"] / path.name).tobytes(), path.name


def test_a_header_gain_far_from_the_measured_one_warns_and_is_used(night, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(night, raw)
    set_header(raw, EGAIN=2 * TRUTH.gain)
    out = reduce(raw, tmp_path / "out")
    message = (r"demo_0001\.fits: measured gain 2\.\d+ e-/ADU is 5\d% below the header's "
               r"EGAIN = 4\.6 e-/ADU; the header's value is used")
    stderr = capsys.readouterr().err
    assert len(re.findall("ccdred: warning: .*" + message, stderr)) == 1
    log = (out / "ccdred.log").read_text()
    assert re.search("WARNING .*" + message, log)
    for name, card in cards(out).items():
        assert card["GAIN"] == (4.6, "e-/ADU, header EGAIN"), name
        # the read noise is measured in ADU and given in electrons at the gain used
        assert card["RDNOISE"][0] == pytest.approx(2 * TRUTH.read_noise, rel=0.05), name


def test_a_night_whose_gain_cannot_be_known_is_reduced_as_before(night, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(night, raw)
    for path in sorted(raw.glob("*.fits"))[:2]:  # two of the three biases
        path.unlink()
    out = reduce(raw, tmp_path / "out")
    assert "warning" not in capsys.readouterr().err
    for name, card in cards(out).items():
        assert card == {"GAIN": (None, None), "RDNOISE": (None, None)}, name
    log = (out / "ccdred.log").read_text()
    assert "gain and read noise unknown (the gain is unknown: no option, no header keyword" in log


def test_a_header_gain_with_one_bias_leaves_the_read_noise_unknown(night, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(night, raw)
    for path in sorted(raw.glob("*.fits"))[:2]:
        path.unlink()
    set_header(raw, GAIN=TRUTH.gain)
    out = reduce(raw, tmp_path / "out", "--read-noise", "9.5")
    for name, card in cards(out).items():
        assert card == {"GAIN": (TRUTH.gain, "e-/ADU, header GAIN"),
                        "RDNOISE": (9.5, "e-, option")}, name


def test_an_infinite_gain_is_refused_naming_the_option(night, tmp_path, capsys):
    assert main(["reduce", "-q", "-d", str(tmp_path / "out"), "--gain", "inf", str(night)]) == 2
    assert "--gain must be a finite number, not inf" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.fits"))


def test_both_runners_write_the_same_cards(night, reduced, tmp_path):
    pytest.importorskip("distributed")
    out = reduce(night, tmp_path / "dask", "--workers", "1")
    assert cards(out) == cards(reduced["plain"])
    line = next(line for line in (out / "ccdred.log").read_text().splitlines()
                if "e-/ADU (" in line)
    assert line.split(" INFO ")[1] in (reduced["plain"] / "ccdred.log").read_text()


def test_the_pipeline_gives_the_products_noise(night, reduced):
    from ccdred.pipeline import Pipeline

    noise = Pipeline(night=str(night)).detector_noise()
    assert isinstance(noise, DetectorNoise)
    header = fits.getheader(next(reduced["plain"].glob("*_df.fits")))
    assert float(f"{noise.gain:.4g}") == header["GAIN"]
    assert float(f"{noise.read_noise:.4g}") == header["RDNOISE"]
    assert noise.source == ("gain: measured from 2 biases and 2 flats; "
                            "read noise: measured from 2 biases")


#: Flats in pairs at three levels: a photon transfer curve.
CURVE_SPEC = NightSpec(shape=(256, 256), seed=3131, gain=2.3, read_noise=11.5, n_bias=2, n_darks=2,
                       filters=("V",), object_exptimes=(30.0,), n_objects=1,
                       flat_levels=(8000.0, 8150.0, 16000.0, 16400.0, 30000.0, 30300.0))


def test_the_detector_tab_shows_the_photon_transfer_curve_of_the_truth(tmp_path):
    """The Pipeline's curve recovers the gain within 5 % and the read noise within 10 % (an
    intercept); the tab's table states header, curve and used values, and plots the curve."""
    import holoviews as hv

    from ccdred.dashboard import Dashboard
    from ccdred.pipeline import Pipeline

    hv.extension("bokeh", logo=False)
    make_night(tmp_path / "curve", CURVE_SPEC)
    pipeline = Pipeline(night=str(tmp_path / "curve"))
    header, noise, curve = pipeline.shown_detector()
    assert header[0] == (2.3, "GAIN") and header[1] is None  # the demo writes GAIN only
    assert len(curve.signal) == 4  # the biases, and three levels
    assert curve.gain == pytest.approx(TRUTH.gain, rel=0.05)
    assert curve.read_noise == pytest.approx(SPEC.read_noise, rel=0.10)
    assert noise.gain == 2.3 and noise.gain_source == "header GAIN"
    view = Dashboard._detector_view((header, noise, curve))
    table = view[0].object
    assert f"| photon transfer curve | {curve.gain:.4g} | {curve.read_noise:.4g} |" in table
    assert "| header | 2.3 (GAIN) | none |" in table
    assert isinstance(view[1].object, hv.Overlay)


def test_a_night_with_one_level_says_why_it_has_no_curve(night):
    from ccdred.dashboard import Dashboard
    from ccdred.pipeline import Pipeline

    shown = Pipeline(night=str(night)).shown_detector()
    assert isinstance(shown[2], str)
    assert "needs flats at two or more levels, two at each" in shown[2]
    assert "this night's 3 flats have 1" in shown[2]
    view = Dashboard._detector_view(shown)
    assert len(view) == 1 and "No photon transfer curve:" in view[0].object


def test_the_detector_tab_circles_the_true_hot_pixels(tmp_path):
    """The Pipeline's hot pixels, from the raw darks of a demo night: at least 95 % of the
    true ones, false ones at most 0.1 % of the pixels; the tab draws them over the current."""
    import holoviews as hv

    from ccdred.dashboard import Dashboard
    from ccdred.pipeline import Pipeline

    hv.extension("bokeh", logo=False)
    spec = NightSpec(shape=(200, 240), seed=77)
    make_night(tmp_path / "hot", spec)
    truth = night_truth(spec).hot_pixels
    rate, hot = Pipeline(night=str(tmp_path / "hot")).shown_hot_pixels()
    assert rate.shape == hot.shape == truth.shape
    assert np.count_nonzero(hot & truth) >= 0.95 * np.count_nonzero(truth) > 20
    assert np.count_nonzero(hot & ~truth) <= 0.001 * hot.size
    view = Dashboard._hot_pixel_view((rate, hot))
    overlay = view[1].object
    assert len(overlay.get(1).data) == np.count_nonzero(hot)  # one circle per hot pixel
