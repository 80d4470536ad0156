import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdred.cli import main

from ccdred.plan import flat_product_name, safe_filter_name

from .conftest import SMALL_SPEC, expected_products, frame_files


def run(args, capsys):
    status = main(["reduce", "-q", *map(str, args)])
    return status, capsys.readouterr().err


def test_reduce_writes_the_course_products(night_files, tmp_path, capsys):
    out = tmp_path / "out"
    status, err = run(["-d", out, night_files[0].parent], capsys)
    assert status == 0, err
    assert {p.name for p in out.iterdir()} == expected_products(SMALL_SPEC, night_files)
    header = fits.getheader(out / "flat_V.fits")
    assert header["HIERARCH CCDRED STEP"] == "master_flat"
    assert header["HIERARCH CCDRED THRESHOLD"] == 2.5
    assert header["NCOMBINE"] == SMALL_SPEC.n_flats - SMALL_SPEC.saturated_flats
    assert header["IMCMB001"].startswith("demo_")
    assert fits.getdata(out / "flat_V.fits").dtype == np.dtype(">f4")
    log = (out / "ccdred.log").read_text()
    assert "REJECTED" in log
    assert re.match(r"# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ccdred \d", log)
    assert "ccdred: warning: " in err and "outside the limits; not used" in err
    assert f"{len(expected_products(SMALL_SPEC, night_files)) - 1} products" in err


def test_options_beyond_the_reference(night_files, tmp_path, capsys):
    out = tmp_path / "out"
    status, _ = run(["-d", out, "--no-intermediate", "--dtype", "float64", "--no-frame-clip",
                     "--lowerlimit", "1000", *night_files], capsys)
    assert status == 0
    assert {p.name for p in out.iterdir()} == expected_products(SMALL_SPEC, night_files, False)
    r_flat = fits.open(out / "flat_R.fits")[0]
    assert r_flat.data.dtype == np.dtype(">f8")
    assert r_flat.header["NCOMBINE"] == SMALL_SPEC.n_flats - SMALL_SPEC.faint_flats
    assert r_flat.header["HIERARCH CCDRED FRAME_CLIP"] is False


def test_refuses_existing_products_unless_overwrite(night_files, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["-d", out, *night_files], capsys)[0] == 0
    status, err = run(["-d", out, *night_files], capsys)
    assert status == 2 and "already holds" in err and "--overwrite" in err
    assert run(["-d", out, "--overwrite", *night_files], capsys)[0] == 0


def test_raw_files_are_not_modified(night_copy, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in night_copy.iterdir()}
    assert run(["-d", tmp_path / "out", night_copy], capsys)[0] == 0
    assert {p.name: p.read_bytes() for p in night_copy.iterdir()} == before


def drop(folder, imagetyp, **cards):
    """Delete the frames of one kind (optionally with given cards) from a night folder."""
    for path in sorted(folder.iterdir()):
        header = fits.getheader(path)
        if header["IMAGETYP"] == imagetyp and all(header.get(k) == v for k, v in cards.items()):
            path.unlink()


def keep_one(folder, imagetyp, **cards):
    matching = [p for p in sorted(folder.iterdir())
                if fits.getheader(p)["IMAGETYP"] == imagetyp
                and all(fits.getheader(p).get(k) == v for k, v in cards.items())]
    for path in matching[1:]:
        path.unlink()
    return matching[0]


@pytest.mark.parametrize("breakage,message", [
    (lambda d: drop(d, "DARK", EXPTIME=30.0), r"no dark for exposure time 30 s \(needed by demo_"),
    (lambda d: keep_one(d, "DARK", EXPTIME=60.0), "only one dark for exposure time 60 s"),
    (lambda d: drop(d, "FLAT", FILTER="R"), r"no flat for filter 'R' \(needed by demo_"),
    (lambda d: (d / "demo_0001.fits").write_text("garbage"), "demo_0001.fits: not a FITS file"),
])
def test_validation_problems_exit_2(night_copy, tmp_path, capsys, breakage, message):
    breakage(night_copy)
    out = tmp_path / "out"
    status, err = run(["-d", out, "--dark-model", "exact", night_copy], capsys)
    assert status == 2
    assert any(line.startswith("ccdred: error: ") for line in err.splitlines())
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert not out.exists()  # a refused input writes nothing, not even the log


def test_the_only_flat_of_a_filter_is_used_even_over_the_limit(night_copy, tmp_path, capsys):
    kept = keep_one(night_copy, "FLAT", FILTER="V")  # the saturated one
    status, err = run(["-d", tmp_path / "out", night_copy], capsys)
    assert status == 0, err
    assert f"{kept}: flat median 45" in err and "the only flat of filter 'V'; used" in err
    assert "one flat only" in err
    assert fits.getheader(tmp_path / "out" / "flat_V.fits")["IMCMB001"] == kept.name


def test_all_flats_over_the_limit(night_copy, tmp_path, capsys):
    status, err = run(["-d", tmp_path / "out", "-u", "100", night_copy], capsys)
    assert status == 2
    assert "too few flats of filter 'R' within the limits (upper 100, lower off): demo_0026.fits 21" in err
    assert "too few flats of filter 'V' within the limits" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ccdred.log"]


def test_several_problems_reported_together(night_copy, tmp_path, capsys):
    drop(night_copy, "DARK", EXPTIME=30.0)
    drop(night_copy, "FLAT", FILTER="R")
    (night_copy / "junk.fits").write_text("junk")
    status, err = run(["-d", tmp_path / "out", "--dark-model", "exact", night_copy], capsys)
    assert status == 2
    assert len([line for line in err.splitlines() if line.startswith("ccdred: error:")]) == 3


def test_unsafe_filter_names_become_safe_file_names():
    assert safe_filter_name("B/../x y") == "B_.._x_y"
    assert flat_product_name("..") == "flat__..fits"
    assert flat_product_name("Hα 656/3") == "flat_H__656_3.fits"


def test_bad_option_value_is_one_line(night_files, capsys):
    status, err = run(["-t", "-1", night_files[0]], capsys)
    assert status == 2 and err.strip() == "ccdred: error: --threshold must be greater than 0, not -1.0."


def test_module_entry_point_and_demo(tmp_path):
    demo = subprocess.run([sys.executable, "-m", "ccdred", "demo", str(tmp_path / "n"), "--size",
                           "32"], capture_output=True, text=True, check=True)
    assert "wrote 38 raw frames" in demo.stderr
    console_script = Path(sys.executable).parent / "ccdred"
    done = subprocess.run([console_script, "reduce", "-d", str(tmp_path / "o"), str(tmp_path / "n")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "flat_V.fits").exists()


@pytest.mark.parametrize("args,message", [
    (["--treshold", "3"], "unrecognized arguments: --treshold; did you mean --threshold?"),
    (["-c", "medain"], "invalid choice: 'medain' (choose from 'median', 'mean'); did you mean median?"),
    (["--dark-model", "scale"], "did you mean scaled?"),
    (["-o", "out"], "unrecognized arguments: -o; -o is an option of ccdred export\n"),
])
def test_mistyped_options_are_one_line_with_a_suggestion(night_files, args, message):
    done = subprocess.run([sys.executable, "-m", "ccdred", "reduce", *args,
                           str(night_files[0].parent)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_output_folder_under_a_file_is_one_line(night_files, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    status, err = run(["-d", tmp_path / "afile" / "sub", night_files[0].parent], capsys)
    assert status == 2
    assert err == (f"ccdred: error: {tmp_path / 'afile' / 'sub'}: output folder is not writable "
                   f"(Not a directory)\n")


@pytest.mark.parametrize("make,message", [
    (lambda p: p.mkdir(), "no FITS files in this folder"),
    (lambda p: None, "no such file or folder"),
])
def test_no_frames_is_an_input_error_and_writes_nothing(tmp_path, capsys, make, message):
    make(tmp_path / "night")
    status, err = run(["-d", tmp_path / "out", tmp_path / "night"], capsys)
    assert status == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_a_night_that_makes_nothing_is_an_input_error_listing_what_it_holds(night_files, tmp_path,
                                                                            capsys, write_fits):
    """Only a bias, or frames of an unknown type: nothing to make, exit 2, nothing written."""
    dark = frame_files(night_files, "DARK")[0]
    status, err = run(["-d", tmp_path / "out", dark], capsys)
    assert status == 2 and "nothing to make: the night holds 1 dark; it needs flats" in err
    lamp = tmp_path / "lamp"
    lamp.mkdir()
    for i in range(3):
        write_fits(f"f{i}.fits", folder=lamp, IMAGETYP="ARC", EXPTIME=1.0)
    status, err = run(["-d", tmp_path / "out", lamp], capsys)
    assert status == 2 and "the night holds 3 unknown IMAGETYP = 'ARC'" in err
    assert "--keyword-datatype-flat" in err and "--frame-type" in err
    assert not (tmp_path / "out").exists()


def test_flats_of_an_unknown_type_are_said_with_the_flats_they_leave_missing(night_copy,
                                                                             tmp_path, capsys):
    """The error says no flat; the warning before it says why (the log alone did)."""
    flats = sorted(p for p in night_copy.iterdir() if fits.getval(p, "IMAGETYP") == "FLAT")
    for flat in flats:
        fits.setval(flat, "IMAGETYP", value="LAMPFLAT2")
    status, err = run(["-d", tmp_path / "out", night_copy], capsys)
    assert status == 2 and "error: " in err and "no flat for filter" in err
    assert (f"warning: frames of an unknown type, not used: IMAGETYP = 'LAMPFLAT2' in "
            f"{flats[0]} and {len(flats) - 1} other files\n") in err
    assert not (tmp_path / "out").exists()


def test_demo_refuses_a_folder_that_holds_files_unless_told(tmp_path, capsys):
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "notes.txt").write_text("mine")
    assert main(["demo", str(tmp_path / "n"), "--size", "16"]) == 2
    assert "folder already holds files; use --overwrite" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "n").iterdir()] == ["notes.txt"]
    assert main(["demo", str(tmp_path / "n"), "--size", "16", "--overwrite"]) == 0


def test_products_follow_the_umask_and_headers_say_what_they_are(night_files, tmp_path, capsys):
    status, _ = run(["-d", tmp_path / "out", night_files[0].parent], capsys)
    assert status == 0
    out = tmp_path / "out"
    umask = os.umask(0o022)
    os.umask(umask)
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~umask for p in out.glob("*.fits"))
    light = frame_files(night_files, "LIGHT")[0]
    calibrated = fits.getheader(out / light.name.replace(".fits", "_df.fits"))
    assert "NCOMBINE" not in calibrated and calibrated["BUNIT"] == "ADU"
    assert "HIERARCH CCDRED LOWER_LIMIT" not in calibrated  # unset options are left out
    assert calibrated.comments["HIERARCH CCDRED THRESHOLD"] == "ccdred option"
    flat = fits.getheader(out / "flat_V.fits")
    assert flat["NCOMBINE"] == 6 and flat["BUNIT"] == ""  # dimensionless (issue 27, defect 12)
    assert "subtracted exact dark dark_00005000.fits" in str(flat["HISTORY"])


def test_the_faint_flat_is_flagged_suspect_but_still_used(night_files, tmp_path, capsys):
    status, err = run(["-d", tmp_path / "out", night_files[0].parent], capsys)
    assert status == 0
    assert re.search(r"demo_0032.fits: flat suspect: median 30\d, \d+x below the filter's", err)
    assert fits.getheader(tmp_path / "out" / "flat_R.fits")["NCOMBINE"] == 7


# -- warnings and the progress bar (issue 27, defect 8) ---------------------------------

#: The small night's two flat warnings, as the demo makes them (a faint flat used, a
#: saturated one left out)
FLAT_WARNINGS = (r"ccdred: warning: \S*demo_0032\.fits: flat suspect: median \d+, \d+x below "
                 r"the filter's \d+; used \(check it, or set a lower or upper limit\)",
                 r"ccdred: warning: \S*demo_\d{4}\.fits: flat median \d+\.\d outside the "
                 r"limits; not used \(above upper limit 38000\)")


def reduce_in_a_terminal(args, cwd) -> str:
    """``ccdred reduce ARGS`` with stderr on a pseudo-terminal (as a user runs it): what it
    wrote there."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 250, 0, 0))  # rows, columns
    console_script = Path(sys.executable).parent / "ccdred"
    process = subprocess.Popen([console_script, "reduce", *map(str, args)], cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    written = bytearray()
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        written += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0, written.decode()
    return written.decode()


def screen(text: str) -> list[str]:
    """The lines a terminal shows for ``text``: a carriage return goes back to the line's
    start, later characters overwrite earlier ones."""
    assert "\x1b" not in text  # no escape sequences to interpret
    lines, column = [[]], 0
    for char in text:
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append([])
            column = 0
        else:
            line = lines[-1]
            line[column:column + 1] = [char]
            column += 1
    return ["".join(line).rstrip() for line in lines]


def warning_lines(lines) -> list[str]:
    return [line for line in lines if "warning:" in line]


def assert_each_warning_once_and_whole(lines) -> None:
    warned = warning_lines(lines)
    assert len(warned) == len(FLAT_WARNINGS), warned
    for pattern in FLAT_WARNINGS:
        assert len([line for line in warned if re.fullmatch(pattern, line)]) == 1, (pattern, warned)


def test_warnings_in_a_terminal_are_whole_lines_above_the_progress_bar(night_files, tmp_path):
    night = night_files[0].parent
    written = reduce_in_a_terminal(["-d", tmp_path / "out", night.name], night.parent)
    assert "step/s" in written  # the bar was drawn, and redrawn in place
    shown = screen(written)
    assert_each_warning_once_and_whole(shown)
    assert not any("step/s" in line or "%|" in line for line in shown)  # the bar is gone
    assert shown[-2].startswith("ccdred: 31 products in ")
    logged = [line.split(" WARNING ", 1)[1] for line in
              (tmp_path / "out" / "ccdred.log").read_text().splitlines() if " WARNING " in line]
    assert [f"ccdred: warning: {line}" for line in logged] == warning_lines(shown)


def test_warnings_into_a_pipe_are_whole_lines_with_no_progress_bar(night_files, tmp_path):
    """Written to a pipe or a file, a redrawn bar would share the warnings' lines: no bar."""
    console_script = Path(sys.executable).parent / "ccdred"
    done = subprocess.run([console_script, "reduce", "-d", str(tmp_path / "out"),
                           str(night_files[0].parent)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "step/s" not in done.stderr
    lines = done.stderr.splitlines()
    assert_each_warning_once_and_whole(lines)
    assert len(lines) == 3 and lines[-1].startswith("ccdred: 31 products in "), lines


#: Valid values other than the defaults, for parameters whose other values are not
#: generic ("X" is no overscan section)
_OTHER_VALUES = {"overscan": "none", "trim": "[1:10,1:12]", "overscan_function": "legendre:2",
                 "frame_types": {"dark-*.fits": "ignore", "a b.fits": "flat"},
                 "library_choice": {"flat_V": "20210214T110200_cam_flat_V.fits", "bias": "b.fits"},
                 "keyword_datatype_flat": ["Flat Field", "SKYFLAT"]}


def _other_value(parameter, default):
    import param

    if isinstance(parameter, param.Selector):
        return next(value for value in parameter.objects if value != default)
    if isinstance(parameter, param.Boolean):
        return not default
    if isinstance(parameter, param.Number):
        return 3 if isinstance(parameter, param.Integer) else 1.25
    if isinstance(parameter, param.List):
        return ["VALUE", "Other value"]
    return "KEYWORD"


def test_every_parameter_set_back_from_its_command_options():
    """``command_options`` read back by the command line's own parser gives the same
    parameters, for every parameter set to a value other than its default."""
    import shlex

    from ccdred.cli import _parameters, build_parser
    from ccdred.parameters import ReductionParameters, names

    defaults = ReductionParameters()
    for name in names(ReductionParameters):
        value = _OTHER_VALUES.get(name, _other_value(defaults.param[name], getattr(defaults, name)))
        parameters = ReductionParameters(**{name: value})
        line = parameters.command("night 1")
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.files == ["night 1"]
        read_back = _parameters(args)
        assert {n: getattr(read_back, n) for n in names(ReductionParameters)} == \
            {n: getattr(parameters, n) for n in names(ReductionParameters)}, line
        assert parameters.changed() == {name: value}, name
