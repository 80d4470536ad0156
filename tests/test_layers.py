"""Imports flow one way: the computing layers load no plotting or web libraries."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["ccdred", "ccdred.combine", "ccdred.calibrate",
                                    "ccdred.plan", "ccdred.steps", "ccdred.night",
                                    "ccdred.pipeline", "ccdred.cli"])
def test_core_modules_load_no_panel_holoviews_or_dask(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('panel', 'holoviews', 'bokeh', 'dask', 'distributed') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
