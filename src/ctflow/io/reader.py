"""Format detection and the one entry point that reads any supported scan source.

Sources and formats (``fmt=`` forces one):

==========  =====================================================  ==========================
fmt         source                                                 reader
==========  =====================================================  ==========================
"mhd"       ``*.mhd`` (+ ``.raw`` / ``.zraw``) or ``*.mha``         :mod:`ctflow.io.metaimage`
"nifti"     ``*.nii``, ``*.nii.gz`` (NIfTI-1 and NIfTI-2)          :mod:`ctflow.io.nifti`
"nrrd"      ``*.nrrd``, ``*.nhdr`` (raw or gzip)                   :mod:`ctflow.io.nrrd`
"dicom"     a folder of DICOM slices (with or without ``.dcm``)     :mod:`ctflow.io.dicom`
"ctflow"    a dump item folder (has ``meta.json``)                  :mod:`ctflow.io.store`
"sitk"      any file ITK reads, or a DICOM folder via GDCM          :mod:`ctflow.io.sitk`
"dicomweb"  ``dicomweb+http(s)://.../studies/<uid>/series/<uid>``  :mod:`ctflow.io.dicomweb`
==========  =====================================================  ==========================

Every format is read natively (numpy + zlib, pydicom for DICOM): the geometry is the one
SimpleITK reports for the same file, whole-file reads release the GIL, and bad files raise
typed errors naming the file. ``"sitk"`` is never inferred; it is the explicit escape hatch for
files the native readers refuse on purpose (Analyze, NIfTI pairs, ASCII NRRD, ...).

``"dicomweb"`` is a series on a DICOMweb server (a PACS), recognised by its URL alone and
retrieved by WADO-RS, then read by the DICOM folder reader (same rules and errors); it is a
source kind, not a file format, so it is not in :data:`FORMATS`.

Files without a known suffix are recognised by content (NRRD magic, NIfTI header size, gzip'd
NIfTI, MetaImage keys); a folder is a ctflow dump when it holds ``meta.json``, else a DICOM
series folder.

Hostile paths and files fail at once with typed errors naming them: a path with a NUL byte or an
over-long name (:class:`~ctflow.errors.InvalidParameterError`, before the operating system is
asked), and a FIFO, socket or device where a file is expected
(:class:`~ctflow.errors.CorruptFileError`, checked with :func:`os.stat` before anything is
opened, so nothing blocks).

External data files
-------------------
A MetaImage ``.mhd`` (``ElementDataFile``) or a detached NRRD header (``data file:``) names the
file holding its voxels. By default that file must resolve, after symbolic links, inside the
header's folder (or a folder below it; the folder of the file a symlinked header points to
counts too), so a downloaded header cannot make ctflow read ``/etc/passwd`` or ``../x``: such a
header raises :class:`~ctflow.errors.UnsupportedFormatError`, which says how to allow it.
``read_scan(..., allow_external_data=True)`` reads it anyway (for headers you trust). The
option means something for ``"mhd"``, ``"nrrd"`` and ``"sitk"`` (SimpleITK follows the same
names, so its MetaImage and NRRD headers are checked the same way); ``read_scan`` refuses
``allow_external_data=True`` for the other formats (NIfTI, DICOM folders and ctflow dumps name
no other files), as it refuses ``series_uid`` outside DICOM. The ``load`` action passes it
only to the formats that use it, so one pipeline can read a mixed dataset.

Orientation: arrays keep their STORED orientation (no reorientation to a canonical frame); the
direction matrix carries the orientation, so every voxel's world position equals SimpleITK's for
the same file. (Reorienting would copy every volume and change voxel indices relative to what
viewers and annotation tools show for the file; geometry-aware actions use the direction
anyway.)

Examples
--------
>>> detect_format("scan.nii.gz"), detect_format("scan.mhd")
('nifti', 'mhd')
"""

from __future__ import annotations

import os
import stat
import zlib
from pathlib import Path

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    UnsupportedFormatError,
)
from ctflow.io.dicomweb import is_dicomweb_url
from ctflow.io.files import _not_regular
from ctflow.io.scan import Scan
from ctflow.io.voxels import as_source_path, open_regular
from ctflow.validation import as_bool

__all__ = ["FORMATS", "detect_format", "read_scan"]

FORMATS = ("mhd", "nifti", "nrrd", "dicom", "ctflow", "sitk")

#: The formats whose headers may name another file (``allow_external_data`` applies).
EXTERNAL_DATA_FORMATS = ("mhd", "nrrd", "sitk")

_SUFFIXES = {
    ".mhd": "mhd",
    ".mha": "mhd",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
}
_NIFTI_SIZES = {
    (348).to_bytes(4, "little"),
    (348).to_bytes(4, "big"),
    (540).to_bytes(4, "little"),
    (540).to_bytes(4, "big"),
}
_METAIMAGE_KEYS = (b"objecttype", b"ndims", b"dimsize", b"elementtype", b"elementspacing")


def _sniff(p: Path) -> str | None:
    """Return the format of a file by its first bytes (None: not recognised)."""
    try:
        fh, _ = open_regular(p, "scan file")
        with fh:
            head = fh.read(4096)
    except (CTFlowError, OSError):
        return None
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if head[:4] in _NIFTI_SIZES:
        return "nifti"
    if head.startswith(b"\x1f\x8b"):
        try:
            inner = zlib.decompressobj(47).decompress(head, 4)
        except zlib.error:
            return None
        return "nifti" if inner[:4] in _NIFTI_SIZES else None
    first = head.split(b"\n", 1)[0].strip().lower().replace(b" ", b"")
    if any(first.startswith(k + b"=") for k in _METAIMAGE_KEYS):
        return "mhd"
    if head[128:132] == b"DICM":
        return "dicom-file"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """Infer the format of a scan source from its name, or its content when the name says nothing.

    Raises
    ------
    CorruptFileError
        The path does not exist and its name does not tell the format, or it is a FIFO, socket
        or device (refused without opening it).
    InvalidParameterError
        The path cannot name a file (NUL byte, over-long name).
    UnsupportedFormatError
        Nothing matches (the message lists the formats ctflow reads), or a single DICOM
        file is given (DICOM series are read per folder).

    Examples
    --------
    >>> detect_format("a/b/scan.NRRD")
    'nrrd'
    >>> detect_format("dicomweb+http://pacs:8042/dicom-web/studies/1.2/series/1.2.3")
    'dicomweb'
    """
    if is_dicomweb_url(path):
        return "dicomweb"
    p = as_source_path(path, "detect_format")
    name = p.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIXES[suffix]
    try:
        mode = os.stat(p).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise CorruptFileError(f"{p}: no such file or folder") from None
    except OSError as exc:
        raise CorruptFileError(f"{p}: cannot be read ({exc})") from None
    if stat.S_ISDIR(mode):
        if (p / "meta.json").is_file():
            return "ctflow"
        return "dicom"
    special = _not_regular(mode)
    if special is not None:
        raise CorruptFileError(
            f"{p}: is {special}, not a scan file or folder; ctflow reads regular files and "
            "folders only"
        )
    kind = _sniff(p)
    if kind == "dicom-file":
        raise UnsupportedFormatError(
            f"{p}: a single DICOM file; ctflow reads DICOM series per folder: pass the folder "
            f"{p.parent} (files beside it that are not part of the series are skipped)"
        )
    if kind is not None:
        return kind
    raise UnsupportedFormatError(
        f"{p}: not an image file ctflow can read (neither the name nor the first bytes match); "
        "ctflow reads .mhd/.mha, .nii/.nii.gz, .nrrd/.nhdr, DICOM series folders and ctflow "
        f"dump folders (pass fmt= one of {FORMATS}; fmt='sitk' tries SimpleITK)"
    )


def read_scan(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    series_uid: str | None = None,
    allow_uneven: bool = False,
    allow_external_data: bool = False,
) -> Scan:
    """Read one scan (voxels + geometry) from any supported source.

    Parameters
    ----------
    path : path
        File or folder.
    fmt : {"mhd", "nifti", "nrrd", "dicom", "ctflow", "sitk", "dicomweb"}, optional
        Force a format instead of inferring it.
    series_uid : str, optional
        DICOM only: the SeriesInstanceUID to read when a folder holds several series (default:
        the rule of :mod:`ctflow.io.dicom`: most slices, then thinnest, then smallest UID).
    allow_uneven : bool
        DICOM folders and DICOMweb series only: resample series with missing slices / uneven
        spacing onto a regular grid (explained in ``info["warnings"]``) instead of refusing
        them.
    allow_external_data : bool, default False
        MetaImage, NRRD and ``"sitk"`` only: read a data file that the header names outside
        its own folder (``ElementDataFile = /elsewhere/x.raw``, ``data file: ../x``). By
        default such headers are refused (see "External data files" above); pass True only
        for headers you trust.

    Returns
    -------
    Scan
        ``images`` (Z, Y, X) in HU (int16 for integer CT data), geometry in (z, y, x) LPS mm,
        ``info`` with format facts (for DICOM: ``skipped`` files with reasons, ``series``).

    Raises
    ------
    CTFlowError
        A typed error naming the file: :class:`~ctflow.errors.CorruptFileError`,
        :class:`~ctflow.errors.InvalidScanError`, :class:`~ctflow.errors.UnsupportedFormatError`
        or :class:`~ctflow.errors.InvalidParameterError` (also for a path with a NUL byte or
        an over-long name, and for options the format does not use).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> from ctflow.io.metaimage import write_metaimage
    >>> p = write_metaimage(f"{tempfile.mkdtemp()}/a.mhd", np.zeros((2, 3, 4), np.int16),
    ...                     Geometry((2.0, 1.0, 1.0)))
    >>> read_scan(p).shape
    (2, 3, 4)
    """
    as_bool(allow_external_data, "allow_external_data", "read_scan")
    if fmt == "dicomweb" or (fmt is None and is_dicomweb_url(path)):
        from ctflow.io.dicomweb import read_dicomweb_series

        if series_uid is not None or allow_external_data:
            raise InvalidParameterError(
                f"read_scan: series_uid and allow_external_data do not apply to a DICOMweb "
                f"series (its URL names the series); got them for {path}"
            )
        return read_dicomweb_series(str(path), allow_uneven=allow_uneven)
    path = as_source_path(path, "read_scan")
    kind = detect_format(path) if fmt is None else fmt
    if kind not in FORMATS:
        raise UnsupportedFormatError(f"{path}: unknown fmt {kind!r}; expected one of {FORMATS}")
    if kind != "dicom" and (series_uid is not None or allow_uneven):
        raise InvalidParameterError(
            f"read_scan: series_uid and allow_uneven apply to DICOM folders only; {path} is "
            f"read as {kind!r}"
        )
    if allow_external_data and kind not in EXTERNAL_DATA_FORMATS:
        raise InvalidParameterError(
            f"read_scan: allow_external_data applies to MetaImage, NRRD and 'sitk' reads only "
            f"(headers that name a data file); {path} is read as {kind!r}"
        )
    if kind == "mhd":
        from ctflow.io.metaimage import read_metaimage

        return read_metaimage(path, allow_external_data=allow_external_data)
    if kind == "nifti":
        from ctflow.io.nifti import read_nifti

        return read_nifti(path)
    if kind == "nrrd":
        from ctflow.io.nrrd import read_nrrd

        return read_nrrd(path, allow_external_data=allow_external_data)
    if kind == "dicom":
        from ctflow.io.dicom import read_dicom_series

        return read_dicom_series(path, series_uid=series_uid, allow_uneven=allow_uneven)
    if kind == "ctflow":
        from ctflow.io.store import read_item

        item = read_item(path, ["images"])
        return Scan(
            item.components["images"],
            item.geometry,
            str(path),
            {"format": "ctflow", "reader": "ctflow.io.store"},
        )
    from ctflow.io.sitk import read_with_sitk

    return read_with_sitk(path, kind, allow_external_data=allow_external_data)
