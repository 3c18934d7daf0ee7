"""Items on object storage read by byte ranges: ``meta.json``, then only the chunks a crop needs.

A dump's arrays are blosc2 files of whole-plane chunks, and ``meta.json`` records where each
chunk lies in its file (``chunk_planes``, ``chunk_ranges``; written by
:func:`~ctflow.io.store.frames._chunk_places`). :func:`read_remote_meta` fetches and checks an
item's ``meta.json`` alone; :func:`read_planes` fetches the chunks that hold planes
``[z0, z1)`` of one component, one ranged GET per chunk, concurrently, checks each against its
CRC-32 and decompresses it: a 64³ crop of a 300-plane scan dumped to S3 costs the few chunks
under it, not the whole array. This is what ``load(lazy=True)`` on ``s3://`` dumps reads
with (:mod:`ctflow.lazy`). Dumps written before ctflow recorded the places have no ranges:
their readers fetch the arrays whole.

Examples
--------
>>> import fsspec, numpy as np
>>> from ctflow.geometry import Geometry
>>> from ctflow.io.store import write_item
>>> fs = fsspec.filesystem("memory")
>>> local = write_item(__import__("tempfile").mkdtemp(), "a",
...                    {"images": np.arange(6 * 4 * 4, dtype=np.int16).reshape(6, 4, 4)},
...                    Geometry((1, 1, 1)))
>>> for f in local.iterdir():
...     fs.pipe(f"/dumps/a/{f.name}", f.read_bytes())
>>> meta, comps = read_remote_meta("memory://dumps/a")
>>> read_planes("memory://dumps/a", comps["images"], 2, 4)[:, 0, 0].tolist()
[32, 48]
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import blosc2
import numpy as np
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, UnsupportedFormatError
from ctflow.io.remote import _storage_errors, filesystem, split_url
from ctflow.io.store.arrays import _chunk_crc
from ctflow.io.store.format import _META, META_MAX_BYTES, _Component, _parse_meta
from ctflow.io.voxels import check_finite

__all__ = ["read_planes", "read_remote_meta"]

_FETCHERS = 8  # ranged GETs in flight for one read (object stores serve many at once)


def _cat(fs: Any, path: str, start: int, end: int, where: str, missing: Exception) -> bytes:
    """Fetch bytes ``[start, end)`` of an object with one ranged GET.

    Raises ``missing`` when the object is not there, a CorruptFileError naming ``where`` when
    the fetch fails.
    """
    try:
        return bytes(fs.cat_file(path, start=start, end=end))
    except FileNotFoundError:
        raise missing from None
    except _storage_errors() as exc:
        raise CorruptFileError(f"{where}: cannot be fetched ({exc})") from exc


def read_remote_meta(url: str) -> tuple[dict[str, Any], dict[str, _Component]]:
    """Fetch and check the ``meta.json`` of an item on object storage (no array is read).

    Raises
    ------
    UnsupportedFormatError
        No ``meta.json`` there (not an item, or an upload that has not finished: a reader
        trusts only items whose ``meta.json`` exists).
    CorruptFileError
        It cannot be fetched, is longer than ``META_MAX_BYTES`` or is not ctflow metadata.
    """
    fs = filesystem(url)
    _, path = split_url(url.rstrip("/"))
    missing = UnsupportedFormatError(
        f"{url}: not a ctflow item (no {_META}; an upload writes it last)"
    )
    raw = _cat(fs, f"{path}/{_META}", 0, META_MAX_BYTES + 1, f"{url}/{_META}", missing)
    if len(raw) > META_MAX_BYTES:
        raise CorruptFileError(
            f"{url}/{_META}: ctflow metadata must be at most META_MAX_BYTES = {META_MAX_BYTES} "
            "bytes; this one is longer"
        )
    return _parse_meta(url.rstrip("/"), bytes(raw))


def _fetch_chunks(url: str, comp: _Component, numbers: list[int]) -> list[bytes]:
    """Fetch compressed chunks by their recorded places (special chunks from ``meta.json``)."""
    assert comp.ranges is not None
    fs = filesystem(url)
    _, path = split_url(f"{url.rstrip('/')}/{comp.file}")

    def one(k: int) -> bytes:
        offset, size = comp.ranges[k]  # type: ignore[index]
        if offset < 0:
            return bytes.fromhex(str(size))
        where = f"{url}/{comp.file}"
        missing = CorruptFileError(f"{where}: no such object; {url}/{_META} names it")
        data = _cat(fs, path, offset, offset + int(size), where, missing)
        if len(data) != size:
            raise CorruptFileError(
                f"{url}/{comp.file}: chunk {k} must be {size} bytes at offset {offset}; the "
                f"object holds {len(data)} there (truncated or replaced?)"
            )
        return data

    if len(numbers) == 1:
        return [one(numbers[0])]
    with ThreadPoolExecutor(min(_FETCHERS, len(numbers))) as pool:
        return list(pool.map(one, numbers))


def read_planes(
    url: str, comp: _Component, z0: int, z1: int, *, verify: bool = True
) -> NDArray[Any]:
    """Read planes ``[z0, z1)`` of a component of an item on object storage, by byte ranges.

    Parameters
    ----------
    url : str
        The item's URL (``s3://bucket/dumps/<id>``).
    comp : _Component
        The component, as :func:`read_remote_meta` gives it; it must have recorded places.
    z0, z1 : int
        The planes to read, ``0 <= z0 < z1 <= Z``.
    verify : bool, default True
        Check each chunk fetched against its CRC-32 in ``meta.json``.

    Returns
    -------
    ndarray (z1 - z0, Y, X)
        The planes, of the component's dtype.

    Raises
    ------
    CorruptFileError
        An object missing or shorter than ``meta.json`` says, a damaged chunk, corrupt data.
    InvalidScanError
        NaN or Inf float voxels.
    """
    if comp.ranges is None or comp.planes is None or comp.crc32 is None:
        raise CorruptFileError(f"{url}/{_META}: {comp.name} has no recorded chunk places")
    depth, ny, nx = comp.shape
    if not 0 <= z0 < z1 <= depth:
        raise CorruptFileError(f"{url}: planes [{z0}, {z1}) are not inside 0..{depth}")
    cz = comp.planes
    numbers = list(range(z0 // cz, (z1 - 1) // cz + 1))
    chunk_nbytes = cz * ny * nx * comp.dtype.itemsize
    out = np.empty((z1 - z0, ny, nx), comp.dtype)
    full = np.empty((cz, ny, nx), comp.dtype)
    for k, chunk in zip(numbers, _fetch_chunks(url, comp, numbers), strict=True):
        where = f"{url}/{comp.file}: chunk {k} of {len(comp.ranges)}"
        if verify and _chunk_crc(chunk) != comp.crc32[k]:
            raise CorruptFileError(
                f"{where} is damaged: its CRC-32 must be {comp.crc32[k]:08x} (meta.json), it "
                f"is {_chunk_crc(chunk):08x}"
            )
        nbytes = int.from_bytes(chunk[4:8], "little") if len(chunk) >= 32 else -1
        if nbytes != chunk_nbytes:
            raise CorruptFileError(f"{where} must hold {chunk_nbytes} bytes; it says {nbytes}")
        try:
            blosc2.decompress2(chunk, dst=full)
        except Exception as exc:
            raise CorruptFileError(f"{where}: corrupt data ({exc})") from exc
        a, b = max(z0, k * cz), min(z1, (k + 1) * cz)
        out[a - z0 : b - z0] = full[a - k * cz : b - k * cz]
    check_finite(out, url, comp.dtype.name)
    return out
