"""The ccdred dashboard: ``panel serve app.py`` (demo night), or
``panel serve app.py --args --data-root DIR [--output-root DIR]``."""

from ccdred.dashboard import Dashboard
from ccdred.serve import load_extensions, use_small_pages

# Every file of the page from this server, none from another host (serve.py). Sessions'
# updates run in a thread pool, not on the server's event loop: one user's recomputation
# then never holds up another's page (the kernels release the GIL).
load_extensions(nthreads=2)
# Fresh arrays in ordinary pages: a threshold move is about a fifth faster (serve.py).
use_small_pages()

Dashboard.from_args().servable(title="ccdred")
