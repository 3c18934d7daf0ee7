"""DICOM Segmentation (SEG) objects: read them into label maps, write label maps as SEG.

:func:`read_dicom_seg` reads a SEG with pydicom alone; :func:`write_dicom_seg` writes one with
highdicom (``pip install 'ctflow[seg]'``). :func:`dicom_label_kind` tells a SEG or an RT
Structure Set (:mod:`ctflow.io.dicom.rtstruct`) from other files, for ``load``'s label files.

The code lives in :mod:`~ctflow.io.dicom.label_objects` (SOP classes, :class:`Segment`,
:class:`DicomLabels`, :func:`dicom_label_kind`), :mod:`~ctflow.io.dicom.label_canvas` (the
label map drawn plane by plane, :data:`OVERLAP`), :mod:`~ctflow.io.dicom.seg_headers` (segments
and frame positions), :mod:`~ctflow.io.dicom.seg_grid` (the grids), :mod:`~ctflow.io.dicom.seg_read`
(:func:`read_dicom_seg`) and :mod:`~ctflow.io.dicom.seg_write` (:func:`write_dicom_seg`).

Rules
-----
What is read
    A DICOM file whose SOP class is Segmentation Storage (``1.2.840.10008.5.1.4.1.1.66.4``)
    or Label Map Segmentation Storage (``...66.7``), or whose Modality is ``SEG``. Any other
    DICOM object -> :class:`~ctflow.errors.UnsupportedFormatError` naming the file and what
    it is; a file that is not DICOM -> the same; a file pydicom cannot parse or whose frames
    contradict the header -> :class:`~ctflow.errors.CorruptFileError`.
Segments
    Every item of the SegmentSequence is a :class:`Segment`: its number, label, description,
    segmented property category / type (code meanings) and algorithm type. In the label map a
    segment's voxels hold its *value*: the segment number, except in a SEG written by
    :func:`write_dicom_seg`, whose segment descriptions (``"ctflow label value 5"``) give
    back the label values it was written from. A label map is uint8, uint16 above 255.
Frames
    Each frame is one plane of one segment (BINARY, FRACTIONAL) or of all segments
    (LABELMAP: pixel values are segment numbers, 0 is background). Its place comes from the
    per-frame (else shared) functional groups: Plane Position (ImagePositionPatient), Plane
    Orientation (ImageOrientationPatient), Pixel Measures (PixelSpacing,
    SpacingBetweenSlices, SliceThickness) and, for BINARY / FRACTIONAL, Segment
    Identification (ReferencedSegmentNumber); Derivation Image references are not needed.
    Frames may come in any order and may be sparse (only the planes with content, as
    highdicom writes by default): they are placed by ImagePositionPatient, never by their
    index. A FRACTIONAL frame marks a voxel where ``value >= 0.5 * MaximumFractionalValue``.
    All frames must share one orientation and pixel spacing
    (:class:`~ctflow.errors.InvalidScanError` otherwise).
The grid
    With ``reference`` (a DICOM series folder, a :class:`~ctflow.io.scan.Scan` or a
    ``(Geometry, shape)`` pair) the labels come on the reference grid: when the frames' rows
    and columns run along the grid's x and y axes with its pixel spacing, every frame is put
    on the voxels it covers (its position must be a voxel centre of the grid within 0.1
    voxel, and its content must lie inside the grid); when the frames are another plane of
    the grid (an axis permutation or flip, or another pixel spacing) they are read on their
    own grid and put on the reference with nearest neighbour
    (:func:`~ctflow.labels.labels_on_grid`). Frames oblique to the grid ->
    :class:`~ctflow.errors.InvalidScanError` ("orientation"): a SEG is drawn on the planes of
    the images it segments. Without ``reference`` the grid spans the frames' extent: the
    slice step is SpacingBetweenSlices when the frames lie on multiples of it, else the
    largest step of which every gap between frame positions is a multiple (then, when frames
    were skipped, ``info["warnings"]`` says that the step was inferred). A sparse SEG alone
    cannot tell the grid of its whole series (it holds no position of the images without
    content): pass ``reference`` for it (``load`` passes the scan). The geometry follows
    ctflow's DICOM series reader (and SimpleITK): x along the row cosine, y along the column
    cosine, z along their cross product, origin at the first plane.
Overlapping segments
    A label map holds one label per voxel. ``overlap="error"`` (the default) refuses
    segments that share a voxel (:class:`~ctflow.errors.InvalidScanError` naming the file,
    both segments and a voxel); ``"first"`` keeps the segment that comes first (lowest
    segment number), ``"last"`` the one that comes last, whatever the frame order;
    ``"channels"`` returns one binary uint8 channel per segment, (S, Z, Y, X).

Writing
    :func:`write_dicom_seg` writes a label map on the grid of a DICOM series (as ctflow reads
    it) as a SEG referencing the series' SOP instances: one segment per label value present
    (in increasing order), a BINARY SEG by default (segment numbers 1..K, the label value in
    each segment's description) or a LABELMAP SEG (segment number = label value), algorithm
    "ctflow" (family Artificial Intelligence), manufacturer "ctflow", the software version
    ctflow's.

Examples
--------
>>> import tempfile, numpy as np
>>> from ctflow.geometry import Geometry
>>> from ctflow.io.dicom_writer import write_dicom_series
>>> folder = tempfile.mkdtemp()
>>> _ = write_dicom_series(folder, np.zeros((3, 4, 5), np.int16), Geometry((2.0, 0.5, 0.5)))
>>> labels = np.zeros((3, 4, 5), np.uint8)
>>> labels[1, 1:3, 2:4] = 7
>>> seg = write_dicom_seg(f"{tempfile.mkdtemp()}/seg.dcm", labels, folder, ["tumour"])
>>> back = read_dicom_seg(seg, reference=folder)
>>> bool((back.labels == labels).all()), back.names, back.segments[0].value
(True, ('tumour',), 7)
"""

from ctflow.io.dicom.label_canvas import OVERLAP
from ctflow.io.dicom.label_objects import (
    LABEL_MAP_SEG_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
    SEGMENTATION_STORAGE,
    DicomLabels,
    Segment,
    dicom_label_kind,
)
from ctflow.io.dicom.seg_read import read_dicom_seg
from ctflow.io.dicom.seg_write import write_dicom_seg

__all__ = [
    "LABEL_MAP_SEG_STORAGE",
    "OVERLAP",
    "RT_STRUCTURE_SET_STORAGE",
    "SEGMENTATION_STORAGE",
    "DicomLabels",
    "Segment",
    "dicom_label_kind",
    "read_dicom_seg",
    "write_dicom_seg",
]
