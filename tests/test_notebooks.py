"""The teaching notebooks run top to bottom, with their solutions, on small demo nights.

Every exercise's student cell says it is not answered yet, every hidden
solution is checked right, no notebook leaves a temporary folder behind, and
an exported notebook carries its plotting code (it shows its plots offline).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from ccdred.demo import NightSpec, demo_night
from ccdred.teaching import EXERCISES

from .conftest import REFERENCE_SCRIPT, REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
SIZE = 128


def test_there_are_nine_numbered_notebooks_linked_from_readme():
    assert [p.name[:3] for p in NOTEBOOKS] == [f"0{i}-" for i in range(1, 10)]
    readme = (REPO / "README.md").read_text()
    assert all(f"notebooks/{p.name}" in readme for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_without_outputs_and_with_a_short_start(path):
    cells = json.loads(path.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    start = "".join(cells[1]["source"])
    assert "teaching.start(" in start and len(start.splitlines()) <= 6, start


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_has_exercises_with_hidden_solutions(path):
    notebook = nbformat.read(path, as_version=4)
    exercises = [c for c in notebook.cells if "exercise" in c.metadata.get("tags", [])]
    solutions = [c for c in notebook.cells if "solution" in c.metadata.get("tags", [])]
    assert 2 <= len(exercises) == len(solutions) <= 4
    for cell in solutions:
        assert cell.metadata["jupyter"]["source_hidden"] and cell.metadata["jupyter"]["outputs_hidden"]
    named = {re.search(r"check\('([\w-]+)'", c.source)[1] for c in exercises}
    assert named <= set(EXERCISES)


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    """The notebooks' demo nights, simulated once, small to keep CI quick."""
    cache = tmp_path_factory.mktemp("notebook-cache")
    demo_night(cache, NightSpec(shape=(SIZE, SIZE)))
    demo_night(cache / "real", NightSpec.real(shape=(SIZE, SIZE)))
    return cache


def execute(path, demo_cache, tmp_path, monkeypatch):
    """Run a notebook as a student would, in a kernel whose temporary folder is ``tmp_path``."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.delenv("CCDRED_NIGHT", raising=False)
    monkeypatch.setenv("CCDRED_CACHE", str(demo_cache))
    monkeypatch.setenv("CCDRED_DEMO_SIZE", str(SIZE))
    monkeypatch.setenv("CCDRED_REFERENCE", str(REFERENCE_SCRIPT))
    monkeypatch.setenv("TMPDIR", str(scratch))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook, scratch


def text_of(cell) -> str:
    return "\n".join(output.get("text", "") + output.get("data", {}).get("text/markdown", "")
                     for output in cell.get("outputs", []))


@pytest.fixture(scope="module")
def executed(demo_cache, tmp_path_factory):
    """Each notebook run once (see :func:`execute`), for every test that reads its outputs."""
    runs = {}

    def run(path):
        if path not in runs:
            with pytest.MonkeyPatch.context() as monkeypatch:
                runs[path] = execute(path, demo_cache, tmp_path_factory.mktemp(path.stem),
                                     monkeypatch)
        return runs[path]

    return run


def notebook_numbered(number):
    return next(p for p in NOTEBOOKS if p.name.startswith(f"0{number}-"))


def cell_showing(notebook, code):
    """The index of the code cell whose source holds ``code``."""
    return next(i for i, cell in enumerate(notebook.cells)
                if cell.cell_type == "code" and code in cell.source)


def percentages(text, label) -> list[float]:
    """The percentages printed on the lines that hold ``label``."""
    return [float(re.search(r"(-?[\d.]+) %", line)[1]) for line in text.splitlines()
            if label in line]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_with_its_solutions(path, executed):
    notebook, scratch = executed(path)
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "exercise" in tags:
            assert "not answered yet" in text_of(cell), cell.source
        if "solution" in tags:
            assert ": right**" in text_of(cell), (cell.source, text_of(cell))
    shown = {mime for cell in notebook.cells for output in cell.get("outputs", [])
             for mime in output.get("data", {})}
    assert shown & {"application/vnd.holoviews_load.v0+json", "text/html",
                    "application/vnd.holoviews_exec.v0+json"}, f"{path.name} showed no plot"
    assert [p.name for p in scratch.iterdir()] == [], "the notebook left temporary files behind"


def test_notebook_3_prints_the_identity_its_text_claims(executed):
    notebook, _ = executed(notebook_numbered(3))
    index = cell_showing(notebook, "identical master")
    assert "same to the last bit" in notebook.cells[index - 1].source
    printed = text_of(notebook.cells[index])
    assert "identical master: True" in printed and "dashboard's: True" in printed, printed
    difference = float(re.search(r"relative differences up to ([^,]+),", printed)[1])
    assert 0 < difference < np.finfo(np.float32).eps  # float64 darks: "in the last digits"
    assert re.search(r"except in \d+ pixel\(s\) using another number of samples", printed)


GAUSSIAN_2SIGMA = 100 * (1 - math.erf(2 / math.sqrt(2)))  # 2 (1 - Phi(2)) = 4.550 %


def test_notebook_2_measures_the_fraction_its_exercise_asks_for(executed):
    notebook, _ = executed(notebook_numbered(2))
    index = cell_showing(notebook, "beyond 2 sigma of the true centre")
    assert "gaussian-2sigma" in notebook.cells[index - 3].source
    [measured] = percentages(text_of(notebook.cells[index]), "beyond 2 sigma")
    assert measured == pytest.approx(GAUSSIAN_2SIGMA, abs=0.1)  # 1e6 samples: +-0.02 % (1 sigma)


def test_notebook_2_says_what_iterative_clipping_rejects_as_it_prints_it(executed):
    notebook, _ = executed(notebook_numbered(2))
    printed = text_of(notebook.cells[cell_showing(notebook, "sigma_clip(samples")])
    one, two, ten = percentages(printed, "all at once")
    median, mean = percentages(printed, "in stacks of")
    assert one == pytest.approx(GAUSSIAN_2SIGMA, abs=0.1)
    assert one < two < ten and mean == 0.0 < GAUSSIAN_2SIGMA < median
    sweep = text_of(notebook.cells[cell_showing(notebook, "for threshold in")])
    [darks_median] = percentages(sweep, "threshold 2.0 median")
    explained = next(c.source for c in notebook.cells if "Iterating" in c.source)
    said = [float(n) for n in re.findall(r"about (\d+) %", explained)]
    assert said == pytest.approx([two, ten, median, darks_median], abs=1.0)
    assert "4.55 %" in explained and "nothing is rejected" in " ".join(explained.split())


def test_an_exported_notebook_loads_nothing_from_the_network(demo_cache, tmp_path, monkeypatch):
    """``ccdred export`` (README's command), on a copy of notebook 4."""
    monkeypatch.setenv("CCDRED_CACHE", str(demo_cache))
    monkeypatch.setenv("CCDRED_DEMO_SIZE", str(SIZE))
    notebook = tmp_path / "04.ipynb"
    shutil.copy(next(p for p in NOTEBOOKS if p.name.startswith("04-")), notebook)
    run = subprocess.run([sys.executable, "-m", "ccdred", "export", str(notebook)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    html = (tmp_path / "04.html").read_text()
    external = re.findall(r"""<script[^>]*\ssrc=["']?(https?:[^"' >]+)""", html)
    assert external == []
    assert "Bokeh" in html and len(html) > 1_000_000  # the plotting code itself is inside
    assert "not answered yet" in html and "# Solution" not in html  # a handout: no solutions


# -- the checks themselves ----------------------------------------------------------------


def test_unknown_exercises_are_named():
    from ccdred.teaching import check

    with pytest.raises(ValueError, match="no exercise named 'nope'"):
        check("nope", 1)
