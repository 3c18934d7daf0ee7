"""List the DICOM series of a folder from file headers (no pixel data is read).

:func:`scan_dicom_folder` is the public listing; ``_scan`` groups the readable headers of a
folder by SeriesInstanceUID for :func:`~ctflow.io.dicom.read_dicom_series`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctflow.errors import CorruptFileError, InvalidParameterError
from ctflow.io.dicom.headers import (
    _CT_CLASSES,
    _MULTIFRAME_CT,
    _Header,
    _read_header,
    _Unread,
)
from ctflow.io.dicom.parse import _file_kind
from ctflow.io.dicom.quick import _quick_header
from ctflow.io.remote import HEAD_BYTES, completer
from ctflow.validation import check_path_text

__all__ = ["SeriesInfo", "SeriesList", "scan_dicom_folder"]

_Complete = Callable[[Sequence[Path]], None]  # fetches the rest of files fetched by heads


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a DICOM folder (from headers only; no pixels read).

    Attributes
    ----------
    uid : str
        SeriesInstanceUID (``""`` when the files carry none).
    n_files : int
        Number of files in the series.
    modality, description : str
        Modality and SeriesDescription of the first file (by name).
    image_type : tuple of str
        ImageType of the first file, upper case (e.g. ``("ORIGINAL", "PRIMARY", "AXIAL")``).
    rows, cols : int or None
        Rows and Columns of the first file.
    files : tuple of str
        Paths of the series' files, sorted by name.
    sop_class : str
        SOPClassUID of the first file.
    n_frames : int
        Largest NumberOfFrames (1 for classic single-frame slices).
    n_localizers : int
        Files whose ImageType contains ``LOCALIZER``.
    slice_thickness : float or None
        SliceThickness of the first file.
    orientation : tuple of 6 floats or None
        ImageOrientationPatient of the first file.
    """

    uid: str
    n_files: int
    modality: str
    description: str
    image_type: tuple[str, ...]
    rows: int | None
    cols: int | None
    files: tuple[str, ...]
    sop_class: str = ""
    n_frames: int = 1
    n_localizers: int = 0
    slice_thickness: float | None = None
    orientation: tuple[float, ...] | None = None

    @property
    def is_ct(self) -> bool:
        """Modality CT (or no Modality and a CT SOP class)."""
        if self.modality:
            return self.modality.upper() == "CT"
        return self.sop_class in _CT_CLASSES

    @property
    def is_multiframe(self) -> bool:
        """Enhanced / legacy-converted multi-frame CT, or NumberOfFrames > 1."""
        return self.n_frames > 1 or self.sop_class in _MULTIFRAME_CT

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly summary (without the file list)."""
        return {
            "uid": self.uid,
            "n_files": self.n_files,
            "modality": self.modality,
            "description": self.description,
            "image_type": list(self.image_type),
            "rows": self.rows,
            "cols": self.cols,
            "sop_class": self.sop_class,
            "n_frames": self.n_frames,
            "n_localizers": self.n_localizers,
            "slice_thickness": self.slice_thickness,
        }


class SeriesList(list[SeriesInfo]):
    """The series of a folder: a list of :class:`SeriesInfo` (sorted by UID) plus what was skipped.

    Parameters
    ----------
    items : sequence of SeriesInfo
        The series found.
    folder : str
        The folder that was listed.
    skipped : list of dict
        The files that are not DICOM images, as ``{"file": path, "reason": text}``.

    Attributes
    ----------
    folder : str
        The folder that was listed.
    skipped : list of dict
        The files that are not DICOM images, as ``{"file": path, "reason": text}``.
    """

    def __init__(self, items: Sequence[SeriesInfo], folder: str, skipped: list[dict[str, str]]):
        super().__init__(items)
        self.folder = folder
        self.skipped = skipped


def _series_info(uid: str, headers: list[_Header]) -> SeriesInfo:
    """Summarise the headers of one series as a :class:`SeriesInfo`."""
    first = headers[0]
    orientation = None if first.orientation is None else tuple(first.orientation.tolist())
    return SeriesInfo(
        uid=uid,
        n_files=len(headers),
        modality=first.modality,
        description=first.description,
        image_type=first.image_type,
        rows=first.rows,
        cols=first.cols,
        files=tuple(str(h.path) for h in headers),
        sop_class=first.sop_class,
        n_frames=max(h.n_frames for h in headers),
        n_localizers=sum(h.is_localizer for h in headers),
        slice_thickness=first.slice_thickness,
        orientation=orientation,
    )


def _check_folder(folder: str | os.PathLike[str], where: str) -> Path:
    """Return ``folder`` as a Path after checking it is a path to an existing directory.

    Raises
    ------
    InvalidParameterError
        Not a path, a NUL byte or an over-long name in it, or a path to something else than a
        folder (a file, a FIFO ...).
    CorruptFileError
        Nothing there, a broken symbolic link, or a folder that cannot be accessed.
    """
    if not isinstance(folder, str | os.PathLike):
        raise InvalidParameterError(
            f"{where}: folder must be a path (str or os.PathLike); got {type(folder).__name__}"
        )
    text = os.fspath(folder)
    text = os.fsdecode(text) if isinstance(text, bytes) else text
    p = Path(check_path_text(text, "folder", where))
    try:
        mode = os.stat(p).st_mode
    except OSError as exc:
        if os.path.islink(p):
            raise CorruptFileError(
                f"{where}: {p}: broken symbolic link (its target {os.readlink(p)!r} cannot be "
                f"reached: {exc.strerror or exc})"
            ) from exc
        if isinstance(exc, FileNotFoundError):
            raise CorruptFileError(f"{where}: {p}: no such folder") from exc
        raise CorruptFileError(f"{where}: {p}: cannot access the folder ({exc})") from exc
    if not stat.S_ISDIR(mode):
        got = "the file" if stat.S_ISREG(mode) else _file_kind(mode)
        raise InvalidParameterError(
            f"{where}: folder must be a directory of DICOM slices; got {got} {p}"
        )
    return p


def _scan(
    folder: Path, datasets: bool = False, complete: _Complete | None = None
) -> tuple[dict[str, list[_Header]], list[_Unread]]:
    """Read the header of every file of ``folder``; group them by series, list the rest.

    Entries are looked at with ``stat`` first: sub-folders are passed over, and anything that
    is not a regular file (FIFO, socket, device) is listed without being opened. Plain files
    are read by the fast path (:mod:`~ctflow.io.dicom.quick`), the others by pydicom; with
    ``datasets=True`` every header is read by pydicom and keeps its ``dataset``. A folder
    fetched from object storage by its heads (``complete``: :func:`ctflow.io.remote.completer`)
    has only the first :data:`~ctflow.io.remote.HEAD_BYTES` of each file: a file the fast path
    declines is fetched whole before pydicom reads it.
    """
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise CorruptFileError(f"{folder}: cannot list the folder ({exc})") from exc
    groups: dict[str, list[_Header]] = {}
    unread: list[_Unread] = []
    for entry in entries:
        path = folder / entry.name
        try:
            st = entry.stat()  # follows symbolic links
        except OSError as exc:
            what = "broken symbolic link" if entry.is_symlink() else "cannot stat the file"
            unread.append(_Unread(path, f"{what} ({exc.strerror or exc})"))
            continue
        if stat.S_ISDIR(st.st_mode):
            continue  # sub-folders are not entered
        if not stat.S_ISREG(st.st_mode):
            kind = _file_kind(st.st_mode)
            unread.append(_Unread(path, f"{kind}, not a regular file; not opened", special=True))
            continue
        available = None if complete is None else HEAD_BYTES
        quick = None if datasets else _quick_header(path, st.st_size, available)
        if quick is None and complete is not None:
            complete([path])
        result = quick if quick is not None else _read_header(path, st.st_size)
        if isinstance(result, _Unread):
            unread.append(result)
        else:
            groups.setdefault(result.series_uid, []).append(result)
    return groups, unread


def scan_dicom_folder(folder: str | os.PathLike[str]) -> SeriesList:
    """List the DICOM series of a folder from the file headers (no pixel data is read).

    Parameters
    ----------
    folder : path
        A folder of DICOM files (non-recursive; any file names).

    Returns
    -------
    SeriesList
        A list of :class:`SeriesInfo` (one per SeriesInstanceUID, sorted by UID, localizer and
        non-CT series included) with ``.skipped``: the files that are not DICOM images and why
        (a damaged DICOM file's reason starts with "damaged DICOM file"; special files and
        broken symbolic links are listed too, sub-folders are not). Listing never refuses a
        damaged file: only :func:`~ctflow.io.dicom.read_dicom_series` judges whether it is a
        slice of the series it reads.

    Raises
    ------
    CorruptFileError
        The folder does not exist, is a broken symbolic link or cannot be listed.
    InvalidParameterError
        ``folder`` is not a folder (a file ...), or a path with a NUL byte or an over-long name.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from pydicom.data import get_testdata_file
    >>> folder = tempfile.mkdtemp()
    >>> _ = shutil.copy(get_testdata_file("CT_small.dcm"), folder)
    >>> series = scan_dicom_folder(folder)
    >>> [(s.modality, s.n_files, s.rows, s.cols) for s in series], series.skipped
    ([('CT', 1, 128, 128)], [])
    """
    p = _check_folder(folder, "scan_dicom_folder")
    groups, unread = _scan(p, complete=completer(p))
    skipped = [u.as_dict() for u in unread]
    return SeriesList([_series_info(u, groups[u]) for u in sorted(groups)], str(p), skipped)
