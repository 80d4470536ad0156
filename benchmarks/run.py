"""Measure ccdred against the course script, ccdproc, IRAF imcombine and astropy.

Usage (from the repository root, in the project's environment)::

    apt-get install time iraf iraf-noao     # GNU time and IRAF, once
    pip install -e ".[test,bench]"
    python benchmarks/run.py                # everything: about 6 minutes (nights made once)
    python benchmarks/run.py --parts kernel,night,dask   # some of it
    python benchmarks/run.py --parts planes --planes-sizes 1024,2048 --results /tmp/out

Nights are simulated with ``ccdred.demo`` into ``benchmarks/data`` (kept
between runs; the planes part's demo nights into the dashboard benchmark's cache,
``$CCDRED_CACHE/ccdred-bench``); products go to ``benchmarks/results`` (``--results``). Every process is timed
with GNU time (wall seconds, peak RSS). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFERENCE = Path(os.environ.get("CCDRED_SHARED", REPO.parent / "shared")) / "reference" / "nimccdred.py"
DATA, RESULTS = HERE / "data", HERE / "results"
SIZE = (2048, 2048)


def night_specs():
    from ccdred.demo import NightSpec

    return {
        # 3 bias + 3 exposure times x 10 darks + 2 filters x (8 flats + 4 objects) = 57 frames
        "night57": NightSpec(shape=SIZE, seed=57, n_bias=3, n_darks=10, n_flats=8, n_objects=4),
        # seed-shaped: 10 bias + 4 x 20 darks + 3 filters x (20 flats + 128 objects) = 534
        # the interactive target's shape: 12 flats of one filter (one saturated), and their darks
        # night57 as real cameras take it: overscan, drifting bias, darks scaled to the exposure
        "night57real": NightSpec.real(shape=SIZE, seed=57, n_bias=3, n_darks=10, n_flats=8,
                                      n_objects=4, dark_times=(10.0, 60.0, 120.0)),
        "flats12": NightSpec(shape=SIZE, seed=12, n_bias=0, n_darks=3, n_flats=12, n_objects=1,
                             filters=("R",), object_exptimes=(30.0,), faint_flats=0),
        "demo2048": NightSpec(shape=SIZE, seed=2021),
        "night534": NightSpec(shape=SIZE, seed=534, n_bias=10, n_darks=20, n_flats=20,
                              n_objects=128, filters=("g", "r", "i"),
                              object_exptimes=(60.0, 30.0, 20.0)),
    }


def make(name) -> list[Path]:
    from ccdred.demo import make_night

    folder = DATA / name
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        make_night(folder, night_specs()[name])
        (folder / ".complete").touch()
    return sorted(folder.glob("*.fits"))


def timed(command, **kwargs) -> dict:
    """Run a command under GNU time; wall and CPU (user + system, and each) seconds, peak
    RSS in MB."""
    with tempfile.NamedTemporaryFile("r") as report:
        subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%e %U %S %M",
                        *map(str, command)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        wall, user, system, rss_kb = report.read().split()[-4:]
    return {"seconds": float(wall), "cpu": float(user) + float(system), "user": float(user),
            "system": float(system), "rss_mb": int(rss_kb) / 1024}


def fresh(name) -> Path:
    folder = RESULTS / name
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def bench_kernel() -> list[dict]:
    from astropy.stats import sigma_clip

    from ccdred.combine import sigma_clip_combine

    rng = np.random.default_rng(0)
    stack = rng.normal(1000.0, 10.0, (12, *SIZE)).astype(np.float32)
    stack[0, ::7, ::11] += 5000.0
    sigma_clip_combine(stack[:, :8])  # load the compiled kernel
    ours, fast = _best(lambda: sigma_clip_combine(stack))
    theirs, slow = _best(lambda: np.ma.average(
        sigma_clip(stack, sigma=2.5, maxiters=10, cenfunc="median", axis=0, masked=True), axis=0), 1)
    same_mask = bool(np.array_equal(ours.clip_mask, np.ma.getmaskarray(sigma_clip(
        stack, sigma=2.5, maxiters=10, cenfunc="median", axis=0, masked=True))))
    difference = float(np.max(np.abs(ours.data - theirs.data.astype(np.float64)) / 1000.0))
    note = f"masks identical: {same_mask}; max relative difference {difference:.1e}"
    rows = [_row("kernel 12x2048x2048 float32", "ccdred sigma_clip_combine", fast, None, note),
            _row("kernel 12x2048x2048 float32", "astropy sigma_clip + ma.average", slow, None, "")]
    for label, options in (("lsigma 2, hsigma 3", {"lsigma": 2.0, "hsigma": 3.0}),
                           ("stdfunc mad_std", {"stdfunc": "mad_std"}),
                           ("stdfunc mad_std, maxiters 1", {"stdfunc": "mad_std", "maxiters": 1}),
                           ("sigclip, maxiters 1", {"maxiters": 1}),
                           ("minmax 1, 1", {"rejection": "minmax"}),
                           ("pclip 10-90", {"rejection": "pclip"})):
        result, seconds = _best(lambda options=options: sigma_clip_combine(
            stack, keep_mask=False, **options))
        rejected = result.n_rejected_per_frame.sum() / stack.size
        rows.append(_row("kernel 12x2048x2048 float32", f"ccdred, {label}", seconds, None,
                         f"{seconds / fast:.2f}x sigclip; {100 * rejected:.1f} % of samples "
                         f"rejected"))
    return rows


def _best(function, repeats=3):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, min(times)


def _row(task, tool, seconds, rss_mb, note) -> dict:
    return {"task": task, "tool": tool, "seconds": seconds, "rss_mb": rss_mb, "note": note}


def bench_master_dark(files) -> list[dict]:
    from astropy.io import fits

    darks = [p for p in files if fits.getheader(p)["IMAGETYP"] == "DARK"
             and fits.getheader(p)["EXPTIME"] == 30.0][:10]
    task = f"master dark, {len(darks)} raw files"
    rows = [_row(task, "ccdred (process, cold start)", **_unpack(timed(
        [sys.executable, HERE / "master_dark.py", "ccdred", fresh("md") / "x.fits", *darks],
        cwd=_mkdir(RESULTS / "md"))), note="the whole process: interpreter, imports and numba's cached kernels")]
    seconds, peak_mb = _warm_master_dark(darks)
    rows.append(_row(task, "ccdred (in process: read + clip + combine)", seconds, peak_mb,
                     "what the dashboard and batch runs pay; memory: peak of its allocations"))
    rows.append(_row(task, "ccdproc.combine (sigma_clip)", **_unpack(timed(
        [sys.executable, HERE / "master_dark.py", "ccdproc", RESULTS / "md" / "y.fits", *darks])),
        note=""))
    if shutil.which("irafcl"):
        rows.append(_row(task, "IRAF imcombine reject=sigclip", **_unpack(_iraf(darks)), note=""))
    return rows


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _unpack(measured: dict) -> dict:
    return {"seconds": measured["seconds"], "rss_mb": measured["rss_mb"]}


def _warm_master_dark(darks) -> tuple[float, float]:
    """Seconds (best of 3) and traced peak MB of a master dark in an already started process."""
    import tracemalloc

    from ccdred.frames import read_frame
    from ccdred.plan import Master
    from ccdred.steps import StepOptions, make_master

    frames = tuple(read_frame(p) for p in darks)

    def combine(chosen):
        return make_master(Master("dark", "dark.fits", chosen, exptime=chosen[0].exptime),
                           StepOptions(), {})

    combine(frames[:2])
    seconds = _best(lambda: combine(frames))[1]
    tracemalloc.start()
    combine(frames)
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak_mb


def _iraf(darks) -> dict:
    home = _mkdir(RESULTS / "iraf")
    shutil.copy("/etc/iraf/login.cl", home / "login.cl")
    (home / "darks.lis").write_text("".join(f"{p}\n" for p in darks))
    (home / "dark_iraf.fits").unlink(missing_ok=True)
    script = home / "combine.cl"
    script.write_text(
        "images\nimmatch\n"
        f'imcombine ("@{home}/darks.lis", "{home}/dark_iraf.fits", combine="average", '
        'reject="sigclip", lsigma=2.5, hsigma=2.5, mclip=yes, outtype="real")\nlogout\n')
    env = {**os.environ, "HOME": str(home), "USER": os.environ.get("USER", "root"), "TERM": "xterm"}
    with open(script) as stdin:
        return timed(["irafcl"], stdin=stdin, env=env, cwd=home)


def bench_night(name, files, with_reference, repeat=1) -> list[dict]:
    """Wall time and peak RSS of whole-night runs, interleaved ``repeat`` times; medians."""
    task = f"{name}: {len(files)} frames 2048x2048"
    tools = [("ccdred reduce", []), ("ccdred reduce --no-intermediate", ["--no-intermediate"])]
    if with_reference and REFERENCE.exists():
        tools.insert(0, ("nimccdred.py (reference)", None))
    runs = {label: [] for label, _ in tools}
    for _ in range(repeat):  # interleaved, so a slow spell of the machine hits every tool
        for label, extra in tools:
            out = fresh(f"{name}-{label.split()[0]}{'-'.join(extra or [])}")
            command = ([sys.executable, REFERENCE, "-d", out, *files] if extra is None else
                       [sys.executable, "-m", "ccdred", "reduce", "-q", "-d", out, *extra, DATA / name])
            os.sync()  # the last run's products reach the disk now, not during this run
            runs[label].append(timed(command, cwd=_mkdir(RESULTS)))
    return [_median_row(task, label, runs[label], "float64 products" if extra is None else
                        "float32 products, same files") for label, extra in tools]


def bench_calibration(repeat=3) -> list[dict]:
    """night57 (exact darks) against night57real (bias, overscan, scaled darks), interleaved."""
    runs = {"night57": [], "night57real": []}
    for _ in range(repeat):
        for name in runs:
            out = fresh(f"{name}-calibration")
            os.sync()
            runs[name].append(timed([sys.executable, "-m", "ccdred", "reduce", "-q", "-d", out,
                                     "--dark-model", "exact" if name == "night57" else "scaled",
                                     DATA / name], cwd=_mkdir(RESULTS)))
    exact = float(np.median([m["seconds"] for m in runs["night57"]]))
    rows = [_median_row("57 frames, exact darks", "`ccdred reduce --dark-model exact`",
                        runs["night57"], "night57"),
            _median_row("57 frames, bias + overscan + scaled darks",
                        "`ccdred reduce --dark-model scaled`", runs["night57real"],
                        "night57real (2072 columns with the overscan)")]
    rows[-1]["note"] += f"; {rows[-1]['seconds'] / exact:.2f}x the exact-dark night"
    return rows


def _median_row(task, tool, measured, note) -> dict:
    seconds = sorted(m["seconds"] for m in measured)
    if len(seconds) > 1:
        spread = f"median of {len(seconds)}, range {seconds[0]:.2f}-{seconds[-1]:.2f} s"
        note = f"{note}; {spread}" if note else spread
    rss = [m["rss_mb"] for m in measured if m["rss_mb"] is not None]
    return _row(task, tool, float(np.median(seconds)), max(rss) if rss else None, note)


def bench_interactive(files) -> list[dict]:
    """Recomputing the master flat of 12 loaded 2048x2048 flats after parameter changes."""
    from ccdred.pipeline import Pipeline

    pipeline = Pipeline(night=str(files[0].parent))
    start_flat = pipeline.master_flat()  # 11 of 12 flats: one is saturated
    brightest = float(start_flat.medians[start_flat.accepted].max())
    task = "interactive: master flat of 12 loaded 2048x2048 flats"
    moves = [("upper_limit 50000: all 12 flats combined", "upper_limit", 50000.0),
             ("upper_limit back to 38000: the 11 of before (cached)", "upper_limit", 38000.0),
             ("upper_limit below the brightest: 10 flats", "upper_limit", brightest - 1.0),
             ("upper_limit moved, same 10 flats (cached)", "upper_limit", brightest - 2.0),
             ("threshold 3.0 (darks recomputed too)", "threshold", 3.0),
             ("cenfunc mean (darks recomputed too)", "cenfunc", "mean")]
    rows = []
    for label, name, value in moves:
        seconds, master = _move(pipeline, name, value)
        rows.append(_row(task, f"Pipeline, {label}", seconds, None,
                         f"{int(master.accepted.sum())} flats used"))
    # A fresh process pays first-touch page faults for every new stack (slow on this VM);
    # a dashboard that has run a while reuses freed memory.
    thresholds = (2.6, 2.7, 2.8, 2.9, 3.1)
    rows.append(_spread_row(task, "Pipeline, 5 more threshold moves (darks recomputed too)",
                            [_move(pipeline, "threshold", value)[0] for value in thresholds]))
    limit_moves = []
    for value in thresholds:  # each threshold's darks and flat stack are cached by now
        pipeline.param.update(threshold=value, upper_limit=brightest - 1.0)
        pipeline.master_flat()
        limit_moves.append(_move(pipeline, "upper_limit", 50000.0)[0])
    rows.append(_spread_row(task, "Pipeline, 5 more upper_limit moves to all 12 flats",
                            limit_moves))
    return rows


def _spread_row(task, tool, seconds) -> dict:
    seconds = sorted(seconds)
    return _row(task, tool, float(np.median(seconds)), None,
                f"median; range {seconds[0]:.2f}-{seconds[-1]:.2f} s")


def _move(pipeline, name, value):
    """Seconds to the new master flat after setting one parameter, and that flat."""
    started = time.perf_counter()
    setattr(pipeline, name, value)
    master = pipeline.master_flat()
    return time.perf_counter() - started, master


def bench_explore(files) -> list[dict]:
    """The dashboard's exploration on a 2048x2048 demo night: a tapped pixel's samples, and
    the threshold sweep, in the process that has the masters already."""
    import holoviews.plotting.bokeh  # noqa: F401  (the plots' options need a backend)

    from ccdred import plots
    from ccdred.pipeline import Pipeline

    pipeline = Pipeline(night=str(files[0].parent))
    task = "explore: 2048x2048 demo night, masters made"
    rows = []
    for master in ("dark", "flat"):
        pipeline.inspect = master
        pipeline.shown_pixel()  # the master, its stack and statistics: made once
        taps = []
        for x, y in ((100, 200), (1024, 1024), (2000, 37), (512, 1800), (1500, 1500)):
            started = time.perf_counter()
            pipeline.param.update(pixel_x=x, pixel_y=y)
            plots.pixel_samples(pipeline.shown_pixel())
            taps.append(time.perf_counter() - started)
        rows.append(_spread_row(task, f"tap -> {master} pixel's samples plotted (5 taps)", taps))
        started = time.perf_counter()
        sweep = pipeline.threshold_sweep(master)
        rows.append(_row(task, f"threshold sweep of the {master}", time.perf_counter() - started,
                         None, f"{len(sweep['threshold'])} thresholds, on 1 row in "
                               f"{sweep['row_step']}"))
    return rows


def bench_dask(name, files) -> list[dict]:
    """The same night on one machine (threads) and on local Dask clusters of 1 and 2 workers."""
    task = f"{name}: {len(files)} frames, Dask"
    rows = []
    for label, extra in (("ccdred reduce (no Dask)", []), ("--workers 1", ["--workers", "1"]),
                         ("--workers 2", ["--workers", "2"])):
        out = fresh(f"{name}-dask{'-'.join(extra)}")
        measured = timed([sys.executable, "-m", "ccdred", "reduce", "-q", "-d", out, *extra,
                          DATA / name], cwd=_mkdir(RESULTS))
        rows.append(_row(task, label, **_unpack(measured), note="RSS of the client process only"
                         if extra else ""))
    return rows


def bench_planes(size: int, repeat=3) -> list[dict]:
    """The demo night (seed 2021) of ``size``² reduced without and with ``--planes``,
    interleaved ``repeat`` times after a warm-up run each; medians and ranges of wall and
    CPU (user + system) time, and the products' bytes."""
    from ccdred.demo import NightSpec, demo_night

    cache = Path(os.environ.get("CCDRED_CACHE", tempfile.gettempdir())) / "ccdred-bench"
    night = demo_night(cache, NightSpec(shape=(size, size), seed=2021))
    tools = {"ccdred reduce": [], "ccdred reduce --planes": ["--planes"]}
    runs = {label: [] for label in tools}
    sizes = {}
    for turn in range(repeat + 1):  # the first turn warms the page cache and numba's cache
        for label, extra in tools.items():
            out = fresh(f"planes{size}{'-'.join(extra)}")
            os.sync()  # the last run's products reach the disk now, not during this run
            measured = timed([sys.executable, "-m", "ccdred", "reduce", "-q", "-d", out, *extra,
                              night], cwd=_mkdir(RESULTS))
            runs[label] += [measured] if turn else []
            sizes[label] = sum(p.stat().st_size for p in out.glob("*.fits"))
    task = f"demo night {size}x{size}: {len(list(night.glob('*.fits')))} frames"
    rows = []
    for label in tools:
        rows.append(_median_row(task, label, runs[label],
                                f"{sizes[label] / 1e6:.0f} MB of products; {_cpu(runs[label])}"))
    cpu = [np.median([m["cpu"] for m in runs[label]]) for label in tools]
    rows[1]["note"] += (f"; {rows[1]['seconds'] / rows[0]['seconds']:.2f}x the wall time, "
                        f"{cpu[1] / cpu[0]:.2f}x the CPU, "
                        f"{sizes['ccdred reduce --planes'] / sizes['ccdred reduce']:.2f}x the bytes")
    rewrites = {label: [] for label in tools}
    for _ in range(repeat):
        for label, extra in tools.items():
            rewrites[label].append(_rewrite(RESULTS / f"planes{size}{'-'.join(extra)}",
                                            RESULTS / "planes-rewritten"))
    rows += [_median_row(task, f"{label}: its products written again", rewrites[label],
                         "from memory, one thread, as fitsio.write_image writes them (checksums "
                         f"included): what the bytes alone cost; {_cpu(rewrites[label])}")
             for label in tools]
    return rows


def _cpu(measured) -> str:
    """Median and range of the CPU seconds of ``measured`` runs, and the user and system
    times' medians."""
    cpu = sorted(m["cpu"] for m in measured)
    return (f"CPU median {np.median(cpu):.2f} s, range {cpu[0]:.2f}-{cpu[-1]:.2f} s (user "
            f"{np.median([m['user'] for m in measured]):.2f}, system "
            f"{np.median([m['system'] for m in measured]):.2f})")


def _rewrite(folder: Path, scratch: Path) -> dict:
    """Wall and CPU seconds of writing ``folder``'s products again into ``scratch``, their
    images and planes read into memory first."""
    from astropy.io import fits

    from ccdred import fitsio

    products = []
    for path in sorted(folder.glob("*.fits")):
        with fits.open(path, memmap=False) as hdus:
            products.append((path.name, hdus[0].data, hdus[0].header, fitsio.read_planes(path)))
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    os.sync()
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    for name, data, header, planes in products:
        fitsio.write_image(scratch / name, data, header, uncertainty=planes.get("UNCERT"),
                           mask=planes.get("MASK"), n_rejected=planes.get("NREJ"))
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"seconds": time.perf_counter() - started, "rss_mb": None, "cpu": user + system,
            "user": user, "system": system}


def markdown(rows) -> str:
    lines = ["| task | tool | wall (s) | peak RSS (MB) | note |", "| --- | --- | ---: | ---: | --- |"]
    for r in rows:
        rss = "" if r["rss_mb"] is None else f"{r['rss_mb']:.0f}"
        lines.append(f"| {r['task']} | {r['tool']} | {r['seconds']:.2f} | {rss} | {r['note']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    global RESULTS  # noqa: PLW0603  (every part writes under it: --results)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts",
                        default="kernel,dark,night,calibration,interactive,seed,dask,explore,"
                                "planes",
                        help="comma-separated parts to run (default: all)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each tool on night57, interleaved; medians (default 3)")
    parser.add_argument("--planes-sizes", default="2048",
                        help="comma-separated demo night sizes of the planes part (default 2048)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"folder for the products (default {RESULTS})")
    args = parser.parse_args(argv)
    RESULTS = args.results
    parts = set(args.parts.split(","))
    # A regular install byte-compiles the package; an editable one may not have (e.g. with
    # PYTHONDONTWRITEBYTECODE set), and every timed process would compile it again.
    compileall.compile_dir(REPO / "ccdred", quiet=1)
    night57 = make("night57") if parts & {"dark", "night", "calibration", "dask"} else []
    rows = []
    rows += bench_kernel() if "kernel" in parts else []
    rows += bench_master_dark(night57) if "dark" in parts else []
    rows += bench_night("night57", night57, True, args.repeat) if "night" in parts else []
    if "calibration" in parts:
        make("night57real")
        rows += bench_calibration(args.repeat)
    rows += bench_interactive(make("flats12")) if "interactive" in parts else []
    rows += bench_night("night534", make("night534"), False) if "seed" in parts else []
    rows += bench_dask("night57", night57) if "dask" in parts else []
    rows += bench_explore(make("demo2048")) if "explore" in parts else []
    for size in map(int, args.planes_sizes.split(",")) if "planes" in parts else []:
        rows += bench_planes(size, args.repeat)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"results-{'-'.join(sorted(parts))}.json").write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
