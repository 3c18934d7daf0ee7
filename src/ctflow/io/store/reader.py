"""Read an item back: all of it (:func:`read_item`) or a box of one array (:func:`read_crop`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.io.store.arrays import _IO_THREADS, _read_array
from ctflow.io.store.format import _META, _NODULE_KEYS, StoredItem, read_meta

__all__ = ["read_crop", "read_item"]


def _open_component(folder: Path, name: str, spec: Mapping[str, Any]) -> Any:
    """Open ``<folder>/<name>.b2nd`` and check its shape and dtype against ``meta.json``."""
    path = folder / f"{name}.b2nd"
    try:
        # decompression is deterministic whatever the thread count; compression stays on one
        # thread (byte-identical dumps)
        arr = blosc2.open(str(path), mode="r", dparams=blosc2.DParams(nthreads=_IO_THREADS))
    except Exception as exc:
        raise CorruptFileError(f"{path}: cannot open blosc2 array ({exc})") from exc
    if list(arr.shape) != list(spec["shape"]) or np.dtype(arr.dtype) != np.dtype(spec["dtype"]):
        raise CorruptFileError(
            f"{path}: array is {tuple(arr.shape)} {np.dtype(arr.dtype).name}, meta.json says "
            f"{tuple(spec['shape'])} {np.dtype(spec['dtype']).name}"
        )
    return arr


def read_item(path: str | os.PathLike[str], components: Sequence[str] | None = None) -> StoredItem:
    """Read an item folder written by :func:`write_item`.

    Parameters
    ----------
    path : path
        The item folder ``<dst>/<id>``.
    components : sequence of str, optional
        Which arrays to read (default: all stored); names that are not stored are skipped.

    Returns
    -------
    StoredItem
        The arrays, geometry, nodules, source, warnings and history of the item.

    Raises
    ------
    UnsupportedFormatError
        Not an item folder (no ``meta.json``), or written by a newer ctflow.
    CorruptFileError
        No such folder, unreadable metadata, a missing or corrupt array, bad geometry.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.io.store import write_item
    >>> d = tempfile.mkdtemp()
    >>> _ = write_item(d, "a", {"images": np.ones((2, 2, 2), np.int16)}, Geometry((1, 1, 1)))
    >>> read_item(f"{d}/a").components["images"].sum()
    np.int64(8)
    """
    folder = Path(path)
    meta = read_meta(folder)
    stored = meta.get("components", {})
    wanted = list(stored) if components is None else list(components)
    out: dict[str, NDArray[Any]] = {}
    for name in wanted:
        if name not in stored:
            continue
        arr = _open_component(folder, name, stored[name])
        try:
            out[name] = _read_array(arr, folder / f"{name}.b2nd")
        except CorruptFileError:
            raise
        except Exception as exc:
            raise CorruptFileError(f"{folder / (name + '.b2nd')}: corrupt data ({exc})") from exc
    try:
        geometry = Geometry(meta["spacing"], meta["origin"], meta["direction"])
    except (KeyError, ValueError) as exc:
        raise CorruptFileError(f"{folder / _META}: bad geometry ({exc})") from exc
    rows = meta.get("nodules") or []
    nodules = pd.DataFrame(rows, columns=list(_NODULE_KEYS), dtype=np.float64)
    return StoredItem(
        id=str(meta.get("id", folder.name)),
        components=out,
        geometry=geometry,
        nodules=nodules,
        source=meta.get("source"),
        meta=meta,
        warnings=[str(w) for w in meta.get("warnings") or []],
        history=[dict(h) for h in meta.get("history") or []],
    )


def read_crop(
    path: str | os.PathLike[str],
    start: Sequence[int],
    shape: Sequence[int],
    component: str = "images",
) -> tuple[NDArray[Any], Geometry]:
    """Read a box of one component without decompressing the whole scan.

    Only the chunks of whole planes that the box touches are decompressed.

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

    Returns
    -------
    crop : ndarray
        The box, of the component's dtype.
    geometry : Geometry
        The item's geometry shifted to the box's first voxel.

    Raises
    ------
    InvalidParameterError
        No such component, or a box that does not lie inside the volume.
    CorruptFileError
        Unreadable metadata or array.

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
    folder = Path(path)
    meta = read_meta(folder)
    spec = meta.get("components", {}).get(component)
    if spec is None:
        raise InvalidParameterError(f"read_crop: {folder} has no component {component!r}")
    full = np.asarray(spec["shape"])
    st = np.asarray(start, dtype=np.int64)
    sh = np.asarray(shape, dtype=np.int64)
    if (
        st.shape != (3,)
        or sh.shape != (3,)
        or np.any(st < 0)
        or np.any(sh < 1)
        or np.any(st + sh > full)
    ):
        raise InvalidParameterError(
            f"read_crop: box start={tuple(st.tolist())} shape={tuple(sh.tolist())} must lie "
            f"inside the stored volume {tuple(full.tolist())} of {folder}"
        )
    arr = _open_component(folder, component, spec)
    box = tuple(slice(int(a), int(a + b)) for a, b in zip(st, sh, strict=True))
    geometry = Geometry(meta["spacing"], meta["origin"], meta["direction"]).shifted(st)
    return np.asarray(arr[box]), geometry
