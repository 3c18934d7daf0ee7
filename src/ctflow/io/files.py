"""Opening the files a scan reader is given: checked paths, regular files only, headers.

Files are opened only when :func:`os.stat` says they are regular files (:func:`open_regular`):
a FIFO, socket or device named like a scan is refused at once instead of blocking the reader.
Paths given by the caller are checked first (:func:`as_source_path`: no NUL byte, names and
length within the file system's limits), and a data file named by a header must lie in the
header's folder unless the caller allows otherwise (:func:`check_data_file`). A text header is
read whole up to :data:`HEADER_MAX_BYTES` (:func:`read_header_bytes`).
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

from ctflow.errors import CorruptFileError, InvalidParameterError, UnsupportedFormatError
from ctflow.validation import check_path_text

__all__ = [
    "HEADER_MAX_BYTES",
    "as_source_path",
    "check_data_file",
    "open_regular",
    "read_header_bytes",
]

#: A text header (MetaImage, NRRD) longer than this is taken for a file of another kind.
HEADER_MAX_BYTES = 1024 * 1024


def read_header_bytes(path: Path, file_kind: str, header_kind: str) -> tuple[bytes, bool]:
    r"""Read the first :data:`HEADER_MAX_BYTES` of a text-header file.

    Parameters
    ----------
    path : Path
        The file.
    file_kind : str
        What the file should be, for the error on a folder (``"is a folder, not a <file_kind>"``).
    header_kind : str
        What the header is, for the error on a read failure (``"cannot read the <header_kind>"``).

    Returns
    -------
    buf : bytes
        The first bytes of the file.
    more : bool
        Whether the file goes on after them.

    Raises
    ------
    CorruptFileError
        The file is missing, a folder, a FIFO, socket or device, or unreadable (the message
        names it).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "h.mhd"
    >>> _ = p.write_bytes(b"NDims = 3\n")
    >>> read_header_bytes(p, "MetaImage header file", "MetaImage header")
    (b'NDims = 3\n', False)
    """
    fh, _ = open_regular(path, file_kind)
    try:
        with fh:
            buf = fh.read(HEADER_MAX_BYTES)
            more = bool(fh.read(1))
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read the {header_kind} ({exc})") from exc
    return buf, more


def as_source_path(path: Any, where: str) -> Path:
    r"""Return the path a caller gave a reader, once it can name a file.

    Parameters
    ----------
    path : str or os.PathLike
        The path as given (``bytes`` paths are decoded as :func:`os.fsdecode` does).
    where : str
        The function checking it, for the message (e.g. ``"read_scan"``).

    Returns
    -------
    Path
        The same path.

    Raises
    ------
    InvalidParameterError
        Not a path, empty, a NUL byte, a name over 255 bytes or a path over 4096 bytes (the
        message names the path); the operating system is never asked about such a path.

    Examples
    --------
    >>> as_source_path("a/scan.mhd", "read_scan")
    PosixPath('a/scan.mhd')
    >>> as_source_path("scan\x00.mhd", "read_scan")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: read_scan: path 'scan\x00.mhd' contains a NUL byte
    """
    try:
        raw = os.fspath(path)
    except TypeError:
        raise InvalidParameterError(
            f"{where}: path must be a str or os.PathLike; got {type(path).__name__} {path!r:.80}"
        ) from None
    text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    if not text:
        raise InvalidParameterError(f"{where}: path must not be empty")
    check_path_text(text, "path", where)
    return Path(text)


_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def _not_regular(mode: int) -> str | None:
    """Return what a file of this ``st_mode`` is when it is not a regular file, else None."""
    if stat.S_ISREG(mode):
        return None
    for test, what in _SPECIAL:
        if test(mode):
            return what
    return "not a regular file"


def open_regular(
    path: Path, file_kind: str, *, owner: Path | None = None, label: str = ""
) -> tuple[io.FileIO, int]:
    """Open a regular file for reading, never blocking; refuse FIFOs, sockets, devices, folders.

    The file is checked with :func:`os.stat` before it is opened, opened non-blocking (a FIFO
    swapped in between cannot block either) and checked again with :func:`os.fstat`.

    Parameters
    ----------
    path : Path
        The file.
    file_kind : str
        What the file should be, for the messages (``"is a folder, not a <file_kind>"``).
    owner : Path, optional
        The header that named ``path`` (a data file): the messages then start with the header
        and ``label``.
    label : str
        How the messages name a data file, e.g. ``"its data file /d/s.raw (ElementDataFile)"``.

    Returns
    -------
    fh : io.FileIO
        The open file (unbuffered), at its first byte.
    size : int
        Its size in bytes.

    Raises
    ------
    CorruptFileError
        Missing, not a regular file, or cannot be opened (the message names it).

    Examples
    --------
    >>> open_regular(Path("/dev/null"), "NIfTI file")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.CorruptFileError: /dev/null: is a character device, not a NIfTI file; ...
    """
    head = f"{path}:" if owner is None else f"{owner}: {label}"
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        missing = "no such file" if owner is None else "does not exist"
        raise CorruptFileError(f"{head} {missing}") from None
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{head} cannot be read ({exc})") from None
    kind = _not_regular(st.st_mode)
    if kind is not None:
        raise CorruptFileError(
            f"{head} is {kind}, not a {file_kind}; ctflow reads regular files only"
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CorruptFileError(f"{head} cannot be opened ({exc})") from None
    try:
        st = os.fstat(fd)
        kind = _not_regular(st.st_mode)
        if kind is not None:
            raise CorruptFileError(
                f"{head} is {kind}, not a {file_kind}; ctflow reads regular files only"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        fh = io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    return fh, st.st_size


def check_data_file(header: Path, data_path: Path, line: str, allow_external_data: bool) -> None:
    """Refuse a data file that a header names outside its folder (unless allowed).

    The data file must resolve, after symbolic links, to the header's folder or a folder below
    it: the folder the header is named in, or, when the header itself is a symbolic link, the
    folder of the file it points to. So ``ElementDataFile = /etc/passwd``, ``../x`` or a link
    out of the folder are refused, while ``scan.raw``, ``sub/scan.raw`` or the absolute path of
    a file beside the header are read.

    Parameters
    ----------
    header : Path
        The header file.
    data_path : Path
        The data file it names (relative names already joined to the header's folder).
    line : str
        The header line that names it, for the message (``"ElementDataFile = ../x.raw"``).
    allow_external_data : bool
        Skip the check: read data files wherever the header says (trusted headers only).

    Raises
    ------
    UnsupportedFormatError
        The data file lies outside the header's folder; the message says how to allow it.

    Examples
    --------
    >>> check_data_file(Path("/d/s.mhd"), Path("/etc/passwd"), "ElementDataFile = /etc/passwd",
    ...                 False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.UnsupportedFormatError: /d/s.mhd: 'ElementDataFile = /etc/passwd' names ...
    """
    if allow_external_data:
        return
    try:
        real = os.path.realpath(data_path)
        roots = {os.path.realpath(header.parent), os.path.dirname(os.path.realpath(header))}
    except (OSError, ValueError) as exc:
        raise CorruptFileError(
            f"{header}: cannot resolve its data file {data_path} ({exc})"
        ) from None
    for root in roots:
        try:
            if os.path.commonpath([real, root]) == root:
                return
        except ValueError:  # another drive (Windows)
            continue
    raise UnsupportedFormatError(
        f"{header}: {line!r} names {real}, outside the header's folder "
        f"{os.path.realpath(header.parent)}; ctflow reads data files only from a header's own "
        "folder (or below) by default, so a header cannot make it read other files. If you "
        "trust this header, pass allow_external_data=True (read_scan(..., "
        "allow_external_data=True), or load(allow_external_data=True) in a pipeline)"
    )
