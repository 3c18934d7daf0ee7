"""DICOM label objects (SEG and RT Structure Set) in common: what they are and what reading gives.

The SOP classes, :class:`Segment` and :class:`DicomLabels` (what
:func:`~ctflow.io.dicom.read_dicom_seg` and :func:`~ctflow.io.dicom.read_rtstruct` return),
opening a label file with pydicom and :func:`dicom_label_kind`, which tells a SEG or an RT
Structure Set from other files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, UnsupportedFormatError
from ctflow.geometry import Geometry
from ctflow.io.voxels import as_source_path, open_regular

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "LABEL_MAP_SEG_STORAGE",
    "RT_STRUCTURE_SET_STORAGE",
    "SEGMENTATION_STORAGE",
    "DicomLabels",
    "Segment",
    "dicom_label_kind",
]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass(frozen=True)
class Segment:
    """One segment of a DICOM SEG (or one ROI of an RT Structure Set) and its label value.

    Attributes
    ----------
    number : int
        SegmentNumber (SEG) or ROINumber (RTSTRUCT).
    value : int
        The value its voxels hold in the label map (its channel is its position in
        ``segments`` with ``overlap="channels"``).
    label : str
        SegmentLabel (SEG) or ROIName (RTSTRUCT): the segment's name.
    description : str
        SegmentDescription or ROIDescription.
    property_type : str
        Code meaning of the segmented property type (SEG, e.g. ``"Liver"``) or the
        RTROIInterpretedType (RTSTRUCT, e.g. ``"ORGAN"``).
    category : str
        Code meaning of the segmented property category (SEG), else ``""``.
    algorithm_type : str
        SegmentAlgorithmType (``"AUTOMATIC"``, ``"SEMIAUTOMATIC"``, ``"MANUAL"``) or the
        ROIGenerationAlgorithm.

    Examples
    --------
    >>> Segment(1, 5, "liver").label
    'liver'
    """

    number: int
    value: int
    label: str
    description: str = ""
    property_type: str = ""
    category: str = ""
    algorithm_type: str = ""


@dataclass
class DicomLabels:
    """A label map read from a DICOM SEG or RT Structure Set, with its grid and segments.

    Attributes
    ----------
    labels : ndarray
        (Z, Y, X) uint8 labels (uint16 above 255), 0 = background; (S, Z, Y, X) uint8
        0/1 channels, one per segment, with ``overlap="channels"``.
    geometry : Geometry
        The grid's spacing, origin and direction, (z, y, x) world LPS mm.
    segments : tuple of Segment
        The segments (ROIs) in label order.
    source : str
        The file read.
    info : dict
        JSON-friendly facts: ``format``, ``reader``, ``warnings`` (list of str) and what the
        reader found (segmentation type, frames, referenced series ...).

    Examples
    --------
    >>> import numpy as np
    >>> d = DicomLabels(np.zeros((1, 2, 2), np.uint8), Geometry((1, 1, 1)), (Segment(1, 1, "a"),))
    >>> d.names, d.warnings
    (('a',), [])
    """

    labels: NDArray[Any]
    geometry: Geometry
    segments: tuple[Segment, ...]
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """The segments' labels (names), in label order."""
        return tuple(s.label for s in self.segments)

    @property
    def warnings(self) -> list[str]:
        """What the reader decided on its own (``info["warnings"]``)."""
        return list(self.info.get("warnings", []))


# -- reading DICOM files ---------------------------------------------------------------------


def _sop_class(ds: Dataset) -> str:
    """Return the SOPClassUID, from the file meta when the dataset's own is empty."""
    sop = str(ds.get("SOPClassUID", "") or "").strip()
    if not sop and hasattr(ds, "file_meta"):
        sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
    return sop


def _kind_of(ds: Dataset) -> str | None:
    """Return ``"seg"``, ``"rtstruct"`` or None (another DICOM object)."""
    sop = _sop_class(ds)
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if sop in (SEGMENTATION_STORAGE, LABEL_MAP_SEG_STORAGE) or modality == "SEG":
        return "seg"
    if sop == RT_STRUCTURE_SET_STORAGE or modality == "RTSTRUCT":
        return "rtstruct"
    return None


def _what(ds: Dataset) -> str:
    """Describe a DICOM object for messages: its SOP class name and Modality."""
    from pydicom.uid import UID

    sop = _sop_class(ds)
    name = UID(sop).name if sop else "unknown SOP class"
    modality = str(ds.get("Modality", "") or "").strip() or "none"
    return f"a DICOM {name} file (Modality {modality})"


def _read_dataset(path: Any, where: str, *, header_only: bool = False) -> tuple[Path, Dataset]:
    """Parse a DICOM file with pydicom; refuse what is not one (typed errors naming it)."""
    import pydicom

    p = as_source_path(path, where)
    fh, _ = open_regular(p, "DICOM file")
    with fh:
        head = fh.read(132)
        if head[128:132] != b"DICM":
            raise UnsupportedFormatError(
                f"{where}: {p}: not a DICOM file (no 'DICM' preamble); a DICOM SEG or RT "
                "Structure Set file is expected"
            )
        fh.seek(0)
        try:
            ds = pydicom.dcmread(fh, stop_before_pixels=header_only)
        except Exception as exc:  # pydicom raises many types for broken files
            raise CorruptFileError(
                f"{where}: {p}: cannot parse the DICOM file ({type(exc).__name__}: {exc})"[:600]
            ) from exc
    return p, ds


def _expect(p: Path, ds: Dataset, kind: str, where: str) -> None:
    """Refuse a DICOM object that is not of ``kind`` ("seg" or "rtstruct")."""
    if _kind_of(ds) != kind:
        wanted = "a DICOM SEG (Segmentation Storage)" if kind == "seg" else "an RT Structure Set"
        raise UnsupportedFormatError(f"{where}: {p}: {_what(ds)}, not {wanted}")


def dicom_label_kind(path: str | os.PathLike[str]) -> str | None:
    """Tell whether a label file is a DICOM SEG, an RT Structure Set, or no DICOM file at all.

    Parameters
    ----------
    path : path
        The label file (a folder is never a DICOM label file).

    Returns
    -------
    {"seg", "rtstruct"} or None
        None when ``path`` is a folder or a file without the DICOM ``DICM`` preamble.

    Raises
    ------
    UnsupportedFormatError
        A DICOM file that is neither a SEG nor an RTSTRUCT (a CT slice ...): DICOM labels must
        be one of those (the message names the file and what it is).
    CorruptFileError
        A DICOM file whose header cannot be parsed.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> dicom_label_kind(get_testdata_file("CT_small.dcm"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.UnsupportedFormatError: ...CT_small.dcm: a DICOM CT Image Storage file ...
    """
    p = as_source_path(path, "dicom_label_kind")
    if p.is_dir():
        return None
    fh, _ = open_regular(p, "label file")
    with fh:
        if fh.read(132)[128:132] != b"DICM":
            return None
    p, ds = _read_dataset(p, "dicom_label_kind", header_only=True)
    kind = _kind_of(ds)
    if kind is None:
        raise UnsupportedFormatError(
            f"{p}: {_what(ds)}, not a DICOM SEG or RT Structure Set; DICOM label files must be "
            "one of those (a DICOM image series is read per folder, as images)"
        )
    return kind
