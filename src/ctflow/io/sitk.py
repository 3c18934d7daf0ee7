"""NIfTI, NRRD and DICOM series through SimpleITK (ITK's own readers).

This is the interim reader for the formats ctflow has no native reader for yet. Geometry is
taken from ITK, so it is by construction what SimpleITK reports for the file. Integer data is
returned as int16 when that is lossless (CT in HU), float data as float32; NaN/Inf are refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.errors import CorruptFileError, InvalidScanError, UnsupportedFormatError
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.scan import Scan

__all__ = ["read_with_sitk", "to_ct_dtype"]


def to_ct_dtype(arr: np.ndarray[Any, Any], source: str) -> np.ndarray[Any, Any]:
    """int16 for integer volumes whose values fit (lossless), float32 for float volumes."""
    if arr.dtype == np.int16:
        return arr
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        if arr.size == 0:
            return arr.astype(np.int16)
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= -32768 and hi <= 32767:
            return arr.astype(np.int16)
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            raise InvalidScanError(f"{source}: float volume contains NaN or Inf voxels")
        return out
    raise UnsupportedFormatError(f"{source}: unsupported voxel type {arr.dtype}")


def read_with_sitk(path: str | os.PathLike[str], kind: str) -> Scan:
    """Read a NIfTI / NRRD file or a DICOM series folder with SimpleITK."""
    import SimpleITK as sitk

    source = str(path)
    p = Path(path)
    if not p.exists():
        raise CorruptFileError(f"{source}: no such file or folder")
    try:
        if kind == "dicom":
            reader = sitk.ImageSeriesReader()
            ids = reader.GetGDCMSeriesIDs(source)
            if not ids:
                raise CorruptFileError(f"{source}: no DICOM series found in the folder")
            files = reader.GetGDCMSeriesFileNames(source, ids[0])
            reader.SetFileNames(files)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(source)
    except RuntimeError as exc:
        raise CorruptFileError(
            f"{source}: cannot read as {kind} ({str(exc).strip()[:200]})"
        ) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidScanError(
            f"{source}: expected a 3-D single-channel volume; got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} components"
        )
    arr = to_ct_dtype(sitk.GetArrayFromImage(image), source)
    geometry = Geometry(
        image.GetSpacing()[::-1],
        image.GetOrigin()[::-1],
        direction_from_sitk(image.GetDirection()),
    )
    return Scan(np.ascontiguousarray(arr), geometry, source, {"format": kind})
