"""ccdred: fast, interactive, reproducible CCD data reduction."""
__version__ = "0.1.0"
