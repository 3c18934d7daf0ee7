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

ITK reads whatever files a MetaImage or NRRD header names (one data file, a ``LIST`` of slice
files or a ``%d`` pattern), so those names are checked first as the native readers check theirs:
each must resolve inside the header's folder unless ``allow_external_data=True``. A FIFO, socket
or device is refused before ITK opens it (it would block), as are paths with a NUL byte or an
over-long name. A name with a ``%`` that is not one integer conversion followed by
``min max step`` is always refused: ITK formats it with C's ``sprintf`` and crashes on
``%s``, ``%n`` or a missing step.

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
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.errors import CorruptFileError, CTFlowError, InvalidScanError, UnsupportedFormatError
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.files import _not_regular
from ctflow.io.scan import Scan
from ctflow.io.voxels import (
    HEADER_MAX_BYTES,
    MAX_VOXELS_BYTES,
    as_source_path,
    check_data_file,
    check_finite,
    open_regular,
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
        Let a MetaImage or NRRD header name data files outside its folder (see the module
        notes); by default such a header is refused before ITK reads anything.

    Returns
    -------
    Scan
        Voxels (int16 / float32) and geometry exactly as SimpleITK reports them.

    Raises
    ------
    CorruptFileError
        Missing path, a FIFO/socket/device, or ITK cannot read it (ITK's message is included).
    InvalidParameterError
        ``path`` cannot name a file (NUL byte, over-long name), or ``allow_external_data`` is
        not a bool.
    InvalidScanError
        Not 3-D single-channel, NaN/Inf voxels, a volume over ``MAX_VOXELS_BYTES``.
    UnsupportedFormatError
        A header names data files outside its folder (without ``allow_external_data``).
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
    if not stat.S_ISDIR(mode):
        _check_named_files(p, allow_external_data)
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


_NRRD_MAGIC = re.compile(r"NRRD000[1-9]")
_MAX_PATTERN_FILES = 100_000
#: A file pattern C's sprintf formats safely with one int: one integer conversion, no other %.
_SAFE_PATTERN = re.compile(r"[^%]*%[-+ 0#]*[0-9]{0,3}[di][^%]*")


def _header_lines(p: Path) -> list[str]:
    """Return the text lines at the start of a file (empty when it cannot be read)."""
    try:
        fh, _ = open_regular(p, "image file")
        with fh:
            head = fh.read(HEADER_MAX_BYTES)
    except (CTFlowError, OSError):
        return []
    return [line.rstrip("\r") for line in head.decode("latin-1").split("\n")]


def _named_data_files(p: Path, allow_external_data: bool) -> tuple[str, str, list[str]]:
    """Return the field, its value and the data files a MetaImage or NRRD header names.

    Nothing (``("", "", [])``) for other files and for data in the file itself. The names come
    as written (relative to the header's folder unless absolute): one file, every file of a
    ``LIST`` (the lines after the field) or every file of a ``%d`` pattern ``fmt min max step``.

    Raises
    ------
    UnsupportedFormatError
        A file pattern ITK cannot format safely, or one naming more than 100000 files (unless
        ``allow_external_data``: then its files are not checked).
    """
    lines = _header_lines(p)
    if not lines:
        return "", "", []
    field, value, rest = "", "", []
    if _NRRD_MAGIC.fullmatch(lines[0].strip()):
        for i, line in enumerate(lines[1:], 1):
            if not line.strip():
                break
            name, sep, val = line.partition(":")
            if sep and name.strip().lower().replace(" ", "").replace("_", "") == "datafile":
                field, value, rest = "data file:", val.strip(), lines[i + 1 :]
                break
        rest = [r.strip() for r in rest]
        if value.upper().startswith("LIST"):
            # the file names follow, one a line, to the end of the header
            rest = rest[: rest.index("")] if "" in rest else rest
    else:
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            key, sep, val = line.partition("=")
            if not sep:
                break
            if key.strip().lower() == "elementdatafile":
                field, value, rest = "ElementDataFile =", val.strip(), lines[i + 1 :]
                break
        rest = [r.strip() for r in rest if r.strip()]
    if not field or not value or value.upper() == "LOCAL":
        return "", "", []
    if value.upper().startswith("LIST"):
        return field, value, rest
    if "%" not in value:
        return field, value, [value]
    return field, value, _pattern_files(p, field, value, allow_external_data)


def _pattern_files(p: Path, field: str, value: str, allow_external_data: bool) -> list[str]:
    """Return the files of a ``fmt min max step [subdim]`` pattern, or refuse it.

    ITK formats these patterns with C's ``sprintf`` and an int: anything but one integer
    conversion (``%d``, ``%03d`` ...) followed by three integers, the step not 0, crashes it or
    worse (``%s``, ``%n``, a missing step), so such patterns are refused whatever
    ``allow_external_data`` says.
    """
    words = value.split()
    counts = (4,) if field.startswith("ElementDataFile") else (4, 5)
    try:
        if len(words) not in counts or not _SAFE_PATTERN.fullmatch(words[0]):
            raise ValueError("not one integer conversion followed by min max step")
        lo, hi, step = (int(w) for w in words[1:4])
        if step == 0:
            raise ValueError("step 0")
    except ValueError as exc:
        raise UnsupportedFormatError(
            f"{p}: '{field} {value}' is not a file pattern SimpleITK can read safely ({exc}): "
            "ITK formats it with C's sprintf, so only one integer conversion such as %03d, "
            "followed by min max step, is accepted (anything else may crash the process)"
        ) from None
    indices = range(lo, hi + (1 if step > 0 else -1), step)
    if len(indices) > _MAX_PATTERN_FILES:
        if allow_external_data:
            return []
        raise UnsupportedFormatError(
            f"{p}: '{field} {value}' names {len(indices)} files, too many to check; pass "
            "allow_external_data=True to let SimpleITK read them unchecked"
        )
    return [words[0] % i for i in indices]


def _check_named_files(p: Path, allow_external_data: bool) -> None:
    """Refuse what a MetaImage or NRRD header names that ITK must not read.

    That is data files outside the header's folder (unless allowed) and FIFOs, sockets, devices
    or folders (ITK would block on a FIFO).
    """
    field, value, names = _named_data_files(p, allow_external_data)
    for name in names:
        data_path = Path(name)
        if not data_path.is_absolute():
            data_path = p.parent / data_path
        line = f"{field} {value}" if len(names) == 1 else f"{field} {value} ... {name}"
        check_data_file(p, data_path, line, allow_external_data)
        try:
            special = _not_regular(os.stat(data_path).st_mode)
        except (OSError, ValueError):
            continue  # missing: ITK says so
        if special is not None:
            raise CorruptFileError(
                f"{p}: its data file {data_path} ({field.rstrip(' =:')}) is {special}, not a "
                "data file; ctflow reads regular files only"
            )
