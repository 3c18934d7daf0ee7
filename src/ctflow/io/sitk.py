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

ITK reads whatever files a header names (MetaImage ``ElementDataFile``, NRRD ``data file``,
Stimulate ``stimFileName``: one data file, a ``LIST`` of slice files or a ``%d`` pattern) and
the files it pairs with some names (``a.hdr`` + ``a.img`` or ``a.img.gz``, MetaIO's ``.gz`` /
``.Z`` fallbacks, ``a.spr`` + ``a.sdt``), so those files are found first, as ITK's readers find
them, and checked as the native readers check theirs: each must resolve inside the header's
folder unless ``allow_external_data=True``. A header line ctflow cannot read as ITK would (a
MetaImage line that is neither ``Key = Value`` nor ``Key : Value``, control characters, no
``ElementDataFile`` line, a header too long to check ...) is refused too unless
``allow_external_data=True``: ctflow must know every file ITK may open. A FIFO, socket or device
is refused before ITK opens it (it would block), as are paths with a NUL byte or an over-long
name. A name with a ``%`` that is not one integer conversion followed by ``min max step`` is
always refused: ITK formats it with C's ``sprintf`` and crashes on ``%s``, ``%n`` or a missing
step.

A DICOM folder is listed by ctflow first (:mod:`ctflow.io.dicom`: special files are never
opened); GDCM picks the series (the first it finds) and orders its slices. A damaged file that
is, or may be, one of that series' slices (ctflow's rules), or a slice GDCM leaves out, is a
``CorruptFileError`` naming it -- never a silently shorter volume. ``info["files"]`` lists the
slices read and ``info["skipped"]`` the folder's other files.

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
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.errors import CorruptFileError, InvalidScanError
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.files import _not_regular
from ctflow.io.scan import Scan
from ctflow.io.sitk_files import _check_named_files
from ctflow.io.voxels import (
    as_source_path,
    check_finite,
    max_voxels_bytes,
)
from ctflow.io.voxels import to_ct_dtype as _to_ct_dtype
from ctflow.validation import as_bool

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


def read_with_sitk(
    path: str | os.PathLike[str], kind: str = "sitk", *, allow_external_data: bool = False
) -> Scan:
    """Read a file (``sitk.ReadImage``) or a DICOM folder (GDCM series) with SimpleITK.

    Parameters
    ----------
    path : path
        An image file ITK can read, or a folder of DICOM slices.
    kind : str
        Recorded in ``info["format"]`` (default ``"sitk"``).
    allow_external_data : bool, default False
        Let a header name data files outside its folder, and read headers whose data files
        ctflow cannot tell (see the module notes); by default such a header is refused before
        ITK reads anything.

    Returns
    -------
    Scan
        Voxels (int16 / float32) and geometry exactly as SimpleITK reports them.

    Raises
    ------
    CorruptFileError
        Missing path, a FIFO/socket/device, or ITK cannot read it (ITK's message is included);
        in a DICOM folder, a damaged file that is (or may be) a slice of the series read, or a
        slice GDCM leaves out (the message names it).
    InvalidParameterError
        ``path`` cannot name a file (NUL byte, over-long name), or ``allow_external_data`` is
        not a bool.
    InvalidScanError
        Not 3-D single-channel, NaN/Inf voxels, a volume over ``MAX_VOXELS_BYTES``.
    UnsupportedFormatError
        A header names data files outside its folder, or ctflow cannot tell which files it
        names (without ``allow_external_data``).
    """
    from ctflow.deps import optional_import

    sitk = optional_import("SimpleITK", "read_with_sitk (load(fmt='sitk'))")
    p = as_source_path(path, "read_with_sitk")
    as_bool(allow_external_data, "allow_external_data", "read_with_sitk")
    source = str(p)
    try:
        mode = os.stat(p).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise CorruptFileError(f"{source}: no such file or folder") from None
    except OSError as exc:
        raise CorruptFileError(f"{source}: cannot be read ({exc})") from None
    special = None if stat.S_ISDIR(mode) else _not_regular(mode)
    if special is not None:
        raise CorruptFileError(
            f"{source}: is {special}, not an image file or folder; ctflow reads regular files "
            "and folders only"
        )
    folder = stat.S_ISDIR(mode)
    if not folder:
        _check_named_files(p, allow_external_data)
    listing: dict[str, Any] = {}
    try:
        if folder:
            files, skipped = _gdcm_series(sitk, p)
            listing = {"files": files, "skipped": skipped}
            reader: Any = sitk.ImageFileReader()
            reader.SetFileName(files[0])
            reader.ReadImageInformation()
            size = (*reader.GetSize()[:2], len(files))
            dims, channels = 3, reader.GetNumberOfComponents()
            itemsize = 8
            _check_size(source, size, dims, channels, itemsize)
            series = sitk.ImageSeriesReader()
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
    info: dict[str, Any] = {
        "format": kind,
        "reader": "SimpleITK",
        "pixel_type": image.GetPixelIDTypeAsString(),
    }
    info.update(listing)
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
    limit = max_voxels_bytes()
    if n_bytes > limit:
        raise InvalidScanError(
            f"{source}: header claims {' x '.join(map(str, size))} voxels = {n_bytes} bytes; "
            f"refusing volumes larger than MAX_VOXELS_BYTES = {limit}"
        )


def _gdcm_series(sitk: Any, p: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Return the files of the series GDCM reads in ``p`` and the folder's other files, with why.

    The files come in GDCM's order; a series that would lose a slice is refused.

    The folder is first listed by ctflow (:mod:`ctflow.io.dicom`: every entry is looked at with
    ``stat``, FIFOs, sockets and devices are never opened). GDCM then picks the series (the
    first it finds) and orders its files; when the folder holds special files or broken links
    (GDCM finds no series at all then, and would block on a FIFO), GDCM lists a scratch folder
    of links to the regular files instead.

    Raises
    ------
    CorruptFileError
        No series; a damaged file that is, or may be, a slice of the series GDCM reads (the
        rules of :mod:`ctflow.io.dicom`); a file whose header names that series but which GDCM
        leaves out (GDCM silently drops slices it cannot read).
    """
    from ctflow.io.dicom.folder import _scan
    from ctflow.io.dicom.series import _refuse_damaged

    groups, unread = _scan(p)
    headers = {h.path.name: h for hs in groups.values() for h in hs}
    series = sitk.ImageSeriesReader()
    if any(u.special or u.size is None for u in unread):
        regular = [*headers, *(u.path.name for u in unread if not u.special and u.size is not None)]
        with tempfile.TemporaryDirectory(prefix="ctflow-gdcm-") as farm:
            for name in regular:
                os.symlink(os.path.abspath(p / name), os.path.join(farm, name))
            ids, names = _gdcm_list(series, farm)
    else:
        ids, names = _gdcm_list(series, str(p))
    if not names:
        raise CorruptFileError(f"{p}: no DICOM series found in the folder")
    chosen = set(names)
    uids = sorted({headers[n].series_uid for n in names if n in headers})
    slices = [headers[n] for n in names if n in headers]
    rest = [u for u in unread if u.path.name not in chosen]
    for uid in uids or ids[:1]:
        _refuse_damaged(uid, slices, rest)  # as ctflow.io.dicom does
    for uid in uids:
        for h in groups[uid]:
            if h.path.name not in chosen:
                raise CorruptFileError(
                    f"{h.path}: its header names the series {uid or '(no SeriesInstanceUID)'} "
                    "that SimpleITK reads, but GDCM leaves it out of the volume (it cannot read "
                    "the file: cut or damaged pixel data?), so the series cannot be read whole "
                    "(repair or remove the file; read_scan(folder) without fmt='sitk' says more)"
                )
    skipped = [u.as_dict() for u in rest] + [
        {
            "file": str(h.path),
            "reason": f"another series ({h.series_uid or 'no SeriesInstanceUID'}); SimpleITK "
            "reads the first series GDCM finds",
        }
        for h in headers.values()
        if h.path.name not in chosen
    ]
    return [str(p / n) for n in names], skipped


def _gdcm_list(series: Any, folder: str) -> tuple[list[str], list[str]]:
    """Return GDCM's series ids for a folder and the file names of the first, in its order."""
    ids = list(series.GetGDCMSeriesIDs(folder))
    if not ids:
        return [], []
    return ids, [os.path.basename(f) for f in series.GetGDCMSeriesFileNames(folder, ids[0])]
