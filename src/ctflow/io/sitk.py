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
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.errors import CorruptFileError, CTFlowError, InvalidScanError, UnsupportedFormatError
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.files import _not_regular
from ctflow.io.scan import Scan
from ctflow.io.voxels import (
    HEADER_MAX_BYTES,
    as_source_path,
    check_data_file,
    check_finite,
    max_voxels_bytes,
    read_header_bytes,
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


_MAX_PATTERN_FILES = 100_000
#: A file pattern C's sprintf formats safely with one int: one integer conversion, no other %.
_SAFE_PATTERN = re.compile(r"[^%]*%[-+ 0#]*[0-9]{0,3}[di][^%]*")
#: Control characters (all but tab): no text header line holds them.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: MetaIO reads a value with ``getline(value, 500)``: a longer one is cut.
_METAIO_VALUE_MAX = 498
#: The ``ElementDataFile`` values MetaIO takes for "the voxels follow the header" (exactly).
_METAIO_LOCAL = ("Local", "LOCAL", "local")
#: Stimulate's ``getline(line, 255)``: a longer line is cut and ends the header.
_STIMULATE_LINE_MAX = 254
#: NIfTI-1 / Analyze names: nifti_io pairs a header with an image file of the same base name.
_NIFTI_NAME = re.compile(r"\.(nii|hdr|img)(\.gz)?$|\.nia$", re.IGNORECASE)

_Named = tuple[str, Path]  # (how the header names a file, for messages; the path ITK opens)


def _undetermined(p: Path, why: str, allow_external_data: bool) -> None:
    """Refuse a header whose data files ctflow cannot tell (unless ``allow_external_data``)."""
    if allow_external_data:
        return
    raise UnsupportedFormatError(
        f"{p}: {why}, so ctflow cannot tell which files SimpleITK would read for it (resolved "
        f"header {os.path.realpath(p)}); ctflow reads data files only from a header's own folder "
        "(or below) by default, so a header cannot make it read other files. If you trust this "
        "header, pass allow_external_data=True (read_scan(..., allow_external_data=True), or "
        "load(allow_external_data=True) in a pipeline)"
    )


def _head(p: Path) -> tuple[str, bool] | None:
    """Return the first bytes of a file as text (latin-1) and whether more follow (None: unread)."""
    try:
        buf, more = read_header_bytes(p, "image file", "header")
    except (CTFlowError, OSError):
        return None
    return buf.decode("latin-1"), more


def _named_data_files(p: Path, allow_external_data: bool) -> list[_Named]:
    """Return every file besides ``p`` that one of ITK's readers may open to read ``p``.

    Each reader that may take ``p`` is asked, as ITK chooses by name and first bytes:

    * NRRD (first bytes ``NRRD``): the ``data file:`` field -- one file, a ``LIST`` (every
      line after it, blank lines skipped, as teem reads them) or a ``%d`` pattern;
    * MetaImage (``.mhd``/``.mha`` holding ``NDims``): every header line is parsed as MetaIO
      does (``Key = Value`` or ``Key : Value``, up to the first ``ElementDataFile``): one data
      file and the ``.gz`` and ``.Z`` files MetaIO falls back to, every file of a ``LIST`` or of
      a ``%d`` pattern; ``Local``/``LOCAL``/``local`` means no other file;
    * Stimulate (``.spr``): ``stimFileName:`` and the implicit ``.spr.sdt`` / ``.sdt``;
    * NIfTI-1 / Analyze (``.hdr``, ``.img``, ``.nii`` ... with or without ``.gz``): the files of
      the same base name nifti_io pairs them with (``a.hdr`` + ``a.img`` or ``a.img.gz``).

    Raises
    ------
    UnsupportedFormatError
        A header ctflow cannot fully understand as ITK would (a MetaImage line that is not
        ``Key = Value`` or holds control characters, no ``ElementDataFile`` line, a header
        longer than :data:`~ctflow.io.files.HEADER_MAX_BYTES` before its data files are all
        named ...), unless ``allow_external_data``; a file pattern ITK cannot format safely, or
        one naming more than 100000 files (unless ``allow_external_data``).
    """
    found: list[_Named] = []
    name = p.name.lower()
    head = _head(p)
    if head is not None:
        text, more = head
        if text.lstrip()[:4] == "NRRD":
            found += _nrrd_files(p, text, more, allow_external_data)
        if name.endswith((".mhd", ".mha")) and "ndims" in text.lower():
            found += _metaimage_files(p, text, more, allow_external_data)
        if name.endswith(".spr"):
            found += _stimulate_files(p, text, more, allow_external_data)
    if _NIFTI_NAME.search(p.name):
        found += _nifti_files(p)
    return found


def _nrrd_files(p: Path, text: str, more: bool, allow_external_data: bool) -> list[_Named]:
    """Return the files the ``data file:`` field of a NRRD header names, as teem reads it."""
    lines = re.split(r"\r\n|\r|\n", text)  # teem ends a line at CR, LF or CR LF
    if more:
        lines = lines[:-1]  # may be cut
    value, rest, ended = None, [], False
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines)) + 1  # magic
    for i, raw in enumerate(lines[start:], start):
        if not raw:
            ended = True  # the blank line that ends the header
            break
        name, sep, val = raw.split("\x00", 1)[0].partition(":")  # C strings end at NUL
        if sep and name.strip().lower().replace(" ", "").replace("_", "") == "datafile":
            value, rest = val.strip(), lines[i + 1 :]
            break
    if value is None:
        if more and not ended:
            _undetermined(
                p,
                f"its NRRD header runs past the first {HEADER_MAX_BYTES} bytes",
                allow_external_data,
            )
        return []
    if not value:
        return []
    field = "data file:"
    if value.startswith("LIST"):  # teem: every following non-blank line, to the end of the file
        if more:
            _undetermined(
                p,
                f"its 'data file: LIST' goes on past the first {HEADER_MAX_BYTES} bytes",
                allow_external_data,
            )
        names = [n for r in rest if (n := r.split("\x00", 1)[0].strip())]
        return [(f"{field} {value} ... {n}", _beside(p, n)) for n in names]
    if "%" in value:
        names = _pattern_files(p, field, value, allow_external_data)
        return [(f"{field} {value} ... {n}", _beside(p, n)) for n in names]
    return [(f"{field} {value}", _beside(p, value))]


def _beside(p: Path, name: str) -> Path:
    """Return a data file name joined to its header's folder, unless absolute."""
    data_path = Path(name)
    return data_path if data_path.is_absolute() else p.parent / data_path


def _metaio_path(p: Path, name: str) -> str:
    """Return the path MetaIO opens for a data file ``name`` written in the header ``p``.

    Relative names are put after the header's path up to its last slash or backslash; names
    starting with ``/`` (or ``~``, which MetaIO takes as a full path without expanding it: it is
    relative to the working folder) are used as they are.
    """
    full = name.startswith("/") or (os.name != "nt" and name.startswith("~"))
    if os.name == "nt":
        full = full or name[1:2] == ":" or name.startswith("\\")
    if full:
        return name
    header = str(p)
    return header[: max(header.rfind("/"), header.rfind("\\")) + 1] + name


def _strip_end(value: str) -> str:
    """Strip what MetaIO strips from the end of a value: white space and unprintable bytes."""
    end = len(value)
    while end and not "!" <= value[end - 1] <= "~":
        end -= 1
    return value[:end]


def _metaimage_files(p: Path, text: str, more: bool, allow_external_data: bool) -> list[_Named]:
    """Return the files ITK's MetaIO reads for a ``.mhd``/``.mha`` header (all lines are read).

    MetaIO takes ``=`` or ``:`` after a key, skips any more separators and blanks, and stops at
    the first ``ElementDataFile`` key (case-sensitive). A line ctflow cannot read as MetaIO does
    (no separator -- MetaIO would then take the value from a later line --, control characters,
    a value MetaIO would cut, ``ElementDataFile`` written in another case) or no
    ``ElementDataFile`` line at all is refused unless ``allow_external_data``.
    """
    lines = text.split("\n")
    if more:
        lines = lines[:-1]  # may be cut
    for lineno, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip(" \t"):
            continue
        sep = re.search("[=:]", line)
        problem = ""
        if _CONTROL.search(line):
            problem = "holds control characters"
        elif sep is None:
            problem = "is not 'Key = Value' (nor 'Key : Value')"
        if problem or sep is None:
            why = f"line {lineno} of its MetaImage header ({line[:60]!r}) {problem}"
            _undetermined(p, why, allow_external_data)
            continue
        key = line[: sep.start()].strip(" \t")
        if key != "ElementDataFile":
            if re.sub(r"[\s_]", "", key).lower() == "elementdatafile":
                why = (
                    f"line {lineno} of its MetaImage header names its data file with the key "
                    f"{key!r}, which MetaIO does not take for ElementDataFile"
                )
                _undetermined(p, why, allow_external_data)
            continue
        raw_value = raw[sep.start() :].lstrip("=: \t")
        if len(raw_value) > _METAIO_VALUE_MAX:
            why = (
                f"its ElementDataFile value (line {lineno}) is longer than MetaIO reads "
                f"({_METAIO_VALUE_MAX} characters)"
            )
            _undetermined(p, why, allow_external_data)
        written = line.strip(" \t")[:300]
        return _metaimage_data(
            p, written, _strip_end(raw_value), lines[lineno:], more, allow_external_data
        )
    if more:
        why = (
            f"no ElementDataFile line in the first {HEADER_MAX_BYTES} bytes of its MetaImage header"
        )
    else:
        why = "its MetaImage header has no ElementDataFile line"
    _undetermined(p, why, allow_external_data)
    return []


def _metaimage_data(
    p: Path, written: str, value: str, rest: list[str], more: bool, allow_external_data: bool
) -> list[_Named]:
    """Return the files MetaIO opens for ``ElementDataFile = value`` (LOCAL, LIST, %, one file)."""
    if value in _METAIO_LOCAL:
        return []
    if value.startswith("LIST"):  # the slice file names follow, one a line
        if more:
            why = f"its ElementDataFile LIST goes on past the first {HEADER_MAX_BYTES} bytes"
            _undetermined(p, why, allow_external_data)
        found: list[_Named] = []
        for r in rest:
            exact = _strip_end(r).split("\x00", 1)[0]  # as MetaIO reads the line
            for n in dict.fromkeys([exact, exact.strip()]):
                if n.strip():
                    found.append((f"{written} ... {n}", Path(_metaio_path(p, n))))
        return found
    if "%" in value:
        names = _pattern_files(p, "ElementDataFile =", value, allow_external_data)
        return [(f"{written} ... {n}", Path(_metaio_path(p, n))) for n in names]
    path = _metaio_path(p, value)  # MetaIO also tries the name + ".gz", then + ".Z"
    return [(written, Path(path))] + [
        (f"{written} (SimpleITK also tries {value}{ext})", Path(path + ext))
        for ext in (".gz", ".Z")
    ]


def _itk_folder(path: str) -> str:
    """Return the folder part of a path as itksys ``GetFilenamePath`` does ("" when none)."""
    fn = path.replace("\\", "/")
    if len(fn) > 1 and fn.endswith("/") and not (len(fn) == 3 and fn[1] == ":"):
        fn = fn[:-1]
    cut = fn.rfind("/")
    if cut == 0:
        return "/"
    if cut == 2 and fn[1] == ":":
        return fn[:3]
    return "" if cut < 0 else fn[:cut]


def _stimulate_files(p: Path, text: str, more: bool, allow_external_data: bool) -> list[_Named]:
    """Return the data files ITK's Stimulate reader opens for a ``.spr`` header.

    ``stimFileName:`` names one (beside the header when it has no folder part, else as
    written: relative to the working folder); without it ITK tries ``<name>.spr.sdt`` then
    ``<name>.sdt``. All are checked.
    """
    header = str(p)
    found: list[_Named] = [
        (f"{p.name}.sdt (the data file SimpleITK looks for beside it)", Path(header + ".sdt")),
        (
            f"{p.name[:-3]}sdt (the data file SimpleITK looks for beside it)",
            Path(header[:-3] + "sdt"),
        ),
    ]
    if more:
        why = f"its Stimulate header runs past the first {HEADER_MAX_BYTES} bytes"
        _undetermined(p, why, allow_external_data)
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.split("\x00", 1)[0]
        at = line.find("stimFileName:")
        if at < 0:
            continue
        value = line[at + len("stimFileName:") :].lstrip(" ")
        why = ""
        if len(raw) > _STIMULATE_LINE_MAX:
            why = f"line {lineno} of its Stimulate header is longer than SimpleITK reads"
        elif "\\" in value or value.startswith("~"):
            why = f"its stimFileName (line {lineno}) holds '\\' or starts with '~'"
        if why:
            _undetermined(p, why, allow_external_data)
            continue
        data = value if _itk_folder(value) else f"{_itk_folder(header)}/{value}"
        found.append((line.strip()[:300], Path(data)))
    return found


def _nifti_files(p: Path) -> list[_Named]:
    """Return the files nifti_io may pair with a NIfTI-1 / Analyze file (same base name).

    A ``.hdr`` is read with ``.img`` (or ``.img.gz``), an ``.img`` with its ``.hdr``, and even a
    ``.nii`` whose header says "two files" with an ``.img``: every existing one is checked.
    """
    match = _NIFTI_NAME.search(p.name)
    assert match is not None
    base = str(p)[: len(str(p)) - len(match.group())]
    found: list[_Named] = []
    for stem in (".hdr", ".img", ".nii", ".HDR", ".IMG", ".NII"):
        for gz in ("", ".gz", ".GZ"):
            other = base + stem + gz
            if other != str(p) and os.path.lexists(other):
                label = f"{Path(other).name}, the NIfTI/Analyze file paired with {p.name}"
                found.append((label, Path(other)))
    return found


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
    """Refuse what ITK would read for the image file ``p`` that it must not read.

    That is data files outside the header's folder (unless allowed), headers whose data files
    ctflow cannot tell (unless allowed), and FIFOs, sockets, devices or folders as data files
    (ITK would block on a FIFO).
    """
    for line, data_path in _named_data_files(p, allow_external_data):
        check_data_file(p, data_path, line, allow_external_data)
        try:
            special = _not_regular(os.stat(data_path).st_mode)
        except (OSError, ValueError):
            continue  # missing: ITK says so
        if special is not None:
            raise CorruptFileError(
                f"{p}: its data file {data_path} ({line}) is {special}, not a data file; "
                "ctflow reads regular files only"
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
