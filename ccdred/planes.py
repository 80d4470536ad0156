"""The planes a product carries beside its image: the mask's bits.

A product's mask plane (astropy's ``CCDData`` convention: an extension named ``MASK``,
non-zero where a pixel should not be trusted) says why, one bit per reason, so a user can
keep the pixels one reason flags and drop those of another.
"""

from __future__ import annotations

import enum

__all__ = ["MaskBit"]


class MaskBit(enum.IntFlag):
    """Why a pixel is masked: the bits of a product's ``MASK`` plane."""

    HOT = 1
    """Dark current far above the chip's (the bad-pixel mask, from the darks)."""
    DEFECT = 2
    """Dead or deviant in the flats (the bad-pixel mask, from the flats)."""
    USER = 4
    """Masked in the user's bad-pixel mask file."""
    SATURATED = 8
    """A raw sample at or above the detector's saturation level."""
    COSMIC_RAY = 16
    """A cosmic ray found in this frame (LACosmic)."""
    NOT_FINITE = 32
    """No finite value (every sample rejected, or a flat of zero)."""
