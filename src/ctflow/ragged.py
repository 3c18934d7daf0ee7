"""Items of any (Z, Y, X) in one contiguous buffer: the storage of a batch component.

A :class:`Ragged` holds the volumes of a batch's items one after another in ONE flat,
C-contiguous buffer (one allocation per component, as RadIO's "skyscraper" did), with each
item's shape and its offset into the buffer. Item ``i`` is the zero-copy view
``buffer[offsets[i]:offsets[i + 1]].reshape(shapes[i])``. Nothing requires the items to share a
shape: a batch may hold a 512x512 scan beside a 768x768 one.

A component may also hold ``C`` channels per item (``channels=C``: item ``i`` is a
``(C, Z, Y, X)`` view, channel-first as torch, MONAI and TorchIO expect) — a model's per-class
probabilities or a one-hot encoding in ``masks``. ``shapes`` are always the spatial (Z, Y, X).

When every item has the same in-plane size (Y, X), the buffer read as one (ΣZ, Y, X) array IS
the classic skyscraper (item ``i`` is rows ``bounds[i]:bounds[i + 1]``), so
:meth:`Ragged.stacked` returns it without a copy; when all shapes agree,
:meth:`Ragged.unstack` returns an (N, Z, Y, X) view. Elementwise work (HU windows, thresholds)
runs over the whole flat buffer at once, whatever the shapes.

Examples
--------
>>> import numpy as np
>>> r = Ragged.from_items([np.zeros((2, 3, 4), np.int16), np.ones((1, 5, 5), np.int16)])
>>> r.shapes.tolist(), r.buffer.shape
([[2, 3, 4], [1, 5, 5]], (49,))
>>> r.item(1).shape, bool(np.shares_memory(r.item(1), r.buffer))
((1, 5, 5), True)
>>> r.uniform_yx
False
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow import memory
from ctflow.errors import InvalidScanError

__all__ = ["Ragged", "common_dtype"]


def common_dtype(dtypes: Sequence[np.dtype[Any]]) -> np.dtype[Any]:
    """Return the dtype items of different dtypes are stored in.

    numpy's promotion, but never float64 unless one of them is float64 (int16 + float32 stays
    float32).

    Examples
    --------
    >>> common_dtype([np.dtype(np.int16), np.dtype(np.float32)])
    dtype('float32')
    >>> common_dtype([np.dtype(np.uint8), np.dtype(np.int16)])
    dtype('int16')
    """
    unique = list(dict.fromkeys(np.dtype(d) for d in dtypes))
    if len(unique) == 1:
        return unique[0]
    out = np.result_type(*unique)
    if out == np.float64 and np.dtype(np.float64) not in unique:
        return np.dtype(np.float32)
    return np.dtype(out)


def _channels_of(arrays: Sequence[NDArray[Any]]) -> int | None:
    """Return the channel count shared by ``arrays`` (None: all 3-D); refuse a mix."""
    ndims = {a.ndim for a in arrays}
    if not ndims <= {3, 4}:
        bad = next(a.shape for a in arrays if a.ndim not in (3, 4))
        raise InvalidScanError(f"items must be (z, y, x) or (c, z, y, x); got shape {bad}")
    if len(ndims) > 1:
        raise InvalidScanError("items must all be 3-D (z, y, x) or all 4-D (c, z, y, x)")
    if ndims != {4}:
        return None
    counts = {int(a.shape[0]) for a in arrays}
    if len(counts) > 1 or 0 in counts:
        raise InvalidScanError(f"items must have the same number of channels; got {sorted(counts)}")
    return counts.pop()


#: Copies into a new buffer of at least this many bytes run on the batch's threads.
PARALLEL_COPY_BYTES = 32 * 2**20


def _copy_items(buffer: NDArray[Any], arrays: Sequence[NDArray[Any]]) -> None:
    """Copy ``arrays`` one after another into the flat ``buffer``.

    A large copy into new memory is bound by first-touch page faults as much as by bandwidth;
    it is cut into equal pieces of the destination run on the batch's threads (measured in
    docs/design.md, "Runs of item actions go item by item").
    """
    from ctflow.threads import available_threads, run_ranges

    ends = np.cumsum([a.size for a in arrays])
    starts = ends - [a.size for a in arrays]
    n_threads = available_threads()
    contiguous = all(a.flags.c_contiguous for a in arrays)
    if n_threads < 2 or buffer.nbytes < PARALLEL_COPY_BYTES or not contiguous:
        for arr, a, b in zip(arrays, starts, ends, strict=True):
            np.copyto(buffer[a:b].reshape(arr.shape), arr, casting="unsafe")
        return
    flats = [a.reshape(-1) for a in arrays]

    def part(lo: int, hi: int) -> None:
        k = int(np.searchsorted(ends, lo, side="right"))
        while k < len(flats) and starts[k] < hi:
            a, b = max(lo, int(starts[k])), min(hi, int(ends[k]))
            np.copyto(buffer[a:b], flats[k][a - starts[k] : b - starts[k]], casting="unsafe")
            k += 1

    run_ranges(part, buffer.size, n_threads, min_size=2**20)


class Ragged:
    """Volumes of any (Z, Y, X) stored back to back in one flat buffer.

    Parameters
    ----------
    buffer : ndarray, 1-D, C-contiguous
        All items' voxels, item after item, each in C order.
    shapes : array_like (N, 3) of int
        Item shapes (Z, Y, X).
    owned : bool, default False
        True when the buffer was allocated by ctflow for this batch and nobody else holds it,
        so actions may overwrite it in place (arrays a user handed in are never overwritten).
    channels : int, optional
        ``C`` when every item is ``(C, Z, Y, X)`` (channel-first); None (default) for
        ``(Z, Y, X)`` items.

    Examples
    --------
    >>> import numpy as np
    >>> r = Ragged(np.arange(12, dtype=np.int16), [(1, 2, 2), (2, 2, 2)])
    >>> r.item(1)[1].tolist(), r.stacked().shape
    ([[8, 9], [10, 11]], (3, 2, 2))
    """

    __slots__ = ("buffer", "channels", "offsets", "owned", "shapes")

    def __init__(
        self,
        buffer: NDArray[Any],
        shapes: ArrayLike,
        *,
        owned: bool = False,
        channels: int | None = None,
    ) -> None:
        shp = np.asarray(shapes, dtype=np.int64).reshape(-1, 3)
        if np.any(shp < 0):
            raise InvalidScanError(f"item shapes must be >= 0; got {shp.tolist()}")
        if channels is not None and int(channels) < 1:
            raise InvalidScanError(f"channels must be >= 1 or None; got {channels}")
        offsets = np.zeros(len(shp) + 1, dtype=np.int64)
        np.cumsum(np.prod(shp, axis=1) * (channels or 1), out=offsets[1:])
        if buffer.ndim != 1 or not buffer.flags.c_contiguous:
            raise InvalidScanError(
                f"a ragged buffer must be 1-D and C-contiguous; got {buffer.ndim}-D"
            )
        if buffer.size != offsets[-1]:
            raise InvalidScanError(
                f"a ragged buffer of {buffer.size} voxels cannot hold items of shapes "
                f"{shp.tolist()} ({int(offsets[-1])} voxels)"
            )
        self.buffer = buffer
        self.shapes = shp
        self.offsets = offsets
        self.owned = owned
        self.channels = None if channels is None else int(channels)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_items(
        cls,
        arrays: Sequence[NDArray[Any]],
        *,
        dtype: Any = None,
        fresh: bool = False,
    ) -> Ragged:
        """One buffer holding copies of ``arrays``, or a view when there is one.

        The arrays are all (Z, Y, X), or all (C, Z, Y, X) with the same ``C`` (channels). A single
        C-contiguous array of the right dtype is used without a copy. Otherwise one
        buffer is allocated (from :mod:`ctflow.memory`'s pool when large) and every item copied
        into its place. ``fresh=True`` says the arrays were allocated by ctflow for this call,
        so a buffer taken from one of them without a copy is owned by the batch.

        Examples
        --------
        >>> import numpy as np
        >>> a = np.zeros((2, 2, 2), np.uint8)
        >>> Ragged.from_items([a]).buffer.base is a
        True
        """
        arrays = [np.asarray(a) for a in arrays]
        channels = _channels_of(arrays)
        out_dtype = common_dtype([a.dtype for a in arrays]) if dtype is None else np.dtype(dtype)
        shapes = [a.shape[-3:] for a in arrays]
        if not arrays:
            return cls(np.zeros(0, out_dtype), np.zeros((0, 3), np.int64), owned=True)
        if len(arrays) == 1 and arrays[0].flags.c_contiguous and arrays[0].dtype == out_dtype:
            only = arrays[0]
            owned = fresh and memory.owns_data(only)
            return cls(only.reshape(-1), shapes, owned=owned, channels=channels)
        total = int(sum(a.size for a in arrays))
        buffer = memory.empty(total, out_dtype)
        _copy_items(buffer, arrays)
        return cls(buffer, shapes, owned=True, channels=channels)

    @classmethod
    def from_stacked(cls, stacked: NDArray[Any], z_sizes: Sequence[int]) -> Ragged:
        """Items given as one (ΣZ, Y, X) skyscraper cut along z (no copy when contiguous).

        Examples
        --------
        >>> import numpy as np
        >>> Ragged.from_stacked(np.zeros((5, 2, 3)), [2, 3]).shapes.tolist()
        [[2, 2, 3], [3, 2, 3]]
        """
        arr = np.asarray(stacked)
        zs = [int(z) for z in z_sizes]
        if arr.ndim != 3 or arr.shape[0] != sum(zs):
            raise InvalidScanError(
                f"a skyscraper of items with z sizes {zs} must be 3-D with {sum(zs)} rows; "
                f"got shape {arr.shape}"
            )
        shapes = [(z, arr.shape[1], arr.shape[2]) for z in zs]
        return cls(np.ascontiguousarray(arr).reshape(-1), shapes)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        """Return the number of items."""
        return len(self.shapes)

    def __repr__(self) -> str:
        """Return a readable summary."""
        ch = "" if self.channels is None else f", channels={self.channels}"
        return f"Ragged(n={len(self)}, dtype={self.dtype}{ch}, shapes={self.shapes.tolist()})"

    @property
    def dtype(self) -> np.dtype[Any]:
        """The items' dtype."""
        return self.buffer.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of the buffer."""
        return int(self.buffer.nbytes)

    def item(self, i: int) -> NDArray[Any]:
        """Item ``i`` as a (Z, Y, X) view of the buffer ((C, Z, Y, X) with channels)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        z, y, x = (int(v) for v in self.shapes[i])
        if self.channels is not None:
            return self.buffer[a:b].reshape(self.channels, z, y, x)
        return self.buffer[a:b].reshape(z, y, x)

    def items(self) -> list[NDArray[Any]]:
        """Every item as a view."""
        return [self.item(i) for i in range(len(self))]

    @property
    def uniform_yx(self) -> bool:
        """True when every item has the same in-plane size (Y, X)."""
        return len(self) == 0 or bool(np.all(self.shapes[:, 1:] == self.shapes[0, 1:]))

    @property
    def uniform(self) -> bool:
        """True when every item has the same shape."""
        return len(self) == 0 or bool(np.all(self.shapes == self.shapes[0]))

    def describe_shapes(self, ids: Sequence[str] | None = None) -> str:
        """Return ``'a' (40, 512, 512), 'b' (35, 768, 768)`` — for error messages."""
        names = [repr(i) for i in ids] if ids is not None else [f"#{k}" for k in range(len(self))]
        shown = [f"{n} {tuple(int(v) for v in s)}" for n, s in zip(names, self.shapes)]
        return ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else "")

    def stacked(self, what: str = "images", ids: Sequence[str] | None = None) -> NDArray[Any]:
        """Return the (ΣZ, Y, X) skyscraper view; items must share (Y, X).

        Raises
        ------
        InvalidScanError
            Items of different in-plane sizes, naming them, or items with channels.
        """
        if self.channels is not None:
            raise InvalidScanError(
                f"batch.{what}: the items' {what} hold {self.channels} channels each "
                f"(C, Z, Y, X), which do not stack into one (ΣZ, Y, X) array; use "
                f"batch[i].{what}, batch.unstack({what!r}) -> (N, C, Z, Y, X), or argmax() to "
                f"turn them into one label map"
            )
        if not self.uniform_yx:
            raise InvalidScanError(
                f"batch.{what}: items have different in-plane sizes ({self.describe_shapes(ids)})"
                f", so they do not stack into one (ΣZ, Y, X) array; use batch[i].{what} per item "
                f"(or batch.unstack() once shapes agree), or make the shapes agree first "
                f"(resize, unify_spacing(shape=...), central_crop, pad)"
            )
        if len(self) == 0:
            return self.buffer.reshape(0, 0, 0)
        y, x = (int(v) for v in self.shapes[0, 1:])
        return self.buffer.reshape(int(self.shapes[:, 0].sum()), y, x)

    def unstack(self, what: str = "images", ids: Sequence[str] | None = None) -> NDArray[Any]:
        """Return the (N, Z, Y, X) view ((N, C, Z, Y, X) with channels); shapes must agree."""
        if not self.uniform:
            raise InvalidScanError(
                f"unstack: {what} of the items have different shapes ({self.describe_shapes(ids)})"
                f"; use batch[i].{what} per item, or make the shapes agree first (resize, "
                f"unify_spacing(shape=...), central_crop, pad)"
            )
        if len(self) == 0:
            return self.buffer.reshape(0, 0, 0, 0)
        z, y, x = (int(v) for v in self.shapes[0])
        if self.channels is not None:
            return self.buffer.reshape(len(self), self.channels, z, y, x)
        return self.buffer.reshape(len(self), z, y, x)

    def take(self, indices: Sequence[int]) -> Ragged:
        """Return the chosen items in a new buffer (this one itself when all are kept in order)."""
        idx = [int(i) for i in indices]
        if idx == list(range(len(self))):
            return self
        return Ragged.from_items([self.item(i) for i in idx], dtype=self.dtype)

    def with_buffer(self, buffer: NDArray[Any], *, owned: bool = True) -> Ragged:
        """Return the same items over another flat buffer (e.g. the output of an elementwise op)."""
        return Ragged(buffer.reshape(-1), self.shapes, owned=owned, channels=self.channels)
