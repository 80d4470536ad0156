"""Imports flow one way: the computing layers load no plotting or web libraries."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["ccdred", "ccdred.compat", "ccdred.config", "ccdred.combine",
                                    "ccdred.sections", "ccdred.planes", "ccdred.calibrate", "ccdred.plan",
                                    "ccdred.steps", "ccdred.badpix", "ccdred.cosmics",
                                    "ccdred.night", "ccdred.pipeline", "ccdred.cli"])
def test_core_modules_load_no_panel_holoviews_or_dask(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('panel', 'holoviews', 'bokeh', 'dask', 'distributed') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["ccdred.compat", "ccdred.config"])
def test_the_lowest_modules_load_nothing_of_ccdred_nor_a_library(module):
    """Any module may import ``compat`` and ``config``: they import libraries where used."""
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.startswith('ccdred.')), "
            "sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'astropy', 'panel', "
            "'bokeh', 'param'}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == f"['ccdred._version', '{module}'] []", loaded.stdout


def test_the_catalogue_does_not_load_the_calibration_steps():
    """``frames`` (with its overscan and trim from ``sections``) sits below ``calibrate``."""
    code = "import sys, ccdred.frames; print('ccdred.calibrate' in sys.modules, 'ccdred.sections' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False True", loaded.stdout + loaded.stderr


def test_the_kernels_load_neither_param_nor_fits_nor_start_threads():
    """Nor ``combine``, which imports them where it calls them: no import circle."""
    code = ("import sys, threading, ccdred.kernels; "
            "print(sorted(m for m in ('param', 'astropy.io.fits', 'ccdred.frames', 'ccdred.combine')"
            " if m in sys.modules), threading.active_count())")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[] 1"


def test_the_help_loads_neither_numba_nor_astropy():
    """``ccdred --help`` and the catalogue's modules answer without the compiled kernels or FITS."""
    code = ("import sys, ccdred.cli, ccdred.plan, ccdred.steps; "
            "ccdred.cli.build_parser().format_help(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numba', 'llvmlite', 'astropy'}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_the_version_is_known_without_the_package():
    code = "import sys, ccdred._version as v; print(v.__version__, 'ccdred.calibrate' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.split()[1] == "False" and loaded.stdout.split()[0].count(".") == 2


def test_a_whole_reduction_from_the_command_line_loads_no_dashboard_or_dask(night_files, tmp_path):
    """The CLI's path, in a fresh interpreter: a night reduced, then what it imported."""
    code = ("import sys; from ccdred.cli import main; "
            f"status = main(['reduce', '-q', '-d', {str(tmp_path / 'out')!r}, "
            f"{str(night_files[0].parent)!r}]); "
            "print(status, sorted({m.split('.')[0] for m in sys.modules} & {'panel', 'holoviews', "
            "'bokeh', 'datashader', 'dask', 'distributed', 'pandas'}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "0 []", loaded.stdout + loaded.stderr
    assert len(list((tmp_path / "out").glob("*.fits"))) > 10
