"""The reduction's parameters, declared once.

These ``param`` declarations (defaults, bounds, docs) feed the command line's
defaults and help, the dashboard's widgets and the provenance written into
every product. Defaults equal the course script's.
"""

from __future__ import annotations

import param

from .combine import CENFUNCS
from .keywords import Keywords

__all__ = ["KeywordParameters", "ReductionParameters"]


class KeywordParameters(param.Parameterized):
    """Header keywords and the frame-type values they take."""

    keyword_naxis = param.String("NAXIS", doc="FITS keyword for the number of axes")
    keyword_naxis1 = param.String("NAXIS1", doc="FITS keyword for the image width")
    keyword_naxis2 = param.String("NAXIS2", doc="FITS keyword for the image height")
    keyword_exptime = param.String("EXPTIME", doc="FITS keyword for the exposure time (s)")
    keyword_filter = param.String("FILTER", doc="FITS keyword for the filter name")
    keyword_datatype = param.String("IMAGETYP", doc="FITS keyword for the frame type")
    keyword_datatype_bias = param.List(list(Keywords.bias), item_type=str,
                                       doc="values meaning a bias frame (any case)")
    keyword_datatype_dark = param.List(list(Keywords.dark), item_type=str,
                                       doc="values meaning a dark frame (any case)")
    keyword_datatype_flat = param.List(list(Keywords.flat), item_type=str,
                                       doc="values meaning a flat frame (any case)")
    keyword_datatype_object = param.List(list(Keywords.object), item_type=str,
                                         doc="values meaning an object frame (any case)")

    def keywords(self) -> Keywords:
        """The :class:`~ccdred.keywords.Keywords` these parameters describe."""
        return Keywords(
            naxis=self.keyword_naxis, naxis1=self.keyword_naxis1, naxis2=self.keyword_naxis2,
            exptime=self.keyword_exptime, filter=self.keyword_filter,
            imagetyp=self.keyword_datatype,
            bias=tuple(self.keyword_datatype_bias), dark=tuple(self.keyword_datatype_dark),
            flat=tuple(self.keyword_datatype_flat), object=tuple(self.keyword_datatype_object),
        )


class ClipParameters(param.Parameterized):
    """How masters are combined."""

    threshold = param.Number(2.5, bounds=(0, None), inclusive_bounds=(False, True),
                             softbounds=(1.0, 5.0), step=0.1,
                             doc="sigma-clipping threshold, in standard deviations")
    cenfunc = param.Selector(default="median", objects=list(CENFUNCS),
                             doc="centre of the clipping bounds")
    maxiters = param.Integer(10, bounds=(1, None), softbounds=(1, 20),
                             doc="maximum number of clipping iterations")
    frame_clip = param.Boolean(True, doc="sigma-clip each dark on its own first (masks hot "
                                         "pixels, as the course script does)")
    upper_limit = param.Number(38000.0, softbounds=(0, 65535), step=500,
                               doc="reject flats whose median is above this (ADU)")
    lower_limit = param.Number(None, allow_None=True, softbounds=(0, 65535), step=500,
                               doc="reject flats whose median is below this (ADU); off by default")

    def clip_options(self) -> dict:
        """Threshold, cenfunc and maxiters, as keyword arguments."""
        return {"threshold": self.threshold, "cenfunc": self.cenfunc, "maxiters": self.maxiters}


class ReductionParameters(KeywordParameters, ClipParameters):
    """Everything that decides a night's products."""

    dtype = param.Selector(default="float32", objects=["float32", "float64"],
                           doc="data type of the products")
    intermediate = param.Boolean(True, doc="write the dark-subtracted '_d' files")

    def provenance(self) -> dict:
        """The parameters that decide product values, for product headers."""
        names = ["threshold", "cenfunc", "maxiters", "frame_clip", "upper_limit", "lower_limit",
                 "dtype"]
        return {name: getattr(self, name) for name in names}
