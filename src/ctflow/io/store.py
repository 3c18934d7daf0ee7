"""The ctflow dump format: one folder per item, blosc2 arrays + a JSON sidecar.

Layout (``DESIGN.md`` §7)::

    <dst>/<id>/images.b2nd     blosc2 NDArray, ZSTD level 1 + byte shuffle, chunked along z
    <dst>/<id>/masks.b2nd      (when present) uint8
    <dst>/<id>/lungs.b2nd      (when present) uint8
    <dst>/<id>/meta.json       id, components (shape, dtype), spacing, origin, direction (z, y, x),
                               nodules (world mm), source, ctflow version, format version

No pickles: everything is arrays or JSON, safe to read from untrusted sources and across Python
versions. An item is written into a hidden temporary folder ``<dst>/.<id>.tmp-<random>`` and
renamed to ``<dst>/<id>`` only when complete, so a crash never leaves a half item that looks
whole. ``meta.json`` is written last inside the temporary folder; a folder without it is never an
item. Re-writing an existing item swaps it in with two renames, so readers see either the old or
the new item, never a mix. ``skip_existing=True`` leaves complete items alone (resume after a
crash).

Chunks are ``(min(Z, 16), Y, X)`` slabs split in-plane into at most 256x256 tiles, so a crop reads
only the chunks it touches (:func:`read_crop`).

Examples
--------
>>> import numpy as np, tempfile
>>> from ctflow.geometry import Geometry
>>> d = tempfile.mkdtemp()
>>> img = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
>>> _ = write_item(d, "scan1", {"images": img}, Geometry((2.0, 1.0, 1.0), (5.0, 0.0, 0.0)))
>>> item = read_item(f"{d}/scan1")
>>> bool((item.components["images"] == img).all()), item.geometry.origin.tolist()
(True, [5.0, 0.0, 0.0])
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidParameterError, UnsupportedFormatError
from ctflow.geometry import Geometry

__all__ = [
    "FORMAT_VERSION",
    "SKYSCRAPER_COMPONENTS",
    "StoredItem",
    "is_item_dir",
    "read_crop",
    "read_item",
    "write_item",
]

FORMAT_VERSION = 1
SKYSCRAPER_COMPONENTS = ("images", "masks", "lungs")
_META = "meta.json"
_NODULE_KEYS = ("z", "y", "x", "diameter")


@dataclass
class StoredItem:
    """One item read back from a dump."""

    id: str
    components: dict[str, NDArray[Any]]
    geometry: Geometry
    nodules: pd.DataFrame
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _chunks(shape: Sequence[int]) -> tuple[int, int, int]:
    z, y, x = (int(v) for v in shape)
    return (max(1, min(z, 16)), max(1, min(y, 256)), max(1, min(x, 256)))


def _cparams() -> blosc2.CParams:
    return blosc2.CParams(
        codec=blosc2.Codec.ZSTD, clevel=1, filters=[blosc2.Filter.SHUFFLE], nthreads=1
    )


def _check_id(item_id: str) -> str:
    text = str(item_id)
    if not text or text in (".", "..") or "/" in text or "\\" in text or text.startswith("."):
        raise InvalidParameterError(
            f"dump: item id must be a non-empty folder name without '/' and not starting with "
            f"'.'; got {item_id!r}"
        )
    return text


def is_item_dir(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a complete ctflow item folder (has ``meta.json``)."""
    return (Path(path) / _META).is_file()


def write_item(
    dst: str | os.PathLike[str],
    item_id: str,
    components: Mapping[str, NDArray[Any] | None],
    geometry: Geometry,
    *,
    nodules: pd.DataFrame | None = None,
    source: str | None = None,
    skip_existing: bool = False,
) -> Path | None:
    """Write one item atomically as ``<dst>/<item_id>/``.

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

    Returns
    -------
    Path or None
        The item folder, or None when skipped.

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
    root = Path(dst)
    final = root / item_id
    if skip_existing and is_item_dir(final):
        return None
    images = components.get("images")
    if images is None:
        raise InvalidParameterError(f"dump: item {item_id!r} has no images to write")
    shape = tuple(int(v) for v in images.shape)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{item_id}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        meta_components: dict[str, Any] = {}
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
            data = np.ascontiguousarray(arr)
            blosc2.asarray(
                data,
                urlpath=str(tmp / f"{name}.b2nd"),
                mode="w",
                chunks=_chunks(shape),
                cparams=_cparams(),
            )
            meta_components[name] = {"shape": list(shape), "dtype": np.dtype(data.dtype).str}
        table = _nodules_to_json(nodules)
        meta = {
            "format": "ctflow",
            "format_version": FORMAT_VERSION,
            "ctflow_version": _version(),
            "id": item_id,
            "components": meta_components,
            **geometry.as_dict(),
            "nodules": table,
            "source": source,
        }
        with open(tmp / _META, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is replaced without a half state."""
    if not final.exists():
        try:
            os.rename(tmp, final)
            return
        except OSError:
            if not final.exists():
                raise
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _version() -> str:
    from ctflow import __version__

    return __version__


def _nodules_to_json(nodules: pd.DataFrame | None) -> list[dict[str, float]]:
    if nodules is None or len(nodules) == 0:
        return []
    return [
        {k: float(row[k]) for k in _NODULE_KEYS}
        for row in nodules.loc[:, list(_NODULE_KEYS)].to_dict("records")
    ]


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``meta.json`` of an item folder."""
    folder = Path(path)
    meta_path = folder / _META
    if not meta_path.is_file():
        if folder.is_dir():
            raise UnsupportedFormatError(
                f"{folder}: not a ctflow item folder (no {_META}; an interrupted dump leaves only "
                f"hidden .tmp folders)"
            )
        raise CorruptFileError(f"{folder}: no such ctflow item folder")
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{meta_path}: unreadable ctflow metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != "ctflow":
        raise CorruptFileError(f"{meta_path}: not ctflow metadata (no 'format': 'ctflow')")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{meta_path}: written by a newer ctflow (format {meta['format_version']}); "
            f"this ctflow reads format <= {FORMAT_VERSION}"
        )
    return meta


def _open_component(folder: Path, name: str, spec: Mapping[str, Any]) -> Any:
    path = folder / f"{name}.b2nd"
    try:
        arr = blosc2.open(str(path), mode="r")
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
        Which arrays to read (default: all stored).

    Examples
    --------
    >>> import numpy as np, tempfile
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
            out[name] = arr[...]
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
    )


def read_crop(
    path: str | os.PathLike[str],
    start: Sequence[int],
    shape: Sequence[int],
    component: str = "images",
) -> tuple[NDArray[Any], Geometry]:
    """Read a box of one component without decompressing the whole scan.

    The box must lie inside the stored volume. Returns the crop and its geometry.

    Examples
    --------
    >>> import numpy as np, tempfile
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
