"""Check that the project and each of its extras resolve with this interpreter's pip.

Run by ``.ci/run`` before anything is installed, once with the pip a new virtual
environment brings and once with the newest pip, so that an upstream release that
breaks dependency resolution shows as an install problem (this script's message,
exit 1), not as a test failure later. ``pip install --dry-run`` resolves without
installing: each target takes seconds.

    python .ci/check_install.py [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def self_references(project: dict) -> list[str]:
    """Problems: an extra that names the package itself (``ccdred[dask]`` inside ``test``),
    which sends pip 26's resolver backtracking until it gives up."""
    own = re.compile(rf"^\s*{re.escape(project['name'])}\s*(\[|$|[<>=!~;])", re.I)
    return [f"extra '{extra}' names the package itself ({requirement!r}): write its "
            "requirements out instead"
            for extra, requirements in project.get("optional-dependencies", {}).items()
            for requirement in requirements if own.match(requirement)]


def resolves(target: str, timeout: float) -> str | None:
    """None if ``pip install --dry-run TARGET`` resolves, else what went wrong."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
               "--ignore-installed", target]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"not resolved within {timeout:.0f} s (pip backtracking?)"
    if done.returncode == 0:
        return None
    tail = [line for line in done.stderr.splitlines() if line.strip()][-6:]
    return "pip exited with %d:\n    %s" % (done.returncode, "\n    ".join(tail))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds one target may take to resolve (default 300)")
    args = parser.parse_args(argv)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                         text=True, check=True).stdout.split()[1]
    problems = self_references(project)
    targets = [".", *(f".[{extra}]" for extra in project.get("optional-dependencies", {}))]
    for target in targets:
        problem = resolves(target, args.timeout)
        print(f"check_install: pip {pip}: {target} {'resolves' if problem is None else 'FAILS'}",
              flush=True)
        if problem is not None:
            problems.append(f"{target}: {problem}")
    for problem in problems:
        print(f"check_install: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
