"""The component storage of a batch: one buffer per component, items of any shapes.

:class:`Components` is the part of :class:`~ctflow.CTBatch` that holds ``images``, ``masks``
and ``lungs`` — each a :class:`~ctflow.ragged.Ragged` (every item's volume back to back in one
buffer) — and the per-item geometry, and keeps them consistent: masks and lungs always have
their item's image shape, ``batch.images`` is the (ΣZ, Y, X) skyscraper view when the items
share (Y, X) and a clear error otherwise, and per-item arrays go into one new buffer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.ragged import Ragged

if TYPE_CHECKING:
    from ctflow.geometry import Geometry

__all__ = ["SKYSCRAPER", "Components"]

#: The components a batch stores, one buffer each.
SKYSCRAPER = ("images", "masks", "lungs")


def _check_ndim(name: str, arr: Any, item_id: str) -> None:
    """Images and lungs are (Z, Y, X); masks may also hold channels (C, Z, Y, X)."""
    ndim = np.ndim(arr)
    if ndim == 3 or (ndim == 4 and name == "masks"):
        return
    want = "(z, y, x) or (c, z, y, x)" if name == "masks" else "3-D (z, y, x)"
    raise InvalidScanError(f"{name} of item {item_id!r} must be {want}; got {np.shape(arr)}")


class Components:
    """Storage of a batch's components and geometry (a base class of :class:`ctflow.CTBatch`)."""

    ids: list[str]
    spacing: NDArray[np.float64]
    origin: NDArray[np.float64]
    direction: NDArray[np.float64]
    _data: dict[str, Ragged]

    def __len__(self) -> int:
        """Return the number of items."""
        return len(self.ids)

    def _stacked(self, name: str) -> NDArray[Any] | None:
        data = self._data.get(name)
        return None if data is None else data.stacked(name, self.ids)

    def _set_stacked(self, name: str, value: Any) -> None:
        """``batch.<component> = value``: None, a Ragged, or a (ΣZ, Y, X) array of the items."""
        if value is None:
            if name == "images":
                self._data.clear()
            else:
                self._data.pop(name, None)
            return
        if isinstance(value, Ragged):
            self._put(name, value)
            return
        arr = np.asarray(value)
        old = self._data.get(name)
        same = (
            old is not None
            and arr.ndim == 3
            and old.buffer.size == arr.size
            and arr.dtype == old.dtype
            and arr.flags.c_contiguous
            and arr.ctypes.data == old.buffer.ctypes.data
        )
        if same:  # the same array handed back (``batch.images += 1``): nothing to do
            return
        ref = self._data.get("images")
        if ref is None:
            if len(self) == 1 and arr.ndim == 3:
                self._put(name, Ragged.from_items([arr]))
                return
            raise InvalidParameterError(
                f"batch.{name} = ...: the batch has no images to give the items' shapes; "
                f"use set_component({name!r}, [one array per item])"
            )
        want = ref.stacked("images", self.ids).shape
        if arr.shape != want:
            raise InvalidScanError(
                f"batch.{name} must have the shape of the stacked images {want}; got "
                f"{arr.shape} (use set_component({name!r}, [one array per item]))"
            )
        self._put(name, Ragged.from_stacked(arr, ref.shapes[:, 0].tolist()))

    def _put(self, name: str, data: Ragged) -> None:
        if name not in SKYSCRAPER:
            raise InvalidParameterError(f"unknown component {name!r}; expected one of {SKYSCRAPER}")
        if len(data) != len(self):
            raise InvalidScanError(
                f"{name}: got {len(data)} items for a batch of {len(self)} ({self.ids})"
            )
        ref = data if name == "images" else self._data.get("images")
        if ref is None:
            raise InvalidParameterError(f"{name}: the batch has no images; load() first")
        for i, item_id in enumerate(self.ids):
            if tuple(data.shapes[i]) != tuple(ref.shapes[i]):
                raise InvalidScanError(
                    f"{name} of item {item_id!r} has shape {tuple(data.shapes[i].tolist())}; "
                    f"its images have {tuple(ref.shapes[i].tolist())}"
                )
        if name == "images":
            for other in ("masks", "lungs"):
                old = self._data.get(other)
                if old is not None and not np.array_equal(old.shapes, data.shapes):
                    del self._data[other]
        self._data[name] = data

    @property
    def images(self) -> NDArray[Any] | None:
        """The (ΣZ, Y, X) skyscraper of the items' images (a view), or None before ``load``.

        Raises :class:`~ctflow.errors.InvalidScanError` when the items' in-plane sizes differ:
        use ``batch[i].images`` then.
        """
        return self._stacked("images")

    @images.setter
    def images(self, value: Any) -> None:
        self._set_stacked("images", value)

    @property
    def masks(self) -> NDArray[Any] | None:
        """The (ΣZ, Y, X) skyscraper of the items' masks (a view), or None."""
        return self._stacked("masks")

    @masks.setter
    def masks(self, value: Any) -> None:
        self._set_stacked("masks", value)

    @property
    def lungs(self) -> NDArray[Any] | None:
        """The (ΣZ, Y, X) skyscraper of the items' lung masks (a view), or None."""
        return self._stacked("lungs")

    @lungs.setter
    def lungs(self, value: Any) -> None:
        self._set_stacked("lungs", value)

    def has(self, component: str) -> bool:
        """Return True when the batch holds ``component`` ("images", "masks" or "lungs")."""
        return component in self._data

    def ragged(self, component: str = "images") -> Ragged:
        """Return the storage of one component: every item's volume in one buffer.

        Examples
        --------
        >>> import numpy as np
        >>> from ctflow import CTBatch
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16), np.zeros((3, 5, 5), np.int16)])
        >>> b.ragged().shapes.tolist(), b.ragged().buffer.size
        ([[2, 4, 4], [3, 5, 5]], 107)
        """
        data = self._data.get(component)
        if data is None:
            raise InvalidParameterError(f"the batch has no {component}")
        return data

    def set_component(self, name: str, volumes: Sequence[NDArray[Any]] | None) -> Self:
        """Set one component from one (Z, Y, X) array per item (copied into one buffer).

        ``masks`` may instead hold ``C`` channels per item, (C, Z, Y, X) arrays (per-class
        probabilities, one-hot). ``masks`` and ``lungs`` must match the items' image shapes;
        ``images`` sets the shapes
        (masks and lungs of other shapes are dropped). ``None`` removes the component.

        Examples
        --------
        >>> import numpy as np
        >>> from ctflow import CTBatch
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16), np.zeros((3, 5, 5), np.int16)])
        >>> b.set_component("masks", [np.ones((2, 4, 4), np.uint8), np.zeros((3, 5, 5), np.uint8)])
        ... # doctest: +ELLIPSIS
        CTBatch(n=2, ...)
        >>> int(b[0].masks.sum()), b[1].masks.dtype
        (32, dtype('uint8'))
        """
        if volumes is None:
            self._set_stacked(name, None)
            return self
        vols = list(volumes)
        if len(vols) != len(self):
            raise InvalidScanError(
                f"set_component({name!r}): got {len(vols)} volumes for {len(self)} items"
            )
        for vol, item_id in zip(vols, self.ids, strict=True):
            _check_ndim(name, vol, item_id)
        self._put(name, Ragged.from_items(vols))
        return self

    @property
    def bounds(self) -> NDArray[np.int64]:
        """(N + 1,) offsets of the items along the stacked z axis."""
        out = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self.shapes[:, 0], out=out[1:])
        return out

    def set_items(
        self,
        arrays: Mapping[str, Sequence[NDArray[Any]] | Ragged | None],
        geometries: Sequence[Geometry],
        *,
        fresh: bool = False,
    ) -> None:
        """Replace the components and geometry from per-item arrays (or unchanged Ragged).

        ``fresh=True`` says the item arrays were allocated by ctflow's own code for this call,
        so a buffer made from one of them without a copy is owned by the batch.
        """
        images = arrays.get("images")
        if images is None and all(arrays.get(n) is None for n in SKYSCRAPER):
            self._data = {}  # geometry without voxels: items loaded with load(lazy=True)
            self._set_geometries(geometries)
            return
        if images is None or (not isinstance(images, Ragged) and len(images) != len(self.ids)):
            raise InvalidScanError("internal: every item needs images")
        new: dict[str, Ragged] = {}
        for name in SKYSCRAPER:
            seq = arrays.get(name)
            if seq is None:
                continue
            if isinstance(seq, Ragged):  # unchanged, reused without a copy
                new[name] = seq
                continue
            for arr, item_id in zip(seq, self.ids, strict=True):
                _check_ndim(name, arr, item_id)
            new[name] = Ragged.from_items(seq, fresh=fresh) if len(seq) else Ragged.from_items([])
        ref = new["images"]
        for name, data in new.items():
            if name == "images":
                continue
            for i, item_id in enumerate(self.ids):
                if tuple(data.shapes[i]) != tuple(ref.shapes[i]):
                    raise InvalidScanError(
                        f"{name} of item {item_id!r} has shape {tuple(data.shapes[i].tolist())}; "
                        f"its images have {tuple(ref.shapes[i].tolist())}"
                    )
        self._data = new
        self._set_geometries(geometries)

    def _set_geometries(self, geometries: Sequence[Geometry]) -> None:
        self.spacing = np.stack([g.spacing for g in geometries]) if geometries else np.ones((0, 3))
        self.origin = np.stack([g.origin for g in geometries]) if geometries else np.zeros((0, 3))
        self.direction = (
            np.stack([g.direction for g in geometries]) if geometries else np.zeros((0, 3, 3))
        )

    def _view(self, name: str, i: int) -> NDArray[Any] | None:
        data = self._data.get(name)
        return None if data is None else data.item(i)

    @property
    def shapes(self) -> NDArray[np.int64]:
        """(N, 3) item shapes (Z, Y, X)."""
        data = self._data.get("images")
        if data is None:
            return np.zeros((len(self), 3), dtype=np.int64)
        return data.shapes.copy()

    @property
    def uniform(self) -> bool:
        """True when every item has the same (Z, Y, X) (so :meth:`unstack` works)."""
        data = self._data.get("images")
        return data is None or data.uniform

    def unstack(self, component: str = "images") -> NDArray[Any]:
        """Items as one (N, Z, Y, X) array — a view, no copy — when all items share a shape.

        Items of different shapes raise :class:`~ctflow.errors.InvalidScanError` naming them;
        use ``batch[i].images`` per item then.

        Examples
        --------
        >>> import numpy as np
        >>> from ctflow import CTBatch
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)] * 3)
        >>> u = b.unstack()
        >>> u.shape, u.base is not None
        ((3, 2, 4, 4), True)
        """
        data = self._data.get(component) if component in SKYSCRAPER else None
        if data is None:
            raise InvalidParameterError(f"unstack: component {component!r} is not loaded")
        return data.unstack(component, self.ids)

    def put_buffer(self, name: str, buffer: NDArray[Any]) -> None:
        """Replace a component's buffer by one of the same items' voxels (voxelwise results)."""
        self._data[name] = self.ragged(name).with_buffer(buffer, owned=True)
