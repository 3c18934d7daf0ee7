"""Write an HU volume as a classic DICOM CT series (one CT Image Storage file per slice).

What hospitals, PACS and LIDC/NLST ship is DICOM; ctflow's phantoms, tests and tutorials write
it with :func:`write_dicom_series` so the reader is exercised on real files. Each slice stores
``HU - intercept`` as signed 16-bit (``RescaleSlope`` 1, ``RescaleIntercept`` ``intercept``),
with ImagePositionPatient / ImageOrientationPatient / PixelSpacing from the geometry, so
SimpleITK, pydicom and ctflow read back the same voxels at the same world positions.

Examples
--------
>>> import numpy as np, tempfile
>>> from ctflow.geometry import Geometry
>>> from ctflow.io.reader import read_scan
>>> vol = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) - 1000
>>> files = write_dicom_series(tempfile.mkdtemp(), vol, Geometry((2.5, 0.7, 0.8), (-50, 10, 20)))
>>> scan = read_scan(files[0].parent)
>>> bool((scan.images == vol).all()), scan.geometry.spacing.tolist()
(True, [2.5, 0.7, 0.8])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry

__all__ = ["write_dicom_series"]

_UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs


def _ds(values: Any) -> list[str]:
    """Format numbers as decimal strings (DS, at most 16 characters) for a multi-value."""
    out = []
    for v in np.ravel(values):
        text = f"{float(v):.10g}"
        if len(text) > 16:
            text = f"{float(v):.8e}"
        out.append(text)
    return out


def write_dicom_series(
    folder: str | os.PathLike[str],
    images: NDArray[Any],
    geometry: Geometry,
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    patient_id: str = "CTFLOW-PHANTOM",
    intercept: float = -1024.0,
    description: str = "ctflow",
    skip: Sequence[int] = (),
) -> list[Path]:
    """Write ``images`` (Z, Y, X) HU as one DICOM CT file per slice into ``folder``.

    Parameters
    ----------
    folder : path
        Created if missing; files are named ``slice0000.dcm`` ... (slice order).
    images : ndarray (Z, Y, X)
        Integer HU (or anything that rounds to it); ``images - intercept`` must fit int16.
    geometry : Geometry
        Spacing, origin, direction (z, y, x, LPS mm). Slice ``k``'s ImagePositionPatient is
        the world position of voxel ``(k, 0, 0)``; the row (x) and column (y) directions
        become ImageOrientationPatient.
    series_uid, study_uid : str, optional
        UIDs; generated when omitted.
    patient_id : str
        PatientID of every file.
    intercept : float, default -1024
        RescaleIntercept (stored = HU - intercept).
    description : str
        SeriesDescription.
    skip : sequence of int
        Slices NOT to write (to make series with gaps for tests).

    Returns
    -------
    list of pathlib.Path
        The written files, in slice order.

    Raises
    ------
    InvalidParameterError
        Not a 3-D volume, values that do not fit the stored int16, a non-Geometry.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    arr = np.asarray(images)
    if arr.ndim != 3 or arr.size == 0 or arr.dtype.kind not in "biuf":
        raise InvalidParameterError(
            f"write_dicom_series: images must be a non-empty numeric (Z, Y, X) array; got "
            f"{arr.dtype} {arr.shape}"
        )
    if not isinstance(geometry, Geometry):
        raise InvalidParameterError(
            f"write_dicom_series: geometry must be a ctflow Geometry; got {type(geometry).__name__}"
        )
    stored = np.rint(arr.astype(np.float64) - float(intercept))
    if stored.min() < -32768 or stored.max() > 32767:
        raise InvalidParameterError(
            f"write_dicom_series: HU - intercept must fit int16; got {stored.min():g}.."
            f"{stored.max():g} with intercept {intercept:g}"
        )
    stored16 = stored.astype("<i2")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    series = series_uid or generate_uid(prefix=_UID_ROOT)
    study = study_uid or generate_uid(prefix=_UID_ROOT)
    frame = generate_uid(prefix=_UID_ROOT)
    d = geometry.direction
    # ImageOrientationPatient: row direction (array x) then column direction (array y), in (x, y, z)
    iop = _ds([*d[::-1, 2], *d[::-1, 1]])
    pixel_spacing = _ds([geometry.spacing[1], geometry.spacing[2]])  # row spacing (y), col (x)
    skipped = {int(k) for k in skip}
    files: list[Path] = []
    for k in range(arr.shape[0]):
        if k in skipped:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid(prefix=_UID_ROOT)
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.PatientID = patient_id
        ds.PatientName = f"{patient_id}^"  # one component, said so (DICOM PN: family^given)
        ds.Modality = "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = _ds(geometry.voxel_to_world((k, 0, 0))[::-1])
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = pixel_spacing
        ds.SliceThickness = _ds([geometry.spacing[0]])[0]
        ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = "1"
        ds.RescaleIntercept = _ds([intercept])[0]
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored16[k]).tobytes()
        path = out / f"slice{k:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    return files
