"""One component as a blosc2 NDArray file: layout, chunk compression, checksums, reads.

An array is stored in chunks of whole ``(Y, X)`` planes, compressed and decompressed one
chunk per task on a small thread pool without the GIL; with LZ4, a float chunk that would hardly
shrink is stored uncompressed (``_chunk_flags``). A crop (one chunk) and an array whose
chunks are all uncompressed are written in frames ctflow learnt from blosc2
(:mod:`~ctflow.io.store.frames`), without blosc2's frame code, the latter with no copy of its
chunks. Every chunk has a CRC-32 (``_chunk_crc``), computed by the task that compresses it and
checked by the task that decompresses it.
"""

from __future__ import annotations

import math
import os
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
from numpy.typing import NDArray

from ctflow import memory
from ctflow.errors import CorruptFileError
from ctflow.io.store.files import _open_for_fsync, _start_writeback, _write_file
from ctflow.io.store.format import _compression
from ctflow.io.store.frames import (
    _chunk_places,
    _compress_chunk,
    _crop_frame,
    _observe_raw,
    _raw_frame,
    _RawFrame,
)
from ctflow.io.voxels import check_finite
from ctflow.system import cpu_count

_BLOCK_BYTES = 512 * 1024  # a block (whole planes) fits in L2 while it is (de)compressed
_CHUNK_BYTES = 8 * 1024 * 1024  # a chunk is what one thread reads and decompresses at a time
# A float chunk is LZ4-compressed only if a sample of it shrinks to this fraction, else stored
# as it is: a normalised float CT barely shrinks with LZ4 + shuffle, for more CPU than the
# fsync time it saves (docs/api/io.md); probability maps and masks with empty space shrink to
# 0.3 or far less and stay compressed.
_FLOAT_SHRINK = 0.6
_PROBE_BYTES = 64 * 1024  # the sample's size: its ratio is within 0.03 of the whole chunk's
#: threads (de)compressing the chunks of one array
_IO_THREADS = max(1, min(4, cpu_count()))
_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None

# compression and decompression of whole chunks run without the GIL (process-wide blosc2 flag;
# it only releases the GIL around blosc2's C loops over buffers the call holds)
blosc2.set_releasegil(True)


def _io_pool() -> ThreadPoolExecutor:
    """Return the process's pool of chunk (de)compressors (re-created in a forked child)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(_IO_THREADS, thread_name_prefix="ctflow-store"),
            )
        return _pool[1]


def _layout(shape: Sequence[int], itemsize: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return the chunk and block shapes of an array: whole ``(Y, X)`` planes.

    A block holds about ``_BLOCK_BYTES`` of whole planes, a chunk about ``_CHUNK_BYTES`` of
    whole blocks; the last chunk may overhang the last plane.
    """
    z, y, x = (max(1, int(v)) for v in shape)
    plane = y * x * max(1, int(itemsize))
    bz = max(1, min(z, _BLOCK_BYTES // plane))
    cz = bz * max(1, _CHUNK_BYTES // (bz * plane))
    cz = min(cz, -(-z // bz) * bz)
    return (cz, y, x), (bz, y, x)


def _flags(compression: str) -> dict[str, Any]:
    """Return blosc2's compression parameters of a ``compression=`` name (byte shuffle)."""
    codec, clevel = _compression(compression)
    return {"codec": codec, "clevel": clevel, "filters": [blosc2.Filter.SHUFFLE]}


def _chunk_flags(chunk: NDArray[Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Return the compression parameters of one chunk: ``flags``, or none for dense floats.

    A float chunk to be compressed with LZ4 is stored as it is (a blosc2 chunk of level 0,
    which every blosc2 reader reads) unless a sample of it, every few rows of its first plane,
    shrinks to at most ``_FLOAT_SHRINK`` with ``flags``: the low mantissa bytes of a CT scan
    are noise, and LZ4 + shuffle costs more CPU than the disk time it saves (``_FLOAT_SHRINK``).
    """
    if chunk.dtype.kind != "f" or flags["codec"] != blosc2.Codec.LZ4:
        return flags
    plane = chunk[0]
    sample = np.ascontiguousarray(plane[:: max(1, plane.nbytes // _PROBE_BYTES)])
    shrunk = blosc2.compress2(sample, typesize=sample.itemsize, nthreads=1, **flags)
    if len(shrunk) <= _FLOAT_SHRINK * sample.nbytes:
        return flags
    return {"codec": flags["codec"], "clevel": 0, "filters": [blosc2.Filter.NOFILTER]}


def _padded(data: NDArray[Any], z0: int, cz: int) -> NDArray[Any]:
    """Return planes ``z0 .. z0 + cz`` of ``data``, zeros past its end (as blosc2 pads)."""
    slab = data[z0 : z0 + cz]
    if slab.shape[0] < cz:  # the last chunk overhangs
        full = np.zeros((cz, *data.shape[1:]), data.dtype)
        full[: slab.shape[0]] = slab
        slab = full
    return slab


def _is_special(chunk: bytes | memoryview) -> bool:
    """Tell whether a blosc2 chunk is special (a run of zeros or of one value, no data)."""
    return len(chunk) >= 32 and bool((chunk[31] >> 4) & 0x7)


def _chunk_crc(chunk: bytes | memoryview) -> int:
    """Return the CRC-32 of a compressed chunk as stored (``zlib.crc32``, GIL released).

    A special chunk (a run of zeros, say) is not stored as such: the frame's offset index
    marks it, and blosc2 hands back a rebuilt header without the codec and filter bytes. Its
    checksum covers what is kept: the item size, the sizes, the special kind and the value.
    """
    if _is_special(chunk):
        return zlib.crc32(chunk[32:], zlib.crc32(bytes(chunk[3:16]) + bytes([chunk[31] & 0x70])))
    return zlib.crc32(chunk)


#: where each chunk of a written file lies: planes per chunk, ``[offset, size]`` per chunk
Places = tuple[int, list[list[Any]]]


def _write_array(
    path: Path, data: NDArray[Any], compression: str
) -> tuple[int, list[int], Places | None]:
    """Write ``data`` (C-contiguous, 3-D) as a blosc2 NDArray of whole-plane chunks.

    Returns an open descriptor of the file, its writeback started, for the caller to fsync;
    the CRC-32 of every chunk (``_chunk_crc``); and where the chunks lie in the file
    (``_chunk_places``; None when blosc2 cannot tell).
    """
    flags = _flags(compression)
    (cz, _, _), blocks = _layout(data.shape, data.itemsize)
    if cz < int(data.shape[0]):
        return _write_chunks(path, data, cz, blocks, flags)
    fd, crcs, places = _write_one_chunk(path, data, cz, blocks, flags)
    return fd, crcs, _chunk_places(path) if places is None else places


def _write_one_chunk(
    path: Path, data: NDArray[Any], cz: int, blocks: tuple[int, ...], flags: dict[str, Any]
) -> tuple[int, list[int], Places | None]:
    """Write an array of one chunk (a crop) with one GIL-free write; see ``_write_array``.

    blosc2's file updates hold the GIL while they wait for the disk: the frame is put together
    here, without blosc2's frame code where a frame of the layout could be learnt — and then
    where the chunk lies is known without opening the file again (None: ask the file).
    """
    slab = _padded(data, 0, cz)
    flags = _chunk_flags(slab, flags)
    chunk = _compress_chunk(slab, blocks, flags)
    if cz == data.shape[0]:
        frame = _crop_frame(tuple(data.shape), data.dtype, blocks, flags)
        parts = None if frame is None else frame.parts(chunk)
        if parts is not None:
            places: Places | None = None
            whole_planes = tuple(blocks[1:]) == tuple(data.shape[1:]) and cz % blocks[0] == 0
            if len(parts) == 3 and whole_planes:  # head, the chunk's bytes, tail
                places = (cz, [[len(parts[0]), len(chunk)]])
            return _write_file(path, *parts), [_chunk_crc(chunk)], places
    arr = blosc2.empty(
        data.shape,
        data.dtype,
        chunks=slab.shape,
        blocks=blocks,
        cparams=blosc2.CParams(nthreads=1, **flags),
    )
    arr.schunk.update_chunk(0, chunk)
    return _write_file(path, arr.schunk.to_cframe()), [_chunk_crc(chunk)], None


def _write_chunks(
    path: Path, data: NDArray[Any], cz: int, blocks: tuple[int, ...], flags: dict[str, Any]
) -> tuple[int, list[int], Places | None]:
    """Write an array of several chunks; see ``_write_array``.

    When every chunk is to be stored as it is and the layout's frame is known
    (:class:`~ctflow.io.store.frames._RawFrame`), the file is written straight from ``data``.
    Otherwise the chunks are compressed on the pool (a few in flight) and appended in order by
    blosc2; each one's writeback is started as soon as it is in the file.
    """
    n_chunks = -(-int(data.shape[0]) // cz)
    per_chunk = [_chunk_flags(data[k * cz : (k + 1) * cz], flags) for k in range(n_chunks)]
    raw = all(f["clevel"] == 0 for f in per_chunk)
    key = (tuple(data.shape), data.dtype.str, cz, blocks, flags["codec"], flags["clevel"])
    frame = _raw_frame(key) if raw else None
    if frame is not None:
        fd, checksums = _write_raw(path, data, cz, frame)
        return fd, checksums, (cz, frame.places())
    arr = blosc2.empty(
        data.shape,
        data.dtype,
        chunks=(cz, *data.shape[1:]),
        blocks=blocks,
        cparams=blosc2.CParams(nthreads=1, **flags),
        urlpath=str(path),
        mode="w",
    )

    def compress(k: int) -> tuple[bytes, int]:
        chunk = _compress_chunk(_padded(data, k * cz, cz), blocks, per_chunk[k])
        return chunk, _chunk_crc(chunk)

    crcs: list[int] = []
    pool = _io_pool()
    window = 2 * _IO_THREADS
    pending: deque[Future[tuple[bytes, int]]] = deque()
    fd = _open_for_fsync(path)
    try:
        for k in range(n_chunks):
            pending.append(pool.submit(compress, k))
            while len(pending) >= window or (k == n_chunks - 1 and pending):
                chunk, crc = pending.popleft().result()
                arr.schunk.update_chunk(len(crcs), chunk)
                crcs.append(crc)
                # the disk starts on it while the next ones are compressed (docs/api/io.md)
                _start_writeback(fd)
        del arr  # blosc2 has written the file
        _start_writeback(fd)
        if raw:
            _observe_raw(key, path, data, cz, n_chunks)
        return fd, crcs, _chunk_places(path)
    except BaseException:
        os.close(fd)
        raise
    finally:
        for fut in pending:
            fut.cancel()


def _write_raw(path: Path, data: NDArray[Any], cz: int, frame: _RawFrame) -> tuple[int, list[int]]:
    """Write ``data`` in ``frame``, every chunk as it is, with no copy of it; see ``_write_array``.

    The chunks' CRC-32s are computed on the pool while the file is written.
    """
    chunks = frame.chunks(data, cz)

    def crc(pieces: list[Any]) -> int:
        value = 0
        for piece in pieces:
            value = zlib.crc32(piece, value)
        return value

    pending = [_io_pool().submit(crc, pieces) for pieces in chunks]
    try:
        fd = _write_file(path, frame.head, *(p for pieces in chunks for p in pieces), frame.tail)
    finally:
        wait(pending)
    try:
        return fd, [f.result() for f in pending]
    except BaseException:
        os.close(fd)
        raise


_local = threading.local()  # the chunk buffer of each reading thread
_OVERHEAD = 64 * 1024  # more than blosc2 ever adds to a chunk's data (header, block starts)


def _thread_buffer(size: int) -> bytearray:
    """Return a buffer of at least ``size`` bytes, kept by the calling thread for its next read.

    Reading every chunk into fresh memory costs as much as checking it: each new page is
    faulted in. Buffers larger than two chunks of the current layout are not kept.
    """
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = bytearray(size)
        if size <= 2 * _CHUNK_BYTES + _OVERHEAD:
            _local.buf = buf
    return buf


class _ChunkReader:
    """Read the compressed chunks of an array file, with one ``pread`` each.

    blosc2's ``get_chunk`` copies a chunk twice into fresh memory, which costs a large part
    of a load. Where blosc2 tells where a chunk lies in the file (``get_chunk_range``), the
    chunk is read straight into a buffer instead, with the GIL released; special chunks (no
    bytes in the file) and files blosc2 cannot place come from ``get_chunk``.

    Parameters
    ----------
    arr : blosc2.NDArray
        The array, opened from ``path``.
    path : Path
        Its file (the same content whatever replaces it: names are content-versioned).
    reuse : bool
        Read into the calling thread's kept buffer (the pool's threads) instead of a new one.
    """

    def __init__(self, arr: Any, path: Path, *, reuse: bool) -> None:
        self.schunk = arr.schunk
        self.path = path
        self.reuse = reuse
        self.limit = math.prod(int(v) for v in arr.chunks) * arr.dtype.itemsize + _OVERHEAD
        self.fd: int | None = None
        self.ranges: list[tuple[int, int]] | None = None
        if hasattr(os, "preadv") and hasattr(self.schunk, "get_chunk_range"):
            try:
                self.ranges = [self.schunk.get_chunk_range(k) for k in range(self.schunk.nchunks)]
                self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except (RuntimeError, OSError):  # not a frame on disk, or gone: blosc2 reads it
                self.ranges = None

    def __enter__(self) -> _ChunkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (the reads are over)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def get(self, k: int) -> bytes | memoryview:
        """Return compressed chunk ``k`` (a view valid until this thread's next read).

        Raises
        ------
        CorruptFileError
            The chunk is cut short or its header is not a blosc2 chunk's.
        """
        if self.ranges is None or self.fd is None or self.ranges[k][1] <= 0:
            chunk: bytes = self.schunk.get_chunk(k)
            return chunk
        offset, size = self.ranges[k]
        size = min(size, self.limit)
        buf = _thread_buffer(size) if self.reuse else bytearray(size)
        view = memoryview(buf)[:size]
        got = os.preadv(self.fd, [view], offset)
        cbytes = int.from_bytes(view[12:16], "little") if got >= 32 else -1
        if not 32 <= cbytes <= got:
            raise CorruptFileError(
                f"{self.path}: chunk {k} of {len(self.ranges)} is damaged: its header must give "
                f"its size, at most the {got} bytes at offset {offset}; it says {cbytes}"
            )
        return view[:cbytes]


def _check_chunk(chunk: bytes | memoryview, k: int, crcs: Sequence[int], path: Path) -> None:
    """Refuse chunk ``k`` of the file ``path`` unless its CRC-32 is the one ``meta.json`` lists."""
    got = _chunk_crc(chunk)
    if got != crcs[k]:
        raise CorruptFileError(
            f"{path}: chunk {k} of {len(crcs)} is damaged: its CRC-32 must be {crcs[k]:08x} "
            f"(meta.json), it is {got:08x}"
        )


def _check_chunk_count(schunk: Any, crcs: Sequence[int], path: Path) -> None:
    """Refuse a file whose number of chunks is not the number of checksums in ``meta.json``."""
    if schunk.nchunks != len(crcs):
        raise CorruptFileError(
            f"{path}: must have {len(crcs)} chunks (meta.json lists {len(crcs)} checksums); "
            f"it has {schunk.nchunks}"
        )


def _read_array(arr: Any, path: Path, crcs: Sequence[int] | None) -> NDArray[Any]:
    """Read a whole stored array; chunks of whole planes are decompressed in parallel.

    Each chunk's CRC-32 is checked against ``crcs`` (None: not checked) by the task that
    decompresses it, and float chunks are checked for NaN and Inf there too.
    """
    shape = tuple(int(v) for v in arr.shape)
    chunks = tuple(int(v) for v in arr.chunks)
    blocks = tuple(int(v) for v in arr.blocks)
    schunk = arr.schunk
    n_chunks = schunk.nchunks
    if crcs is not None:
        _check_chunk_count(schunk, crcs, path)
    planes = len(shape) == 3 and chunks[1:] == shape[1:] and blocks[1:] == shape[1:]
    if not planes or chunks[0] % blocks[0] or n_chunks != -(-shape[0] // chunks[0]):
        # another layout (older dumps): blosc2's generic path
        try:
            if crcs is not None:
                for k in range(n_chunks):
                    _check_chunk(schunk.get_chunk(k), k, crcs, path)
            whole = np.asarray(arr[...])
        except CorruptFileError:
            raise
        except Exception as exc:
            raise CorruptFileError(f"{path}: corrupt data ({exc})") from exc
        check_finite(whole, path, whole.dtype.name)
        return whole
    out = memory.empty(shape, np.dtype(arr.dtype))
    cz = chunks[0]
    chunk_nbytes = cz * math.prod(shape[1:]) * out.dtype.itemsize
    floats = out.dtype.kind == "f"
    finite = [True] * n_chunks

    def decompress(k: int) -> None:
        z0, z1 = k * cz, min(shape[0], (k + 1) * cz)
        chunk = reader.get(k)
        if crcs is not None:
            _check_chunk(chunk, k, crcs, path)
        nbytes = int.from_bytes(chunk[4:8], "little")
        if nbytes != chunk_nbytes:  # the voxels it would leave unwritten are not zeros
            raise CorruptFileError(
                f"{path}: chunk {k} must hold {chunk_nbytes} bytes; its header says {nbytes}"
            )
        if z1 - z0 == cz:
            blosc2.decompress2(chunk, dst=out[z0:z1])
        else:  # the overhanging last chunk
            full = np.empty((cz, *shape[1:]), out.dtype)
            blosc2.decompress2(chunk, dst=full)
            out[z0:z1] = full[: z1 - z0]
        if floats:
            finite[k] = bool(np.isfinite(out[z0:z1]).all())

    # one chunk (a crop) is decompressed here: no hand-over to the pool
    futures: list[Future[None]] = []
    reader = _ChunkReader(arr, path, reuse=n_chunks > 1)
    try:
        if n_chunks > 1:
            futures = [_io_pool().submit(decompress, k) for k in range(n_chunks)]
        else:
            decompress(0)
        for fut in futures:
            fut.result()
    except CorruptFileError:
        raise
    except Exception as exc:
        raise CorruptFileError(f"{path}: corrupt data ({exc})") from exc
    finally:
        for fut in futures:
            fut.cancel()
        wait(futures)  # the tasks still running read the file: they end before it is closed
        reader.close()
    if not all(finite):
        check_finite(out, path, out.dtype.name)  # counts them and says so
    return out


def _chunks_of_box(arr: Any, box: tuple[slice, ...]) -> list[int]:
    """Return the numbers of the chunks of a stored array that a box touches (C order)."""
    shape = [int(v) for v in arr.shape]
    chunks = [max(1, int(v)) for v in arr.chunks]
    grid = [-(-n // c) for n, c in zip(shape, chunks, strict=True)]
    out = [0]
    for sl, c, g in zip(box, chunks, grid, strict=True):
        touched = range(int(sl.start) // c, (int(sl.stop) - 1) // c + 1)
        out = [k * g + j for k in out for j in touched]
    return out


def _read_box(
    arr: Any, path: Path, box: tuple[slice, ...], crcs: Sequence[int] | None
) -> NDArray[Any]:
    """Read a box of a stored array, decompressing only the planes it touches.

    The chunks the box touches have their CRC-32 checked against ``crcs`` first (None: not
    checked); float voxels are checked for NaN and Inf.
    """
    try:
        if crcs is not None:
            _check_chunk_count(arr.schunk, crcs, path)
            with _ChunkReader(arr, path, reuse=False) as reader:
                for k in _chunks_of_box(arr, box):
                    _check_chunk(reader.get(k), k, crcs, path)
        out = np.asarray(arr[box])
    except CorruptFileError:
        raise
    except Exception as exc:
        raise CorruptFileError(f"{path}: corrupt data ({exc})") from exc
    check_finite(out, path, out.dtype.name)
    return out
