"""Bad input, interruptions and resumption: one clear line, nothing partial left behind."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccdred.demo import NightSpec, make_night
from ccdred.errors import InputError
from ccdred.frames import read_frame
from ccdred.keywords import Keywords

from .conftest import assert_same_products

CLI = [sys.executable, "-m", "ccdred", "reduce", "-q"]


def run(*args, **kwargs):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, **kwargs)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ccdred: error: ")]


@pytest.fixture(scope="module")
def long_night(tmp_path_factory) -> Path:
    """Enough object frames that a run can be interrupted half-way."""
    folder = tmp_path_factory.mktemp("long") / "night"
    make_night(folder, NightSpec(shape=(256, 256), seed=9, n_objects=25))
    return folder


@pytest.fixture(scope="module")
def long_night_products(long_night, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("long-products") / "out"
    assert run("-d", out, long_night).returncode == 0
    return out


def test_write_failure_is_one_line_and_leaves_nothing_partial(long_night, tmp_path):
    """A file-size limit fails the first product's write as a full disk would."""
    limit = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))"
    code = f"{limit}; import sys; from ccdred.cli import main; sys.exit(main(sys.argv[1:]))"
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", code, "reduce", "-q", "-d", str(out),
                           str(long_night)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    [line] = error_lines(done.stderr)
    assert re.search(r"dark_00005000.fits: cannot write the product \(\d+ requested", line), line
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ccdred.log"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 300 kB tmpfs: a real 'disk full'. Needs root (mount); CI runs as root."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full_is_one_line_and_leaves_nothing_partial(long_night, tiny_disk):
    done = run("-d", tiny_disk / "out", long_night)
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    # The disk fills at the header (the OS's ENOSPC) or mid-data (astropy's short write).
    full = r"(No space left on device|\d+ requested and \d+ written)"
    assert re.search(rf"dark_\d{{8}}.fits: cannot write the product \({full}\)$", line), line
    assert not list((tiny_disk / "out").glob(".*"))
    for path in (tiny_disk / "out").glob("*.fits"):  # what fitted is complete
        with fits.open(path) as hdus:
            assert hdus[0].verify_datasum() == 1, path.name


def test_output_folder_not_writable(night_files, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run("-d", blocker / "out", night_files[0].parent, "-l", tmp_path / "log.txt")
    assert done.returncode == 2
    assert error_lines(done.stderr) == [
        f"ccdred: error: {blocker / 'out'}: output folder is not writable (Not a directory)"]


def test_unsafe_filter_names_stay_inside_the_output_folder(tmp_path):
    spec = NightSpec(shape=(24, 32), seed=4, filters=("B/V", "..", "H alpha"),
                     object_exptimes=(10.0, 20.0, 30.0), saturated_flats=0, faint_flats=0)
    make_night(tmp_path / "raw", spec)
    done = run("-d", tmp_path / "out", tmp_path / "raw")
    assert done.returncode == 0, done.stderr
    flats = sorted(p.name for p in (tmp_path / "out").glob("flat_*"))
    assert flats == ["flat_B_V.fits", "flat_H_alpha.fits", "flat__..fits"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]
    assert fits.getheader(tmp_path / "out" / "flat_B_V.fits")["FILTER"] == "B/V"


def test_nan_and_zero_pixels_in_flats_are_masked_and_reported(tmp_path):
    make_night(tmp_path / "raw", NightSpec(shape=(24, 32), seed=5))
    for path in (tmp_path / "raw").iterdir():
        with fits.open(path) as hdus:
            if hdus[0].header["IMAGETYP"] == "FLAT" and hdus[0].header["FILTER"] == "V":
                data = hdus[0].data.astype(np.float32)
                data[3, 4], data[5, 6] = np.nan, 0.0
                hdus[0].data = data
                hdus.writeto(path, overwrite=True)
    done = run("-d", tmp_path / "out", tmp_path / "raw")
    assert done.returncode == 0, done.stderr
    assert "ccdred: warning: master flat 'V': 2 pixels had no usable value" in done.stderr
    flat = fits.getdata(tmp_path / "out" / "flat_V.fits")
    assert flat[3, 4] == 1.0 and flat[5, 6] == 1.0 and np.isfinite(flat).all()
    for path in (tmp_path / "out").glob("*_df.fits"):
        assert np.isfinite(fits.getdata(path)).all(), path.name


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_to_the_uninterrupted_result(long_night, long_night_products,
                                                             tmp_path, how):
    out = tmp_path / "out"
    process = subprocess.Popen([*CLI, "-d", str(out), str(long_night)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*_df.fits"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=60)
    total = len(list(long_night_products.glob("*.fits")))
    interrupted = sorted(p.name for p in out.glob("*.fits"))
    assert 4 <= len([n for n in interrupted if n.endswith("_df.fits")]) and len(interrupted) < total
    for name in interrupted:  # whatever is there is complete
        with fits.open(out / name) as hdus:
            assert hdus[0].verify_checksum() == 1, name
    if how == signal.SIGINT:
        assert process.returncode == 130 and "interrupted" in stderr
        assert not list(out.glob(".*.part"))
    resumed = run("-d", out, "--resume", long_night)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.glob(".*.part"))
    assert (out / "ccdred.log").read_text().count("(current)") >= 4
    assert_same_products(long_night_products, out)


def test_resume_redoes_products_made_with_other_options(night_files, tmp_path):
    folder = night_files[0].parent
    assert run("-d", tmp_path / "out", folder).returncode == 0
    assert run("-d", tmp_path / "out", "--resume", "-t", "3.0", folder).returncode == 0
    assert "(current)" not in (tmp_path / "out" / "ccdred.log").read_text()
    assert run("-d", tmp_path / "fresh", "-t", "3.0", folder).returncode == 0
    assert_same_products(tmp_path / "fresh", tmp_path / "out")


def test_resume_replaces_a_damaged_product(night_files, tmp_path):
    folder = night_files[0].parent
    out = tmp_path / "out"
    assert run("-d", out, folder).returncode == 0
    victim = sorted(out.glob("*_df.fits"))[0]
    good = victim.read_bytes()
    damaged = bytearray(good)
    damaged[-100] ^= 0xFF
    victim.write_bytes(bytes(damaged))
    assert run("-d", out, "--resume", folder).returncode == 0
    assert victim.read_bytes() != bytes(damaged)
    with fits.open(victim) as hdus:
        assert hdus[0].verify_datasum() == 1
    log = (out / "ccdred.log").read_text()
    assert f"wrote {victim}" in log


exptimes = st.one_of(
    st.floats(0, 1e5, allow_nan=False), st.integers(0, 10**6),
    st.floats(0, 1e4).map(lambda x: f" {x!r} "),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8))
imagetyps = st.sampled_from(["LIGHT", "Light Frame", "dark", " FLAT ", "Dark  Frame", "ZERO",
                             "focus", "Sky Flat", "OBJECT"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(exptime=exptimes, imagetyp=imagetyps, filter_name=st.sampled_from(["V", " R ", "", None]))
def test_property_header_parsing(tmp_path, exptime, imagetyp, filter_name):
    header = fits.Header({"IMAGETYP": imagetyp, "EXPTIME": exptime})
    if filter_name is not None:
        header["FILTER"] = filter_name
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(np.zeros((4, 5), np.uint16), header).writeto(path, overwrite=True)
    kind = Keywords().frame_type(imagetyp)
    stored = fits.getheader(path)["EXPTIME"]  # FITS keeps 16 significant digits
    try:
        number = float(stored)  # 'INFINITY' and 'nan' are numbers to Python, not exposure times
    except ValueError:
        number = None
    number = number if number is not None and math.isfinite(number) else None
    try:
        frame = read_frame(path)
    except InputError as err:
        assert all(p.path == path for p in err.problems)
        assert (number is None and kind is not None and kind != "bias") or (
            kind in ("flat", "object") and not (filter_name or "").strip())
        return
    assert frame.frame_type == kind and frame.shape == (4, 5)
    if kind in ("dark", "flat", "object"):
        assert frame.exptime == number
    if kind in ("flat", "object"):
        assert frame.filter == filter_name.strip()
