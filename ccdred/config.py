"""ccdred's settings from the environment, and their defaults, each written once.

Every environment variable ccdred reads is read here, by a small function called when
the value is needed (so a variable set after ``import ccdred`` still counts). This
module imports nothing of ccdred, so any module may use it.

=========================  ====================================  ====================
variable                   what                                  default
=========================  ====================================  ====================
``CCDRED_CACHE``           the demo nights, the prepared marker  ``~/.cache/ccdred``
``CCDRED_DEMO_SIZE``       the demo night's width and height     :data:`DEMO_SIZE`
``CCDRED_NIGHT``           the notebooks' night                  the demo night
``CCDRED_DATA_ROOT``       the dashboard's nights                the demo night
``CCDRED_OUTPUT_ROOT``     the dashboard's products              cache/``products``
``CCDRED_SCHEDULER``       the dashboard's Dask scheduler        none: in process
``CCDRED_RAW_CACHE_MB``    raw frames kept per process           4096
``CCDRED_MASTER_CACHE_MB`` masters kept per process              2048
``CCDRED_RESERVE_MB``      memory a server faults in at start    where free pages go
                                                                 to a host: the
                                                                 master cache's
=========================  ====================================  ====================
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEMO_SIZE", "cache_dir", "data_root", "demo_size", "master_cache_mb",
           "night_folder", "numpy_decides_huge_pages", "output_root", "raw_cache_mb",
           "reserve_mb", "scheduler"]

#: Width and height of the demo night, the same for the dashboard, notebooks and ``ccdred demo``.
DEMO_SIZE = 512


def cache_dir() -> Path:
    """Where the demo nights and the marker of a finished preparation live (``CCDRED_CACHE``)."""
    return Path(os.environ.get("CCDRED_CACHE", Path.home() / ".cache" / "ccdred"))


def demo_size() -> int:
    """Width and height of the demo night (``CCDRED_DEMO_SIZE``, else :data:`DEMO_SIZE`)."""
    return _integer("CCDRED_DEMO_SIZE", DEMO_SIZE)


def night_folder() -> Path | None:
    """The folder of raw frames the notebooks study (``CCDRED_NIGHT``); None: the demo night."""
    return _path("CCDRED_NIGHT")


def data_root() -> Path | None:
    """The folder whose sub-folders the dashboard serves (``CCDRED_DATA_ROOT``); None: the
    demo night."""
    return _path("CCDRED_DATA_ROOT")


def output_root() -> Path:
    """Where the dashboard's "Reduce night" writes (``CCDRED_OUTPUT_ROOT``, else
    ``products`` in the cache folder)."""
    return _path("CCDRED_OUTPUT_ROOT") or cache_dir() / "products"


def scheduler() -> str | None:
    """Address of the Dask scheduler the dashboard reduces on (``CCDRED_SCHEDULER``); None:
    in the server's process."""
    return os.environ.get("CCDRED_SCHEDULER") or None


def raw_cache_mb() -> int:
    """Megabytes of raw frames a process keeps for its sessions (``CCDRED_RAW_CACHE_MB``)."""
    return _integer("CCDRED_RAW_CACHE_MB", 4096)


def master_cache_mb() -> int:
    """Megabytes of masters a process keeps for its sessions (``CCDRED_MASTER_CACHE_MB``)."""
    return _integer("CCDRED_MASTER_CACHE_MB", 2048)


def reserve_mb() -> int | None:
    """Megabytes of memory a dashboard server faults in when it starts, for the masters it
    will make (``CCDRED_RESERVE_MB``; 0: none). None when unset: the server decides
    (:func:`ccdred.serve.prepare_memory`)."""
    return _integer("CCDRED_RESERVE_MB", None)


def numpy_decides_huge_pages() -> bool:
    """Whether the user set numpy's own ``NUMPY_MADVISE_HUGEPAGE`` (then ccdred leaves it be)."""
    return "NUMPY_MADVISE_HUGEPAGE" in os.environ


def _path(variable: str) -> Path | None:
    value = os.environ.get(variable)
    return Path(value) if value else None


def _integer(variable: str, default: int | None) -> int | None:
    """An integer environment variable; a value that is not one is refused, naming both.

    Examples
    --------
    >>> _integer("CCDRED_EXAMPLE_UNSET", 7)
    7
    """
    value = os.environ.get(variable)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as err:
        msg = f"{variable} must be a whole number, got {value!r}"
        raise ValueError(msg) from err
