"""Multi-amplifier frames read as one image (``--tile``): each amplifier's extension
overscan-corrected and trimmed by its own sections, placed by its DETSEC.

The tiling is held to images placed by hand; 2- and 4-amplifier nights (the same
truth as the one-amplifier demo night, each amplifier with its own bias level and
gain, some read out flipped) are reduced by the command line and held to the
simulated truth, to the one-amplifier night's products, and across the runners.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from ccdred import steps
from ccdred.cli import main
from ccdred.demo import (AMPLIFIER_GAIN, BIAS_LEVEL, NightSpec, amplifier_layout, make_night,
                         night_stars, night_truth, star_cores)
from ccdred.frames import PreprocessOptions, scan
from ccdred.night import reduce_night
from ccdred.parameters import ReductionParameters
from ccdred.pipeline import MASTERS, Pipeline
from ccdred.planes import MaskBit
from ccdred.sections import Placement, Preprocess, Section, Trim, layout_problems, tile

#: The one-amplifier night, and the same night read through 2 and 4 amplifiers (a wide
#: overscan strip, so that each amplifier's bias level is known to a fraction of an ADU).
BASE = {"shape": (64, 80), "seed": 30, "overscan": 24}
SPECS = {n: NightSpec(**BASE, amplifiers=n) for n in (1, 2, 4)}
SKY = 4.0  # ADU/s, as the demo's object frames see it


# -- the tiling, against images placed by hand -----------------------------------------


def _quadrants(dtype):
    rng = np.random.default_rng(7)
    return [(rng.random((3, 4)) * 1000).astype(dtype) for _ in range(4)]


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_tile_places_each_image_by_its_detsec_flipped_where_it_runs_backwards(dtype):
    images = _quadrants(dtype)
    detsecs = ["[1:4,1:3]", "[8:5,1:3]", "[1:4,6:4]", "[8:5,6:4]"]
    expected = np.zeros((6, 8), dtype)
    expected[0:3, 0:4] = images[0]
    expected[0:3, 4:8] = np.fliplr(images[1])
    expected[3:6, 0:4] = np.flipud(images[2])
    expected[3:6, 4:8] = np.flipud(np.fliplr(images[3]))
    tiled = tile(images, [Placement.parse(d) for d in detsecs])
    assert tiled.dtype == dtype
    np.testing.assert_array_equal(tiled, expected)


def test_tile_of_a_detector_part_starts_at_its_first_pixel_and_fills_out():
    images = [np.full((2, 2), 1.0), np.full((2, 2), 2.0)]
    out = np.zeros((2, 4), np.float32)
    tiled = tile(images, [Placement.parse("[101:102,11:12]"), Placement.parse("[103:104,11:12]")],
                 out=out)
    assert tiled is out
    np.testing.assert_array_equal(out, [[1, 1, 2, 2], [1, 1, 2, 2]])


def test_tile_does_not_change_its_inputs():
    images = _quadrants(np.float64)
    kept = [image.copy() for image in images]
    tile(images, [Placement.parse(d) for d in ["[1:4,1:3]", "[8:5,1:3]", "[1:4,6:4]", "[8:5,6:4]"]])
    for image, before in zip(images, kept, strict=True):
        np.testing.assert_array_equal(image, before)


def test_tile_refuses_an_image_of_another_size_than_its_detsec():
    with pytest.raises(ValueError, match=r"4x3 pixels cannot be placed at \[1:5,1:3\] \(5x3\)"):
        tile(_quadrants(np.float64)[:1], [Placement.parse("[1:5,1:3]")])


def test_placement_reads_and_writes_back_a_flipped_detsec():
    placement = Placement.parse(" [2048:1025, 4096:1] ")
    assert placement.section == Section(1025, 2048, 1, 4096)
    assert (placement.flip_x, placement.flip_y) == (True, True)
    assert str(placement) == "[2048:1025,4096:1]"
    with pytest.raises(ValueError, match="not a FITS section"):
        Placement.parse("[0:10,1:5]")


def test_layout_problems_name_overlaps_and_count_holes():
    overlapping = [Placement.parse("[1:4,1:3]"), Placement.parse("[4:8,1:3]")]
    assert layout_problems(overlapping, ["A", "B"]) == [
        ("B", "DETSEC [4:8,1:3] overlaps A's [1:4,1:3]")]
    holed = [Placement.parse("[1:4,1:3]"), Placement.parse("[6:8,1:3]")]
    assert layout_problems(holed, ["A", "B"]) == [
        ("A", "the DETSECs [1:4,1:3], [6:8,1:3] leave 3 of the 24 pixels of [1:8,1:3] uncovered")]
    assert layout_problems([Placement.parse("[1:4,1:3]"), Placement.parse("[8:5,1:3]")],
                           ["A", "B"]) == []


def test_preprocess_samples_are_the_raw_values_it_keeps():
    raw = np.arange(20.0).reshape(4, 5)
    trim = Preprocess(trim=Trim(Section.parse("[2:3,1:2]")))
    np.testing.assert_array_equal(trim.samples(raw), raw[0:2, 1:3])


# -- nights read through several amplifiers -------------------------------------------


def reduce(folder, out, *options) -> int:
    return main(["reduce", "-q", "-d", str(out), *map(str, options), str(folder)])


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Each night's raw folder and its products (``--tile`` for several amplifiers)."""
    root = tmp_path_factory.mktemp("amplifiers")
    for n, spec in SPECS.items():
        make_night(root / f"raw{n}", spec)
        assert reduce(root / f"raw{n}", root / f"out{n}", *(["--tile"] if n > 1 else [])) == 0
    return root


def gain_map(n):
    """Each pixel's amplifier gain (relative to the one-amplifier camera's)."""
    gains = np.ones(BASE["shape"])
    for number, (rows, cols, _, _) in enumerate(amplifier_layout(BASE["shape"], n)):
        gains[rows, cols] = AMPLIFIER_GAIN[number]
    return gains


def first_object(folder):
    return sorted(folder.glob("*_df.fits"))[0]


def test_the_demo_writes_an_extension_per_amplifier_with_its_sections(nights):
    with fits.open(nights / "raw4" / "demo_0001.fits") as hdus:
        assert [hdu.name for hdu in hdus] == ["PRIMARY", "AMP1", "AMP2", "AMP3", "AMP4"]
        assert hdus[0].header["IMAGETYP"] == "BIAS" and hdus[0].data is None
        assert [hdu.header["DETSEC"] for hdu in hdus[1:]] == [
            "[1:40,1:32]", "[80:41,1:32]", "[1:40,64:33]", "[80:41,64:33]"]
        assert {hdu.header["BIASSEC"] for hdu in hdus[1:]} == {"[41:64,1:32]"}
        assert {hdu.header["DATASEC"] for hdu in hdus[1:]} == {"[1:40,1:32]"}
        # each amplifier's bias level, read in its overscan strip
        levels = [np.median(hdu.data[:, 40:]) for hdu in hdus[1:]]
        np.testing.assert_allclose(levels, [1000, 1180, 940, 1090], atol=2)


@pytest.mark.parametrize("n", [2, 4])
def test_a_tiled_night_makes_the_products_of_the_one_amplifier_night(nights, n):
    single = {p.name for p in (nights / "out1").glob("*.fits")}
    assert {p.name for p in (nights / f"out{n}").glob("*.fits")} == single
    for name in single:
        assert fits.getdata(nights / f"out{n}" / name).shape == BASE["shape"], name


@pytest.mark.parametrize("n", [2, 4])
def test_each_amplifier_bias_level_is_gone_and_its_gain_is_in_the_master_dark(nights, n):
    """A master dark (its bias in, overscan gone) is each amplifier's gain times the
    truth's bias structure and dark current: right side up, of every amplifier."""
    truth = night_truth(SPECS[1])
    dark = fits.getdata(nights / f"out{n}" / "dark_00005000.fits")
    expected = gain_map(n) * (truth.bias - BIAS_LEVEL + 5.0 * truth.dark_current)
    residual = dark - expected
    # 5 darks of 6 ADU read noise, and each frame's overscan (a median of 24 pixels per row)
    noise = 6.0 * 1.07 * np.sqrt(1 / 5 + 1.25**2 / 24 / 5)
    assert abs(np.median(residual)) < 0.5
    assert 0.8 * noise < np.std(residual[~truth.hot_pixels]) < 1.2 * noise
    # the bias's column pattern (1.5 ADU) is where the truth has it: not flipped away
    assert np.std(residual.mean(axis=0)) < 4 * noise / np.sqrt(BASE["shape"][0])


@pytest.mark.parametrize("n", [2, 4])
def test_the_master_flat_is_the_truth_response_times_each_amplifier_gain(nights, n):
    truth = night_truth(SPECS[1])
    flat = fits.getdata(nights / f"out{n}" / "flat_V.fits")
    ratio = flat / (gain_map(n) * truth.flat_response["V"])
    # six flats of ~24000 ADU: 0.2 % noise per pixel; a misplaced amplifier is off by its
    # gain (>= 4 %) and its vignetting
    assert np.std(ratio / np.median(ratio)) < 0.004


@pytest.mark.parametrize("n", [2, 4])
def test_the_calibrated_object_is_the_true_sky_and_stars_whatever_the_amplifier(nights, n):
    product = first_object(nights / f"out{n}")
    calibrated = fits.getdata(product).astype(np.float64)
    light = (SKY + night_stars(SPECS[1])) * fits.getheader(product)["EXPTIME"]
    ratio = calibrated / light
    scale = np.median(ratio)  # the master flat's normalisation
    amplifiers = [np.median(ratio[rows, cols]) / scale
                  for rows, cols, _, _ in amplifier_layout(BASE["shape"], n)]
    # each amplifier's median: 0.3 % of noise from its pixels, 0.3 % from its overscan;
    # bias levels 60 to 240 ADU apart (on 120 ADU of sky) and gains 4 to 16 % apart
    np.testing.assert_allclose(amplifiers, 1.0, atol=0.015)
    gain, read_noise = SPECS[1].gain, SPECS[1].read_noise / SPECS[1].gain
    pulls = (calibrated / scale - light) / np.sqrt(light / gain + read_noise**2)
    robust_std = 1.4826 * np.median(np.abs(pulls - np.median(pulls)))  # cosmic rays aside
    assert 0.9 < robust_std < 1.2
    assert np.abs(pulls[star_cores(SPECS[1])]).max() < 4  # the stars where the truth has them


@pytest.mark.parametrize("n", [2, 4])
def test_the_calibrated_object_is_the_one_amplifier_night_s_scaled(nights, n):
    """The same frames (same noise, same cosmic rays) read through several amplifiers: the
    products differ by the flat's normalisation and the amplifiers' overscan noise only."""
    name = first_object(nights / f"out{n}").name
    tiled = fits.getdata(nights / f"out{n}" / name).astype(np.float64)
    single = fits.getdata(nights / "out1" / name).astype(np.float64)
    scale = np.median(tiled / single)
    # each row's overscan: a median of 24 pixels of 6 ADU read noise (x its gain), 1.6 ADU
    assert np.std(tiled / scale - single) < 4.0


@pytest.mark.parametrize("n", [2, 4])
def test_products_say_they_were_tiled(nights, n):
    header = fits.getheader(first_object(nights / f"out{n}"))
    history = str(header["HISTORY"])
    assert f"tiled from {n} image extensions, placed by DETSEC" in history
    assert "extension 2 (AMP2) placed at DETSEC [80:41," in history
    assert header["HIERARCH CCDRED TILE"] == f"{n} amplifiers by DETSEC"
    assert header["HIERARCH CCDRED OVERSCAN"] == "per amplifier (BIASSEC)"
    assert "DETSEC" not in header and "BIASSEC" not in header


def product_data(folder):
    return {p.name: fits.getdata(p) for p in sorted(folder.glob("*.fits"))}


@pytest.mark.parametrize("n", [2, 4])
def test_the_runners_make_equal_tiled_products(nights, client, tmp_path, n):
    from ccdred.cluster import reduce_nights_on_cluster

    parameters = ReductionParameters(tile=True)
    written = product_data(nights / f"out{n}")
    reduce_nights_on_cluster([([nights / f"raw{n}"], tmp_path / "dask")], client, parameters)
    dask = product_data(tmp_path / "dask")
    assert dask.keys() == written.keys()
    for name in written:
        assert dask[name].tobytes() == written[name].tobytes(), name
    MASTERS.clear()
    pipeline = Pipeline(night=str(nights / f"raw{n}"), tile=True)
    for name in pipeline.plan.masters:
        master = steps.as_written(pipeline.master(name).data, "float32")
        assert master.tobytes() == written[name].astype(master.dtype).tobytes(), name
    product = first_object(nights / f"out{n}")
    calibrated = pipeline.calibrated(product.name.replace("_df.fits", ".fits"))
    np.testing.assert_array_equal(calibrated.astype(np.float32), written[product.name])


def test_row_blocks_of_tiled_frames_change_no_product(nights, tmp_path):
    blocks = reduce_night([nights / "raw4"], tmp_path / "blocks", ReductionParameters(tile=True),
                          memory_budget=6_000)
    assert blocks.plan.masters
    whole = product_data(nights / "out4")
    for name, data in product_data(tmp_path / "blocks").items():
        np.testing.assert_array_equal(data, whole[name], err_msg=name)


def test_planes_of_a_tiled_night_mark_its_saturated_pixels(nights, tmp_path):
    """The raw samples of a tiled frame (before each amplifier's overscan) find its
    saturated pixels: one made so in a flat-fielded object's raw amplifier is masked."""
    folder = tmp_path / "raw"
    folder.mkdir()
    for path in (nights / "raw2").glob("*.fits"):
        (folder / path.name).write_bytes(path.read_bytes())
    with fits.open(folder / "demo_0033.fits", mode="update") as hdus:
        hdus[2].data[5, 3] = 65535  # AMP2 is flipped: detector column 80 - 3, row 6
    assert reduce(folder, tmp_path / "out", "--tile", "--planes") == 0
    with fits.open(tmp_path / "out" / "demo_0033_df.fits") as hdus:
        assert hdus["UNCERT"].data.shape == hdus["MASK"].data.shape == BASE["shape"]
        saturated = np.argwhere(hdus["MASK"].data & MaskBit.SATURATED)
    assert saturated.tolist() == [[5, 76]]


def test_tile_can_be_set_on_a_pipeline_after_it_scanned(nights):
    pipeline = Pipeline(night=str(nights / "raw2"))
    assert pipeline.catalogue.frames == () and len(pipeline.catalogue.problems) == 38
    pipeline.tile = True
    assert len(pipeline.catalogue.frames) == 38 and pipeline.catalogue.problems == ()


def test_tile_compressed_extensions_reduce_as_the_plain_ones(nights, tmp_path):
    folder = tmp_path / "fz"
    folder.mkdir()
    for path in sorted((nights / "raw2").glob("*.fits")):
        with fits.open(path) as hdus:
            compressed = [fits.CompImageHDU(hdu.data, hdu.header, compression_type="RICE_1")
                          for hdu in hdus[1:]]
            fits.HDUList([fits.PrimaryHDU(header=hdus[0].header), *compressed]).writeto(
                folder / f"{path.name}.fz")
    assert reduce(folder, tmp_path / "out", "--tile") == 0
    plain, compressed = product_data(nights / "out2"), product_data(tmp_path / "out")
    assert compressed.keys() == plain.keys()
    for name in plain:
        np.testing.assert_array_equal(compressed[name], plain[name], err_msg=name)


# -- what is refused ------------------------------------------------------------------


def test_several_image_extensions_without_tile_are_refused_naming_the_file(nights, tmp_path,
                                                                         capsys):
    assert reduce(nights / "raw4", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert (f"{nights / 'raw4' / 'demo_0001.fits'}: 4 image extensions (amplifiers or CCDs): "
            "give --tile to read them as one image placed by their DETSEC") in err
    assert not (tmp_path / "out").exists()


def test_a_single_image_night_is_read_as_before_with_tile(nights, tmp_path):
    plain = scan([nights / "raw1"])
    tiled = scan([nights / "raw1"], preprocessing=PreprocessOptions(tile=True))
    assert tiled == plain


def _damaged(nights, tmp_path, changes):
    """The 2-amplifier night's first frame with ``changes(hdus)`` made, alone in a folder."""
    folder = tmp_path / "damaged"
    folder.mkdir()
    with fits.open(nights / "raw2" / "demo_0001.fits") as hdus:
        changes(hdus)
        hdus.writeto(folder / "demo_0001.fits")
    return folder


def _problems(folder):
    catalogue = scan([folder], preprocessing=PreprocessOptions(tile=True))
    assert catalogue.frames == ()
    return sorted(problem.message for problem in catalogue.problems)


def test_missing_detsec_and_datasec_are_each_named_at_once(nights, tmp_path):
    def remove(hdus):
        del hdus[1].header["DETSEC"]
        del hdus[2].header["DATASEC"]

    assert _problems(_damaged(nights, tmp_path, remove)) == [
        "extension 1 (AMP1): no DETSEC: where it lies on the detector is unknown",
        "extension 2 (AMP2): no usable DATASEC (nor TRIMSEC): which pixels were exposed is "
        "unknown"]


@pytest.mark.parametrize(("detsec", "expected"), [
    ("[30:69,1:64]", "extension 2 (AMP2): DETSEC [30:69,1:64] overlaps 1 (AMP1)'s [1:40,1:64]"),
    ("[82:43,1:64]", "extension 1 (AMP1): the DETSECs [1:40,1:64], [82:43,1:64] leave 128 of "
                     "the 5248 pixels of [1:82,1:64] uncovered"),
    ("[80:31,1:64]", "extension 2 (AMP2): its trimmed image (40x64) is not the size of its "
                     "DETSEC [80:31,1:64] (50x64)"),
])
def test_detsecs_that_overlap_leave_holes_or_misfit_are_refused(nights, tmp_path, detsec,
                                                                  expected):
    def move(hdus):
        hdus[2].header["DETSEC"] = detsec

    assert _problems(_damaged(nights, tmp_path, move)) == [expected]


def test_an_overscan_in_some_amplifiers_only_is_refused(nights, tmp_path):
    def remove(hdus):
        del hdus[2].header["BIASSEC"]

    assert _problems(_damaged(nights, tmp_path, remove)) == [
        "extension 2 (AMP2): no usable BIASSEC, where other extensions have one "
        "(--overscan none uses none)"]


def test_tiling_problems_of_every_file_are_said_at_once_by_the_command_line(nights, tmp_path,
                                                                          capsys):
    folder = tmp_path / "night"
    folder.mkdir()
    for number, key in ((1, "DETSEC"), (2, "DATASEC")):
        with fits.open(nights / "raw2" / f"demo_{number:04d}.fits") as hdus:
            del hdus[2].header[key]
            hdus.writeto(folder / f"demo_{number:04d}.fits")
    assert reduce(folder, tmp_path / "out", "--tile") == 2
    err = capsys.readouterr().err
    assert f"{folder / 'demo_0001.fits'}: extension 2 (AMP2): no DETSEC" in err
    assert f"{folder / 'demo_0002.fits'}: extension 2 (AMP2): no usable DATASEC" in err


def test_the_demo_command_writes_a_night_through_four_amplifiers(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "odd"), "--size", "15", "--amplifiers", "4"]) == 2
    assert "2 or 4 amplifiers over an even number of rows and columns" in capsys.readouterr().err
    assert main(["demo", str(tmp_path / "night"), "--size", "16", "--amplifiers", "4"]) == 0
    catalogue = scan([tmp_path / "night"], preprocessing=PreprocessOptions(tile=True))
    assert catalogue.problems == () and len(catalogue.frames) == 38
    assert {len(frame.preprocess.amplifiers) for frame in catalogue.frames} == {4}
    assert {frame.shape for frame in catalogue.frames} == {(16, 16)}
