"""Writing a DICOM SEG: :func:`write_dicom_seg`, a label map on a series' grid, with highdicom.

The segments, their names and descriptions (``"ctflow label value 5"``), the series' headers
as highdicom's source images; ``pip install 'ctflow[seg]'``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError, MissingDependencyError
from ctflow.geometry import Geometry
from ctflow.io.dicom.seg_grid import _series_grid, _SeriesGrid
from ctflow.io.dicom.seg_headers import _MARK
from ctflow.io.voxels import as_source_path
from ctflow.labels import to_labels
from ctflow.validation import as_choice

__all__ = ["write_dicom_seg"]

#: Patient / study attributes a SEG copies from its images (Type 2: present, maybe empty)
_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _highdicom(where: str) -> Any:
    """Import highdicom, or say how to install it."""
    try:
        import highdicom
    except ImportError as exc:
        raise MissingDependencyError(
            f"{where} needs highdicom, which is not installed: pip install 'ctflow[seg]' (or "
            "pip install highdicom)"
        ) from exc
    return highdicom


def _segment_names(names: Any, present: NDArray[Any], where: str) -> list[str]:
    """Return one name per present label value."""
    values = [int(v) for v in present]
    if names is None:
        out = [f"label {v}" for v in values]
    elif isinstance(names, Mapping):
        out = [str(names.get(v, f"label {v}")) for v in values]
    elif isinstance(names, Sequence) and not isinstance(names, str):
        if len(names) != len(values):
            raise InvalidParameterError(
                f"{where}: names must give one name per label value present ({values}); got "
                f"{len(names)} name(s)"
            )
        out = [str(n) for n in names]
    else:
        raise InvalidParameterError(
            f"{where}: names must be a sequence of str (one per label value present, in "
            f"increasing order) or a mapping value -> name; got {type(names).__name__}"
        )
    for name in out:
        if not name.strip() or len(name) > 64 or "\\" in name:
            raise InvalidParameterError(
                f"{where}: a segment name must be 1 to 64 characters without a backslash (a "
                f"DICOM SegmentLabel); got {name!r}"
            )
    return out


def _source_datasets(grid: _SeriesGrid, where: str) -> list[Any]:
    """Return the series' header datasets, sorted, as highdicom's source images."""
    out = []
    for h in grid.headers:
        ds = h.dataset
        if not str(ds.get("SOPClassUID", "") or "").strip():
            ds.SOPClassUID = ds.file_meta.get("MediaStorageSOPClassUID", "")
        if not str(ds.get("SOPInstanceUID", "") or "").strip():
            ds.SOPInstanceUID = ds.file_meta.get("MediaStorageSOPInstanceUID", "")
        for keyword in _TYPE2:  # a SEG must have them, empty when unknown
            if keyword not in ds:
                setattr(ds, keyword, "")
        for keyword in (
            "SOPClassUID",
            "SOPInstanceUID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "FrameOfReferenceUID",
        ):
            if not str(ds.get(keyword, "") or "").strip():
                raise InvalidScanError(
                    f"{where}: {h.path}: the slice has no {keyword} (removed by anonymisation?); "
                    "a DICOM SEG references its images by these UIDs"
                )
        out.append(ds)
    return out


def _check_grid(
    values: NDArray[Any], geometry: Geometry | None, grid: _SeriesGrid, where: str
) -> None:
    if values.shape != grid.shape:
        raise InvalidScanError(
            f"{where}: labels must have the shape of the series {grid.folder} {grid.shape} "
            f"(z, y, x); got {values.shape}"
        )
    if geometry is None:
        return
    g = grid.geometry
    if not (
        np.allclose(geometry.spacing, g.spacing, rtol=1e-4, atol=1e-4)
        and np.allclose(geometry.origin, g.origin, atol=1e-3)
        and np.allclose(geometry.direction, g.direction, atol=1e-4)
    ):
        raise InvalidScanError(
            f"{where}: the labels' geometry must be the series' grid {g!r}; got {geometry!r} "
            "(put them on the series' grid first, e.g. with ctflow.labels.labels_on_grid)"
        )


def write_dicom_seg(
    path: str | os.PathLike[str],
    labels: Any,
    series_folder: str | os.PathLike[str],
    names: Sequence[str] | Mapping[int, str] | None = None,
    *,
    geometry: Geometry | None = None,
    series_uid: str | None = None,
    segmentation_type: str = "BINARY",
    description: str = "ctflow segmentation",
    series_number: int = 99,
    omit_empty_frames: bool = True,
) -> Path:
    """Write a label map on a DICOM series' grid as a DICOM SEG referencing that series.

    Parameters
    ----------
    path : path
        The SEG file to write (its folder is created; the file is written under a temporary
        name and renamed, so a crash never leaves half a file).
    labels : ndarray (Z, Y, X) of integers
        Labels on the series' grid as ctflow reads it (slice k = the k-th slice along the
        normal); 0 = background. One segment per value present.
    series_folder : path
        The folder of the segmented DICOM series (read from its headers only).
    names : sequence of str or mapping int -> str, optional
        Segment names (SegmentLabel), one per label value present in increasing order, or by
        value; default ``"label <value>"``.
    geometry : Geometry, optional
        The labels' geometry: when given it must be the series' grid (a safety check).
    series_uid : str, optional
        The series to reference when the folder holds several (default: the one
        :func:`~ctflow.io.dicom.read_dicom_series` would read).
    segmentation_type : {"BINARY", "LABELMAP"}
        BINARY (segment numbers 1..K, the label values in the segment descriptions; read by
        every SEG reader) or LABELMAP (segment number = label value; DICOM 2024+ readers).
    description : str
        ContentDescription of the SEG.
    series_number : int
        SeriesNumber of the new SEG series.
    omit_empty_frames : bool, default True
        Leave out the planes where a segment has no voxel (a sparse SEG).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    MissingDependencyError
        highdicom is not installed (``pip install 'ctflow[seg]'``).
    InvalidScanError
        Labels not on the series' grid, a series whose slices lack the UIDs a SEG references,
        highdicom refusing the series.
    InvalidParameterError
        Bad labels (not integers, negative, no label at all), names or segmentation type.

    Examples
    --------
    >>> import tempfile, numpy as np, highdicom
    >>> from ctflow.geometry import Geometry
    >>> from ctflow.io.dicom_writer import write_dicom_series
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_dicom_series(folder, np.zeros((2, 4, 4), np.int16), Geometry((1.0, 1.0, 1.0)))
    >>> labels = np.zeros((2, 4, 4), np.uint8)
    >>> labels[0, :2], labels[1, 2:] = 3, 9
    >>> seg = highdicom.seg.segread(write_dicom_seg(f"{tempfile.mkdtemp()}/s.dcm", labels, folder))
    >>> [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
    ['label 3', 'label 9']
    >>> seg.get_segment_description(1).algorithm_identification[0].AlgorithmName
    'ctflow'
    """
    where = "write_dicom_seg"
    hd = _highdicom(where)
    as_choice(segmentation_type, ("BINARY", "LABELMAP"), "segmentation_type", where)
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise InvalidParameterError(f"{where}: labels must be (Z, Y, X); got shape {arr.shape}")
    values = to_labels(arr, where)
    grid = _series_grid(series_folder, where, series_uid)
    _check_grid(values, geometry, grid, where)
    present = np.unique(values)
    present = present[present > 0]
    if present.size == 0:
        raise InvalidParameterError(f"{where}: the labels hold no label (all 0): nothing to write")
    segment_names = _segment_names(names, present, where)
    sources = _source_datasets(grid, where)
    if segmentation_type == "BINARY":
        lut = np.zeros(int(present.max()) + 1, np.uint16)
        lut[present] = np.arange(1, present.size + 1)
        pixels, numbers = lut[values], list(range(1, present.size + 1))
        if present.size <= 255:
            pixels = pixels.astype(np.uint8)
    else:
        pixels, numbers = values, [int(v) for v in present]
    descriptions = _descriptions(hd, numbers, present, segment_names)
    out = as_source_path(path, where)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=segmentation_type,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=int(series_number),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="ctflow",
            manufacturer_model_name="ctflow",
            software_versions=_version(),
            device_serial_number="0",
            content_description=description[:64],
            content_label="CTFLOW",
            omit_empty_frames=omit_empty_frames,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidScanError(
            f"{where}: highdicom refused the SEG for series {grid.folder} "
            f"({type(exc).__name__}: {exc})"[:800]
        ) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        seg.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _version() -> str:
    from ctflow import __version__

    return str(__version__)


def _descriptions(
    hd: Any, numbers: list[int], present: NDArray[Any], names: list[str]
) -> list[Any]:
    """Return highdicom segment descriptions: algorithm ctflow, label value in the description."""
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="ctflow", family=codes.cid7162.ArtificialIntelligence, version=_version()
    )
    out = []
    for number, value, name in zip(numbers, present.tolist(), names, strict=True):
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        description.SegmentDescription = f"{_MARK}{value}"
        out.append(description)
    return out
