"""The ctflow dump format: one folder per item, blosc2 arrays + a JSON sidecar.

Layout (``DESIGN.md`` §7)::

    <dst>/<id>/images.b2nd     blosc2 NDArray, LZ4 + byte shuffle (or ZSTD), chunked along z
    <dst>/<id>/masks.b2nd      (when present) uint8
    <dst>/<id>/lungs.b2nd      (when present) uint8
    <dst>/<id>/meta.json       id, components (shape, dtype), spacing, origin, direction (z, y, x),
                               nodules (world mm), source, ctflow version, format version

No pickles: everything is arrays or JSON, safe to read from untrusted sources and across Python
versions.

The code lives in :mod:`~ctflow.io.store.format` (names, ``meta.json``, :class:`StoredItem`),
:mod:`~ctflow.io.store.arrays` (one array: layout, chunk compression, crop frames),
:mod:`~ctflow.io.store.files` (file creation and early writeback),
:mod:`~ctflow.io.store.staging` (staging folders, the final swap, dead writers),
:mod:`~ctflow.io.store.writer` (:func:`write_item`) and :mod:`~ctflow.io.store.reader`
(:func:`read_item`, :func:`read_crop`).

Atomic, idempotent, deterministic writes
----------------------------------------
An item is written into a staging folder ``<dst>/.ctflow-tmp/<host>~<pid>~<random>~<id>``, its
files are flushed to disk (``fsync``), and it is renamed to ``<dst>/<id>`` only when complete, so a
crash — Ctrl-C, a killed process, a lost machine — never leaves a half item that looks whole.
``meta.json`` is written last; a folder without it is never an item. Re-writing an existing item
swaps it in with two renames, so readers see either the old or the new item, never a mix, and
writing the same item twice (a Dask task that reruns after its worker died) leaves one copy.
The bytes written depend only on the item and the compression (no timestamps, host names or
thread counts: every chunk is compressed on its own, in any thread), so the same data dumped
twice, by any engine, is byte-identical.

A writer that dies leaves its staging folder behind. It is removed by a later write into the
same ``dst`` on the same host once that process is gone (a process looks at its first write
into a ``dst``, then at most once a minute); :func:`remove_stale_writes` does it on demand, and
with ``all_writers=True`` also clears leftovers of other hosts when nothing is writing. The
staging folder disappears when empty. ``skip_existing=True`` leaves complete items alone (resume
after a crash).

Chunks and compression
----------------------
An array is stored in chunks of whole ``(Y, X)`` planes, about 8 MiB each, made of blocks of whole
planes of about 512 KiB (a chunk is a contiguous z-slab of the array). Chunks are compressed and
decompressed independently on a small thread pool with the GIL released (blosc2's
``set_releasegil``), straight between the array and the file, so a dump or load runs on every
core and never blocks the other threads of a pipeline. A crop decompresses only the planes it
touches (:func:`read_crop`). Compression is ``"lz4"`` (default: LZ4 level 5 + byte shuffle, the
fastest to read back) or ``"zstd"`` (ZSTD level 1 + byte shuffle: smaller files, slower to
read back). Dumps of older layouts (any chunking, any blosc2 codec) are read through blosc2's
generic path.

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

from ctflow.io.store.format import (
    COMPRESSIONS,
    FORMAT_VERSION,
    SKYSCRAPER_COMPONENTS,
    STAGING,
    StoredItem,
    is_item_dir,
)
from ctflow.io.store.format import read_meta as read_meta
from ctflow.io.store.reader import read_crop, read_item
from ctflow.io.store.staging import remove_stale_writes
from ctflow.io.store.writer import write_item

__all__ = [
    "COMPRESSIONS",
    "FORMAT_VERSION",
    "SKYSCRAPER_COMPONENTS",
    "STAGING",
    "StoredItem",
    "is_item_dir",
    "read_crop",
    "read_item",
    "remove_stale_writes",
    "write_item",
]
