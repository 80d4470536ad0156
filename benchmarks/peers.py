"""ccdred against IRAF and Siril, each as a whole process on the same raw frames.

Usage (from the repository root, in the project's environment)::

    apt-get install time iraf iraf-noao siril     # GNU time, IRAF (irafcl), Siril (siril-cli)
    python benchmarks/peers.py                    # a master dark, a master flat, the whole night
    python benchmarks/peers.py --parts dark,flat --repeat 5

The night is ``night534`` of ``run.py`` (2048x2048, 16-bit: 10 bias, 4 x 20
darks, 3 filters x (20 flats + 128 objects)), made once into
``benchmarks/data``. Every tool reads the raw files and writes 32-bit float
products into a fresh folder under ``benchmarks/results/peers``; the page
cache is warm (each run is repeated, interleaved, and medians reported). Each
tool gets what it needs prepared before the clock starts: IRAF its file
lists and ``login.cl``, Siril a folder of links per group (its sequences).

What each tool does (sigma clipping at 2.5 about the median everywhere):

- ccdred: ``ccdred reduce --no-intermediate`` on the part's raw files (master
  darks per exposure time, flats less their dark, scaled, combined and
  normalised, objects less their dark and divided by their filter's flat); a
  master dark alone through the library (``master_dark.py``), since
  ``ccdred reduce``, as the course script, makes only the darks frames need.
- IRAF 2.17: ``imcombine`` (``reject=sigclip, mclip=yes``) for the masters;
  the flats less their dark by ``imarith`` (IRAF cannot subtract while
  combining: these are files of its own), combined with ``scale=median`` and
  divided by their median (``imstatistics midpt``); the objects by ``ccdproc``
  (``darkcor+ flatcor+``).
- Siril 1.0.6: ``stack ... rej s 2.5 2.5`` for the masters (flats with
  ``-norm=mul``), ``preprocess`` for the flats (``-dark``) and the objects
  (``-dark -flat``).

Prints a Markdown table (wall, CPU, peak RSS) and how far each tool's
products are from ccdred's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from run import HERE, RESULTS, _mkdir, fresh, make, timed

from ccdred.limits import FlatLimits
from ccdred.plan import dark_product_name, flat_product_name

PEERS = RESULTS / "peers"
CLIP = 2.5
UPPER_LIMIT = FlatLimits.upper  # the course's 38000 ADU


def night_groups(files) -> dict:
    """The night's frames by (type, exposure time, filter), in file order; flats above the
    course's upper limit (38000 ADU, which ccdred rejects) are left out for every tool."""
    from astropy.io import fits

    groups = defaultdict(list)
    for path in files:
        with fits.open(path) as hdus:
            header, data = hdus[0].header, hdus[0].data
            kind = header["IMAGETYP"].strip().lower()
            if kind == "flat" and np.median(data) > UPPER_LIMIT:
                continue
        groups[kind, float(header["EXPTIME"]), str(header.get("FILTER", "")).strip()].append(path)
    return dict(groups)


def plan(groups) -> dict:
    """What every tool makes: darks per exposure time, flats and objects per filter."""
    darks = {t: paths for (kind, t, _), paths in groups.items() if kind == "dark"}
    flats = {f: (t, paths) for (kind, t, f), paths in groups.items() if kind == "flat"}
    objects = {f: (t, paths) for (kind, t, f), paths in groups.items() if kind == "light"}
    return {"darks": darks, "flats": flats, "objects": objects}


def select(night: dict, part: str) -> dict:
    """What a part makes: ``dark`` one master dark of 10 darks (the flats' exposure time);
    ``flat`` that dark and a master flat of 12 flats of one filter; ``night`` everything."""
    if part == "night":
        return night
    filter_name, (exptime, flats) = next(iter(night["flats"].items()))
    return {"darks": {exptime: night["darks"][exptime][:10]},
            "flats": {filter_name: (exptime, flats[:12])} if part == "flat" else {},
            "objects": {}}


def frames(chosen: dict) -> list[Path]:
    """The raw files of a selection."""
    paths = [p for darks in chosen["darks"].values() for p in darks]
    for group in ("flats", "objects"):
        paths += [p for _, files in chosen[group].values() for p in files]
    return paths


# -- IRAF ------------------------------------------------------------------------------


def iraf_job(folder: Path, chosen: dict) -> list[str]:
    """The CL script making ``chosen`` (written into ``folder`` with its file lists)."""
    lines = ["images", "immatch", "imutil", "noao", "imred", "ccdred", 'ccdred.pixeltype = "real real"',
             "real med"]
    for exptime, darks in chosen["darks"].items():
        lines.append(_iraf_combine(folder, f"dark{exptime:g}", darks))
    for filter_name, (exptime, flats) in chosen["flats"].items():
        name = f"flat{filter_name}"
        _write_list(folder / f"{name}_raw.lis", flats)
        _write_list(folder / f"{name}_d.lis", [folder / f"d_{p.name}" for p in flats])
        lines += [f'imarith ("@{name}_raw.lis", "-", "dark{exptime:g}.fits", "@{name}_d.lis", '
                  'pixtype="real", calctype="real")',
                  _iraf_combine(folder, f"{name}_sum", None, listed=f"{name}_d.lis",
                                scale="median"),
                  f'imstatistics ("{name}_sum.fits", fields="midpt", format-) | scan (med)',
                  f'imarith ("{name}_sum.fits", "/", med, "{name}.fits", pixtype="real")',
                  # else ccdproc takes the flat for an unprocessed frame and calibrates it
                  # with itself (all ones)
                  *(f'hedit ("{name}.fits", "{key}", "done", add+, verify-, show-, update+)'
                    for key in ("DARKCOR", "FLATCOR", "CCDPROC"))]
    for filter_name, (exptime, objects) in chosen["objects"].items():
        _write_list(folder / f"obj{filter_name}.lis", objects)
        _write_list(folder / f"obj{filter_name}_df.lis",
                    [folder / f"{p.stem}_df.fits" for p in objects])
        lines.append(
            f'ccdproc ("@obj{filter_name}.lis", output="@obj{filter_name}_df.lis", ccdtype="", '
            'noproc-, fixpix-, overscan-, trim-, zerocor-, darkcor+, flatcor+, illumcor-, '
            f'fringecor-, readcor-, scancor-, dark="dark{exptime:g}.fits", '
            f'flat="flat{filter_name}.fits", interactive-)')
    return [*lines, "logout", ""]


def _iraf_combine(folder, name, paths, listed=None, scale="none") -> str:
    if listed is None:
        listed = f"{name}.lis"
        _write_list(folder / listed, paths)
    return (f'imcombine ("@{listed}", "{name}.fits", combine="average", reject="sigclip", '
            f'lsigma={CLIP}, hsigma={CLIP}, mclip=yes, scale="{scale}", outtype="real")')


def _write_list(path: Path, paths) -> None:
    path.write_text("".join(f"{p}\n" for p in paths))


def run_iraf(folder: Path, chosen: dict) -> dict:
    shutil.copy("/etc/iraf/login.cl", folder / "login.cl")
    (folder / "job.cl").write_text("\n".join(iraf_job(folder, chosen)))
    env = {**os.environ, "HOME": str(folder), "USER": os.environ.get("USER", "root"),
           "TERM": "xterm"}
    with open(folder / "job.cl") as stdin:
        return timed(["irafcl"], stdin=stdin, env=env, cwd=folder)


# -- Siril -----------------------------------------------------------------------------


def siril_job(folder: Path, chosen: dict) -> list[str]:
    """The Siril script making ``chosen`` (the links of its sequences made now)."""
    lines = ["requires 1.0.0", "setext fits", "set32bits"]
    for exptime, darks in chosen["darks"].items():
        name = f"dark{exptime:g}"
        lines += [*_siril_sequence(folder, name, darks),
                  f"stack {name}_ rej s {CLIP} {CLIP} -nonorm -out=../{name}"]
    for filter_name, (exptime, flats) in chosen["flats"].items():
        name = f"flat{filter_name}"
        lines += [*_siril_sequence(folder, name, flats),
                  f"preprocess {name}_ -dark=../dark{exptime:g}",
                  f"stack pp_{name}_ rej s {CLIP} {CLIP} -norm=mul -out=../{name}"]
    for filter_name, (exptime, objects) in chosen["objects"].items():
        name = f"obj{filter_name}"
        lines += [*_siril_sequence(folder, name, objects),
                  f"preprocess {name}_ -dark=../dark{exptime:g} -flat=../flat{filter_name}"]
    return [*lines, "cd ..", "close", ""]


def _siril_sequence(folder: Path, name: str, paths) -> list[str]:
    """Links to ``paths`` in a folder of their own, and the commands making them a sequence."""
    source = _mkdir(folder / f"raw_{name}")
    for path in paths:
        (source / path.name).symlink_to(path)
    work = _mkdir(folder / "work")
    return [f"cd {source}", f"link {name}_ -out={work}", f"cd {work}"]


def run_siril(folder: Path, chosen: dict) -> dict:
    (folder / "job.ssf").write_text("\n".join(siril_job(folder, chosen)))
    return timed(["siril-cli", "-d", folder, "-s", folder / "job.ssf"], cwd=folder)


# -- ccdred ----------------------------------------------------------------------------


def run_ccdred(folder: Path, chosen: dict) -> dict:
    if not chosen["flats"]:  # darks alone: `ccdred reduce` makes only the masters frames need
        ((exptime, darks),) = chosen["darks"].items()
        return timed([sys.executable, HERE / "master_dark.py", "ccdred",
                      folder / dark_product_name(exptime), *darks], cwd=folder)
    return timed([sys.executable, "-m", "ccdred", "reduce", "-q", "--no-intermediate",
                  "-d", folder, *frames(chosen)], cwd=folder)


TOOLS = {"ccdred": run_ccdred, "IRAF": run_iraf, "Siril": run_siril}


def measure(night: dict, parts: list[str], repeat: int) -> dict:
    """Every tool on every part, interleaved ``repeat`` times: {(part, tool): [measurements]}."""
    runs = defaultdict(list)
    for _ in range(repeat):
        for part in parts:
            for tool, run in TOOLS.items():
                folder = fresh(f"peers/{tool}-{part}")
                folder.mkdir(parents=True)
                os.sync()  # the previous run's products reach the disk now, not in this run
                runs[part, tool].append(run(folder, select(night, part)))
    return runs


def agreement(night: dict, parts: list[str]) -> list[str]:
    """How far each peer's products are from ccdred's, each image divided by its median (Siril
    stores ADU / 65535, flats are normalised differently): the median |difference|."""
    from astropy.io import fits

    lines = []
    for part in parts:
        chosen = select(night, part)
        for tool in ("IRAF", "Siril"):
            for ours, theirs in _products(tool, part, chosen):
                mine, other = (fits.getdata(path).astype(np.float64) for path in (ours, theirs))
                difference = np.nanmedian(np.abs(other / np.nanmedian(other)
                                                 - mine / np.nanmedian(mine)))
                lines.append(f"{part}: {tool}'s {theirs.name} against ccdred's {ours.name}: "
                             f"median |difference| {difference:.1e} of the level")
    return lines


def _products(tool: str, part: str, chosen: dict) -> list[tuple[Path, Path]]:
    """(ccdred's, the peer's) for every master and the first calibrated object."""
    ours, theirs = PEERS / f"ccdred-{part}", PEERS / f"{tool}-{part}"
    pairs = [(ours / dark_product_name(t), theirs / f"dark{t:g}.fits") for t in chosen["darks"]]
    pairs += [(ours / flat_product_name(f), theirs / f"flat{f}.fits") for f in chosen["flats"]]
    for filter_name, (_, objects) in list(chosen["objects"].items())[:1]:
        mine = ours / f"{objects[0].stem}_df.fits"
        pairs.append((mine, theirs / mine.name if tool == "IRAF" else
                      theirs / "work" / f"pp_obj{filter_name}_00001.fits"))
    return pairs


def markdown(runs: dict) -> str:
    lines = ["| part | tool | wall (s) | CPU (s) | peak RSS (MB) | runs |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for (part, tool), measured in runs.items():
        wall = sorted(m["seconds"] for m in measured)
        cpu = np.median([m["cpu"] for m in measured])
        rss = max(m["rss_mb"] for m in measured)
        lines.append(f"| {part} | {tool} | {np.median(wall):.2f} | {cpu:.2f} | {rss:.0f} | "
                     f"{len(wall)}: {wall[0]:.2f}-{wall[-1]:.2f} s |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="dark,flat,night",
                        help="dark (a master dark of 10 darks), flat (that dark, then a master "
                             "flat of 12 flats less it), night (masters and calibrated objects)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, interleaved")
    args = parser.parse_args(argv)
    for command in ("irafcl", "siril-cli", "/usr/bin/time"):
        if shutil.which(command) is None:
            sys.exit(f"peers.py: {command} not found (apt-get install time iraf iraf-noao siril)")
    parts = args.parts.split(",")
    night = plan(night_groups(make("night534")))
    runs = measure(night, parts, args.repeat)
    print(markdown(runs))
    print("\n".join(agreement(night, parts)))


if __name__ == "__main__":
    main()
