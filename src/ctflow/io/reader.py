"""Format detection and the one entry point that reads any supported scan source.

Sources and formats (``fmt=`` forces one):

==========  =====================================================  ==========================
fmt         source                                                 reader
==========  =====================================================  ==========================
"mhd"       ``*.mhd`` (+ ``.raw`` / ``.zraw``) or ``*.mha``         :mod:`ctflow.io.metaimage`
"nifti"     ``*.nii``, ``*.nii.gz``                                 SimpleITK (ITK's NIfTI IO)
"nrrd"      ``*.nrrd``, ``*.nhdr``                                   SimpleITK (ITK's NRRD IO)
"dicom"     a folder of DICOM slices (with or without ``.dcm``)     SimpleITK/GDCM series reader
"ctflow"    a dump item folder (has ``meta.json``)                  :mod:`ctflow.io.store`
==========  =====================================================  ==========================

Arrays keep their STORED orientation (no reorientation to a canonical frame); the direction
matrix carries the orientation, so world positions equal SimpleITK's for the same file.

Examples
--------
>>> detect_format("scan.nii.gz"), detect_format("scan.mhd")
('nifti', 'mhd')
"""

from __future__ import annotations

import os
from pathlib import Path

from ctflow.errors import UnsupportedFormatError
from ctflow.io.scan import Scan

__all__ = ["FORMATS", "detect_format", "read_scan"]

FORMATS = ("mhd", "nifti", "nrrd", "dicom", "ctflow")

_SUFFIXES = {
    ".mhd": "mhd",
    ".mha": "mhd",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
}


def detect_format(path: str | os.PathLike[str]) -> str:
    """Infer the format of a scan source from its name (and, for folders, content).

    Raises
    ------
    UnsupportedFormatError
        When nothing matches; the message lists the formats ctflow reads.
    """
    p = Path(path)
    name = p.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIXES[suffix]
    if p.is_dir():
        if (p / "meta.json").is_file():
            return "ctflow"
        return "dicom"
    raise UnsupportedFormatError(
        f"{p}: cannot tell the format from the name; ctflow reads .mhd/.mha, .nii/.nii.gz, "
        f".nrrd/.nhdr, DICOM series folders and ctflow dump folders (pass fmt= one of {FORMATS})"
    )


def read_scan(path: str | os.PathLike[str], fmt: str | None = None) -> Scan:
    """Read one scan (voxels + geometry) from any supported source.

    Parameters
    ----------
    path : path
        File or folder.
    fmt : {"mhd", "nifti", "nrrd", "dicom", "ctflow"}, optional
        Force a format instead of inferring it.

    Returns
    -------
    Scan
        ``images`` (Z, Y, X) in HU (int16 for integer CT data), geometry in (z, y, x) LPS mm.

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
    kind = detect_format(path) if fmt is None else fmt
    if kind not in FORMATS:
        raise UnsupportedFormatError(f"{path}: unknown fmt {kind!r}; expected one of {FORMATS}")
    if kind == "mhd":
        from ctflow.io.metaimage import read_metaimage

        return read_metaimage(path)
    if kind == "ctflow":
        from ctflow.io.store import read_item

        item = read_item(path, ["images"])
        return Scan(item.components["images"], item.geometry, str(path), {"format": "ctflow"})
    from ctflow.io.sitk import read_with_sitk

    return read_with_sitk(path, kind)
