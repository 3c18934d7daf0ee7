"""The files ITK would open for a header, found as ITK's readers find them, and checked.

:func:`ctflow.io.sitk.read_with_sitk` hands a path to ITK, which reads whatever files the
header names (MetaImage ``ElementDataFile``, NRRD ``data file``, Stimulate ``stimFileName``: one
data file, a ``LIST`` of slice files or a ``%d`` pattern) and the files it pairs with some names
(``a.hdr`` + ``a.img``, MetaIO's ``.gz`` / ``.Z`` fallbacks, ``a.spr`` + ``a.sdt``).
:func:`_check_named_files` finds them first and checks each as the native readers check theirs
(inside the header's folder unless ``allow_external_data=True``; no special files), and refuses a
header it cannot read as ITK would (see :mod:`ctflow.io.sitk`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ctflow.errors import CorruptFileError, CTFlowError, UnsupportedFormatError
from ctflow.io.files import _not_regular
from ctflow.io.voxels import HEADER_MAX_BYTES, check_data_file, read_header_bytes

__all__: list[str] = []


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
