"""blosc2 frames that ctflow writes itself: one-chunk crops and arrays of uncompressed chunks.

blosc2 writes a frame (the ``.b2nd`` file) through its own frame code, which costs a copy of
every chunk and, for every chunk added, a rewrite of the chunk-offset index. Two common layouts
have frames that ctflow can write straight from memory, byte for byte what blosc2 would write:

* a crop (one chunk): ``head + chunk + tail``, where only two fields of ``head`` depend on the
  chunk (:class:`_CropFrame`, learnt from blosc2 once per layout and checked on a second chunk);
* an array whose chunks are all stored as they are (dense floats, see
  ``arrays._chunk_flags``): ``head + (chunk_head + planes) per chunk + tail``, where nothing but
  the planes depends on the data (:class:`_RawFrame`). It is learnt from the first file blosc2
  writes of a layout, used once a second such file is exactly what the model gives, and written
  with plain ``os`` calls from the array's own memory: no chunk is ever copied.

A layout whose frame does not follow its model is written by blosc2, always.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
from numpy.typing import NDArray

__all__: list[str] = []

_HEAD = 32  # bytes of a blosc2 chunk header (extended header)


def _compress_chunk(data: NDArray[Any], blocks: tuple[int, ...], flags: dict[str, Any]) -> bytes:
    """Compress ``data`` into one blosc2 chunk with blocks of ``blocks`` (one thread, no GIL)."""
    blocksize = int(np.prod(blocks)) * data.itemsize
    return blosc2.compress2(data, typesize=data.itemsize, blocksize=blocksize, nthreads=1, **flags)


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
    key = (shape, dtype.str, blocks, flags["codec"], flags["clevel"], tuple(flags["filters"]))
    if key not in _crop_frames:  # two threads may both learn it: same result
        _crop_frames[key] = _CropFrame.learn(shape, dtype, blocks, flags)
    return _crop_frames[key]


class _RawFrame:
    """The blosc2 frame of a multi-chunk layout whose chunks are all stored as they are.

    Such a frame is ``head``, then for every chunk its 32-byte header and its planes (the last
    chunk zero-padded to whole chunks, as blosc2 pads), then ``tail``; the chunk headers and the
    chunk-offset index in ``tail`` depend on the layout only. See the module.

    Parameters
    ----------
    head, chunk_head, tail : bytes
        The frame's bytes before the first chunk, every chunk's header, after the last chunk.
    n_chunks, chunk_nbytes : int
        Chunks in the frame; bytes of a chunk's planes.
    """

    __slots__ = ("chunk_head", "chunk_nbytes", "head", "n_chunks", "tail")

    def __init__(
        self, head: bytes, chunk_head: bytes, tail: bytes, n_chunks: int, chunk_nbytes: int
    ) -> None:
        self.head, self.chunk_head, self.tail = head, chunk_head, tail
        self.n_chunks, self.chunk_nbytes = n_chunks, chunk_nbytes

    def chunks(self, data: NDArray[Any], cz: int) -> list[list[Any]]:
        """Return each chunk as its pieces: header, planes (a view) and any zero padding.

        Parameters
        ----------
        data : ndarray
            The C-contiguous (Z, Y, X) array, ``cz`` planes per chunk.
        cz : int
            Planes per chunk.

        Returns
        -------
        list of list
            Per chunk, the bytes-like pieces that make it, in order.
        """
        out: list[list[Any]] = []
        for k in range(self.n_chunks):
            planes = data[k * cz : (k + 1) * cz].data.cast("B")
            pieces: list[Any] = [self.chunk_head, planes]
            if len(planes) < self.chunk_nbytes:  # the last chunk overhangs
                pieces.append(bytes(self.chunk_nbytes - len(planes)))
            out.append(pieces)
        return out

    def places(self) -> list[list[int]]:
        """Return ``[offset, size]`` of every chunk in the file (``_chunk_places``)."""
        size = _HEAD + self.chunk_nbytes
        return [[len(self.head) + k * size, size] for k in range(self.n_chunks)]

    @classmethod
    def from_file(cls, path: Path, n_chunks: int, chunk_nbytes: int) -> _RawFrame | None:
        """Return the model of a frame blosc2 wrote with every chunk stored as it is, or None.

        Parameters
        ----------
        path : Path
            The file.
        n_chunks, chunk_nbytes : int
            Chunks the file must hold; bytes of a chunk's planes.

        Returns
        -------
        _RawFrame or None
            None when the chunks are not one after another, all of the same size and header.
        """
        found = _chunk_places(path)
        size = _HEAD + chunk_nbytes
        if found is None or len(found[1]) != n_chunks:
            return None
        first = found[1][0][0]
        if found[1] != [[first + k * size, size] for k in range(n_chunks)]:
            return None
        with open(path, "rb") as f:
            head = f.read(first)
            heads = set()
            for k in range(n_chunks):
                f.seek(first + k * size)
                heads.add(f.read(_HEAD))
            f.seek(first + n_chunks * size)
            tail = f.read()
        if len(heads) != 1 or len(head) != first:
            return None
        return cls(head, heads.pop(), tail, n_chunks, chunk_nbytes)


_raw_lock = threading.Lock()
#: per layout: a model still to be checked ("seen"), one in use ("ready"), or none ("blosc2")
_raw_frames: dict[tuple[Any, ...], tuple[str, _RawFrame | None]] = {}


def _raw_frame(key: tuple[Any, ...]) -> _RawFrame | None:
    """Return the checked frame model of a layout of uncompressed chunks, or None (blosc2)."""
    state = _raw_frames.get(key)
    return state[1] if state is not None and state[0] == "ready" else None


def _holds(path: Path, model: _RawFrame, data: NDArray[Any], cz: int) -> bool:
    """Whether the file ``path`` is byte for byte ``model``'s frame of ``data``.

    Read and compared one piece at a time (a chunk at most in memory).
    """
    pieces = [model.head, *(p for chunk in model.chunks(data, cz) for p in chunk), model.tail]
    with open(path, "rb") as f:
        for piece in pieces:
            expected = memoryview(piece).cast("B")
            if f.read(len(expected)) != expected:
                return False
        return f.read(1) == b""


def _observe_raw(
    key: tuple[Any, ...], path: Path, data: NDArray[Any], cz: int, n_chunks: int
) -> None:
    """Learn or check the frame model of a layout from a file blosc2 wrote of ``data``.

    The first file of a layout gives the model; the second must be exactly the model's frame
    of its data (read back and compared byte for byte, :func:`_holds`) for the model to be used
    from then on.

    Parameters
    ----------
    key : tuple
        The layout (shape, dtype, chunk and block shapes, compression parameters).
    path : Path
        The file blosc2 wrote, every chunk stored as it is.
    data : ndarray
        What it holds.
    cz, n_chunks : int
        Planes per chunk; chunks.
    """
    chunk_nbytes = cz * int(np.prod(data.shape[1:])) * data.itemsize
    with _raw_lock:
        state = _raw_frames.get(key)
    if state is None:
        model = _RawFrame.from_file(path, n_chunks, chunk_nbytes)
        new = ("blosc2", None) if model is None else ("seen", model)
    elif state[0] == "seen" and state[1] is not None:
        model = state[1]
        new = ("ready", model) if _holds(path, model, data, cz) else ("blosc2", None)
    else:
        return
    with _raw_lock:
        if _raw_frames.get(key) == state:  # another thread may have moved it on
            _raw_frames[key] = new


def _chunk_places(path: Path) -> tuple[int, list[list[Any]]] | None:
    """Return (planes per chunk, where each chunk lies) of a written array file, or None.

    A chunk's place is ``[offset, size]`` in the file, or, for a special chunk (kept in the
    frame's index, no bytes of its own), ``[-1, "<hex>"]``: its rebuilt bytes as blosc2 hands
    them back. Recorded in ``meta.json`` (``chunk_planes``, ``chunk_ranges``) so that a dump on
    object storage can be read a few chunks at a time by byte ranges
    (:mod:`ctflow.io.store.ranged`). None when the layout is not whole-plane chunks or blosc2
    cannot tell where its chunks lie.
    """
    arr = blosc2.open(str(path), mode="r")
    shape = tuple(int(v) for v in arr.shape)
    chunks = tuple(int(v) for v in arr.chunks)
    blocks = tuple(int(v) for v in arr.blocks)
    schunk = arr.schunk
    if (
        len(shape) != 3
        or chunks[1:] != shape[1:]
        or blocks[1:] != shape[1:]
        or chunks[0] % blocks[0]
        or not hasattr(schunk, "get_chunk_range")
    ):
        return None
    places: list[list[Any]] = []
    try:
        for k in range(schunk.nchunks):
            offset, size = schunk.get_chunk_range(k)
            if size > 0:
                places.append([int(offset), int(size)])
            else:
                places.append([-1, bytes(schunk.get_chunk(k)).hex()])
    except RuntimeError:
        return None
    return chunks[0], places
