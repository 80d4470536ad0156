"""FITS input and output: the only module that opens FITS files.

Raw files are only ever opened read-only. Products are written atomically: to a
temporary file in the output folder, flushed to disk, then renamed over the
final name, so that an interrupted run never leaves a partial product.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import hashlib
import json
import os
import re
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .compat import raw_data_offset
from .errors import InputError, InputProblem

if TYPE_CHECKING:  # astropy is imported where it is used: ``import ccdred`` stays light
    from astropy.io import fits

__all__ = [
    "FITS_SUFFIXES",
    "add_provenance",
    "find_image_hdu",
    "image_hdus",
    "image_dtype",
    "is_current_product",
    "is_fits",
    "product_digest",
    "product_stem",
    "remove_partial_products",
    "PLANES",
    "REJECTED_DTYPE",
    "read_image",
    "read_planes",
    "storage_dtype",
    "tiled_header",
    "write_image",
    "write_raw_extensions",
    "write_raw_frame",
]

#: Suffixes stripped from a raw file name to make product names (longest first).
FITS_SUFFIXES = (".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fits", ".fit", ".fts", ".fz")

#: Suffix of the temporary files products are written to before their rename.
PARTIAL_SUFFIX = ".part"
#: The process umask, read once (setting it back at once) while the module loads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FITS_MAGIC = b"SIMPLE  ="
_GZIP_MAGIC = b"\x1f\x8b"
_STRUCTURAL = ("SIMPLE", "XTENSION", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT",
               "BZERO", "BSCALE", "BLANK", "CHECKSUM", "DATASUM")


def is_fits(path) -> bool:
    """True when the file's content starts like FITS (plain or gzip-compressed)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_FITS_MAGIC))
        if head[:2] == _GZIP_MAGIC:
            with gzip.open(path, "rb") as handle:
                head = handle.read(len(_FITS_MAGIC))
    except (OSError, EOFError):
        return False
    return head == _FITS_MAGIC


def product_stem(path) -> str:
    """The raw file name without its FITS suffix, as product names use it."""
    name = Path(path).name
    for suffix in FITS_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_image_hdu(path) -> tuple[int, fits.Header]:
    """Index and header of the first HDU holding image data (plain or tile-compressed).

    An image extension that says ``INHERIT = T`` (the FITS convention) gets the
    primary header's cards as well, its own cards winning where both have one:
    observatories that write the image in extension 1 keep IMAGETYP, the filter
    and the instrument's keywords in the primary header. Without ``INHERIT = T``
    the extension's header is taken as it is.

    Raises
    ------
    InputError
        When the file is not FITS, cannot be parsed, holds no image, or is
        shorter than its header says (truncated).
    """
    return _image_hdus(path, first_only=True)[1][0]


def image_hdus(path) -> tuple[fits.Header, list[tuple[int, fits.Header]]]:
    """The primary header, and the index and header of every HDU holding image data.

    Each header is as :func:`find_image_hdu` gives it (``INHERIT`` honoured).
    A product's planes (:data:`PLANES`) are not images of their own.
    Several images are a multi-amplifier (or multi-CCD) frame's extensions,
    or those of a product written per amplifier (:func:`write_image`).

    Raises
    ------
    InputError
        As :func:`find_image_hdu`.
    """
    return _image_hdus(path, first_only=False)


def _image_hdus(path, first_only: bool) -> tuple[fits.Header, list[tuple[int, fits.Header]]]:
    from astropy.io import fits

    if not is_fits(path):
        raise InputError([InputProblem(Path(path), "not a FITS file")])
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="File may have been truncated")
            warnings.filterwarnings("ignore", message="Error validating header")  # said below
            with fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=True) as hdus:
                primary = hdus[0].header.copy()
                found = _images(path, hdus, primary, first_only)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as err:
        msg = f"unreadable FITS file ({_reason(err)})"
        raise InputError([InputProblem(Path(path), msg)]) from err
    if not found:
        raise InputError([InputProblem(Path(path), "holds no image data")])
    return primary, found


def _images(path, hdus, primary, first_only: bool) -> list[tuple[int, fits.Header]]:
    """The index and header of each image HDU of the open file ``hdus`` (the first only
    with ``first_only``), each checked complete."""
    found = []
    for index, hdu in enumerate(hdus):
        if _is_image(index, hdu, planes=first_only):
            _check_complete(path, hdu)
            found.append((index, inherited(primary, hdu.header)
                          if index > 0 and hdu.header.get("INHERIT") is True
                          else hdu.header.copy()))
            if first_only:
                return found
    _check_last_header(path, hdus[-1])
    return found


def _is_image(index: int, hdu, planes: bool) -> bool:
    """An HDU holding image data; a product's plane (an extension named as one) only with
    ``planes`` (looking for a file's first image, not counting its amplifiers)."""
    return (hdu.header.get("NAXIS", 0) > 0 and hdu.is_image
            and (planes or not (index > 0 and hdu.name in PLANES)))


def inherited(primary: fits.Header, extension: fits.Header) -> fits.Header:
    """The extension's header, plus the primary's cards it does not have itself.

    The primary's structural and scaling cards (which describe its own, empty,
    data) are left out, as is INHERIT, which has done its job.

    Parameters
    ----------
    primary, extension : astropy.io.fits.Header

    Returns
    -------
    astropy.io.fits.Header
        A new header; neither input is changed.
    """
    merged = extension.copy()
    merged.remove("INHERIT", ignore_missing=True, remove_all=True)
    general = [card for card in primary.cards
               if card.keyword not in (*_STRUCTURAL, "INHERIT")
               and not card.keyword.startswith("NAXIS")]
    merged.extend(general, strip=False, unique=True)
    return merged


#: The cards of a multi-amplifier frame's extensions that place one amplifier: left out of
#: its tiled header, also where the primary header has them.
_AMPLIFIER_SECTIONS = ("BIASSEC", "DATASEC", "TRIMSEC", "DETSEC", "CCDSEC", "AMPSEC", "EXTNAME",
                       "EXTVER", "INHERIT")

#: An amplifier's own detector values: kept in the tiled header only when every amplifier
#: has the same (else the night measures its own, or has none).
_AMPLIFIER_VALUES = ("GAIN", "EGAIN", "RDNOISE", "READNOIS", "CCDSENS", "CCDRON", "SATURATE")

#: An extension's cards that map its own pixels (WCS, IRAF's LTV/LTM, its data range): untrue
#: of the tiled image.
_PIXEL_MAPPING = re.compile(r"^(CRPIX\d|LTV\d|LTM\d_\d|DATAMIN|DATAMAX)$")


def tiled_header(primary: fits.Header, extensions, shape, history=()) -> fits.Header:
    """The header of a multi-amplifier frame read as one image.

    The primary header's cards, then those of the first amplifier's extension
    the primary lacks, except the cards that place one amplifier
    (:data:`_AMPLIFIER_SECTIONS`) or map its pixels (WCS reference pixel,
    LTV/LTM, DATAMIN/DATAMAX); an amplifier's gain, read noise or saturation
    only when every amplifier has the same value; the first extension's data
    type.

    Parameters
    ----------
    primary : astropy.io.fits.Header
    extensions : sequence of astropy.io.fits.Header
        The amplifiers' extension headers, the first first.
    shape : (int, int)
        The tiled image's (rows, columns).
    history : sequence of str, optional
        HISTORY lines to add (how it was tiled).

    Returns
    -------
    astropy.io.fits.Header
    """
    from astropy.io import fits

    first = extensions[0]
    differ = {key for key in _AMPLIFIER_VALUES
              if len({repr(h.get(key)) for h in extensions}) > 1}
    general = fits.Header([card for card in first.cards
                           if card.keyword not in (*_AMPLIFIER_SECTIONS, *differ)
                           and not _PIXEL_MAPPING.match(card.keyword)])
    own = fits.Header([card for card in primary.cards
                       if card.keyword not in _AMPLIFIER_SECTIONS])
    header = inherited(general, own)
    for key in ("BITPIX", "BZERO", "BSCALE", "BLANK"):
        header.remove(key, ignore_missing=True, remove_all=True)
        if key in first:
            header.set(key, first[key], after="SIMPLE" if key == "BITPIX" else None)
    header["NAXIS"] = 2
    header.set("NAXIS1", int(shape[1]), after="NAXIS")
    header.set("NAXIS2", int(shape[0]), after="NAXIS1")
    for line in history:
        header.add_history(line)
    return header


def _check_complete(path, hdu) -> None:
    """InputError when the file ends before the HDU's data (or compressed tiles) do.

    A gzip-compressed file is not checked here: its size says nothing of its
    content's; a truncated one fails when read.
    """
    offset = raw_data_offset(hdu)
    if offset is None:
        return
    needed = offset + hdu.fileinfo()["datSpan"]  # the data's offset, and size with padding
    if os.path.getsize(path) < needed:
        msg = f"truncated: header promises {needed} bytes, file has {os.path.getsize(path)}"
        raise InputError([InputProblem(Path(path), msg)])


def _check_last_header(path, hdu) -> None:
    """InputError when an extension header follows ``hdu``, the last HDU astropy could read
    (a file cut inside that header, or a header damaged): astropy takes its bytes for padding
    after the last HDU, and the frame would silently lose the extensions from there on."""
    offset = raw_data_offset(hdu)
    if offset is None:
        return
    end = offset + hdu.fileinfo()["datSpan"]
    with open(path, "rb") as handle:
        handle.seek(end)
        if handle.read(8) == b"XTENSION":
            msg = (f"truncated or damaged: the extension header at byte {end} cannot be read "
                   f"(file has {os.path.getsize(path)} bytes)")
            raise InputError([InputProblem(Path(path), msg)])


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] or type(err).__name__


def read_image(path, hdu: int = 0, dtype=None, rows: slice | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """Read the image (or a block of its rows) of one HDU into memory.

    Parameters
    ----------
    path : path-like
        The FITS file (plain, gzip-compressed or tile-compressed); opened read-only.
    hdu : int, optional
        Index of the image HDU (see :func:`find_image_hdu`).
    dtype : numpy dtype, optional
        Convert to this type; by default the stored type after BZERO/BSCALE
        (16-bit raw frames come back as uint16), in native byte order.
    rows : slice, optional
        Read only these rows; uncompressed files read just those bytes.
    out : numpy.ndarray, optional
        Store the image here (its shape; values cast to its dtype) and return
        it. An uncompressed 16-bit raw frame is read straight into a uint16
        array (``out`` or a new one), with no copy in between.

    Raises
    ------
    InputError
        When the data cannot be read (truncated or corrupt file).
    """
    from astropy.io import fits

    try:
        with fits.open(path, mode="readonly", memmap=False, do_not_scale_image_data=True) as hdus:
            image = hdus[hdu]
            if image.header.get("NAXIS", 0) == 0:
                raise InputError([InputProblem(Path(path), f"HDU {hdu} holds no image data")])
            if rows is None and _is_unsigned_16bit(image.header) and not _is_tiled(image):
                target = np.empty(image.shape, np.uint16) if out is None and dtype is None else out
                if _readable_into(image, target):
                    return _read_unsigned_16bit_into(path, raw_data_offset(image), target)
                values = np.bitwise_xor(image.data.view(">u2"), 0x8000, dtype=np.uint16,
                                        out=out, casting="unsafe")
                return values if out is not None or dtype is None else values.astype(dtype)
        with fits.open(path, mode="readonly", memmap=False) as hdus:
            data = hdus[hdu].data if rows is None else hdus[hdu].section[rows, :]
            data = np.asarray(data, dtype=np.dtype(dtype or data.dtype).newbyteorder("="))
            if out is None:
                return data
            np.copyto(out, data, casting="unsafe")
            return out
    except InputError:
        raise
    except (OSError, ValueError, TypeError, IndexError, EOFError, zlib.error) as err:
        msg = f"cannot read image data ({_reason(err)})"
        raise InputError([InputProblem(Path(path), msg)]) from err


def _readable_into(image, out) -> bool:
    """Whether an uncompressed image can be read byte for byte into ``out``."""
    from astropy.io import fits

    return (out is not None and out.dtype == np.uint16 and out.flags.c_contiguous
            and out.shape == image.shape and isinstance(image, (fits.PrimaryHDU, fits.ImageHDU))
            and raw_data_offset(image) is not None)


def _is_tiled(image) -> bool:
    """A tile-compressed image (``.fits.fz``: RICE, GZIP, ... tiles in a binary table).

    Its file bytes are the compressed tiles, not the image: astropy decompresses it.
    """
    from astropy.io import fits

    return isinstance(image, fits.CompImageHDU)


def _read_unsigned_16bit_into(path, offset: int, out: np.ndarray) -> np.ndarray:
    """Read big-endian 16-bit data with BZERO = 32768 straight into a uint16 array."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        if handle.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise EOFError("the file ends inside the image data")
    return np.bitwise_xor(out.view(">u2"), 0x8000, out=out)


def image_dtype(header) -> np.dtype:
    """The type :func:`read_image` returns for an image with this header.

    Integers as stored, unsigned where BZERO is the usual offset (16-bit raw
    frames: uint16); floats as stored; other scaled or BLANK-flagged integers
    become float64, which holds any of their values.
    """
    bitpix = header.get("BITPIX", -64)
    if bitpix < 0:
        return np.dtype(f"float{-bitpix}")
    bzero, bscale = header.get("BZERO", 0), header.get("BSCALE", 1)
    if bscale != 1 or "BLANK" in header:
        return np.dtype(np.float64)
    if bzero == 0:
        return np.dtype("uint8" if bitpix == 8 else f"int{bitpix}")
    if bitpix > 8 and bzero == 1 << (bitpix - 1):
        return np.dtype(f"uint{bitpix}")
    if bitpix == 8 and bzero == -128:
        return np.dtype(np.int8)
    return np.dtype(np.float64)


def _is_unsigned_16bit(header) -> bool:
    """The usual raw-frame layout: 16-bit integers offset by BZERO = 32768."""
    return image_dtype(header) == np.uint16


def product_digest(step: str, inputs, options: dict, version: str) -> str:
    """A short, stable fingerprint of how a product is made: step, inputs, options, version."""
    recipe = {"step": step, "inputs": [str(p) for p in inputs], "options": options,
              "version": version}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_current_product(path, digest: str) -> bool:
    """True when ``path`` is an intact product (the FITS checksums of its image and planes
    verify) made to ``digest``."""
    from astropy.io import fits

    try:
        with fits.open(path, mode="readonly", memmap=False) as hdus:
            return (hdus[0].header.get("HIERARCH CCDRED DIGEST") == digest
                    and all(hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1
                            for hdu in hdus))
    except (OSError, ValueError, IndexError, TypeError):
        return False


def add_provenance(header: fits.Header, *, step: str, inputs, options: dict, version: str,
                   history=()) -> fits.Header:
    """A copy of ``header`` fit for a product, with ccdred's provenance added.

    The raw header's structural and scaling cards are dropped (astropy writes
    them anew for the product's data); the step, the ccdred version, the date,
    the options that are set (unset ones are left out), IRAF-style IMCMBnnn
    input names with NCOMBINE for combined masters, and HISTORY lines (the
    inputs, then ``history``) are added.
    """
    out = header.copy()
    for key in _STRUCTURAL:
        out.remove(key, ignore_missing=True, remove_all=True)
    for key in [k for k in out if k.startswith("NAXIS")]:
        out.remove(key, ignore_missing=True, remove_all=True)
    inputs = [str(p) for p in inputs]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _set(out, "HIERARCH CCDRED STEP", step, "ccdred step that made this file")
    _set(out, "HIERARCH CCDRED VERSION", version, "ccdred version")
    _set(out, "HIERARCH CCDRED DATE", now, "when it was made (UTC)")
    for key, value in sorted(options.items()):
        if value is not None:
            _set(out, f"HIERARCH CCDRED {key.upper()}", value, "ccdred option")
    _set(out, "HIERARCH CCDRED DIGEST", product_digest(step, inputs, options, version),
         "fingerprint of step, inputs, options, version")
    if step.startswith("master_"):
        out["NCOMBINE"] = (len(inputs), "number of frames combined")
    else:
        out.remove("NCOMBINE", ignore_missing=True, remove_all=True)
    for number, name in enumerate(inputs[:999], start=1):
        out[f"IMCMB{number:03d}"] = (Path(name).name, "input")
    out.add_history(f"ccdred {version} {step} on {now}")
    for name in inputs:
        out.add_history(f"  input {name}")
    for line in history:
        out.add_history(f"  {line}")
    return out


def _set(header: fits.Header, key: str, value, comment: str) -> None:
    """Set a card, with its comment where the card has room for it."""
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        fits_in = fits.Card(key, value, comment).image.rstrip().endswith(f"/ {comment}")
    header[key] = (value, comment) if fits_in else value


def write_image(path, data, header: fits.Header, *, dtype="float32", overwrite=False,
                uncertainty=None, mask=None, n_rejected=None, mosaic=None) -> Path:
    """Write an image product atomically (temporary file, then rename), with its planes.

    An interrupted run leaves either the complete product or none (the
    temporary ``.NAME.*.part`` file is removed). The FITS checksum written
    with each HDU lets a later run verify the file. The planes are image
    extensions after the primary HDU, as :meth:`astropy.nddata.CCDData.read`
    reads them by default (``UNCERT``, ``MASK``; see :data:`PLANES`); the primary
    HDU is the same bytes with or without them.

    Parameters
    ----------
    path : path-like
        Final product path.
    data : numpy.ndarray
        The image; converted to ``dtype``.
    header : astropy.io.fits.Header
        Header cards for the product (see :func:`add_provenance`).
    dtype : {'float32', 'float64'}, optional
        Stored data type (of the image and its uncertainty).
    overwrite : bool, optional
        Replace an existing product; otherwise an existing file is an error.
    uncertainty : numpy.ndarray, optional
        The image's standard deviation (``UNCERT``, ``UTYPE = 'StdDevUncertainty'``).
    mask : numpy.ndarray, optional
        Its mask (``MASK``, uint8 bits of :class:`~ccdred.planes.MaskBit`).
    n_rejected : numpy.ndarray, optional
        A master's count of samples rejected per pixel (``NREJ``, int16, as IRAF's
        ``nrejmasks``; ``CCDData`` ignores it).
    mosaic : Mosaic, optional
        Write the image as the raw frames' extensions (see :func:`_amplifier_hdus`):
        ``header`` in a primary HDU without data, then an image extension per
        amplifier of :class:`~ccdred.sections.Mosaic`, then each plane's extensions.

    Returns
    -------
    pathlib.Path
        The written product.
    """
    from astropy.io import fits

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError([InputProblem(path, "exists; refusing to overwrite it")])
    planes = dict(zip(PLANES, (uncertainty, mask, n_rejected), strict=True))
    if mosaic is None:
        primary = fits.PrimaryHDU(np.asarray(data, dtype=storage_dtype(dtype)), header=header)
        # as astropy writes it when extensions follow: the same primary header with or without
        primary.header.set("EXTEND", True, after=f"NAXIS{primary.header['NAXIS']}")
        hdus = fits.HDUList([primary])
        hdus += [_plane_hdu(name, plane, dtype) for name, plane in planes.items()
                 if plane is not None]
    else:
        hdus = _amplifier_hdus(mosaic, data, header, dtype, planes)
    for hdu in hdus:
        hdu.add_checksum()
    temporary = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=PARTIAL_SUFFIX, delete=False) as handle:
            temporary = handle.name
            hdus.writeto(handle)
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)  # as open() would, not mkstemp's 0600
        os.replace(temporary, path)
    except OSError as err:
        _discard(temporary)
        msg = f"cannot write the product ({_failure_reason(err)})"
        raise InputError([InputProblem(path, msg)]) from err
    except BaseException:
        _discard(temporary)
        raise
    return path


#: The extensions a product's planes are written in, in order: its standard deviation,
#: its mask and (masters) its count of rejected samples; the first two are the names
#: ``CCDData.read`` and ``CCDData.to_hdu`` take by default.
PLANES = ("UNCERT", "MASK", "NREJ")

#: The type a master's ``NREJ`` plane is stored in (int16, as IRAF's ``nrejmasks``; in
#: FITS's byte order: counts made in it are written as they are).
REJECTED_DTYPE = np.dtype(">i2")


def _plane_hdu(name: str, plane, dtype) -> fits.ImageHDU:
    """One plane's image extension, in the type of its kind of plane."""
    from astropy.io import fits

    header = fits.Header()
    if name == "UNCERT":  # the card CCDData.to_hdu writes: which uncertainty class it is
        header["UTYPE"] = ("StdDevUncertainty", "standard deviation of the primary image")
    stored = {"UNCERT": storage_dtype(dtype), "MASK": np.uint8, "NREJ": REJECTED_DTYPE}[name]
    return fits.ImageHDU(np.asarray(plane, dtype=stored), header=header, name=name)


def _amplifier_hdus(mosaic, data, header: fits.Header, dtype, planes) -> fits.HDUList:
    """A product's HDUs with the raw frames' extensions: one image extension per amplifier.

    The primary HDU holds ``header`` and no data. Each amplifier's extension holds its
    part of ``data`` as it was read out (:meth:`~ccdred.sections.Mosaic.split`), with
    its EXTNAME, its DETSEC, a DATASEC of all its pixels (trimmed already), INHERIT = T
    (its frame type, filter and provenance are the primary's) and the primary's BUNIT.
    Each plane of ``planes`` (name to image or None, see :data:`PLANES`) follows as an
    extension per amplifier of that name, its EXTVER the amplifier's number (1, 2, ...).
    Read back, the file is a multi-amplifier frame: tiled by its DETSECs, it is ``data``.
    """
    from astropy.io import fits

    primary = fits.PrimaryHDU(header=header)
    primary.header.set("EXTEND", True, after="NAXIS")
    hdus = fits.HDUList([primary])
    for amp, part in zip(mosaic.amplifiers, mosaic.split(data), strict=True):
        # a contiguous copy: astropy writes (and checksums) a strided view far slower
        hdu = fits.ImageHDU(np.ascontiguousarray(part, dtype=storage_dtype(dtype)),
                            name=amp.extname)
        hdu.header.update(_amplifier_cards(amp, part.shape, header))
        hdus.append(hdu)
    for name, plane in planes.items():
        if plane is None:
            continue
        for number, (amp, part) in enumerate(zip(mosaic.amplifiers, mosaic.split(plane),
                                                 strict=True), start=1):
            hdu = _plane_hdu(name, np.ascontiguousarray(part), dtype)
            hdu.ver = number
            hdu.header["DETSEC"] = (str(amp.placement), f"{name} of extension {amp.name}")
            hdus.append(hdu)
    return hdus


def _amplifier_cards(amp, shape, header: fits.Header) -> dict:
    """The cards of one amplifier's extension in a product (see :func:`_amplifier_hdus`)."""
    cards = {"INHERIT": (True, "the primary header's cards apply"),
             "DETSEC": (str(amp.placement), "where it lies on the detector"),
             "DATASEC": (f"[1:{shape[1]},1:{shape[0]}]", "overscan-corrected and trimmed")}
    return cards | ({"BUNIT": header["BUNIT"]} if "BUNIT" in header else {})


def read_planes(path) -> dict:
    """A product's planes (see :func:`write_image`) by extension name, those it has."""
    from astropy.io import fits

    with fits.open(path, mode="readonly", memmap=False) as hdus:
        return {hdu.name: np.asarray(hdu.data) for hdu in hdus[1:] if hdu.name in PLANES}


def write_raw_frame(path, data, cards: dict) -> Path:
    """Write a raw frame as a camera would: integer data as given, the header ``cards``.

    For simulated nights; unsigned 16-bit data is stored with BZERO = 32768.
    """
    from astropy.io import fits

    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
    return Path(path)


def write_raw_extensions(path, images, cards: dict, extension_cards) -> Path:
    """Write a multi-amplifier raw frame: ``cards`` in a primary header without data, then
    one image extension per image with its own ``extension_cards`` (``INHERIT = T``).

    For simulated nights, as :func:`write_raw_frame`.

    Parameters
    ----------
    path : path-like
    images : sequence of numpy.ndarray
        Each amplifier's raw image, overscan included.
    cards : dict
        The primary header's keywords.
    extension_cards : sequence of dict
        Each extension's own keywords (its EXTNAME, sections, GAIN, ...).

    Returns
    -------
    pathlib.Path
    """
    from astropy.io import fits

    hdus = fits.HDUList([fits.PrimaryHDU(header=fits.Header(list(cards.items())))])
    for data, own in zip(images, extension_cards, strict=True):
        header = fits.Header([("INHERIT", True), *own.items()])
        hdus.append(fits.ImageHDU(data, header=header, name=own.get("EXTNAME")))
    hdus.writeto(path, overwrite=True)
    return Path(path)


def _failure_reason(err: OSError) -> str:
    """Why a write failed, in the words of the first error raised.

    astropy re-raises a failed write as new errors that may prefix a free-space
    estimate; that estimate races with other writers, so the root error is told.
    """
    while isinstance(err.__context__, OSError):
        err = err.__context__
    return err.strerror or str(err)


def storage_dtype(dtype) -> np.dtype:
    """``dtype`` in FITS's big-endian byte order: arrays made in it are written as they are.

    Handing :func:`write_image` native (little-endian) data costs astropy
    byte swaps; making products in this type spares them.
    """
    return np.dtype(dtype).newbyteorder(">")


def _discard(temporary) -> None:
    if temporary is not None:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def remove_partial_products(folder) -> list[Path]:
    """Delete temporary files a killed run left behind in ``folder``; returns them."""
    stale = sorted(Path(folder).glob(f".*{PARTIAL_SUFFIX}"))
    for path in stale:
        _discard(path)
    return stale
