"""The ctflow dump format: one folder per item, blosc2 arrays + a JSON sidecar.

Layout (``DESIGN.md`` §7; format version 2)::

    <dst>/<id>/meta.json                  id, components (shape, dtype, file, chunk_crc32),
                                          spacing, origin, direction (z, y, x), nodules (world
                                          mm), source, ctflow version, format version
    <dst>/<id>/images.<16 hex>.b2nd       blosc2 NDArray, LZ4 + byte shuffle (or ZSTD), chunked
                                          along z; dense float chunks uncompressed with LZ4
    <dst>/<id>/masks.<16 hex>.b2nd        (when present) uint8
    <dst>/<id>/lungs.<16 hex>.b2nd        (when present) uint8

An array's file name ends with a hash of its shape, dtype and chunk checksums: the same array
gets the same name whoever writes it, other content another name. ``meta.json`` names the
files; readers open only those. Format 1 dumps (``<component>.b2nd``, no ``file`` and no
checksums in ``meta.json``) are still read, unchecked; rewriting one turns it into format 2.

No pickles: everything is arrays or JSON, safe to read from untrusted sources and across Python
versions. A ``meta.json`` is checked before anything is read: at most :data:`META_MAX_BYTES`,
known component names only (never a path), 3 sizes >= 1, a bool, integer or float dtype, file
names of the form above; anything else is a :class:`~ctflow.errors.CorruptFileError` naming it.
An array larger than :data:`~ctflow.io.voxels.MAX_VOXELS_BYTES` (the file readers' limit, read
at call time: set ``ctflow.io.voxels.MAX_VOXELS_BYTES`` to change it) is refused before it is
allocated, the array file must have the shape and dtype ``meta.json`` says, and float voxels
must be finite (:class:`~ctflow.errors.InvalidScanError` otherwise, as for scan files); NaN and
Inf are refused when an item is written too. The paths given to the functions here are checked
first: a NUL byte, a name over 255 bytes or a path over 4096 bytes is an
:class:`~ctflow.errors.InvalidParameterError` naming it.

The code lives in :mod:`~ctflow.io.store.format` (names, ``meta.json``, :class:`StoredItem`),
:mod:`~ctflow.io.store.arrays` (one array: layout, chunk compression, checksums, reads),
:mod:`~ctflow.io.store.frames` (the frames ctflow writes itself: crops, uncompressed chunks),
:mod:`~ctflow.io.store.files` (file creation and early writeback),
:mod:`~ctflow.io.store.staging` (staging folders, putting items in place, dead writers),
:mod:`~ctflow.io.store.writer` (:func:`write_item`) and :mod:`~ctflow.io.store.reader`
(:func:`read_item`, :func:`read_crop`).

Atomic, idempotent, deterministic writes
----------------------------------------
An item is written into a staging folder ``<dst>/.ctflow-tmp/<host>~<pid>~<random>~<id>`` and
its files are flushed to disk (``fsync``), ``meta.json`` last. A new item is then renamed to
``<dst>/<id>``, so a crash — Ctrl-C, a killed process, a lost machine — never leaves a half item
that looks whole; a folder without ``meta.json`` is never an item. ``write_item(sync=False)``
(``dump(sync=False)``) skips the ``fsync`` of files and folders: other processes still see the
old item or the new one, but after a power failure the item may be missing or damaged (and then
refused by its checksums) — for scratch outputs that can be written again.

Rewriting an existing item is one atomic step as readers see it. The new arrays, under their
own names, are moved into the item folder (an array the folder already holds byte for byte is
left as it is, so an array a ``meta.json`` names never changes), then ``meta.json`` is replaced
with one ``os.replace``, then the arrays it no longer names are removed. A read parses
``meta.json`` and opens only the arrays it names; when it fails and ``meta.json`` has been
replaced meanwhile, it starts over from the new one (up to 8 times). The guarantee:

    A read of an item (:func:`read_item`, :func:`read_crop`, ``load()``) returns exactly the
    item of one ``meta.json`` — all of the old one or all of the new one, never a mix of the
    two and never "no such item" — however many rewrites run meanwhile, as long as fewer than
    8 finish during one read. A failure while ``meta.json`` stays the same is the item's own
    (a missing array is a :class:`~ctflow.errors.CorruptFileError` at once).

Writers of one item take turns on a lock file in the item folder (``flock``, removed when
done). Where there are no file locks (Windows between processes, file systems without locks),
concurrent rewrites of one item with *different* content may leave it naming a removed array;
same-content rewrites are always safe. A rewrite interrupted before ``meta.json`` is replaced
leaves the old item whole, plus array files no ``meta.json`` names (``skip_existing`` ignores
them; the next rewrite of the item removes them). Writing the same item twice (a Dask task that
reruns after its worker died) leaves one copy. The bytes written depend only on the item and
the compression (no timestamps, host names or thread counts: every chunk is compressed on its
own, in any thread), so the same data dumped twice, by any engine, is byte-identical, file
names included.

A writer that dies leaves its staging folder behind. It is removed by a later write into the
same ``dst`` on the same host once that process is gone (a process looks at its first write
into a ``dst``, then at most once a minute); :func:`remove_stale_writes` does it on demand, and
with ``all_writers=True`` also clears leftovers of other hosts when nothing is writing. Cleaning
never deletes anything outside ``dst``: a staging folder that is a symbolic link is not looked
into, and links inside it are removed themselves, never followed. The staging folder disappears
when empty. ``skip_existing=True`` leaves complete items alone (resume after a crash).

Damage detection
----------------
``meta.json`` holds, per array, the CRC-32 (``zlib.crc32``) of every compressed chunk as stored
in the file (``chunk_crc32``; a special chunk, a run of zeros that blosc2 keeps in its index and
not in the data, has one over its sizes and kind). Disk and transfer damage hits the compressed
bytes, and they are fewer than the voxels, so checking them costs about half as much as
checking the decompressed voxels would; the check runs in the tasks that decompress the chunks
(zlib releases the GIL). Chunks are read with one ``pread`` each into a buffer the reading
thread keeps (blosc2's ``get_chunk`` copies them twice into fresh memory), which pays for most
of it (the figures are in ``docs/api/io.md``, "Notes from the I/O code"). A crop checks the
whole chunks its box touches. A mismatch is a :class:`~ctflow.errors.CorruptFileError` naming
the file and the chunk.
``read_item(..., verify=False)``, ``read_crop(..., verify=False)`` and ``load(verify=False)``
skip the check; format 1 dumps have no checksums and are read unchecked.

Chunks and compression
----------------------
An array is stored in chunks of whole ``(Y, X)`` planes, about 8 MiB each, made of blocks of whole
planes of about 512 KiB (a chunk is a contiguous z-slab of the array). Chunks are compressed and
decompressed independently on a small thread pool with the GIL released (blosc2's
``set_releasegil``), straight between the array and the file, so a dump or load runs on every
core and never blocks the other threads of a pipeline. A crop decompresses only the planes it
touches (:func:`read_crop`). Compression is ``"lz4"`` (default: LZ4 level 5 + byte shuffle, the
fastest to read back) or ``"zstd"`` (ZSTD level 1 + byte shuffle: smaller files, slower to
read back). With ``"lz4"``, a float chunk is stored uncompressed (a blosc2 chunk of level 0,
which any blosc2 reader reads) unless a sample of it shrinks to 60 % or less: the low mantissa
bytes of a CT are noise, so a normalised float scan barely shrinks, for more CPU than the disk
time it saves (figures in ``docs/api/io.md``); empty space
(probability maps, masks) is still compressed. Each chunk says how it is stored, so an array
may mix both, and the float dumps of earlier versions (every chunk compressed) read as ever.
Dumps of older layouts (any chunking, any blosc2 codec) are read through blosc2's generic path.

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
    META_MAX_BYTES,
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
    "META_MAX_BYTES",
    "SKYSCRAPER_COMPONENTS",
    "STAGING",
    "StoredItem",
    "is_item_dir",
    "read_crop",
    "read_item",
    "remove_stale_writes",
    "write_item",
]
