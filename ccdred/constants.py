"""Numbers the plain and the compiled combinations share, each defined once.

Below both :mod:`ccdred.combine` (numpy) and :mod:`ccdred.kernels` (numba), which import
it without importing each other: it imports nothing.
"""

__all__ = ["MAD_TO_SIGMA"]

#: 1 / Phi^-1(3/4): the MAD of a normal distribution times this is its sigma (as astropy).
MAD_TO_SIGMA = 1.482602218505602
