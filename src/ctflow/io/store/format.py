"""What a dump is: its names, its ``meta.json``, the item read back, the compressions.

Everything here describes the format on disk and is shared by :mod:`~ctflow.io.store.writer`
and :mod:`~ctflow.io.store.reader`; the arrays themselves are in
:mod:`~ctflow.io.store.arrays`.
"""

from __future__ import annotations

import json
import os
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
    "COMPRESSIONS",
    "FORMAT_VERSION",
    "SKYSCRAPER_COMPONENTS",
    "STAGING",
    "StoredItem",
    "is_item_dir",
    "read_meta",
]


FORMAT_VERSION = 1
SKYSCRAPER_COMPONENTS = ("images", "masks", "lungs")
_META = "meta.json"
#: Name of the hidden folder of ``dst`` where items are assembled before the final rename.
STAGING = ".ctflow-tmp"
_SEP = "~"  # never in a host name; ids come last in a staging name, so they may contain it
_NODULE_KEYS = ("z", "y", "x", "diameter")


@dataclass
class StoredItem:
    """One item read back from a dump (what :func:`~ctflow.io.store.read_item` returns).

    Attributes
    ----------
    id : str
        The item id (its folder name when ``meta.json`` has none).
    components : dict of str to ndarray
        The arrays read, by name (``images``, ``masks``, ``lungs``), each (Z, Y, X).
    geometry : Geometry
        Spacing, origin and direction in (z, y, x).
    nodules : DataFrame
        The nodule table, columns ``z, y, x, diameter`` in world mm.
    source : str or None
        Where the item came from, as given to :func:`~ctflow.io.store.write_item`.
    meta : dict
        The whole ``meta.json``.
    warnings : list of str
        What ctflow decided on its own about the item (``meta.json`` ``"warnings"``).
    history : list of dict
        The actions applied to the item, with their parameters (``meta.json`` ``"history"``).
    """

    id: str
    components: dict[str, NDArray[Any]]
    geometry: Geometry
    nodules: pd.DataFrame
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


#: ``compression=`` of :func:`write_item` / ``CTBatch.dump``: blosc2 codec and level.
COMPRESSIONS: dict[str, tuple[blosc2.Codec, int]] = {
    "lz4": (blosc2.Codec.LZ4, 5),
    "zstd": (blosc2.Codec.ZSTD, 1),
}


def _compression(value: str) -> tuple[blosc2.Codec, int]:
    """Return the blosc2 codec and level of a ``compression=`` name; refuse unknown names."""
    try:
        return COMPRESSIONS[str(value).lower()]
    except KeyError:
        raise InvalidParameterError(
            f"dump: compression must be one of {sorted(COMPRESSIONS)}; got {value!r}"
        ) from None


def _check_id(item_id: str) -> str:
    """Return ``item_id`` as a str after checking it is a plain, visible folder name."""
    text = str(item_id)
    if not text or text in (".", "..") or "/" in text or "\\" in text or text.startswith("."):
        raise InvalidParameterError(
            f"dump: item id must be a non-empty folder name without '/' and not starting with "
            f"'.'; got {item_id!r}"
        )
    return text


def is_item_dir(path: str | os.PathLike[str]) -> bool:
    """Tell whether ``path`` is a complete ctflow item folder (one that has ``meta.json``).

    Parameters
    ----------
    path : path
        A folder, e.g. ``<dst>/<id>``.

    Returns
    -------
    bool
        True for a complete item; False for anything else, a half-written one included.

    Examples
    --------
    >>> import tempfile
    >>> is_item_dir(tempfile.mkdtemp())
    False
    """
    return (Path(path) / _META).is_file()


def _version() -> str:
    """Return the version of ctflow that writes the item (``meta.json`` ``ctflow_version``)."""
    from ctflow import __version__

    return __version__


def _nodules_to_json(nodules: pd.DataFrame | None) -> list[dict[str, float]]:
    """Return a nodule table as JSON rows ``{"z", "y", "x", "diameter"}`` (world mm)."""
    if nodules is None or len(nodules) == 0:
        return []
    # numpy columns, not DataFrame.loc/to_dict: a crop's table is tiny, and pandas' per-call
    # overhead (with the GIL held) would be a large part of a crop item's dump
    columns = [np.asarray(nodules[k], dtype=np.float64) for k in _NODULE_KEYS]
    return [dict(zip(_NODULE_KEYS, row, strict=True)) for row in np.stack(columns, 1).tolist()]


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the ``meta.json`` of an item folder.

    Parameters
    ----------
    path : path
        The item folder ``<dst>/<id>``.

    Returns
    -------
    dict
        The parsed ``meta.json``.

    Raises
    ------
    UnsupportedFormatError
        A folder without ``meta.json`` (not an item, or an interrupted dump), or an item
        written by a newer ctflow.
    CorruptFileError
        No such folder, an unreadable ``meta.json``, or one that is not ctflow metadata.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> from ctflow.io.store import write_item
    >>> d = tempfile.mkdtemp()
    >>> _ = write_item(d, "a", {"images": np.zeros((1, 2, 2), np.int16)}, Geometry((1, 1, 1)))
    >>> meta = read_meta(f"{d}/a")
    >>> meta["id"], meta["format_version"], meta["components"]["images"]["shape"]
    ('a', 1, [1, 2, 2])
    """
    folder = Path(path)
    meta_path = folder / _META
    if not meta_path.is_file():
        if folder.is_dir():
            raise UnsupportedFormatError(
                f"{folder}: not a ctflow item folder (no {_META}; an interrupted dump leaves only "
                f"a hidden {STAGING} folder)"
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
