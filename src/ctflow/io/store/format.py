"""What a dump is: its names, its ``meta.json``, the item read back, the compressions.

Everything here describes the format on disk and is shared by :mod:`~ctflow.io.store.writer`
and :mod:`~ctflow.io.store.reader`; the arrays themselves are in
:mod:`~ctflow.io.store.arrays`. ``meta.json`` is checked key by key before anything is read
(:func:`_parse_meta`): a damaged or hostile one is a :class:`~ctflow.errors.CorruptFileError`
naming it, never a ``ValueError``, ``TypeError``, ``RecursionError`` or ``MemoryError``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidParameterError, UnsupportedFormatError
from ctflow.geometry import Geometry
from ctflow.io.files import as_source_path
from ctflow.validation import as_item_id

__all__ = [
    "COMPRESSIONS",
    "FORMAT_VERSION",
    "META_MAX_BYTES",
    "SKYSCRAPER_COMPONENTS",
    "STAGING",
    "StoredItem",
    "is_item_dir",
    "read_meta",
]


#: Version 2: arrays under content-versioned names listed in ``meta.json``, with a CRC-32 per
#: compressed chunk. Version 1 (``<component>.b2nd``, no checksums) is still read.
FORMAT_VERSION = 2
SKYSCRAPER_COMPONENTS = ("images", "masks", "lungs")
_META = "meta.json"
#: A ``meta.json`` longer than this is refused before it is parsed (real ones are kilobytes).
META_MAX_BYTES = 16 * 1024 * 1024
#: Name of the hidden folder of ``dst`` where items are assembled before the final rename.
STAGING = ".ctflow-tmp"
_SEP = "~"  # never in a host name; ids come last in a staging name, so they may contain it
_NODULE_KEYS = ("z", "y", "x", "diameter")
_HEX_CHUNK = re.compile(r"(?:[0-9a-f]{2}){32,96}")  # a special chunk: its header and value
# an array file of an item: ``<component>.b2nd`` (format 1) or ``<component>.<16 hex>.b2nd``
_ARRAY_FILE = re.compile(r"(images|masks|lungs)(\.[0-9a-f]{16})?\.b2nd")
# the dtypes a component may have: booleans, integers and floats, in any byte order
_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248])")


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


@dataclass(frozen=True)
class _Component:
    """One array of an item as ``meta.json`` describes it (checked).

    Attributes
    ----------
    name : str
        ``images``, ``masks`` or ``lungs``.
    shape : tuple of 3 int
        (Z, Y, X), every size >= 1.
    dtype : numpy.dtype
        A boolean, integer or float dtype.
    file : str
        The array's file name in the item folder.
    crc32 : tuple of int or None
        The CRC-32 of each compressed chunk (:func:`~ctflow.io.store.arrays._chunk_crc`);
        None for format 1 dumps, which have none.
    planes : int or None
        Planes per chunk (``chunk_planes``), when ``meta.json`` says where the chunks lie.
    ranges : tuple or None
        Where each chunk lies in the file (``chunk_ranges``): ``(offset, size)``, or
        ``(-1, hex)`` for a special chunk (:func:`~ctflow.io.store.frames._chunk_places`);
        None for dumps written before ctflow recorded it.
    """

    name: str
    shape: tuple[int, int, int]
    dtype: np.dtype[Any]
    file: str
    crc32: tuple[int, ...] | None
    planes: int | None = None
    ranges: tuple[tuple[int, int | str], ...] | None = None

    @property
    def nbytes(self) -> int:
        """Return the array's size in bytes, uncompressed."""
        return math.prod(self.shape) * self.dtype.itemsize


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
    """Return ``item_id`` as a str after checking it is a plain, visible folder name.

    The same check as the :class:`~ctflow.dataset.Dataset`'s
    (:func:`~ctflow.validation.as_item_id`): an id a dataset takes can be dumped.
    """
    return as_item_id(item_id, "dump")


def _is_stored_dtype(dtype: np.dtype[Any]) -> bool:
    """Tell whether a component may have ``dtype`` (booleans, integers, floats)."""
    return _DTYPE.fullmatch(dtype.str) is not None


def _array_file(name: str, shape: tuple[int, ...], dtype: np.dtype[Any], crcs: list[int]) -> str:
    """Return the file name of an array: ``<name>.<16 hex>.b2nd``, from its checksums.

    The hex digits are a hash of the array's shape, dtype and chunk checksums, so the same
    array gets the same name whoever writes it, and a rewrite with other content another one.
    """
    key = json.dumps([list(shape), dtype.str, crcs], separators=(",", ":")).encode()
    return f"{name}.{hashlib.blake2b(key, digest_size=8).hexdigest()}.b2nd"


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

    Raises
    ------
    InvalidParameterError
        A path with a NUL byte, a name over 255 bytes or over 4096 bytes in all.

    Examples
    --------
    >>> import tempfile
    >>> is_item_dir(tempfile.mkdtemp())
    False
    """
    return (as_source_path(path, "is_item_dir") / _META).is_file()


def _version() -> str:
    """Return the version of ctflow that writes the item (``meta.json`` ``ctflow_version``)."""
    from ctflow import __version__

    return __version__


def _nodules_to_json(nodules: pd.DataFrame | None) -> list[dict[str, float]]:
    """Return a nodule table as JSON rows ``{"z", "y", "x", "diameter"}`` (world mm).

    A ``label`` column (the label value each nodule was found in, from
    ``fetch_nodules_from_mask``) is kept as an integer ``"label"`` in every row.
    """
    if nodules is None or len(nodules) == 0:
        return []
    # numpy columns, not DataFrame.loc/to_dict: a crop's table is tiny, and pandas' per-call
    # overhead (with the GIL held) would be a large part of a crop item's dump
    columns = [np.asarray(nodules[k], dtype=np.float64) for k in _NODULE_KEYS]
    rows = [dict(zip(_NODULE_KEYS, row, strict=True)) for row in np.stack(columns, 1).tolist()]
    if "label" in nodules.columns:
        for row, label in zip(rows, np.asarray(nodules["label"]).tolist(), strict=True):
            row["label"] = int(label)
    return rows


def _show(value: Any, limit: int = 60) -> str:
    """Return a short ``repr`` of a value from a file, for an error message."""
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else f"{text[:limit]}... ({type(value).__name__})"


def _is_int(value: Any) -> bool:
    """Tell whether a JSON value is an integer (``true`` and ``1.0`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """Tell whether a JSON value is a number (``true`` is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_nodule(row: Any) -> bool:
    """Tell whether a JSON value is a nodule row ``{"z", "y", "x", "diameter"}`` of numbers.

    A ``"label"``, when there, must be an integer >= 0.
    """
    if not (isinstance(row, dict) and all(_is_number(row.get(k)) for k in _NODULE_KEYS)):
        return False
    label = row.get("label", 0)
    return _is_int(label) and label >= 0


def _list_of(value: Any, check: Callable[[Any], bool]) -> bool:
    """Tell whether a JSON value is null or a list whose every element passes ``check``."""
    return value is None or (isinstance(value, list) and all(check(v) for v in value))


def _read_meta_bytes(folder: Path) -> tuple[bytes, tuple[int, ...]]:
    """Return the bytes of ``<folder>/meta.json`` (at most :data:`META_MAX_BYTES`).

    Also returns which ``meta.json`` they are (inode, size, times): a rewrite replaces it by
    another file, so a reader can tell whether the item changed while it read it.
    """
    meta_path = folder / _META
    if not meta_path.is_file():
        if folder.is_dir():
            raise UnsupportedFormatError(
                f"{folder}: not a ctflow item folder (no {_META}; an interrupted dump leaves only "
                f"a hidden {STAGING} folder)"
            )
        raise CorruptFileError(f"{folder}: no such ctflow item folder")
    try:
        with open(meta_path, "rb") as fh:
            st = os.fstat(fh.fileno())
            raw = fh.read(META_MAX_BYTES + 1)
    except OSError as exc:
        raise CorruptFileError(f"{meta_path}: unreadable ctflow metadata ({exc})") from exc
    if len(raw) > META_MAX_BYTES:
        raise CorruptFileError(
            f"{meta_path}: ctflow metadata must be at most META_MAX_BYTES = {META_MAX_BYTES} "
            "bytes; this one is longer"
        )
    return raw, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _parse_meta(folder: Path | str, raw: bytes) -> tuple[dict[str, Any], dict[str, _Component]]:
    """Parse and check the bytes of ``<folder>/meta.json``; return it and its components.

    ``folder`` (a path, or the URL of an item on object storage) only names the file in
    messages.

    Raises
    ------
    UnsupportedFormatError
        Written by a newer ctflow.
    CorruptFileError
        Anything else that is not what ctflow writes (the message names the file and the key).
    """
    meta_path = f"{folder}/{_META}" if isinstance(folder, str) else folder / _META
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError, MemoryError) as exc:
        # a UnicodeDecodeError is a ValueError; nesting deeper than Python's recursion limit is a
        # RecursionError
        reason = "nested too deeply" if isinstance(exc, RecursionError) else _show(str(exc), 200)
        raise CorruptFileError(f"{meta_path}: unreadable ctflow metadata ({reason})") from None
    if not isinstance(meta, dict) or meta.get("format") != "ctflow":
        raise CorruptFileError(f"{meta_path}: not ctflow metadata (no 'format': 'ctflow')")

    def bad(key: str, must: str) -> CorruptFileError:
        return CorruptFileError(f"{meta_path}: {key} must be {must}; got {_show(meta.get(key))}")

    version = meta.get("format_version", 1)
    if not _is_int(version) or version < 1:
        raise bad("format_version", "an integer >= 1")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{meta_path}: written by a newer ctflow (format {version}); "
            f"this ctflow reads format <= {FORMAT_VERSION}"
        )
    if not isinstance(meta.get("id", ""), str):
        raise bad("id", "a str")
    if not isinstance(meta.get("source"), str | None):
        raise bad("source", "a str or null")
    if not _list_of(meta.get("warnings"), lambda w: isinstance(w, str)):
        raise bad("warnings", "a list of str")
    if not _list_of(meta.get("history"), lambda h: isinstance(h, dict)):
        raise bad("history", "a list of objects")
    if not _list_of(meta.get("nodules"), _is_nodule):
        raise bad("nodules", 'a list of {"z", "y", "x", "diameter"} numbers (world mm)')
    try:
        Geometry(meta["spacing"], meta["origin"], meta["direction"])
    except (KeyError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # an InvalidScanError is a ValueError
        raise CorruptFileError(f"{meta_path}: bad geometry ({_show(str(exc), 200)})") from None
    return meta, _parse_components(meta_path, meta.get("components"), version)


def _parse_components(meta_path: Path | str, comps: Any, version: int) -> dict[str, _Component]:
    """Check ``meta.json``'s ``components`` and return them (see :func:`_parse_meta`)."""
    if not isinstance(comps, dict) or "images" not in comps:
        raise CorruptFileError(
            f"{meta_path}: components must map names among {SKYSCRAPER_COMPONENTS} to their "
            f"shape and dtype, images included; got {_show(comps)}"
        )
    out: dict[str, _Component] = {}
    for name, spec in comps.items():
        where = f"{meta_path}: component {_show(name)}"
        if name not in SKYSCRAPER_COMPONENTS:  # never a path: only these names
            raise CorruptFileError(f"{where}: the name must be one of {SKYSCRAPER_COMPONENTS}")
        if not isinstance(spec, dict):
            raise CorruptFileError(f"{where}: must be an object with shape and dtype")
        shape = spec.get("shape")
        if not (isinstance(shape, list) and len(shape) == 3 and all(
            _is_int(v) and v >= 1 for v in shape
        )):  # fmt: skip
            raise CorruptFileError(f"{where}: shape must be 3 integers >= 1; got {_show(shape)}")
        dtype = spec.get("dtype")
        if not (isinstance(dtype, str) and _DTYPE.fullmatch(dtype)):
            raise CorruptFileError(
                f"{where}: dtype must be a numeric numpy dtype such as '<i2', '|u1' or '<f4' "
                f"(booleans, integers, floats); got {_show(dtype)}"
            )
        file = spec.get("file", None if version >= 2 else f"{name}.b2nd")
        match = _ARRAY_FILE.fullmatch(file) if isinstance(file, str) else None
        if match is None or match.group(1) != name or not isinstance(file, str):
            raise CorruptFileError(
                f"{where}: file must be a file name '{name}.<16 hex digits>.b2nd'; "
                f"got {_show(file)}"
            )
        crcs = spec.get("chunk_crc32")
        if crcs is None and version >= 2:
            raise CorruptFileError(f"{where}: chunk_crc32 is missing (format {version} has it)")
        if crcs is not None and not (isinstance(crcs, list) and crcs and all(
            _is_int(c) and 0 <= c < 2**32 for c in crcs
        )):  # fmt: skip
            raise CorruptFileError(
                f"{where}: chunk_crc32 must be a non-empty list of CRC-32 values (0 <= c < 2**32)"
                f"; got {_show(crcs)}"
            )
        planes, ranges = _parse_places(spec, shape[0], crcs)
        out[name] = _Component(
            name,
            (shape[0], shape[1], shape[2]),
            np.dtype(dtype),
            file,
            None if crcs is None else tuple(crcs),
            planes,
            ranges,
        )
    first = out["images"].shape
    for comp in out.values():
        if comp.shape != first:
            raise CorruptFileError(
                f"{meta_path}: component {comp.name!r} has shape {comp.shape}, images have {first}"
            )
    return out


def _parse_places(
    spec: dict[str, Any], depth: int, crcs: list[int] | None
) -> tuple[int | None, tuple[tuple[int, int | str], ...] | None]:
    """Return a component's ``chunk_planes`` and ``chunk_ranges`` (see _Component).

    They are a hint for ranged reads of dumps on object storage: when absent, malformed or
    inconsistent with the checksums they are ignored (None, None), and readers fetch the
    array whole — which checks everything.
    """
    planes, ranges = spec.get("chunk_planes"), spec.get("chunk_ranges")

    def place(p: Any) -> bool:
        if not (isinstance(p, list) and len(p) == 2 and _is_int(p[0])):
            return False
        if p[0] >= 0:
            return _is_int(p[1]) and p[1] >= 32
        return p[0] == -1 and isinstance(p[1], str) and bool(_HEX_CHUNK.fullmatch(p[1]))

    if (
        isinstance(planes, int)
        and _is_int(planes)
        and 1 <= planes <= 2**20
        and crcs is not None
        and isinstance(ranges, list)
        and len(ranges) == len(crcs) == -(-depth // planes)
        and all(place(p) for p in ranges)
    ):
        return planes, tuple((int(a), b) for a, b in ranges)
    return None, None


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
        No such folder, an unreadable ``meta.json``, one longer than :data:`META_MAX_BYTES`,
        or one that is not ctflow metadata (a bad format version, component, shape, dtype,
        file name, checksum, geometry or nodule table).
    InvalidParameterError
        A path with a NUL byte, a name over 255 bytes or over 4096 bytes in all.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> from ctflow.io.store import write_item
    >>> d = tempfile.mkdtemp()
    >>> _ = write_item(d, "a", {"images": np.zeros((1, 2, 2), np.int16)}, Geometry((1, 1, 1)))
    >>> meta = read_meta(f"{d}/a")
    >>> meta["id"], meta["format_version"], meta["components"]["images"]["shape"]
    ('a', 2, [1, 2, 2])
    """
    folder = as_source_path(path, "read_meta")
    return _parse_meta(folder, _read_meta_bytes(folder)[0])[0]
