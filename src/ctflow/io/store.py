"""The ctflow dump format: one folder per item, blosc2 arrays + a JSON sidecar.

Layout (``DESIGN.md`` §7)::

    <dst>/<id>/images.b2nd     blosc2 NDArray, LZ4 + byte shuffle (or ZSTD), chunked along z
    <dst>/<id>/masks.b2nd      (when present) uint8
    <dst>/<id>/lungs.b2nd      (when present) uint8
    <dst>/<id>/meta.json       id, components (shape, dtype), spacing, origin, direction (z, y, x),
                               nodules (world mm), source, ctflow version, format version

No pickles: everything is arrays or JSON, safe to read from untrusted sources and across Python
versions.

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
fastest to read back) or ``"zstd"`` (ZSTD level 1 + byte shuffle: ~20 % smaller, ~2x slower to
read). On a 300x512x512 int16 phantom (``make bench``, cases ``dump`` / ``load_dump_cold``) LZ4
writes 84 MB where ``.npy`` writes 157 MB and reads back faster than ``.npy`` from a cold page
cache. Dumps of older layouts (any chunking, any blosc2 codec) are read through blosc2's
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

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import shutil
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow import memory
from ctflow.errors import CorruptFileError, InvalidParameterError, UnsupportedFormatError
from ctflow.geometry import Geometry

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

FORMAT_VERSION = 1
SKYSCRAPER_COMPONENTS = ("images", "masks", "lungs")
_META = "meta.json"
#: Name of the hidden folder of ``dst`` where items are assembled before the final rename.
STAGING = ".ctflow-tmp"
_SEP = "~"  # never in a host name; ids come last in a staging name, so they may contain it
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
    warnings: list[str] = field(default_factory=list)


#: ``compression=`` of :func:`write_item` / ``CTBatch.dump``: blosc2 codec and level.
COMPRESSIONS: dict[str, tuple[blosc2.Codec, int]] = {
    "lz4": (blosc2.Codec.LZ4, 5),
    "zstd": (blosc2.Codec.ZSTD, 1),
}
_BLOCK_BYTES = 512 * 1024  # a block (whole planes) fits in L2 while it is (de)compressed
_CHUNK_BYTES = 8 * 1024 * 1024  # a chunk is what one thread reads and decompresses at a time
#: threads (de)compressing the chunks of one array
_IO_THREADS = max(
    1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
)
_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None

# compression and decompression of whole chunks run without the GIL (process-wide blosc2 flag;
# it only releases the GIL around blosc2's C loops over buffers the call holds)
blosc2.set_releasegil(True)


def _io_pool() -> ThreadPoolExecutor:
    """The process's pool of chunk (de)compressors (re-created in a forked child)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(_IO_THREADS, thread_name_prefix="ctflow-store"),
            )
        return _pool[1]


def _layout(shape: Sequence[int], itemsize: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunks and blocks of whole ``(Y, X)`` planes (a chunk may overhang the last plane)."""
    z, y, x = (max(1, int(v)) for v in shape)
    plane = y * x * max(1, int(itemsize))
    bz = max(1, min(z, _BLOCK_BYTES // plane))
    cz = bz * max(1, _CHUNK_BYTES // (bz * plane))
    cz = min(cz, -(-z // bz) * bz)
    return (cz, y, x), (bz, y, x)


def _compression(value: str) -> tuple[blosc2.Codec, int]:
    try:
        return COMPRESSIONS[str(value).lower()]
    except KeyError:
        raise InvalidParameterError(
            f"dump: compression must be one of {sorted(COMPRESSIONS)}; got {value!r}"
        ) from None


class _CropFrame:
    """The blosc2 frame of one-chunk arrays of one layout, as ``head + chunk + tail``.

    Every frame change in blosc2 (appending or replacing a chunk, serialising an in-memory
    array) recompresses the chunk-offset index with a context of four threads, which are
    started and joined on the spot (c-blosc2's ``frame.c`` hard-codes them; only the process-wide
    ``BLOSC_NTHREADS`` overrides it): 12 thread starts and exits per crop item. With a second
    batch running, each crop's arrays then took 2-3x as long to write. A one-chunk frame of a
    given layout differs from another only in its chunk and in two header fields (frame length,
    compressed size), so the frame is learnt once per layout from blosc2 itself and verified
    byte for byte against blosc2 on a second chunk before it is ever used; a layout whose frame
    does not follow that model is written through blosc2 as before. An all-zero array is a
    special chunk that blosc2 keeps in the offset index, not in the data: its whole frame is
    learnt too (empty nodule-mask crops are common).
    """

    __slots__ = ("cbytes_at", "head", "len_at", "tail", "zeros")

    def __init__(
        self, head: bytes, len_at: int, cbytes_at: int, tail: bytes, zeros: tuple[bytes, bytes]
    ) -> None:
        self.head, self.len_at, self.cbytes_at, self.tail = head, len_at, cbytes_at, tail
        self.zeros = zeros  # (chunk, frame) of an all-zero array

    def parts(self, chunk: bytes) -> list[bytes] | None:
        """The frame holding ``chunk`` (a blosc2 chunk of this layout), in pieces.

        None for a special chunk (a run of one value) other than all zeros: blosc2 frames it.
        """
        if len(chunk) >= 32 and (chunk[31] >> 4) & 0x7:  # blosc2's special-chunk bits
            return [self.zeros[1]] if chunk == self.zeros[0] else None
        head = bytearray(self.head)
        size = len(self.head) + len(chunk) + len(self.tail)
        head[self.len_at : self.len_at + 8] = struct.pack(">q", size)
        head[self.cbytes_at : self.cbytes_at + 8] = struct.pack(">q", len(chunk))
        return [bytes(head), chunk, self.tail]

    @classmethod
    def learn(
        cls,
        shape: tuple[int, ...],
        dtype: np.dtype[Any],
        blocks: tuple[int, ...],
        flags: dict[str, Any],
    ) -> _CropFrame | None:
        """The frame of this layout, or None when blosc2's frames do not follow the model."""

        def reference(data: NDArray[Any]) -> tuple[bytes, bytes]:
            arr = blosc2.empty(
                shape,
                dtype,
                chunks=shape,
                blocks=blocks,
                cparams=blosc2.CParams(nthreads=1, **flags),
            )
            chunk = _compress_chunk(data, blocks, flags)
            arr.schunk.update_chunk(0, chunk)
            return chunk, arr.schunk.to_cframe()

        nbytes = int(np.prod(shape)) * dtype.itemsize
        noise = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
        chunk_a, frame_a = reference(noise.view(dtype).reshape(shape))  # does not compress
        at = frame_a.find(chunk_a)
        if at < 0 or frame_a.find(chunk_a, at + 1) >= 0:
            return None
        head, tail = frame_a[:at], frame_a[at + len(chunk_a) :]
        len_at = _only(head, struct.pack(">q", len(frame_a)))
        cbytes_at = _only(head, struct.pack(">q", len(chunk_a)))
        if len_at is None or cbytes_at is None or abs(len_at - cbytes_at) < 8:
            return None
        frame = cls(head, len_at, cbytes_at, tail, reference(np.zeros(shape, dtype)))
        ramp = np.arange(nbytes, dtype=np.uint8).view(dtype).reshape(shape)  # compresses well
        chunk_b, frame_b = reference(ramp)
        check = frame.parts(chunk_b)
        return frame if check is not None and b"".join(check) == frame_b else None


def _only(data: bytes, pattern: bytes) -> int | None:
    """The one position of ``pattern`` in ``data``, or None (absent or ambiguous)."""
    at = data.find(pattern)
    return at if at >= 0 and data.find(pattern, at + 1) < 0 else None


_crop_frames: dict[tuple[Any, ...], _CropFrame | None] = {}


def _crop_frame(
    shape: tuple[int, ...], dtype: np.dtype[Any], blocks: tuple[int, ...], flags: dict[str, Any]
) -> _CropFrame | None:
    """The learnt frame of a one-chunk layout (learnt on first use; None: use blosc2)."""
    key = (shape, dtype.str, blocks, flags["codec"], flags["clevel"])
    if key not in _crop_frames:  # two threads may both learn it: same result
        _crop_frames[key] = _CropFrame.learn(shape, dtype, blocks, flags)
    return _crop_frames[key]


def _compress_chunk(data: NDArray[Any], blocks: tuple[int, ...], flags: dict[str, Any]) -> bytes:
    """One blosc2 chunk of ``data`` with blocks of ``blocks`` (single-threaded, GIL-free)."""
    blocksize = int(np.prod(blocks)) * data.itemsize
    return blosc2.compress2(data, typesize=data.itemsize, blocksize=blocksize, nthreads=1, **flags)


def _write_array(path: Path, data: NDArray[Any], compression: str) -> int:
    """Write ``data`` (C-contiguous, 3-D) as a blosc2 NDArray of whole-plane chunks.

    Returns an open descriptor of the file, its writeback started, for the caller to fsync.
    """
    codec, clevel = _compression(compression)
    (cz, y, x), blocks = _layout(data.shape, data.itemsize)
    flags = {"codec": codec, "clevel": clevel, "filters": [blosc2.Filter.SHUFFLE]}
    n_chunks = -(-int(data.shape[0]) // cz)
    if n_chunks == 1 and cz == data.shape[0]:
        # a crop: its frame is written here with one GIL-free write (blosc2's file updates hold
        # the GIL while they wait for the disk), without blosc2's frame code where possible
        frame = _crop_frame(tuple(data.shape), data.dtype, blocks, flags)
        parts = None if frame is None else frame.parts(_compress_chunk(data, blocks, flags))
        if parts is not None:
            return _write_file(path, *parts)
    where = {} if n_chunks == 1 else {"urlpath": str(path), "mode": "w"}
    arr = blosc2.empty(
        data.shape,
        data.dtype,
        chunks=(cz, y, x),
        blocks=blocks,
        cparams=blosc2.CParams(nthreads=1, **flags),
        **where,
    )

    def compress(k: int) -> bytes:
        slab = data[k * cz : (k + 1) * cz]
        if slab.shape[0] < cz:  # the last chunk overhangs: pad it as blosc2 does (zeros)
            full = np.zeros((cz, y, x), data.dtype)
            full[: slab.shape[0]] = slab
            slab = full
        return _compress_chunk(slab, blocks, flags)

    if n_chunks == 1:  # no hand-over to the pool either
        arr.schunk.update_chunk(0, compress(0))
        return _write_file(path, arr.schunk.to_cframe())
    # chunks are compressed in parallel (a few in flight) and appended in order
    pool = _io_pool()
    window = 2 * _IO_THREADS
    pending: deque[Future[bytes]] = deque()
    try:
        for k in range(n_chunks):
            pending.append(pool.submit(compress, k))
            if len(pending) >= window:
                arr.schunk.update_chunk(k - len(pending) + 1, pending.popleft().result())
        while pending:
            arr.schunk.update_chunk(n_chunks - len(pending), pending.popleft().result())
    finally:
        for fut in pending:
            fut.cancel()
    del arr  # blosc2 has written the file
    fd = os.open(path, os.O_RDONLY)
    _start_writeback(fd)
    return fd


def _read_array(arr: Any, path: Path) -> NDArray[Any]:
    """Read a whole stored array; chunks of whole planes are decompressed in parallel."""
    shape = tuple(int(v) for v in arr.shape)
    chunks = tuple(int(v) for v in arr.chunks)
    blocks = tuple(int(v) for v in arr.blocks)
    planes = len(shape) == 3 and chunks[1:] == shape[1:] and blocks[1:] == shape[1:]
    if not planes or chunks[0] % blocks[0] or arr.schunk.nchunks != -(-shape[0] // chunks[0]):
        return np.asarray(arr[...])  # another layout: blosc2's generic path
    out = memory.empty(shape, np.dtype(arr.dtype))
    cz = chunks[0]
    schunk = arr.schunk

    def decompress(k: int) -> None:
        z0, z1 = k * cz, min(shape[0], (k + 1) * cz)
        chunk = schunk.get_chunk(k)
        if z1 - z0 == cz:
            blosc2.decompress2(chunk, dst=out[z0:z1])
        else:  # the overhanging last chunk
            full = np.empty((cz, *shape[1:]), out.dtype)
            blosc2.decompress2(chunk, dst=full)
            out[z0:z1] = full[: z1 - z0]

    # one chunk (a crop) is decompressed here: no hand-over to the pool
    n_chunks = schunk.nchunks
    futures = [_io_pool().submit(decompress, k) for k in range(n_chunks)] if n_chunks > 1 else []
    try:
        if not futures:
            decompress(0)
        for fut in futures:
            fut.result()
    except Exception as exc:
        raise CorruptFileError(f"{path}: corrupt data ({exc})") from exc
    finally:
        for fut in futures:
            fut.cancel()
    return out


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
    compression: str = "lz4",
    warnings: Sequence[str] = (),
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
    warnings : sequence of str, optional
        What ctflow decided on its own about the item on its way here (``meta.json``
        ``"warnings"``; read back into ``StoredItem.warnings``).
    skip_existing : bool, default False
        If the item already exists (complete), leave it and return None.
    compression : {"lz4", "zstd"}, default "lz4"
        LZ4 reads back fastest; ZSTD writes ~20 % smaller files (see the module notes).

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
    _compression(compression)
    root = Path(dst)
    final = root / item_id
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
    tmp = _make_staging_dir(staging, item_id)
    open_fds: list[int] = []  # the item's files, fsynced and closed at the end
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
            path = tmp / f"{name}.b2nd"
            open_fds.append(_write_array(path, data, compression))
            meta_components[name] = {"shape": list(shape), "dtype": np.dtype(data.dtype).str}
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
        }
        open_fds.append(_write_file(tmp / _META, json.dumps(meta, indent=1).encode("utf-8")))
        # every file's writeback is under way: the first fsync commits the journal for all
        while open_fds:
            fd = open_fds.pop()
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _swap_in(tmp, final)
    except BaseException:
        for fd in open_fds:
            os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _rmdir_if_empty(staging)
    return final


def _load_sync_file_range() -> Any:
    """libc's ``sync_file_range`` (Linux), or None where it does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


_CREATE = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def _write_file(path: Path, *parts: bytes) -> int:
    """Create ``path`` holding ``parts`` one after another, start its writeback; return the fd.

    Plain ``os`` calls: Python's ``open()`` adds an ``fstat``, an ``ioctl`` and an ``lseek``,
    and every system call lets go of the GIL and has to take it back, a wait of up to 5 ms when
    another batch's thread is running Python. The caller fsyncs and closes the descriptor.
    """
    fd = os.open(path, _CREATE, 0o666)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view) :]
        _start_writeback(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _start_writeback(fd: int) -> None:
    """Start writing an open file to disk without waiting (Linux ``sync_file_range``).

    The files of an item are all written first, each with its writeback started, and fsynced
    at the end: the first ``fsync`` then commits the journal for all of them and the others
    find nothing left to do (64 items of 4 small files, fsync after each file vs at the end:
    0.10-0.13 -> 0.06-0.07 s; 8 dumps of a batch of 8 crops: 0.40-0.46 -> 0.34-0.36 s).
    Durability is unchanged: every file is fsynced before the item is renamed in. Elsewhere, and
    on any error (the call is advisory), nothing happens.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


@functools.cache
def _host() -> str:
    return socket.gethostname().replace(_SEP, "-")


def _writer_tag() -> str:
    return f"{_host()}{_SEP}{os.getpid()}"


def _make_staging_dir(staging: Path, item_id: str) -> Path:
    """Create this writer's private folder in ``staging`` (which other writers may remove)."""
    name = f"{_writer_tag()}{_SEP}{uuid.uuid4().hex[:12]}{_SEP}{item_id[:32]}"
    tmp = staging / name
    staging.parent.mkdir(parents=True, exist_ok=True)  # dst itself is never removed
    for _ in range(100):
        with contextlib.suppress(FileExistsError):
            os.mkdir(staging)
        try:
            tmp.mkdir()
            return tmp
        except FileNotFoundError:  # another writer removed the empty staging folder meanwhile
            continue
    raise OSError(f"dump: cannot create a staging folder in {staging}")


def _rmdir_if_empty(staging: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (other writers, leftovers) or already gone
        staging.rmdir()


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is replaced without a half state.

    ``tmp`` lies in the staging folder, so the replaced item is moved there too (the staging
    folder cannot vanish while ``tmp`` is in it) and deleted. Concurrent writers of the same item
    are safe: each attempt either installs this writer's copy or retries.
    """
    trash: list[Path] = []
    try:
        for attempt in range(20):
            try:
                os.rename(tmp, final)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            old = tmp.with_name(f"{tmp.name}-old{attempt}")
            try:
                os.rename(final, old)
            except FileNotFoundError:
                continue  # another writer moved it away first: try again
            trash.append(old)
        raise OSError(f"dump: could not replace {final}: other writers keep replacing it")
    finally:
        for old in trash:
            shutil.rmtree(old, ignore_errors=True)


def _process_is_gone(pid: int) -> bool:
    """True if no live process ``pid`` exists on this machine (zombies count as gone)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] in ("Z", "X")


def _writer_of(name: str) -> tuple[str, int] | None:
    parts = name.split(_SEP, 3)
    if len(parts) < 4 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


_scanned: dict[str, float] = {}  # staging folder -> when this process last looked in it
_RESCAN_S = 60.0


def _remove_dead_writers(staging: Path, *, now: bool = False) -> list[Path]:
    """Remove staging folders of writers on this host whose process has died.

    A process looks at most once a minute per staging folder (``now=True``: at once): its
    first write there removes what dead writers left, later ones would mostly find only live
    writers (every item written by two batches at once listed the folder and checked each
    writer's process).
    """
    key, t = str(staging), time.monotonic()
    if not now and t - _scanned.get(key, -_RESCAN_S) < _RESCAN_S:
        return []
    _scanned[key] = t
    try:
        entries = list(os.scandir(staging))
    except (FileNotFoundError, NotADirectoryError):
        return []
    host = _host()
    removed = []
    for entry in entries:
        writer = _writer_of(entry.name)
        if writer is not None and writer[0] == host and _process_is_gone(writer[1]):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def remove_stale_writes(dst: str | os.PathLike[str], *, all_writers: bool = False) -> list[Path]:
    """Delete what interrupted writers left in ``dst`` (never a complete item).

    Parameters
    ----------
    dst : path
        Root folder of a dump.
    all_writers : bool, default False
        False: remove only leftovers of dead processes on this host (safe while other processes
        write). True: remove every staging folder — only when nothing is writing into ``dst``
        (e.g. leftovers of a machine that was lost, on a shared file system).

    Returns
    -------
    list of Path
        The removed folders.

    Examples
    --------
    >>> import tempfile
    >>> remove_stale_writes(tempfile.mkdtemp())
    []
    """
    staging = Path(dst) / STAGING
    if all_writers:
        try:
            removed = [Path(e.path) for e in os.scandir(staging)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
    else:
        removed = _remove_dead_writers(staging, now=True)
    _rmdir_if_empty(staging)
    return removed


def _version() -> str:
    from ctflow import __version__

    return __version__


def _nodules_to_json(nodules: pd.DataFrame | None) -> list[dict[str, float]]:
    if nodules is None or len(nodules) == 0:
        return []
    # numpy columns, not DataFrame.loc/to_dict: a crop's table is tiny and pandas' per-call
    # overhead (GIL held) was a quarter of a crop item's dump
    columns = [np.asarray(nodules[k], dtype=np.float64) for k in _NODULE_KEYS]
    return [dict(zip(_NODULE_KEYS, row, strict=True)) for row in np.stack(columns, 1).tolist()]


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``meta.json`` of an item folder."""
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


def _open_component(folder: Path, name: str, spec: Mapping[str, Any]) -> Any:
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
