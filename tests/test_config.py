"""The environment variables, read when asked for, with their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccdred import config


def test_the_defaults(monkeypatch):
    for variable in ("CCDRED_CACHE", "CCDRED_DEMO_SIZE", "CCDRED_NIGHT", "CCDRED_DATA_ROOT",
                     "CCDRED_OUTPUT_ROOT", "CCDRED_SCHEDULER", "CCDRED_RAW_CACHE_MB",
                     "CCDRED_MASTER_CACHE_MB"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    assert config.cache_dir() == Path("/home/someone/.cache/ccdred")
    assert config.output_root() == Path("/home/someone/.cache/ccdred/products")
    assert config.demo_size() == 512
    assert (config.night_folder(), config.data_root(), config.scheduler()) == (None, None, None)
    assert (config.raw_cache_mb(), config.master_cache_mb()) == (4096, 2048)


def test_variables_set_after_import_count(monkeypatch, tmp_path):
    monkeypatch.setenv("CCDRED_CACHE", str(tmp_path))
    monkeypatch.delenv("CCDRED_OUTPUT_ROOT", raising=False)
    monkeypatch.setenv("CCDRED_DEMO_SIZE", "64")
    monkeypatch.setenv("CCDRED_SCHEDULER", "tcp://host:8786")
    assert config.cache_dir() == tmp_path and config.output_root() == tmp_path / "products"
    assert config.demo_size() == 64 and config.scheduler() == "tcp://host:8786"


def test_an_empty_variable_is_unset(monkeypatch):
    monkeypatch.setenv("CCDRED_DATA_ROOT", "")
    monkeypatch.setenv("CCDRED_SCHEDULER", "")
    assert config.data_root() is None and config.scheduler() is None


def test_a_size_that_is_not_a_number_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("CCDRED_DEMO_SIZE", "big")
    with pytest.raises(ValueError, match="CCDRED_DEMO_SIZE must be a whole number, got 'big'"):
        config.demo_size()


def test_numpy_decides_huge_pages_only_when_its_variable_is_set(monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    assert not config.numpy_decides_huge_pages()
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "0")
    assert config.numpy_decides_huge_pages()
