"""The teaching notebooks run top to bottom, on a small demo night, without errors."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from ccdred.demo import NightSpec, demo_night

from .conftest import REFERENCE_SCRIPT, REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_five_numbered_notebooks_linked_from_readme():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01-", "02-", "03-", "04-", "05-"]
    readme = (REPO / "README.md").read_text()
    assert all(f"notebooks/{p.name}" in readme for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_without_outputs(path):
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    """The notebooks simulate their demo night here, once (128x128 to keep CI quick)."""
    cache = tmp_path_factory.mktemp("notebook-cache")
    demo_night(cache, NightSpec(shape=(128, 128)))
    return cache


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, demo_cache, tmp_path, monkeypatch):
    monkeypatch.delenv("CCDRED_NIGHT", raising=False)
    monkeypatch.setenv("CCDRED_CACHE", str(demo_cache))
    monkeypatch.setenv("CCDRED_DEMO_SIZE", "128")
    monkeypatch.setenv("CCDRED_REFERENCE", str(REFERENCE_SCRIPT))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = {mime for cell in notebook.cells for output in cell.get("outputs", [])
             for mime in output.get("data", {})}
    assert shown & {"application/vnd.holoviews_load.v0+json", "text/html",
                    "application/vnd.holoviews_exec.v0+json"}, f"{path.name} showed no plot"
