"""The version of ccdred, where nothing must import the package to learn it."""

__version__ = "0.2.0"
