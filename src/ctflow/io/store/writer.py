"""Write one item atomically, idempotently and byte-for-byte deterministically."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.io.files import as_source_path
from ctflow.io.store.arrays import _write_array
from ctflow.io.store.files import _write_file
from ctflow.io.store.format import (
    _META,
    FORMAT_VERSION,
    SKYSCRAPER_COMPONENTS,
    STAGING,
    _array_file,
    _check_id,
    _compression,
    _is_stored_dtype,
    _nodules_to_json,
    _version,
    is_item_dir,
)
from ctflow.io.store.staging import (
    _make_staging_dir,
    _remove_dead_writers,
    _rmdir_if_empty,
    _swap_in,
)
from ctflow.io.voxels import _all_finite, _count_non_finite

__all__ = ["write_item"]


def _close(fd: int, *, sync: bool) -> None:
    """Close a file descriptor, after flushing the file to disk when ``sync``."""
    try:
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _checked_arrays(
    item_id: str, components: Mapping[str, NDArray[Any] | None], shape: tuple[int, ...]
) -> dict[str, NDArray[Any]]:
    """Return the components to write (as arrays) once each is known to read back.

    Refused: unknown names, other shapes than the images', dtypes that are not bool, integer
    or float, and float arrays holding NaN or Inf (every read refuses those).
    """
    out: dict[str, NDArray[Any]] = {}
    for name, arr in components.items():
        if arr is None:
            continue
        if name not in SKYSCRAPER_COMPONENTS:
            raise InvalidParameterError(
                f"dump: unknown component {name!r} for item {item_id!r}; "
                f"expected one of {SKYSCRAPER_COMPONENTS}"
            )
        if tuple(arr.shape) != shape:
            raise InvalidParameterError(
                f"dump: item {item_id!r} component {name!r} has shape {tuple(arr.shape)}, "
                f"images have {shape}"
            )
        data = np.asarray(arr)  # no copy yet: each is made contiguous when it is written
        if not _is_stored_dtype(data.dtype):
            raise InvalidParameterError(
                f"dump: item {item_id!r} component {name!r} must be of a numeric dtype "
                f"(bool, integers, floats); got {data.dtype}"
            )
        if not _all_finite(data):
            raise InvalidScanError(
                f"dump: item {item_id!r} component {name!r} holds {_count_non_finite(data)} "
                f"NaN or Inf voxel(s) ({data.dtype}); voxels must be finite (every read would "
                "refuse them)"
            )
        out[name] = data
    return out


def meta_json(meta: Mapping[str, Any]) -> bytes:
    """Encode ``meta.json``: one top-level key per line, each value on its line.

    Readable (``grep``, ``diff``) and encoded by the json module's C encoder: an indented dump
    runs the pure-Python one, which took most of ``dump``'s time for small items (crops) with
    long histories and chunk places, holding the GIL the other threads' items wait for.

    Examples
    --------
    >>> print(meta_json({"id": "a", "spacing": [1.0, 0.5, 0.5]}).decode())
    {
     "id": "a",
     "spacing": [1.0, 0.5, 0.5]
    }
    """
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in meta.items()]
    return ("{\n" + ",\n".join(lines) + "\n}").encode("utf-8")


def write_item(
    dst: str | os.PathLike[str],
    item_id: str,
    components: Mapping[str, NDArray[Any] | None],
    geometry: Geometry,
    *,
    nodules: pd.DataFrame | None = None,
    source: str | None = None,
    skip_existing: bool = False,
    compression: str = "lz4",
    warnings: Sequence[str] = (),
    history: Sequence[Mapping[str, Any]] = (),
    sync: bool = True,
) -> Path | None:
    """Write one item atomically as ``<dst>/<item_id>/``.

    The item is assembled in a staging folder, fsynced and renamed into place; an existing
    item is updated in place, with one atomic step as readers see it (the rules are in
    :mod:`ctflow.io.store`).

    Parameters
    ----------
    dst : path
        Root folder of the dump (created if missing).
    item_id : str
        Folder name of the item.
    components : mapping
        ``images`` (required) and optionally ``masks`` / ``lungs``, each (Z, Y, X); None is skipped.
    geometry : Geometry
        The item's spacing/origin/direction.
    nodules : DataFrame, optional
        The item's nodule table (columns ``z, y, x, diameter`` in world mm).
    source : str, optional
        Where the item came from (kept in ``meta.json``).
    skip_existing : bool, default False
        If the item already exists (complete), leave it and return None.
    compression : {"lz4", "zstd"}, default "lz4"
        LZ4 reads back fastest (dense float chunks are stored uncompressed); ZSTD writes
        smaller files (see :mod:`ctflow.io.store`).
    warnings : sequence of str, optional
        What ctflow decided on its own about the item on its way here (``meta.json``
        ``"warnings"``; read back into ``StoredItem.warnings``).
    history : sequence of dict, optional
        The actions applied to the item, with their parameters as drawn (JSON; ``meta.json``
        ``"history"``, read back into ``StoredItem.history``; see :mod:`ctflow.history`).
    sync : bool, default True
        Flush the item's files and folder entries to disk (``fsync``) before returning, so
        that a power failure leaves the old item or the new one. ``False`` keeps the atomic
        swap (other processes see the old item or the new one, never a mix) but leaves the
        write-back to the kernel: after a power failure the item may be missing or damaged
        — and then refused on load by its checksums, never read wrong. For scratch outputs
        that can be written again (faster for dense float crops).

    Returns
    -------
    Path or None
        The item folder, or None when skipped.

    Raises
    ------
    InvalidParameterError
        A bad item id (:func:`~ctflow.validation.as_item_id`) or compression, no images, an
        unknown component, a component that is not of a bool, integer or float dtype,
        components whose shapes differ from the images', or a ``dst`` (or ``<dst>/<item_id>``)
        with a NUL byte, a name over 255 bytes or over 4096 bytes in all.
    InvalidScanError
        A float component holding NaN or Inf, which every read would refuse (checked before
        anything is written; about 10 ms per 256**3 float32).
    OSError
        The disk refused a write (nothing of the item is left behind).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> d = tempfile.mkdtemp()
    >>> p = write_item(d, "a", {"images": np.zeros((2, 2, 2), np.int16)}, Geometry((1, 1, 1)))
    >>> write_item(d, "a", {"images": np.zeros((2, 2, 2), np.int16)}, Geometry((1, 1, 1)),
    ...            skip_existing=True) is None
    True
    """
    item_id = _check_id(item_id)
    _compression(compression)
    root = as_source_path(dst, "write_item")
    final = as_source_path(root / item_id, "write_item")
    staging = root / STAGING
    _remove_dead_writers(staging)
    if skip_existing and is_item_dir(final):
        return None
    images = components.get("images")
    if images is None:
        raise InvalidParameterError(f"dump: item {item_id!r} has no images to write")
    shape = tuple(int(v) for v in images.shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InvalidParameterError(
            f"dump: item {item_id!r} images must be a non-empty (Z, Y, X) volume; got shape {shape}"
        )
    arrays = _checked_arrays(item_id, components, shape)  # before anything is written
    tmp = _make_staging_dir(staging, item_id)
    open_fds: list[int] = []  # the item's files, fsynced and closed at the end
    files: list[str] = []  # the arrays' file names
    try:
        meta_components: dict[str, Any] = {}
        for name, arr in arrays.items():
            data = np.ascontiguousarray(arr)
            path = tmp / f"{name}.b2nd"
            fd, crcs, places = _write_array(path, data, compression)
            open_fds.append(fd)
            if os.name == "nt":  # an open file cannot be renamed there
                _close(open_fds.pop(), sync=sync)
            file = _array_file(name, shape, data.dtype, crcs)
            os.rename(path, tmp / file)  # its name says what it holds
            files.append(file)
            meta_components[name] = {
                "shape": list(shape),
                "dtype": data.dtype.str,
                "file": file,
                "chunk_crc32": crcs,
            }
            if places is not None and len(places[1]) == len(crcs):
                meta_components[name]["chunk_planes"] = places[0]
                meta_components[name]["chunk_ranges"] = places[1]
        table = _nodules_to_json(nodules)
        # only what the item is: no time, host or thread count, so rewrites are byte-identical
        meta = {
            "format": "ctflow",
            "format_version": FORMAT_VERSION,
            "ctflow_version": _version(),
            "id": item_id,
            "components": meta_components,
            **geometry.as_dict(),
            "nodules": table,
            "source": source,
            "warnings": [str(w) for w in warnings],
            "history": [dict(h) for h in history],
        }
        open_fds.append(_write_file(tmp / _META, meta_json(meta)))
        # every file's writeback is under way: the first fsync commits the journal for all
        while open_fds:
            _close(open_fds.pop(), sync=sync)
        _swap_in(tmp, final, files, sync=sync)
    except BaseException:
        for fd in open_fds:
            os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _rmdir_if_empty(staging)
    return final
