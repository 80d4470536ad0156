"""The ccdred dashboard: ``panel serve app.py`` (demo night), or
``panel serve app.py --args --data-root DIR [--output-root DIR]``."""

from ccdred.dashboard import Dashboard
from ccdred.serve import load_extensions, prepare_memory

# Every file of the page from this server, none from another host (serve.py). Sessions'
# updates run in a thread pool, not on the server's event loop: one user's recomputation
# then never holds up another's page (the kernels release the GIL).
load_extensions(nthreads=2)
# Arrays in ordinary pages, freed memory reused, the masters' memory faulted in at start:
# a threshold move is about a fifth faster for each (serve.py). Once per process.
prepare_memory()

Dashboard.from_args().servable(title="ccdred")
