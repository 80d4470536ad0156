"""Master dark from raw files, as one process (for /usr/bin/time): ccdred, ccdproc or astropy.

Usage: python master_dark.py {ccdred,ccdproc} OUTPUT FILES...
"""

import sys
from pathlib import Path


def with_ccdred(files, output):
    from ccdred import fitsio
    from ccdred.frames import read_frame
    from ccdred.plan import Master
    from ccdred.steps import StepOptions, make_master

    frames = tuple(read_frame(path) for path in files)
    dark = Master("dark", "dark.fits", frames, exptime=frames[0].exptime)
    master = make_master(dark, StepOptions(), {}, budget=48 << 20)
    header = fitsio.add_provenance(frames[0].header(), step="master_dark", inputs=files,
                                   options={}, version="bench")
    fitsio.write_image(output, master.data, header, overwrite=True)


def with_ccdproc(files, output):
    import ccdproc

    combined = ccdproc.combine([str(f) for f in files], method="average", sigma_clip=True,
                               sigma_clip_low_thresh=2.5, sigma_clip_high_thresh=2.5,
                               sigma_clip_func="median", unit="adu", mem_limit=1e9)
    combined.write(output, overwrite=True)


if __name__ == "__main__":
    tool, output, *files = sys.argv[1:]
    {"ccdred": with_ccdred, "ccdproc": with_ccdproc}[tool]([Path(f) for f in files], output)
