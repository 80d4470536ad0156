"""``python -m ccdred``: the command line."""

from .cli import run

run()
