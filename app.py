"""The ccdred dashboard: ``panel serve app.py`` (demo night), or
``panel serve app.py --args --data-root DIR [--output-root DIR]``."""

import holoviews as hv
import panel as pn

from ccdred.dashboard import Dashboard
from ccdred.serve import use_small_pages

hv.extension("bokeh", logo=False)
# Sessions' updates run in a thread pool, not on the server's event loop: one user's
# recomputation then never holds up another's page (the kernels release the GIL).
pn.extension("tabulator", nthreads=2)
# Fresh arrays in ordinary pages: a threshold move is about a fifth faster (serve.py).
use_small_pages()

Dashboard.from_args().servable(title="ccdred")
