"""The SimpleITK fallback reader (``fmt="sitk"``): any file ITK can open, or a GDCM series.

ctflow reads its formats natively (:mod:`~ctflow.io.metaimage`, :mod:`~ctflow.io.nifti`,
:mod:`~ctflow.io.nrrd`, :mod:`~ctflow.io.dicom`): those readers give the same geometry as
SimpleITK, release the GIL while reading, and refuse bad files with typed errors. This module
is the explicit escape hatch for what they refuse on purpose but ITK reads: Analyze 7.5 and
NIfTI ``.hdr``/``.img`` pairs, ASCII NRRD, ``.gipl``/``.vtk``, and DICOM folders through GDCM
(first series found, no localizer filtering). It is never chosen automatically.

The volume must be 3-D and single-channel; its size is checked from the header before any voxel
is read (refusing claims over ``MAX_VOXELS_BYTES``); integer data becomes int16 when the values
fit, float32 otherwise; NaN/Inf voxels are refused. ITK's own messages are kept in the error.

Examples
--------
>>> import numpy as np, tempfile, SimpleITK as sitk
>>> p = f"{tempfile.mkdtemp()}/a.hdr"
>>> sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 3, 4), np.int16)), p)
>>> read_with_sitk(p).shape
(2, 3, 4)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.errors import CorruptFileError, InvalidScanError
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.scan import Scan
from ctflow.io.voxels import MAX_VOXELS_BYTES, check_finite
from ctflow.io.voxels import to_ct_dtype as _to_ct_dtype

__all__ = ["read_with_sitk", "to_ct_dtype"]


def to_ct_dtype(arr: np.ndarray[Any, Any], source: str) -> np.ndarray[Any, Any]:
    """Convert to int16 for integer volumes whose values fit, else float32; refuse NaN/Inf.

    Examples
    --------
    >>> to_ct_dtype(np.array([[[1, 2]]], np.uint8), "x").dtype
    dtype('int16')
    """
    out = _to_ct_dtype(arr, Path(source), str(arr.dtype))
    check_finite(out, Path(source), str(arr.dtype))
    return out


def read_with_sitk(path: str | os.PathLike[str], kind: str = "sitk") -> Scan:
    """Read a file (``sitk.ReadImage``) or a DICOM folder (GDCM series) with SimpleITK.

    Parameters
    ----------
    path : path
        An image file ITK can read, or a folder of DICOM slices.
    kind : str
        Recorded in ``info["format"]`` (default ``"sitk"``).

    Returns
    -------
    Scan
        Voxels (int16 / float32) and geometry exactly as SimpleITK reports them.

    Raises
    ------
    CorruptFileError
        Missing path, or ITK cannot read it (ITK's message is included).
    InvalidScanError
        Not 3-D single-channel, NaN/Inf voxels, a volume over ``MAX_VOXELS_BYTES``.
    """
    import SimpleITK as sitk

    source = str(path)
    p = Path(path)
    if not p.exists():
        raise CorruptFileError(f"{source}: no such file or folder")
    try:
        if p.is_dir():
            series = sitk.ImageSeriesReader()
            ids = series.GetGDCMSeriesIDs(source)
            if not ids:
                raise CorruptFileError(f"{source}: no DICOM series found in the folder")
            files = series.GetGDCMSeriesFileNames(source, ids[0])
            reader: Any = sitk.ImageFileReader()
            reader.SetFileName(files[0])
            reader.ReadImageInformation()
            size = (*reader.GetSize()[:2], len(files))
            dims, channels = 3, reader.GetNumberOfComponents()
            itemsize = 8
            _check_size(source, size, dims, channels, itemsize)
            series.SetFileNames(files)
            image = series.Execute()
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(source)
            reader.ReadImageInformation()
            pixel = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())
            itemsize = pixel.GetSizeOfPixelComponent()
            _check_size(
                source,
                reader.GetSize(),
                reader.GetDimension(),
                reader.GetNumberOfComponents(),
                itemsize,
            )
            image = reader.Execute()
    except RuntimeError as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise CorruptFileError(f"{source}: SimpleITK cannot read it ({message[:300]})") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidScanError(
            f"{source}: expected a 3-D single-channel volume; got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} components"
        )
    arr = to_ct_dtype(sitk.GetArrayFromImage(image), source)
    try:
        geometry = Geometry(
            image.GetSpacing()[::-1],
            image.GetOrigin()[::-1],
            direction_from_sitk(image.GetDirection()),
        )
    except InvalidScanError as exc:
        raise InvalidScanError(f"{source}: {exc}") from None
    info = {"format": kind, "reader": "SimpleITK", "pixel_type": image.GetPixelIDTypeAsString()}
    return Scan(np.ascontiguousarray(arr), geometry, source, info)


def _check_size(
    source: str, size: tuple[int, ...], dims: int, channels: int, itemsize: int
) -> None:
    """Refuse an image too large, not 3-D or not single-channel, from its header."""
    if dims != 3 or channels != 1:
        raise InvalidScanError(
            f"{source}: expected a 3-D single-channel volume; got {dims}-D with {channels} "
            "components"
        )
    n_bytes = int(np.prod(np.asarray(size, dtype=np.int64))) * itemsize
    if n_bytes > MAX_VOXELS_BYTES:
        raise InvalidScanError(
            f"{source}: header claims {' x '.join(map(str, size))} voxels = {n_bytes} bytes; "
            f"refusing volumes larger than MAX_VOXELS_BYTES = {MAX_VOXELS_BYTES}"
        )
