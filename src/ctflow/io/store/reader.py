"""Read an item back: all of it (:func:`read_item`) or a box of one array (:func:`read_crop`).

A read starts from ``meta.json`` and opens the array files it names. Arrays are never
changed once written (a rewrite puts new arrays under new names, then replaces ``meta.json``,
then removes the old arrays), so what a read gets is one version of the item. If an array
vanishes before it is opened (a rewrite removed it), the read starts again from the new
``meta.json``.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import blosc2
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.io.store.arrays import _IO_THREADS, _read_array, _read_box
from ctflow.io.store.format import (
    _META,
    _NODULE_KEYS,
    StoredItem,
    _Component,
    _parse_meta,
    _read_meta_bytes,
)
from ctflow.io.voxels import as_source_path, max_voxels_bytes

__all__ = ["read_crop", "read_item"]

_T = TypeVar("_T")
#: How many times a read starts again from a new ``meta.json`` when arrays vanish under it.
_ATTEMPTS = 8


class _Vanished(Exception):
    """An array named by ``meta.json`` cannot be opened (a rewrite may have removed it).

    ``error`` is what opening it raised when the file is there, None when it is missing.
    """

    def __init__(self, path: Path, error: CorruptFileError | None = None) -> None:
        super().__init__(str(path))
        self.path = path
        self.error = error


def _check_size(folder: Path | str, comp: _Component) -> None:
    """Refuse an array larger than the size cap (read now), before anything is allocated."""
    limit = max_voxels_bytes()
    if comp.nbytes > limit:
        z, y, x = comp.shape
        raise InvalidScanError(
            f"{folder}/{_META}: {comp.name} is {z}x{y}x{x} {comp.dtype.name} voxels = "
            f"{comp.nbytes} bytes; refusing volumes larger than MAX_VOXELS_BYTES = {limit}"
        )


def _open_component(folder: Path, comp: _Component) -> Any:
    """Open an array file named by ``meta.json``; check its shape, dtype and chunks.

    Raises ``_Vanished`` when the file is not there or cannot be opened: a rewrite may have
    removed it meanwhile (blosc2 then fails in several ways), which the caller tells apart.
    """
    path = folder / comp.file
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise CorruptFileError(f"{path}: must be a file (a blosc2 array)")
    except FileNotFoundError:
        raise _Vanished(path) from None
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot open blosc2 array ({exc})") from exc
    try:
        # decompression is deterministic whatever the thread count; compression stays on one
        # thread (byte-identical dumps)
        arr = blosc2.open(str(path), mode="r", dparams=blosc2.DParams(nthreads=_IO_THREADS))
    except FileNotFoundError:
        raise _Vanished(path) from None
    except Exception as exc:
        error = CorruptFileError(f"{path}: cannot open blosc2 array ({exc})")
        raise _Vanished(path, error) from exc
    try:
        shape = tuple(int(v) for v in arr.shape)
        dtype = np.dtype(arr.dtype)
        chunks = tuple(int(v) for v in arr.chunks)
    except Exception as exc:
        raise CorruptFileError(f"{path}: not a blosc2 NDArray ({exc})") from exc
    if shape != comp.shape or dtype != comp.dtype:
        raise CorruptFileError(
            f"{path}: the array must be {comp.shape} {comp.dtype.name} as meta.json says; "
            f"it is {shape} {dtype.name}"
        )
    chunk_bytes = math.prod(chunks) * dtype.itemsize
    if len(chunks) != 3 or min(chunks) < 1 or chunk_bytes > max(comp.nbytes, 1 << 20) * 2:
        raise CorruptFileError(
            f"{path}: chunks must be 3 sizes >= 1 of at most twice the array; got {chunks}"
        )
    return arr


def _retrying(folder: Path, read: Callable[[dict[str, Any], dict[str, _Component]], _T]) -> _T:
    """Run ``read(meta, components)`` on the item's ``meta.json``; again if the item changed.

    ``read`` opens every array it needs before it reads any. When it fails and ``meta.json``
    has been replaced meanwhile (a rewrite, which removes the arrays it no longer names only
    after that), the read starts again from the new ``meta.json``, up to ``_ATTEMPTS`` times.
    A failure while ``meta.json`` stays the same is the item's: an array missing is a
    :class:`CorruptFileError` at once.
    """
    raw, which = _read_meta_bytes(folder)
    for attempt in range(_ATTEMPTS):
        meta, comps = _parse_meta(folder, raw)
        try:
            return read(meta, comps)
        except (_Vanished, CorruptFileError) as exc:
            now, now_which = _read_meta_bytes(folder)
            if attempt == _ATTEMPTS - 1 or (now, now_which) == (raw, which):
                if not isinstance(exc, _Vanished):
                    raise
                if exc.error is not None:
                    raise exc.error from None
                raise CorruptFileError(
                    f"{exc.path}: no such file; {folder / _META} names it"
                ) from None
            raw, which = now, now_which  # rewritten meanwhile: read the new item
    raise AssertionError("unreachable")


def read_item(
    path: str | os.PathLike[str],
    components: Sequence[str] | None = None,
    *,
    verify: bool = True,
) -> StoredItem:
    """Read an item folder written by :func:`write_item`.

    Parameters
    ----------
    path : path
        The item folder ``<dst>/<id>``.
    components : sequence of str, optional
        Which arrays to read (default: all stored); names that are not stored are skipped.
    verify : bool, default True
        Check every compressed chunk against its CRC-32 in ``meta.json`` (costs a few
        percent of a load; dumps of format 1 have no checksums and are never checked).

    Returns
    -------
    StoredItem
        The arrays, geometry, nodules, source, warnings and history of the item.

    Raises
    ------
    UnsupportedFormatError
        Not an item folder (no ``meta.json``), or written by a newer ctflow.
    CorruptFileError
        No such folder, unreadable or inconsistent metadata, a missing array, an array whose
        shape or dtype is not what ``meta.json`` says, a damaged chunk (its checksum), corrupt
        data.
    InvalidScanError
        An array larger than ``MAX_VOXELS_BYTES`` (refused before it is allocated), or float
        voxels that are NaN or Inf.
    InvalidParameterError
        A path with a NUL byte, a name over 255 bytes or over 4096 bytes in all.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.io.store import write_item
    >>> d = tempfile.mkdtemp()
    >>> _ = write_item(d, "a", {"images": np.ones((2, 2, 2), np.int16)}, Geometry((1, 1, 1)))
    >>> read_item(f"{d}/a").components["images"].sum()
    np.int64(8)
    """
    folder = as_source_path(path, "read_item")
    check = bool(verify)

    def read(
        meta: dict[str, Any], comps: dict[str, _Component]
    ) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        wanted = [comps[n] for n in (comps if components is None else components) if n in comps]
        for comp in wanted:
            _check_size(folder, comp)  # all of them before any is allocated
        opened = [(comp, _open_component(folder, comp)) for comp in wanted]  # then read
        arrays = {
            comp.name: _read_array(arr, folder / comp.file, comp.crc32 if check else None)
            for comp, arr in opened
        }
        return meta, arrays

    meta, out = _retrying(folder, read)
    return _stored_item(meta, out, folder.name)


def _stored_item(meta: dict[str, Any], arrays: dict[str, NDArray[Any]], name: str) -> StoredItem:
    """Return the :class:`StoredItem` of a checked ``meta.json`` and the arrays read."""
    rows = meta.get("nodules") or []
    nodules = pd.DataFrame(rows, columns=list(_NODULE_KEYS), dtype=np.float64)
    if rows and all("label" in r for r in rows):  # the label each nodule was found in
        nodules["label"] = np.array([r["label"] for r in rows], dtype=np.int64)
    return StoredItem(
        id=str(meta.get("id", name)),
        components=arrays,
        geometry=Geometry(meta["spacing"], meta["origin"], meta["direction"]),
        nodules=nodules,
        source=meta.get("source"),
        meta=meta,
        warnings=list(meta.get("warnings") or []),
        history=[dict(h) for h in meta.get("history") or []],
    )


def read_crop(
    path: str | os.PathLike[str],
    start: Sequence[int],
    shape: Sequence[int],
    component: str = "images",
    *,
    verify: bool = True,
) -> tuple[NDArray[Any], Geometry]:
    """Read a box of one component without decompressing the whole scan.

    Only the chunks of whole planes that the box touches are read (and checked against their
    CRC-32), and only the planes it touches are decompressed.

    Parameters
    ----------
    path : path
        The item folder ``<dst>/<id>``.
    start : sequence of 3 int
        First voxel of the box, (z, y, x).
    shape : sequence of 3 int
        Size of the box, (z, y, x); the box must lie inside the stored volume.
    component : str, default "images"
        Which array to read from.
    verify : bool, default True
        Check the chunks read against their CRC-32 in ``meta.json`` (format 2 dumps).

    Returns
    -------
    crop : ndarray
        The box, of the component's dtype.
    geometry : Geometry
        The item's geometry shifted to the box's first voxel.

    Raises
    ------
    InvalidParameterError
        No such component, a box that does not lie inside the volume, or a path with a NUL
        byte, a name over 255 bytes or over 4096 bytes in all.
    CorruptFileError
        Unreadable or inconsistent metadata or array, a damaged chunk.
    InvalidScanError
        A stored array larger than ``MAX_VOXELS_BYTES``, or NaN or Inf voxels in the box.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.io.store import write_item
    >>> d = tempfile.mkdtemp()
    >>> img = np.arange(64, dtype=np.int16).reshape(4, 4, 4)
    >>> _ = write_item(d, "a", {"images": img}, Geometry((1, 1, 1)))
    >>> crop, geo = read_crop(f"{d}/a", (1, 1, 1), (2, 2, 2))
    >>> bool((crop == img[1:3, 1:3, 1:3]).all()), geo.origin.tolist()
    (True, [1.0, 1.0, 1.0])
    """
    folder = as_source_path(path, "read_crop")
    check = bool(verify)

    def read(meta: dict[str, Any], comps: dict[str, _Component]) -> tuple[NDArray[Any], Geometry]:
        comp = comps.get(component)
        if comp is None:
            raise InvalidParameterError(f"read_crop: {folder} has no component {component!r}")
        full = np.asarray(comp.shape, dtype=np.int64)
        try:
            st = np.asarray(start, dtype=np.int64)
            sh = np.asarray(shape, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            st = sh = np.zeros(0, np.int64)
        if (
            st.shape != (3,)
            or sh.shape != (3,)
            or np.any(st < 0)
            or np.any(sh < 1)
            or np.any(st + sh > full)
        ):
            got = f"start={start!r} shape={shape!r}"
            if st.shape == sh.shape == (3,):
                got = f"start={tuple(st.tolist())} shape={tuple(sh.tolist())}"
            raise InvalidParameterError(
                f"read_crop: box {got} must lie inside the stored volume {comp.shape} of {folder}"
            )
        _check_size(folder, comp)
        arr = _open_component(folder, comp)
        box = tuple(slice(int(a), int(a + b)) for a, b in zip(st, sh, strict=True))
        geometry = Geometry(meta["spacing"], meta["origin"], meta["direction"]).shifted(st)
        return _read_box(arr, folder / comp.file, box, comp.crc32 if check else None), geometry

    return _retrying(folder, read)
