"""Cosmic-ray detection (LACosmic, astroscrappy) at 2048²: time, completeness, star cores.

Usage (from the repository root, in the project's environment)::

    python benchmarks/cosmics.py                  # every setting, 3 repeats (~10 minutes)
    python benchmarks/cosmics.py --settings 'default;astroscrappy niter 1' --repeat 5

The 2048² demo night (``ccdred.demo``, seed 2021) is written into ``benchmarks/data``
and reduced once with its planes and bad-pixel mask into ``benchmarks/results`` (kept
between runs); each setting then looks for the rays of its calibrated object frames as
the night does (the frame's uncertainty plane squared the noise model, its bad pixels
left out). Completeness: the injected rays' pixels found; star cores: core pixels
flagged more than 3 pixels from any ray (``tests/test_cosmics.py``'s measure), as a
fraction of the cores. Times: wall and CPU (``resource.getrusage``, all threads) per
frame, the median over frames and repeats with the range. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA, RESULTS = HERE / "data", HERE / "results"
SHAPE = (2048, 2048)
RAY_REACH = 3  # as tests/test_cosmics.py: core pixels this close to a ray are the ray's mask
SPEC_SEED = 2021


def spec():
    from ccdred.demo import NightSpec

    return NightSpec(shape=SHAPE, seed=SPEC_SEED)


def calibrated_objects() -> tuple[list, np.ndarray, object]:
    """The night's calibrated object frames as (image, variance) in observing order, its
    bad-pixel mask and its noise (gain and read noise); the night made and reduced once."""
    from astropy.io import fits

    from ccdred.demo import make_night
    from ccdred.night import BAD_PIXELS, reduce_night
    from ccdred.parameters import ReductionParameters

    raw, out = DATA / "cosmics2048", RESULTS / "cosmics2048"
    if not (raw / ".complete").exists():
        make_night(raw, spec())
        (raw / ".complete").touch()
    result = reduce_night([raw], out, ReductionParameters(planes=True, bad_pixels=True),
                          resume=True)
    frames = []
    for step in result.plan.calibrations:
        path = out / f"{step.frame.name}_df.fits"
        uncertainty = fits.getdata(path, "UNCERT").astype(np.float64)
        frames.append((fits.getdata(path).astype(np.float32), np.square(uncertainty)))
    return frames, fits.getdata(out / BAD_PIXELS), result.noise


def settings(noise) -> dict:
    """Each measured setting: a function (image, variance, bad pixels) -> ray mask."""
    import astroscrappy

    from ccdred.cosmics import LACosmic, cosmic_ray_mask

    def ours(lacosmic=LACosmic(), with_variance=True):
        return lambda image, variance, bad: cosmic_ray_mask(
            image, noise.gain, noise.read_noise, lacosmic=lacosmic, bad_pixels=bad,
            variance=variance if with_variance else None).mask

    def theirs(**options):
        options = {"niter": 1, "sepmed": True, "fsmode": "median", "cleantype": "meanmask",
                   **options}
        return lambda image, variance, bad: astroscrappy.detect_cosmics(
            image, inmask=bad != 0, invar=variance.astype(np.float32), gain=noise.gain,
            readnoise=noise.read_noise, satlevel=np.inf, **options)[0]

    return {
        "default": ours(),
        "default, noise model from the image": ours(with_variance=False),
        "default, sigclip 4.0": ours(LACosmic(sigclip=4.0)),
        "default, sigclip 5.5": ours(LACosmic(sigclip=5.5)),
        "default, objlim 3": ours(LACosmic(objlim=3.0)),
        "default, objlim 8": ours(LACosmic(objlim=8.0)),
        "thorough: niter 4 (astroscrappy)": ours(LACosmic(niter=4)),
        "astroscrappy niter 1": theirs(),
        "astroscrappy niter 2": theirs(niter=2),
        "astroscrappy niter 1, sepmed False": theirs(sepmed=False),
        "astroscrappy niter 1, fsmode convolve": theirs(fsmode="convolve"),
        "astroscrappy niter 2, cleantype medmask": theirs(niter=2, cleantype="medmask"),
        "astroscrappy niter 2, cleantype idw": theirs(niter=2, cleantype="idw"),
    }


def cpu_seconds() -> float:
    """CPU time of the process, every thread (OpenMP's and ours)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(find, frames, bad, at_once: int) -> tuple[list, list, list]:
    """Each frame's mask; wall and CPU seconds per frame of each batch of ``at_once``
    frames run on as many threads."""
    from concurrent.futures import ThreadPoolExecutor

    masks, walls, cpus = [], [], []
    with ThreadPoolExecutor(at_once) as pool:
        for start in range(0, len(frames), at_once):
            batch = frames[start:start + at_once]
            wall, cpu = time.perf_counter(), cpu_seconds()
            masks += pool.map(lambda frame: find(*frame, bad), batch)
            walls.append((time.perf_counter() - wall) / len(batch))
            cpus.append((cpu_seconds() - cpu) / len(batch))
    return masks, walls, cpus


def scores(masks, rays, cores) -> dict:
    """Completeness (all frames' ray pixels found; the worst frame's) and star-core pixels
    flagged away from the rays (all frames'; the worst frame's), as fractions."""
    from scipy.ndimage import binary_dilation

    found, false = [], []
    for mask, hits in zip(masks, rays, strict=True):
        far = ~binary_dilation(hits, iterations=RAY_REACH)
        found.append(((mask & hits).sum(), hits.sum()))
        false.append((mask & cores & far).sum() / cores.sum())
    return {"completeness": sum(f for f, _ in found) / sum(n for _, n in found),
            "worst_completeness": min(f / n for f, n in found),
            "false_cores": float(np.mean(false)), "worst_false_cores": max(false)}


def spread(values) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", help="names separated by ';' (default: all); "
                                           "'default' is ccdred's")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each setting")
    parser.add_argument("--at-once", default="1,2",
                        help="frames run at once on as many threads (default: 1,2)")
    args = parser.parse_args(argv)
    from ccdred.demo import night_cosmic_rays, star_cores

    frames, bad, noise = calibrated_objects()
    rays = [hits > 0 for hits in night_cosmic_rays(spec())]
    cores = star_cores(spec())
    chosen = settings(noise)
    names = args.settings.split(";") if args.settings else list(chosen)
    rows = []
    print(f"{len(frames)} frames {SHAPE}, {sum(r.sum() for r in rays)} ray pixels, "
          f"{cores.sum()} star-core pixels; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
          file=sys.stderr)
    chosen["default"](*frames[0], bad)  # numba's cache loaded, astroscrappy imported
    for name in names:
        for at_once in map(int, args.at_once.split(",")):
            walls, cpus = [], []
            for _ in range(args.repeat):
                masks, wall, cpu = measure(chosen[name], frames, bad, at_once)
                walls += wall
                cpus += cpu
            rows.append({"setting": name, "at_once": at_once, "wall": walls, "cpu": cpus,
                         **scores(masks, rays, cores)})
            print(table_row(rows[-1]), file=sys.stderr, flush=True)
    (RESULTS / "results-cosmics.json").write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


def table_row(row) -> str:
    return (f"| {row['setting']} | {row['at_once']} | {spread(row['wall'])} | "
            f"{spread(row['cpu'])} | {100 * row['completeness']:.1f} "
            f"({100 * row['worst_completeness']:.1f}) | {100 * row['false_cores']:.2f} "
            f"({100 * row['worst_false_cores']:.2f}) |")


def markdown(rows) -> str:
    head = ("| setting | frames at once | s per frame, wall | s per frame, CPU | "
            "rays found % (worst frame) | star cores flagged % (worst frame) |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: |")
    return "\n".join([head, *map(table_row, rows)])


if __name__ == "__main__":
    main()
