"""Each exercise's check accepts the right answer and refuses a wrong one."""

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std, sigma_clip

from ccdred import teaching
from ccdred.demo import NightSpec, make_night, night_cosmic_rays, night_truth, star_cores
from ccdred.frames import scan
from ccdred.pipeline import Pipeline
from ccdred.teaching import EXERCISES, check

from .conftest import SMALL_SPEC
from .oracles import flat_samples, master_dark, raw_stack


@pytest.fixture(scope="module")
def pipeline(night_files):
    return Pipeline(night=str(night_files[0].parent))


@pytest.fixture(scope="module")
def real_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real-night")
    make_night(folder, NightSpec.real(shape=(40, 48), seed=3))
    return Pipeline(night=str(folder))


def flats_of(pipeline):
    return np.asarray(pipeline.flat_medians(), dtype=float)


@pytest.fixture(scope="module")
def quietest(pipeline) -> tuple[str, dict]:
    """The method whose master dark (made with astropy) has the least pixel-to-pixel noise, by
    astropy's ``mad_std`` of neighbouring pixels' differences; and each method's noise."""
    darks = raw_stack(pipeline.frames_of(pipeline.calibration))
    noise = {method: mad_std(np.diff(master_dark(darks, rejection=method), axis=1))
             for method in ("sigclip", "minmax", "pclip")}
    return min(noise, key=noise.get), noise


@pytest.fixture(scope="module")
def surviving(pipeline) -> float:
    """The lowest threshold (to 0.1) at which astropy's sigma_clip keeps the highest sample of
    the shown pixel of the master flat, its samples made from the files at each threshold: the
    flats within the course's upper limit, less the master dark made with astropy at that
    threshold (as written, float32), scaled to the first flat's median."""
    pixel = pipeline.shown_pixel()
    frames = pipeline.flat_frames()
    flats = raw_stack(frames)
    darks = raw_stack([f for f in pipeline.catalogue.of_type("dark")
                       if f.exptime == frames[0].exptime])
    for threshold in np.round(np.arange(1.0, 8.01, 0.1), 1):
        samples, _ = flat_samples(flats, master_dark(darks, threshold).astype(np.float32))
        values = samples[:, pixel.y, pixel.x]
        if not sigma_clip(values, sigma=threshold, maxiters=10).mask[np.argmax(values)]:
            return float(threshold)
    return math.inf


def flux_change_by_hand(image, mask, position, radius) -> float:
    """The star-flux answer, pixel by pixel: the masked pixels filled with the mean of their
    unmasked neighbours (3x3), each flux the aperture's sum less the sky (the median of the
    ring from 2 to 3 radii)."""
    filled = image.astype(np.float64)
    rows, cols = image.shape
    for y, x in np.argwhere(mask):
        neighbours = [image[j, i] for j in range(y - 1, y + 2) for i in range(x - 1, x + 2)
                      if 0 <= j < rows and 0 <= i < cols and not mask[j, i]]
        if neighbours:
            filled[y, x] = np.mean(neighbours)

    def flux(values):
        total, ring = 0.0, []
        for y in range(rows):
            for x in range(cols):
                distance = math.dist((x, y), position)
                if 2 * radius <= distance < 3 * radius:
                    ring.append(values[y, x])
        sky = np.median(ring)
        for y in range(rows):
            for x in range(cols):
                if math.dist((x, y), position) <= radius:
                    total += values[y, x] - sky
        return total

    return 100 * (flux(image) / flux(filled) - 1)


def cases(pipeline, real_pipeline, tmp_path, surviving=None, quietest=(None,)):
    """name -> (context, a right answer, a wrong answer), right answers found independently."""
    catalogue = pipeline.catalogue
    flats = [(row["file"], row["median"]) for row in pipeline.frame_levels() if row["type"] == "flat"]
    darks = np.stack([f.read() for f in pipeline.frames_of(pipeline.calibration)])
    medians = flats_of(pipeline)
    faint, others = medians.min(), np.sort(medians)[1]
    calibrated = pipeline.calibrated()
    (tmp_path / "a.fits").write_bytes(b"")
    (tmp_path / "b.fits").write_bytes(b"")
    biases = real_pipeline.catalogue.of_type("bias")
    overscan = [float(np.median(fits.getdata(b.path)[:, -24:])) for b in biases]
    current = next(m for m in real_pipeline.plan.masters.values() if m.kind == "dark_current")
    pixel = pipeline.shown_pixel()
    raw_biases = [b.read().astype(np.float64) for b in catalogue.of_type("bias")]
    levels = [float(np.median(f.read() - raw_biases[0])) for f in catalogue.of_type("flat")]
    apart, i, j = min((abs(a - b) / max(a, b), i, j)
                      for j, b in enumerate(levels) for i, a in enumerate(levels[:j]))
    flat_a, flat_b = (catalogue.of_type("flat")[k].read().astype(np.float64) for k in (i, j))
    # Janesick's formula, plain, on the two closest flats (0.1 % apart)
    gain = (((flat_a.mean() + flat_b.mean()) - (raw_biases[0].mean() + raw_biases[1].mean()))
            / (np.var(flat_a - flat_b) - np.var(raw_biases[0] - raw_biases[1])))
    master_bias = np.mean(raw_biases, axis=0)  # too few biases to reject any
    truth = night_truth(SMALL_SPEC)
    ray_spec = NightSpec(shape=(128, 128), seed=8)
    ray_night = teaching.Night(tmp_path, night_truth(ray_spec), ray_spec)
    positions = teaching.ray_or_star(ray_night)
    hit = night_cosmic_rays(ray_spec)[0] > 0
    ray = next(name for name, (x, y) in positions.items() if hit[y, x])  # the truth's
    star_night = teaching.Night(None, truth, SMALL_SPEC)
    position, radius = teaching.masked_star(star_night, truth.hot_pixels)
    flux_change = flux_change_by_hand(calibrated, truth.hot_pixels, position, radius)
    return {
        "star-flux": ({"image": calibrated, "mask": truth.hot_pixels, "position": position,
                       "radius": radius}, flux_change, flux_change + 1.0),
        "hot-fraction": ({"truth": truth}, np.count_nonzero(truth.hot_pixels) / truth.hot_pixels.size,
                         100 * np.count_nonzero(truth.hot_pixels) / truth.hot_pixels.size),
        "ray-or-star": ({"night": ray_night, "positions": positions}, ray,
                        {"a": "b", "b": "a"}[ray]),
        "read-noise": ({"bias_a": raw_biases[0], "bias_b": raw_biases[1]},
                       np.std(raw_biases[0] - raw_biases[1]) / math.sqrt(2),
                       np.std(raw_biases[0] - raw_biases[1])),
        "gain": ({"flat_a": flat_a, "flat_b": flat_b, "bias_a": raw_biases[0],
                  "bias_b": raw_biases[1]}, gain, 1 / gain),
        "master-bias-noise": ({"bias": raw_biases[0], "master": master_bias,
                               "true_bias": truth.bias},
                              math.sqrt(len(raw_biases)), len(raw_biases)),
        "frame-counts": ({"catalogue": catalogue},
                         {kind: sum(f.frame_type == kind for f in catalogue.frames)
                          for kind in ("bias", "dark", "flat", "object")},
                         {"dark": 1}),
        "faint-flat": ({"pipeline": pipeline}, min(flats, key=lambda f: f[1])[0], flats[0][0]),
        "gaussian-2sigma": ({}, 0.0455, 0.05),
        "samuelson": ({"n_frames": 5}, 2.0, (5 - 1) / math.sqrt(5)),
        "emptied-pixels": ({"darks": darks},
                           int(np.all([sigma_clip(d, sigma=2.5, maxiters=10).mask for d in darks],
                                      axis=0).sum()), -1),
        "lower-limit": ({"medians": medians, "upper_limit": 38000.0}, (faint + others) / 2,
                        faint / 2),
        "flats-used": ({"pipeline": pipeline, "filter_name": pipeline.filter},
                       int(pipeline.master_flat().accepted.sum()), len(medians) + 1),
        "calibrate-by-hand": ({"pipeline": pipeline, "x": 3, "y": 4}, float(calibrated[4, 3]),
                              float(calibrated[3, 4]) + 1.0),
        "sky-level": ({"pipeline": pipeline}, float(np.median(calibrated)),
                      float(np.median(calibrated)) + 5.0),
        "products": ({"folder": tmp_path}, 2, 3),
        "resume-option": ({}, "--resume", "--overwrite"),
        "bias-drift": ({"biases": biases}, overscan[-1] - overscan[0], overscan[0] - overscan[-1]),
        "dark-current": ({"pipeline": real_pipeline},
                         float(np.median(real_pipeline.master(current.name).data)), 0.5),
        "surviving-threshold": ({"pipeline": pipeline, "master": "flat", "x": pixel.x,
                                 "y": pixel.y}, surviving, 0.5),
        "quietest-method": ({"pipeline": pipeline}, quietest[0], "no such method"),
    }


def test_every_exercise_is_covered(pipeline, real_pipeline, tmp_path):
    assert set(cases(pipeline, real_pipeline, tmp_path)) == set(EXERCISES)


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_check_accepts_the_right_answer_and_refuses_a_wrong_one(name, pipeline, real_pipeline,
                                                                tmp_path, request):
    found = {"surviving-threshold": "surviving", "quietest-method": "quietest"}  # by search
    answers = {found[name]: request.getfixturevalue(found[name])} if name in found else {}
    context, right, wrong = cases(pipeline, real_pipeline, tmp_path, **answers)[name]
    verdict = check(name, right, **context)
    assert verdict and "right" in verdict.message
    verdict = check(name, wrong, **context)
    assert verdict.correct is False and EXERCISES[name].hint in verdict.message
    unanswered = check(name, None, **context)
    assert unanswered.correct is None and "not answered yet" in unanswered.message


def test_the_surviving_threshold_is_where_the_highest_sample_comes_back(pipeline, surviving):
    pixel = pipeline.shown_pixel()
    found = EXERCISES["surviving-threshold"].expected(pipeline=pipeline, master="flat",
                                                     x=pixel.x, y=pixel.y)
    assert found == surviving > 2.5  # astropy's, from the files; the master flat clips it at 2.5
    assert pipeline.threshold == 2.5  # the search leaves the pipeline as it was
    pipeline.threshold = found
    assert not pipeline.pixel_stack("flat", pixel.x, pixel.y).rejected[np.argmax(pixel.values)]
    pipeline.threshold = round(found - 0.1, 1)
    below = pipeline.pixel_stack("flat", pixel.x, pixel.y)
    assert below.rejected[np.argmax(below.values)]
    pipeline.threshold = 2.5


def test_the_quietest_method_is_the_quietest(pipeline, quietest):
    method, noise = quietest
    assert sorted(noise.values())[1] > 1.05 * noise[method]  # a clear winner, not a rounding
    assert EXERCISES["quietest-method"].expected(pipeline=pipeline) == method
    assert pipeline.rejection == "sigclip"  # the search leaves the pipeline as it was


def test_start_uses_a_given_folder_and_the_demo_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("CCDRED_NIGHT", raising=False)
    monkeypatch.setenv("CCDRED_CACHE", str(tmp_path))
    monkeypatch.setenv("CCDRED_DEMO_SIZE", "32")
    demo = teaching.start()
    assert demo.folder.parent == tmp_path and demo.truth is not None
    assert len(scan([demo.folder]).frames) > 10
    own = teaching.start(tmp_path / "mine")
    assert own.folder == tmp_path / "mine" and own.truth is None


# -- what a nearly right answer is told ---------------------------------------------------

#: 2 (1 - Phi(2)), the fraction of a Gaussian beyond 2 sigma, from the error function.
BEYOND_2SIGMA = 1 - math.erf(2 / math.sqrt(2))


@pytest.mark.parametrize("answer", [BEYOND_2SIGMA, round(BEYOND_2SIGMA, 3), 0.0455])
def test_the_gaussian_fraction_is_right_as_a_fraction(answer):
    assert check("gaussian-2sigma", answer)


@pytest.mark.parametrize("answer", [100 * BEYOND_2SIGMA, round(100 * BEYOND_2SIGMA, 2), 5])
def test_the_gaussian_fraction_as_a_percentage_is_told_to_give_a_fraction(answer):
    verdict = check("gaussian-2sigma", answer)
    assert verdict.correct is False
    assert "looks like a percentage: answer a fraction" in verdict.message
    assert EXERCISES["gaussian-2sigma"].hint in verdict.message


def test_the_gaussian_fraction_rounded_too_far_is_told_so():
    rounded = round(BEYOND_2SIGMA, 2)
    assert abs(rounded - BEYOND_2SIGMA) > EXERCISES["gaussian-2sigma"].tolerance
    verdict = check("gaussian-2sigma", rounded)
    assert verdict.correct is False
    assert "0.05 is the right answer rounded: give it to within ±0.002" in verdict.message


def test_rounded_and_percentage_answers_are_told_apart():
    messages = {check("gaussian-2sigma", answer).message for answer in (0.05, 4.55, 0.32)}
    assert len(messages) == 3


@pytest.mark.parametrize("answer", [0.32, 0.04, 45.5, "two", float("nan"), True])
def test_a_wrong_answer_not_nearly_right_gets_only_the_hint(answer):
    verdict = check("gaussian-2sigma", answer)
    assert verdict.message == ("✘ **gaussian-2sigma: not yet.** Hint: "
                               + EXERCISES["gaussian-2sigma"].hint)


def test_only_a_fraction_is_told_it_looks_like_a_percentage():
    right = math.sqrt(6 - 1)  # Samuelson's bound for 6 frames, about 2.236
    assert check("samuelson", round(right, 3), n_frames=6)
    assert "is the right answer rounded" in check("samuelson", round(right, 1), n_frames=6).message
    assert "percentage" not in check("samuelson", 100 * right, n_frames=6).message


def test_the_ray_and_the_star_are_told_apart_by_the_truth():
    """One of the two pixels is hit by a ray, the other is a star's core, and the names swap
    with the seed; a night of your own has no truth to ask."""
    for seed in (8, 9):
        spec = NightSpec(shape=(128, 128), seed=seed)
        positions = teaching.ray_or_star(teaching.Night(None, night_truth(spec), spec))
        hit = night_cosmic_rays(spec)[0] > 0
        cores = star_cores(spec)
        assert sorted((bool(hit[y, x]), bool(cores[y, x])) for x, y in positions.values()) == \
            [(False, True), (True, False)]
    with pytest.raises(ValueError, match="needs the demo night"):
        teaching.ray_or_star(teaching.Night(None, None))


def test_the_masked_star_has_the_mask_nearest_its_peak_within_its_aperture():
    """The star whose peak is nearest a masked pixel, the aperture reaching that pixel; a
    night of your own, or an empty mask, is refused."""
    for seed in (8, 9):
        spec = NightSpec(shape=(128, 128), seed=seed)
        truth = night_truth(spec)
        (x, y), radius = teaching.masked_star(teaching.Night(None, truth, spec), truth.hot_pixels)
        assert star_cores(spec)[y, x]
        hot = np.argwhere(truth.hot_pixels)
        nearest = min(math.dist((x, y), (col, row)) for row, col in hot)
        assert max(teaching.APERTURE, nearest) <= radius <= max(teaching.APERTURE, nearest + 2)
    with pytest.raises(ValueError, match="needs the demo night"):
        teaching.masked_star(teaching.Night(None, None), truth.hot_pixels)
    with pytest.raises(ValueError, match="no pixel"):
        teaching.masked_star(teaching.Night(None, truth, spec), np.zeros((128, 128), bool))
