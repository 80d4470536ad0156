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
from ccdred.fitsio import PLANES
from ccdred.frames import scan
from ccdred.job import reduce_one_night
from ccdred.night import reduce_night
from ccdred.parameters import ReductionParameters
from ccdred.pipeline import MASTERS, Pipeline
from ccdred.planes import MaskBit
from ccdred.sections import Placement, Preprocess, Section, Trim, layout_problems, tile, untile

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


#: DETSECs of 2 and 4 amplifiers of 4x3 pixels, read out flipped in x, in y, in both.
LAYOUTS = {
    "2 flipped in x": ["[1:4,1:3]", "[8:5,1:3]"],
    "2 flipped in y": ["[1:4,1:3]", "[1:4,6:4]"],
    "2 flipped in both": ["[4:1,3:1]", "[8:5,3:1]"],
    "4 flipped in x, y, both": ["[1:4,1:3]", "[8:5,1:3]", "[1:4,6:4]", "[8:5,6:4]"],
    "4 of a detector part": ["[104:101,11:13]", "[105:108,11:13]", "[104:101,14:16]",
                             "[108:105,16:14]"],
}


@pytest.mark.parametrize("detsecs", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_untile_gives_back_each_amplifier_image_as_read_out(detsecs):
    placements = [Placement.parse(d) for d in detsecs]
    images = _quadrants(np.float32)[:len(detsecs)]
    parts = untile(tile(images, placements), placements)
    assert len(parts) == len(images)
    for part, image in zip(parts, images, strict=True):
        assert part.dtype == image.dtype
        np.testing.assert_array_equal(part, image)


@pytest.mark.parametrize("detsecs", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_tile_of_untile_is_the_detector_image(detsecs):
    placements = [Placement.parse(d) for d in detsecs]
    sections = [placement.section for placement in placements]
    shape = (max(s.y2 for s in sections) - min(s.y1 for s in sections) + 1,
             max(s.x2 for s in sections) - min(s.x1 for s in sections) + 1)
    detector = np.random.default_rng(3).random(shape)
    kept = detector.copy()
    parts = untile(detector, placements)
    assert all(np.shares_memory(part, detector) for part in parts)  # views: no copy
    np.testing.assert_array_equal(tile(parts, placements), detector)
    np.testing.assert_array_equal(detector, kept)


def test_untile_cuts_by_hand_placed_quadrants():
    detector = np.arange(48).reshape(6, 8)
    detsecs = ["[1:4,1:3]", "[8:5,1:3]", "[1:4,6:4]", "[8:5,6:4]"]
    parts = untile(detector, [Placement.parse(d) for d in detsecs])
    np.testing.assert_array_equal(parts[0], detector[0:3, 0:4])
    np.testing.assert_array_equal(parts[1], detector[0:3, 7:3:-1])
    np.testing.assert_array_equal(parts[2], detector[5:2:-1, 0:4])
    np.testing.assert_array_equal(parts[3], detector[5:2:-1, 7:3:-1])


def test_untile_refuses_an_image_of_another_size_than_the_detsecs_extent():
    placements = [Placement.parse("[1:4,1:3]"), Placement.parse("[8:5,1:3]")]
    with pytest.raises(ValueError, match=r"7x3 pixels is not the 8x3 of the DETSECs' extent "
                                         r"\[1:8,1:3\]"):
        untile(np.zeros((3, 7)), placements)


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


def test_a_pipeline_shows_the_tiled_image_with_or_without_tile(nights):
    pipeline = Pipeline(night=str(nights / "raw2"))
    assert len(pipeline.catalogue.frames) == 38 and pipeline.catalogue.problems == ()
    assert {frame.shape for frame in pipeline.catalogue.frames} == {BASE["shape"]}
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


# -- products with the raw frames' extensions (without --tile) --------------------------


@pytest.fixture(scope="module")
def split(nights):
    """The 2- and 4-amplifier nights reduced with their planes, without ``--tile`` (an
    extension per amplifier) and with it (one image)."""
    for n in (2, 4):
        assert reduce(nights / f"raw{n}", nights / f"split{n}", "--planes") == 0
        assert reduce(nights / f"raw{n}", nights / f"tiled{n}", "--planes", "--tile") == 0
    return nights


def amplifier_hdus(hdus, name=None):
    """A product's image extensions (``name``: a plane's extensions instead)."""
    return [hdu for hdu in hdus[1:] if (hdu.name == name if name else hdu.name not in PLANES)]


def tiled_back(path, name=None) -> np.ndarray:
    """A product's extensions (or a plane's) tiled by their DETSECs."""
    with fits.open(path) as hdus:
        parts = amplifier_hdus(hdus, name)
        return tile([hdu.data for hdu in parts], [Placement.parse(hdu.header["DETSEC"])
                                                  for hdu in parts])


def every_hdu(folder) -> dict:
    """Each product's HDUs' data, by product name and HDU (name, version)."""
    data = {}
    for path in sorted(folder.glob("*.fits")):
        with fits.open(path) as hdus:
            data[path.name] = {(hdu.name, hdu.ver): None if hdu.data is None else hdu.data.copy()
                               for hdu in hdus}
    return data


@pytest.mark.parametrize("n", [2, 4])
def test_each_product_has_the_raw_frames_extensions(split, n):
    with fits.open(split / f"raw{n}" / "demo_0001.fits") as hdus:
        raw = [(hdu.name, hdu.header["DETSEC"]) for hdu in hdus[1:]]
    tiled = {p.name for p in (split / f"tiled{n}").glob("*.fits")}
    assert {p.name for p in (split / f"split{n}").glob("*.fits")} == tiled
    for name in tiled - {"bad_pixels.fits"}:
        with fits.open(split / f"split{n}" / name) as hdus:
            assert hdus[0].data is None, name
            assert hdus[0].header["HIERARCH CCDRED EXTENSIONS"] == n
            images = amplifier_hdus(hdus)
            assert [(hdu.name, hdu.header["DETSEC"]) for hdu in images] == raw, name
            for hdu in images:
                rows, cols = hdu.data.shape
                assert hdu.header["DATASEC"] == f"[1:{cols},1:{rows}]"
                assert hdu.header["INHERIT"] is True
            planes = {hdu.name for hdu in hdus[1:]} & set(PLANES)
            for plane in planes:
                assert [hdu.ver for hdu in amplifier_hdus(hdus, plane)] == list(range(1, n + 1))
            step = hdus[0].header["HIERARCH CCDRED STEP"]
        expected = ({"UNCERT", "NREJ"} if step.startswith("master_")
                    else set() if step == "dark_subtracted" else {"UNCERT", "MASK"})
        assert planes == expected, name  # (the '_d' intermediates have no planes)


@pytest.mark.parametrize("n", [2, 4])
def test_tiled_back_each_product_is_the_tile_night_s_bit_for_bit(split, n):
    for path in sorted((split / f"tiled{n}").glob("*.fits")):
        product = split / f"split{n}" / path.name
        if path.name == "bad_pixels.fits":  # one image, as --bad-pixel-mask reads it back
            assert fits.getdata(product).tobytes() == fits.getdata(path).tobytes()
            continue
        with fits.open(path) as hdus:
            expected = {hdu.name: hdu.data for hdu in hdus}
        assert_same_bits(tiled_back(product), expected["PRIMARY"], path.name)
        for plane in set(expected) & set(PLANES):
            assert_same_bits(tiled_back(product, plane), expected[plane], (path.name, plane))


def assert_same_bits(actual, expected, what):
    """The same type (whatever the byte order) and the same values, bit for bit."""
    native = expected.dtype.newbyteorder("=")
    assert actual.dtype.newbyteorder("=") == native, what
    assert actual.astype(native).tobytes() == expected.astype(native).tobytes(), what


def test_the_split_products_say_how_they_were_made(split):
    header = fits.getheader(first_object(split / "split4"))
    history = str(header["HISTORY"])
    assert "tiled from 4 image extensions, placed by DETSEC" in history
    assert "written as 4 image extensions, one per amplifier (--tile: one image)" in history
    assert "HIERARCH CCDRED EXTENSIONS" not in fits.getheader(first_object(split / "tiled4"))


def test_resume_keeps_the_split_products_and_remakes_them_as_one_image_with_tile(split,
                                                                               tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for path in (split / "split2").glob("*.fits"):
        (out / path.name).write_bytes(path.read_bytes())
    kept = {path.name: path.read_bytes() for path in out.glob("*.fits")}
    assert reduce(split / "raw2", out, "--planes", "--resume") == 0
    assert {path.name: path.read_bytes() for path in out.glob("*.fits")} == kept
    assert reduce(split / "raw2", out, "--planes", "--resume", "--tile") == 0
    for path in out.glob("*.fits"):
        assert fits.getdata(path, 0).shape == BASE["shape"], path.name
        assert_same_bits(fits.getdata(path, 0), fits.getdata(split / "tiled2" / path.name, 0),
                         path.name)


def test_ccddata_reads_an_amplifier_and_its_planes(split):
    from astropy.nddata import CCDData

    product = first_object(split / "split4")
    with fits.open(product) as hdus:
        amp2, uncert2, mask2 = (hdus["AMP2"].data, hdus["UNCERT", 2].data, hdus["MASK", 2].data)
        assert hdus["AMP2"].header["BUNIT"] == hdus[0].header["BUNIT"]
    ccd = CCDData.read(product, hdu=2, hdu_uncertainty=("UNCERT", 2), hdu_mask=("MASK", 2))
    np.testing.assert_array_equal(ccd.data, amp2)
    np.testing.assert_array_equal(ccd.uncertainty.array, uncert2)
    np.testing.assert_array_equal(ccd.mask, mask2 != 0)
    first = CCDData.read(product, hdu=1)  # the defaults: the first amplifier's planes
    assert first.shape == amp2.shape and first.uncertainty.array.shape == amp2.shape


@pytest.mark.parametrize("n", [2, 4])
def test_the_runners_write_the_same_extensions(split, client, tmp_path, n):
    from ccdred.cluster import reduce_nights_on_cluster

    reduce_nights_on_cluster([([split / f"raw{n}"], tmp_path / "dask")], client,
                             ReductionParameters(planes=True))
    written, dask = every_hdu(split / f"split{n}"), every_hdu(tmp_path / "dask")
    assert dask.keys() == written.keys()
    for name, hdus in written.items():
        assert dask[name].keys() == hdus.keys(), name
        for key, data in hdus.items():
            assert (data is None and dask[name][key] is None
                    or dask[name][key].tobytes() == data.tobytes()), (name, key)


def test_the_dashboard_s_reduction_writes_the_extensions(split, tmp_path):
    """"Reduce night" runs the night runner with the Pipeline's parameters (no ``tile``)."""
    pipeline = Pipeline(night=str(split / "raw2"), planes=True)
    reduce_one_night(split / "raw2", tmp_path / "out", pipeline, progress=None)
    written = every_hdu(split / "split2")
    for name, hdus in every_hdu(tmp_path / "out").items():
        assert hdus.keys() == written[name].keys(), name
        assert hdus[("AMP2", 1)].tobytes() == written[name][("AMP2", 1)].tobytes(), name


def test_a_split_night_takes_the_masters_a_tile_night_added_to_the_library(split, tmp_path):
    """Library masters are one (tiled) image; a night written per amplifier applies them
    to its tiled frames as its own: its products, tiled back, are the --tile night's."""
    library = tmp_path / "library"
    assert reduce(split / "raw2", tmp_path / "whole", "--tile", "--library", library,
                  "--add-to-library") == 0
    objects = tmp_path / "objects"
    objects.mkdir()
    for path in (split / "raw2").glob("*.fits"):
        if fits.getval(path, "IMAGETYP") == "LIGHT":
            (objects / path.name).write_bytes(path.read_bytes())
    assert reduce(objects, tmp_path / "out", "--library", library) == 0
    products = sorted((tmp_path / "out").glob("*_df.fits"))
    assert products and not list((tmp_path / "out").glob("flat_*"))
    for product in products:
        with fits.open(product) as hdus:
            assert [hdu.name for hdu in hdus] == ["PRIMARY", "AMP1", "AMP2"], product.name
        assert_same_bits(tiled_back(product), fits.getdata(tmp_path / "whole" / product.name),
                         product.name)


def test_library_masters_of_another_amplifier_layout_are_not_used(split, tmp_path, capsys):
    """The camera read through 2 amplifiers, then 4 (same instrument, same image size):
    the 2-amplifier night's masters (each amplifier's bias level and gain in them) do not
    calibrate the 4-amplifier night, nor the one-amplifier night; a chosen one says why."""
    library = tmp_path / "library"
    assert reduce(split / "raw2", tmp_path / "whole", "--tile", "--library", library,
                  "--add-to-library") == 0
    flat = next(library.glob("*flat_V.fits"))
    assert fits.getval(flat, "HIERARCH CCDRED TILE") == "2 amplifiers by DETSEC"
    for n in (4, 1):
        objects = tmp_path / f"objects{n}"
        objects.mkdir()
        for path in (split / f"raw{n}").glob("*.fits"):
            if fits.getval(path, "IMAGETYP") == "LIGHT":
                (objects / path.name).write_bytes(path.read_bytes())
        capsys.readouterr()
        assert reduce(objects, tmp_path / f"out{n}", "--tile", "--library", library) == 2
        assert "no flat for filter 'V'" in capsys.readouterr().err
        assert reduce(objects, tmp_path / f"out{n}", "--tile", "--library", library,
                      f"--library-master=flat_V={flat.name}") == 2
        assert f"amplifiers 2, the frame's {n}" in capsys.readouterr().err
        assert not (tmp_path / f"out{n}").exists()


def test_a_product_given_again_is_read_as_a_multi_amplifier_frame(split, tmp_path):
    """A calibrated frame written per amplifier, read back as a raw frame: its extensions
    placed by their DETSECs, trimmed to their DATASECs (all their pixels), no overscan."""
    folder = tmp_path / "again"
    folder.mkdir()
    name = first_object(split / "split4").name
    (folder / name).write_bytes((split / "split4" / name).read_bytes())
    catalogue = scan([folder])
    assert catalogue.problems == ()
    (frame,) = catalogue.frames
    assert frame.frame_type == "object" and frame.shape == BASE["shape"]
    assert [amp.extname for amp in frame.preprocess.amplifiers] == ["AMP1", "AMP2", "AMP3",
                                                                   "AMP4"]
    assert frame.preprocess.overscan is None
    np.testing.assert_array_equal(frame.read(), fits.getdata(split / "tiled4" / name))


# -- what is refused ------------------------------------------------------------------


def test_add_to_library_without_tile_is_refused_naming_the_file(nights, tmp_path, capsys):
    library = tmp_path / "library"
    library.mkdir()
    assert reduce(nights / "raw2", tmp_path / "out", "--library", library,
                  "--add-to-library") == 2
    err = capsys.readouterr().err
    assert ("2 image extensions (amplifiers): --add-to-library keeps masters of one image; "
            "give --tile with it") in err
    assert not (tmp_path / "out").exists() and list(library.glob("*.fits")) == []


def _damaged(nights, tmp_path, changes):
    """The 2-amplifier night's first frame with ``changes(hdus)`` made, alone in a folder."""
    folder = tmp_path / "damaged"
    folder.mkdir()
    with fits.open(nights / "raw2" / "demo_0001.fits") as hdus:
        changes(hdus)
        hdus.writeto(folder / "demo_0001.fits")
    return folder


def _problems(folder):
    catalogue = scan([folder])
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
    catalogue = scan([tmp_path / "night"])
    assert catalogue.problems == () and len(catalogue.frames) == 38
    assert {len(frame.preprocess.amplifiers) for frame in catalogue.frames} == {4}
    assert {frame.shape for frame in catalogue.frames} == {(16, 16)}


# -- files that are not a detector's amplifiers, and what a tiled header keeps -------------


def test_an_amplifier_of_three_axes_or_another_data_type_is_refused(nights, tmp_path):
    def cube(hdus):
        hdus[2].data = np.stack([hdus[2].data, hdus[2].data])

    (tmp_path / "cube").mkdir()
    assert _problems(_damaged(nights, tmp_path / "cube", cube)) == [
        "extension 2 (AMP2): image has 3 axes; an amplifier's has 2"]

    def floats(hdus):
        hdus[2].data = hdus[2].data.astype(np.float32)

    (tmp_path / "floats").mkdir()
    assert _problems(_damaged(nights, tmp_path / "floats", floats)) == [
        "extension 2 (AMP2): its data type (float32) differs from extension 1 (AMP1)'s (uint16)"]


def test_a_frame_cut_inside_its_last_amplifier_s_header_is_refused_as_truncated(nights,
                                                                                 tmp_path):
    """Not read as a frame of the amplifiers before the cut (astropy takes the cut header
    for padding after the last HDU)."""
    folder = _damaged(nights, tmp_path, lambda hdus: None)
    frame = folder / "demo_0001.fits"
    with fits.open(frame) as hdus:
        start = hdus[2].fileinfo()["hdrLoc"]
    frame.write_bytes(frame.read_bytes()[:start + 400])
    assert _problems(folder) == [f"truncated or damaged: the extension header at byte {start} "
                                 f"cannot be read (file has {start + 400} bytes)"]


def test_a_frame_with_an_image_extension_of_no_detsec_is_its_first_image(tmp_path):
    """A plain frame with an extra image (a preview) is read as before: its first image,
    the other said once for the night."""
    make_night(tmp_path / "night", NightSpec(shape=(32, 40), seed=3))
    for path in sorted((tmp_path / "night").glob("*.fits")):
        with fits.open(path, mode="append") as hdus:
            hdus.append(fits.ImageHDU(np.zeros((8, 8), np.uint16), name="PREVIEW"))
    catalogue = scan([tmp_path / "night"])
    assert catalogue.problems == ()
    assert {frame.shape for frame in catalogue.frames} == {(32, 40)}
    assert [note for note in catalogue.notes if "image extensions not read" in note] != []


def test_a_mask_in_an_extension_named_mask_is_read(tmp_path):
    from ccdred.badpix import read_bad_pixel_mask

    mask = np.zeros((6, 5), np.uint8)
    mask[2, 3] = 1
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(mask, name="MASK")]).writeto(
        tmp_path / "mask.fits")
    assert np.argwhere(read_bad_pixel_mask(tmp_path / "mask.fits", (6, 5))).tolist() == [[2, 3]]


def test_the_tiled_header_keeps_detector_values_every_amplifier_shares():
    from ccdred.fitsio import tiled_header

    primary = fits.Header({"OBSERVER": "me", "DATASEC": "[1:2048,1:4096]", "GAIN": 9.9})
    amps = [fits.Header({"DETSEC": d, "DATASEC": "[1:10,1:4]", "SATURATE": 60000, "EGAIN": g,
                         "CRPIX1": 12.0, "RDNOISE": 5.0})
            for d, g in (("[1:10,1:4]", 1.5), ("[20:11,1:4]", 1.6))]
    header = tiled_header(primary, amps, (4, 20))
    assert header["OBSERVER"] == "me" and header["GAIN"] == 9.9  # the primary's own
    assert header["SATURATE"] == 60000 and header["RDNOISE"] == 5.0  # shared
    for key in ("DATASEC", "DETSEC", "EGAIN", "CRPIX1"):  # one amplifier's
        assert key not in header, key
    assert (header["NAXIS1"], header["NAXIS2"]) == (20, 4)
