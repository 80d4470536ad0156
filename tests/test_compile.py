"""After ``ccdred prepare``, no run compiles a kernel (issue 28, "first runs still compile").

``ccdred prepare`` runs (in a subprocess, once per session) on the numba cache the other
tests use, next to the package: in CI, where it starts empty, this is where the kernels
compile, so the test costs little more than its workload; then another process combines stacks of every type a night can hold (raw
uint16 read from a FITS file with BZERO, int16, big-endian, int32, float32, float64,
read-only memory maps, strided views, with and without masks and offsets), measures
their frames, reduces both real nights of ../shared/realdata and simulated nights of
every file kind (four amplifiers, per extension and ``--tile``; a Bayer mosaic; flats and
objects only; tile-compressed with OBSTYPE in the primary header), and computes what the
dashboard shows of the demo night (raw frames held read-only). None of it may compile:
numba's dispatchers count what they compile (cache misses), the cache folder gains no
file, and each kernel holds the versions ``kernels.SIGNATURES`` names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import SHARED, unavailable

REALDATA = SHARED / "realdata"

#: Run in a process of its own on the prepared cache; prints what each kernel holds.
WORKLOAD = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    import numba
    import numpy as np
    from astropy.io import fits

    from ccdred import fitsio, kernels
    from ccdred.cli import main
    from ccdred.combine import frame_clip_bounds, frame_median, sigma_clip_combine
    from ccdred.demo import NightSpec, make_night
    from ccdred.pipeline import Pipeline

    work, realdata, demo = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])


    def read_only(array):
        array.flags.writeable = False
        return array


    rng = np.random.default_rng(28)
    raw = rng.normal(1200, 30, (5, 40, 300)).astype(np.uint16)
    for i, frame in enumerate(raw):  # 16-bit unsigned as cameras write it: BITPIX 16, BZERO
        fits.PrimaryHDU(frame).writeto(work / f"raw{i}.fits")
    assert fits.getheader(work / "raw0.fits")["BZERO"] == 32768
    read = np.stack([fitsio.read_image(work / f"raw{i}.fits") for i in range(5)])
    with fits.open(work / "raw0.fits", do_not_scale_image_data=True) as hdus:
        big_endian = hdus[0].data.copy()  # '>i2', as stored
    assert big_endian.dtype == np.dtype(">i2")
    raw.astype(np.float32).tofile(work / "stack.f32")
    mapped = np.memmap(work / "stack.f32", dtype=np.float32, mode="r", shape=raw.shape)
    stacks = {"uint16 (FITS, BZERO)": read, "int16": raw.astype(np.int16),
              "big-endian": np.stack([big_endian] * 5), "int32": raw.astype(np.int32),
              "float32": raw.astype(np.float32), "float64": raw.astype(np.float64),
              "read-only float64": read_only(raw.astype(np.float64)),
              "read-only memory map": mapped, "strided float64": raw.astype(np.float64)[:, :, ::2],
              "big-endian float64": raw.astype(">f8")}
    offsets = {"none": None, "float32": np.full(raw.shape[1:], 3.0, np.float32),
               "float64": np.full(raw.shape[1:], 3.0),
               "uint16": np.full(raw.shape[1:], 3, np.uint16)}
    for stack in stacks.values():
        columns = stack.shape[1:]
        for offset in offsets.values():
            offset = None if offset is None else offset[:, : columns[1]]
            sigma_clip_combine(stack, offsets=offset)
            sigma_clip_combine(stack, offsets=offset, frames=[0, 2, 3], rejection="minmax",
                               mask=np.zeros((3, *columns), bool), keep_mask=False)
            frame_median(stack[1], offset)
        sigma_clip_combine(stack, valid_range=(read_only(np.full(5, 1100.0)), 1300.0),
                           weights=read_only(np.ones(5)), scale=np.linspace(1, 2, 10)[::2],
                           stdfunc="mad_std")
        sigma_clip_combine(stack, rejection="pclip", keep_mask=False)
        sigma_clip_combine(stack, rejection="ccdclip", gain=1.5, read_noise=9.0, variance=True)
        frame_median(stack[0])
        if stack.dtype.kind in "iu":
            frame_clip_bounds(stack[2])
    assert main(["reduce", "-q", "-d", str(work / "stl"), "--frame-type", "flat-*=flat",
                 str(realdata / "stl1001-lab")]) == 0
    assert main(["reduce", "-q", "-d", str(work / "cafos"), str(realdata / "cafos-ngc2420")]) == 0
    kinds = {"amplifiers": NightSpec(shape=(64, 80), seed=30, overscan=24, amplifiers=4),
             "bayer": NightSpec(shape=(64, 80), seed=11, bayer="RGGB"),
             "flat-only": NightSpec(shape=(64, 80), seed=8),
             "plain": NightSpec(shape=(64, 80), seed=12)}
    for kind, spec in kinds.items():
        make_night(work / kind, spec)
    (work / "lco").mkdir()
    for path in sorted((work / "plain").glob("*.fits")):  # compressed, keywords in the primary
        header, data = fits.getheader(path), fits.getdata(path)
        header["OBSTYPE"] = {"LIGHT": "EXPOSE", "FLAT": "SKYFLAT"}.get(header["IMAGETYP"],
                                                                      header["IMAGETYP"])
        del header["IMAGETYP"]
        tiled = fits.CompImageHDU(data, fits.Header({"INHERIT": True}), compression_type="RICE_1")
        fits.HDUList([fits.PrimaryHDU(header=header), tiled]).writeto(
            work / "lco" / f"{path.stem}.fits.fz")
    for path in (work / "flat-only").glob("*.fits"):  # a CMOS night: flats and objects only
        if fits.getval(path, "IMAGETYP") in ("BIAS", "DARK"):
            path.unlink()
    for kind, options in (("amplifiers", []), ("amplifiers", ["--tile"]), ("bayer", []),
                          ("flat-only", []), ("lco", [])):
        out = work / f"out-{kind}{''.join(options)}"
        assert main(["reduce", "-q", "-d", str(out), *options, str(work / kind)]) == 0, kind
    for kind in ("lco", "amplifiers"):
        lco = Pipeline(night=str(work / kind))
        lco.master_dark(), lco.master_flat(), lco.calibrated()
    pipeline = Pipeline(night=str(demo))  # the dashboard's first pages
    pipeline.master_dark(), pipeline.master_flat(), pipeline.calibrated()
    for inspect in ("flat", "dark"):
        pipeline.inspect = inspect
        pipeline.shown_sweep(), pipeline.shown_pixel()

    held = {}
    for name, value in vars(kernels).items():
        if isinstance(value, numba.core.dispatcher.Dispatcher):
            held[name] = {"signatures": [str(s) for s in value.signatures],
                          "compiled": [str(s) for s in value._cache_misses]}
    print(json.dumps(held))
''')


def _environment(cache) -> dict:
    return {**os.environ, "CCDRED_CACHE": str(cache), "CCDRED_DEMO_SIZE": "64"}


def _cache_files(_cache=None) -> set[str]:
    """The compiled kernels' cache files (numba's, beside ``ccdred/kernels.py``)."""
    from ccdred import kernels

    numba_cache = Path(os.environ.get("NUMBA_CACHE_DIR") or Path(kernels.__file__).parent)
    return {str(p.relative_to(numba_cache)) for p in numba_cache.rglob("kernels.*")
            if p.suffix in (".nbi", ".nbc")}


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A cache folder (the demo night's) that ``ccdred prepare`` has filled, the kernels
    compiled into numba's cache."""
    cache = tmp_path_factory.mktemp("prepared")
    done = subprocess.run([sys.executable, "-m", "ccdred", "prepare"], env=_environment(cache),
                          check=True, capture_output=True, text=True, timeout=900)
    from ccdred.kernels import SIGNATURES

    total = sum(map(len, SIGNATURES.values())) + 1
    # what it is doing, kernel by kernel (a student waiting minutes sees it move)
    assert f"ccdred:   1 of {total} compiled (LACosmic)" in done.stderr, done.stderr
    assert f"ccdred:   {total} of {total} compiled" in done.stderr, done.stderr
    return cache


def test_prepared_is_said_of_this_install_only(prepared, monkeypatch):
    """The kernels are compiled beside the package (or in NUMBA_CACHE_DIR): another clone or
    cache of the same version has compiled nothing, and the dashboard prepares again."""
    from ccdred.prepare import is_prepared

    assert is_prepared(prepared)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(prepared / "elsewhere"))
    assert not is_prepared(prepared)


def test_no_kernel_compiles_after_prepare(prepared, tmp_path):
    if not REALDATA.is_dir():
        unavailable(f"real data not found at {REALDATA}", "CCDRED_REQUIRE_REALDATA")
    from ccdred import kernels

    before = _cache_files(prepared)
    assert before, "ccdred prepare cached no kernel"
    demo, = prepared.glob("demo-*")
    done = subprocess.run([sys.executable, "-c", WORKLOAD, str(tmp_path), str(REALDATA), str(demo)],
                          env=_environment(prepared), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    held = json.loads(done.stdout.strip().splitlines()[-1])
    compiled = {name: kernel["compiled"] for name, kernel in held.items() if kernel["compiled"]}
    assert compiled == {}, f"compiled after ccdred prepare: {compiled}"
    assert _cache_files(prepared) == before
    for name, signatures in kernels.SIGNATURES.items():  # the versions prepare compiled
        assert sorted(held[name]["signatures"]) == sorted(str(tuple(s)) for s in signatures), name
