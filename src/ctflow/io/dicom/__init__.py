"""Native DICOM CT series reader (pydicom): one folder of slices -> one int16 HU volume.

:func:`read_dicom_series` reads a folder of classic single-frame CT slices into a
:class:`~ctflow.io.scan.Scan`; :func:`scan_dicom_folder` only lists what a folder holds.
The geometry equals SimpleITK's ``ImageSeriesReader`` (GDCM) geometry for the same files.

The code lives in :mod:`~ctflow.io.dicom.quick` (the fast header pass),
:mod:`~ctflow.io.dicom.headers` (one file's header through pydicom),
:mod:`~ctflow.io.dicom.folder` (listing and grouping a folder),
:mod:`~ctflow.io.dicom.series` (series choice, checks, slice order and spacing),
:mod:`~ctflow.io.dicom.pixels` (pixel decoding, padding, rescale, resampling) and
:mod:`~ctflow.io.dicom.reader` (:func:`read_dicom_series`, which puts them together).
Label objects: :mod:`~ctflow.io.dicom.seg` reads DICOM SEG files (:func:`read_dicom_seg`) and
writes them (:func:`write_dicom_seg`, with highdicom: ``pip install 'ctflow[seg]'``);
:mod:`~ctflow.io.dicom.rtstruct` rasterises RT Structure Sets (:func:`read_rtstruct`); the code
lives in :mod:`~ctflow.io.dicom.label_objects`, :mod:`~ctflow.io.dicom.label_canvas` (shared by
both), :mod:`~ctflow.io.dicom.seg_headers`, :mod:`~ctflow.io.dicom.seg_grid`,
:mod:`~ctflow.io.dicom.seg_read` and :mod:`~ctflow.io.dicom.seg_write`.

Rules
-----
Folder
    A path with a NUL byte or an over-long name (:func:`~ctflow.validation.check_path_text`),
    or a path to a file (or a FIFO ...) -> :class:`~ctflow.errors.InvalidParameterError`;
    nothing there, a broken symbolic link, or a folder that cannot be listed ->
    :class:`~ctflow.errors.CorruptFileError`. All name the path.
Files
    Every entry directly in the folder is looked at with ``stat`` first (sub-folders are not
    entered). Anything that is not a regular file (FIFO, socket, device, also behind a
    symbolic link) is skipped without ever being opened, and so is a broken symbolic link
    (but see *Damaged files*). Every regular file (any name, with or without ``.dcm``) is
    first read by the fast header pass (:mod:`~ctflow.io.dicom.quick`: the values below,
    straight from the first bytes, for plain explicit / implicit VR little-endian files);
    anything it does not handle plainly is parsed by pydicom up to its PixelData, within
    bounds: values over 64 KiB are seeked over,
    not read, and a parse stops (the file is *damaged*) past 50 000 reads, 32 MiB read,
    20 000 top-level elements, a value running past the end of the file, or a deflated
    dataset inflating beyond 64 MiB -- so that no file, however big or hostile, costs more
    than a second or two and a few MB to look at. Files that are not DICOM Part-10 files (no
    ``DICM`` prefix at byte 128), ``DICOMDIR`` files and DICOM objects without an image (no
    Rows/Columns and a SOP class that is not an image storage class: reports, structured
    reports ...) are skipped. Every skipped file is listed in ``info["skipped"]`` with the
    reason. No readable DICOM image at all -> :class:`~ctflow.errors.CorruptFileError`
    ("no DICOM files").
Damaged files
    A ``DICM`` file is *damaged* when pydicom cannot parse its header, when the parse stops on
    a bound above, or when it claims to be an image (an "... Image Storage" SOP class, or no
    SOP class at all) but has no Rows/Columns (a file cut before its pixel data). Once the
    series to read is chosen (below), a file that could not be read as an image is a
    :class:`~ctflow.errors.CorruptFileError` naming it -- never a skipped file, never a "gap",
    also with ``allow_uneven=True`` -- when it is, or may be, one of that series' slices:

    1. a damaged DICOM file whose header holds, whole, that series' SeriesInstanceUID, or
       whose header is cut or garbled before a whole SeriesInstanceUID (its series cannot be
       told, so it may be ours); or
    2. a file without the ``DICM`` prefix, a broken symbolic link or a file that cannot be
       opened, whose name with every run of digits replaced by ``#`` is that of a file of the
       series (``slice0007.dcm`` ~ ``slice#.dcm``), or whose size lies within 2 % of the
       median size of the series' files when all of those lie within 2 % of it (uncompressed
       slices; a zeroed or garbled copy keeps its size).

    Never taken as a slice (skipped and reported): special files, files named ``DICOMDIR``,
    whole DICOM headers that are not images, damaged files whose header names another series
    (their reason names it), and files whose first bytes show another format (JPEG, PNG, GIF,
    PDF, ZIP, gzip, TIFF) or plain text (no control character in the first 132 bytes). A
    slice whose header reads but whose pixel data is cut, longer than the file, or
    undecodable is a CorruptFileError naming it when its pixels are read (the files of other
    series are never read).
Series choice
    Files are grouped by SeriesInstanceUID (an empty or missing UID is the series ``""``).
    A series is CT when its Modality is ``CT`` (or Modality is empty and the SOP class is a
    CT image storage class). Localizer files (ImageType contains ``LOCALIZER``) are always
    skipped. Among the remaining CT series the one with the most slices is read; ties go to
    the smallest SliceThickness, then to the smallest UID (string order). ``series_uid=``
    overrides the choice. When another CT series could have been read, ``info["warnings"]``
    says so (naming it). ``info["series"]`` lists every series found (with ``chosen``
    True/False), and ``info["skipped"]`` lists EVERY file of the folder that was not read, with
    its reason: not DICOM / unreadable / DICOMDIR / no image, localizer, scout (a single-slice
    series whose orientation differs from the chosen one), multi-frame, or "another series".
    A folder with no CT series -> :class:`~ctflow.errors.InvalidScanError` ("not a CT series
    (Modality MR)").
Multi-frame
    Enhanced / legacy-converted multi-frame CT (SOP class 1.2.840.10008.5.1.4.1.1.2.1 or .2.2,
    or NumberOfFrames > 1) is refused with :class:`~ctflow.errors.UnsupportedFormatError`:
    its geometry lives in per-frame functional groups, which this reader does not parse, and
    such files are often derived maps that are not HU (the real perfusion map in the test data
    is uint16 blood flow without a rescale). Beside classic slices it is skipped and reported.
Slice order and spacing
    Slices are sorted by ImagePositionPatient projected on the slice normal
    ``n = row_cosine x column_cosine`` (never by file name or InstanceNumber). The z spacing
    is the median step between sorted positions, NOT SliceThickness. Errors
    (:class:`~ctflow.errors.InvalidScanError`, naming the files): two slices at the same
    position (steps < 0.01 mm); missing slices (a step > 1.5 x the median step); uneven
    spacing (``|step - median| > max(0.01 mm, 1 % of the median)``); slice origins drifting
    off the normal line by more than a tenth of a pixel (gantry tilt / sheared stack, which
    an orthogonal :class:`~ctflow.geometry.Geometry` cannot represent). With
    ``allow_uneven=True`` (explained in ``info["warnings"]``): missing slices and uneven
    spacing are RESAMPLED onto a regular grid with the median step, starting at the first
    slice and stopping at the last (linear interpolation between the two nearest slices
    along the normal, rounded to int16 HU; ``info["resampled"]`` gives the slice counts), so
    every voxel keeps its true world position; drifting origins are read as an orthogonal
    grid (approximate: the drift is ignored). A single slice takes its z spacing from
    SpacingBetweenSlices (as GDCM), else SliceThickness (GDCM would say 1 mm), else 1 mm.
    Mixed Rows/Columns, mixed ImageOrientationPatient, mixed PixelSpacing, missing geometry
    tags, non-positive PixelSpacing and degenerate orientation cosines are InvalidScanError.
Geometry, in ctflow's (z, y, x) convention (``world = origin + direction @ (spacing * v)``)
    voxel axis x (columns) runs along the row cosine ``IOP[0:3]``, voxel axis y (rows) along
    the column cosine ``IOP[3:6]``, voxel axis z along ``n``; origin is the
    ImagePositionPatient of the first sorted slice; spacing is (median step, PixelSpacing[0]
    (between rows), PixelSpacing[1] (between columns)). All vectors are reversed to (z, y, x).
Pixels
    Slices are read on the reader's threads (the batch's share of the cores). Uncompressed
    explicit / implicit VR little-endian slices are read straight from the file: the header
    pass records where the PixelData value starts, and the bytes go into a per-thread buffer
    with ``readinto`` (GIL released; no second parse), rescaled into the volume by a numba
    kernel. Unused high bits are masked / sign-extended exactly as pydicom does. Every other
    transfer syntax (deflated, big endian, JPEG 2000, JPEG lossless, JPEG-LS, RLE) goes
    through ``Dataset.pixel_array`` (pylibjpeg / openjpeg / libjpeg / RLE plugins). Those
    decoders hold the GIL, so compressed series are decoded on one thread; use processes
    (e.g. the Dask engine) for DICOM-heavy datasets. When several slices fail, the error
    names the first in slice order. MONOCHROME1 slices are taken
    as stored (the rescale gives HU either way); colour images are refused.
Padding and rescale
    Stored voxels equal to PixelPaddingValue (or within [PixelPaddingValue,
    PixelPaddingRangeLimit]) become -1000 HU (air); their count is ``info["padding_voxels"]``.
    Each slice gets its OWN RescaleSlope / RescaleIntercept (defaults 1 / 0). The volume is
    int16 HU when every slope and intercept is an integer and all HU fit in int16; otherwise
    float32 (computed in float64 per slice, then rounded once). A header claiming more int16
    voxel bytes than :data:`~ctflow.io.voxels.MAX_VOXELS_BYTES` (4 GiB; read at call time) is
    refused before anything is allocated.

Every error is a ctflow error (:mod:`ctflow.errors`) that names the folder or file.

Examples
--------
>>> import shutil, tempfile
>>> from pydicom.data import get_testdata_file
>>> folder = tempfile.mkdtemp()
>>> _ = shutil.copy(get_testdata_file("CT_small.dcm"), folder)
>>> scan = read_dicom_series(folder)
>>> scan.shape, scan.images.dtype.name, scan.geometry.spacing.round(4).tolist()
((1, 128, 128), 'int16', [5.0, 0.6615, 0.6615])
"""

from ctflow.io.dicom.folder import SeriesInfo, SeriesList, scan_dicom_folder
from ctflow.io.dicom.headers import CT_IMAGE_STORAGE as CT_IMAGE_STORAGE
from ctflow.io.dicom.headers import ENHANCED_CT_IMAGE_STORAGE as ENHANCED_CT_IMAGE_STORAGE
from ctflow.io.dicom.headers import (
    LEGACY_ENHANCED_CT_IMAGE_STORAGE as LEGACY_ENHANCED_CT_IMAGE_STORAGE,
)
from ctflow.io.dicom.reader import read_dicom_series
from ctflow.io.dicom.rtstruct import rasterize_contours, read_rtstruct
from ctflow.io.dicom.seg import DicomLabels, Segment, read_dicom_seg, write_dicom_seg

__all__ = [
    "DicomLabels",
    "Segment",
    "SeriesInfo",
    "SeriesList",
    "rasterize_contours",
    "read_dicom_seg",
    "read_dicom_series",
    "read_rtstruct",
    "scan_dicom_folder",
    "write_dicom_seg",
]
