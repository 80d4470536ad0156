"""The ccdred dashboard: ``panel serve app.py`` (demo night), or
``panel serve app.py --args --data-root DIR [--output-root DIR]``."""

import holoviews as hv
import panel as pn

from ccdred.dashboard import Dashboard

hv.extension("bokeh", logo=False)
pn.extension("tabulator")

Dashboard.from_args().servable(title="ccdred")
