"""One component as a blosc2 NDArray file: layout, chunk compression, whole-array reads.

An array is stored in chunks of whole ``(Y, X)`` planes, compressed and decompressed one
chunk per task on a small thread pool without the GIL. A crop (one chunk) is written as a
frame learnt once per layout (``_CropFrame``), with one write and without blosc2's frame
code.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
from numpy.typing import NDArray

from ctflow import memory
from ctflow.errors import CorruptFileError
from ctflow.io.store.files import _open_for_fsync, _write_file
from ctflow.io.store.format import _compression
from ctflow.system import cpu_count

_BLOCK_BYTES = 512 * 1024  # a block (whole planes) fits in L2 while it is (de)compressed
_CHUNK_BYTES = 8 * 1024 * 1024  # a chunk is what one thread reads and decompresses at a time
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


class _CropFrame:
    """The blosc2 frame of one-chunk arrays of one layout, as ``head + chunk + tail``.

    Every frame change in blosc2 (appending or replacing a chunk, serialising an in-memory
    array) recompresses the chunk-offset index with a context of four threads, which are
    started and joined on the spot (c-blosc2's ``frame.c`` hard-codes them; only the
    process-wide ``BLOSC_NTHREADS`` overrides it): several thread starts and exits per crop
    written, which make crops slow to write whenever other threads are busy. A one-chunk frame
    of a given layout differs from another only in its chunk and in two header fields (frame
    length, compressed size), so the frame is learnt once per layout from blosc2 itself and
    verified byte for byte against blosc2 on a second chunk before it is ever used; a layout
    whose frame does not follow that model is written through blosc2's frame code. An all-zero
    array is a special chunk that blosc2 keeps in the offset index, not in the data: its whole
    frame is learnt too (empty nodule-mask crops are common).

    Parameters
    ----------
    head, tail : bytes
        The frame's bytes before and after the chunk.
    len_at, cbytes_at : int
        Offsets in ``head`` of the frame length and of the compressed size (big-endian int64).
    zeros : tuple of bytes
        The chunk and the whole frame of an all-zero array of this layout.
    """

    __slots__ = ("cbytes_at", "head", "len_at", "tail", "zeros")

    def __init__(
        self, head: bytes, len_at: int, cbytes_at: int, tail: bytes, zeros: tuple[bytes, bytes]
    ) -> None:
        self.head, self.len_at, self.cbytes_at, self.tail = head, len_at, cbytes_at, tail
        self.zeros = zeros  # (chunk, frame) of an all-zero array

    def parts(self, chunk: bytes) -> list[bytes] | None:
        """Return the frame holding ``chunk`` (a blosc2 chunk of this layout), in pieces.

        Parameters
        ----------
        chunk : bytes
            A blosc2 chunk compressed with this layout's blocks and flags.

        Returns
        -------
        list of bytes or None
            The pieces to write one after another; None for a special chunk (a run of one
            value) other than all zeros, which blosc2 must frame itself.
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
        """Learn the frame of one layout from blosc2 and check it on a second chunk.

        Parameters
        ----------
        shape : tuple of int
            The array (and chunk) shape.
        dtype : numpy.dtype
            The array's dtype.
        blocks : tuple of int
            The block shape.
        flags : dict
            ``codec``, ``clevel`` and ``filters`` of blosc2's compression parameters.

        Returns
        -------
        _CropFrame or None
            The frame, or None when blosc2's frames do not follow the model.
        """

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
    """Return the one position of ``pattern`` in ``data``, or None (absent or ambiguous)."""
    at = data.find(pattern)
    return at if at >= 0 and data.find(pattern, at + 1) < 0 else None


_crop_frames: dict[tuple[Any, ...], _CropFrame | None] = {}


def _crop_frame(
    shape: tuple[int, ...], dtype: np.dtype[Any], blocks: tuple[int, ...], flags: dict[str, Any]
) -> _CropFrame | None:
    """Return the frame of a one-chunk layout, learnt on first use (None: use blosc2)."""
    key = (shape, dtype.str, blocks, flags["codec"], flags["clevel"])
    if key not in _crop_frames:  # two threads may both learn it: same result
        _crop_frames[key] = _CropFrame.learn(shape, dtype, blocks, flags)
    return _crop_frames[key]


def _compress_chunk(data: NDArray[Any], blocks: tuple[int, ...], flags: dict[str, Any]) -> bytes:
    """Compress ``data`` into one blosc2 chunk with blocks of ``blocks`` (one thread, no GIL)."""
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
    return _open_for_fsync(path)


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
