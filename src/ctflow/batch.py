"""CTBatch: the scans of a batch, each component in one buffer, with per-item geometry.

Data model
----------
Each component (``images``; ``masks``, e.g. nodule or label masks; ``lungs``, the lung mask)
is ONE contiguous buffer holding every item's volume back to back
(:class:`~ctflow.ragged.Ragged`): items may have any (Z, Y, X) — a 512x512 scan and a
768x768 one share a batch — and ``batch[i].images`` is a zero-copy (Z, Y, X) view. When the
items share their in-plane size, ``batch.images`` is the classic (ΣZ, Y, X) "skyscraper" view
(item ``i`` is rows ``bounds[i]:bounds[i + 1]``); otherwise reading it raises a clear error
naming the shapes (work per item, or make the shapes agree with ``resize``,
``unify_spacing(shape=...)``, ``central_crop`` or ``pad``). ``spacing`` / ``origin`` are
(N, 3) and ``direction`` (N, 3, 3), all in (z, y, x) order, world LPS mm (see
:mod:`ctflow.geometry`). ``nodules`` is a DataFrame with columns ``id, z, y, x, diameter``
(world mm), so it stays valid through every action that moves voxels. ``warnings`` lists, per
item, what an action decided on its own (a gap interpolated, a file skipped, no nodules to
centre crops on); pipeline runs report them.

Actions are thin: they validate the batch-level parts, then call a per-scan function from
:mod:`ctflow.ops` for every item in parallel (:func:`~ctflow.parallel.inbatch_parallel`), and the
batch assembles the new components and geometry.

Examples
--------
>>> import numpy as np
>>> import ctflow as cf
>>> b = cf.CTBatch.from_arrays(
...     [np.zeros((3, 8, 8), np.int16), np.ones((5, 8, 8), np.int16)],
...     spacing=[(2.5, 0.7, 0.7), (1.0, 0.7, 0.7)],
... )
>>> b.images.shape, b.bounds.tolist()
((8, 8, 8), [0, 3, 8])
>>> bool(np.shares_memory(b[1].images, b.images))     # item arrays are views
True
>>> r = cf.CTBatch.from_arrays([np.zeros((3, 8, 8), np.int16), np.ones((4, 6, 5), np.int16)])
>>> r.shapes.tolist()                                  # any shapes in one batch
[[3, 8, 8], [4, 6, 5]]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry, as_shape, as_spacing
from ctflow.io.annotations import (
    NODULE_COLUMNS,
    annotations_table,
    empty_nodules,
    read_annotations,
)
from ctflow.parallel import (
    ACTION_ATTR,
    action,
    current_share,
    default_n_workers,
    inbatch_parallel,
    map_items,
)
from ctflow.ragged import Ragged

__all__ = ["CTBatch", "CTImagesBatch", "CTImagesMaskedBatch", "CTItem", "ItemFailure"]

SKYSCRAPER = ("images", "masks", "lungs")
#: ``segment`` warns when it finds less lung than this (millilitres): a head or abdomen scan,
#: or a field of view that shows only part of the lungs.
PLAUSIBLE_LUNG_ML = 300.0
_GEOMETRY_KEYS = ("spacing", "origin", "direction", "geometry")
_RESULT_KEYS = frozenset({*SKYSCRAPER, *_GEOMETRY_KEYS, "nodules", "info", "warnings"})
_INTERNAL_KEYS = frozenset({"_recorded_warnings"})  # returned by ctflow's own item methods


@dataclass
class ItemFailure:
    """An item dropped from a batch under ``on_error="skip"``."""

    id: str
    action: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.id}: {self.action}: {type(self.error).__name__}: {self.error}"


@dataclass
class CTItem:
    """One item of a batch: views into the batch's buffers plus the item's geometry.

    Attributes
    ----------
    index : int
        Position in the batch.
    id : str
        Item id.
    images, masks, lungs : ndarray (Z, Y, X) or None
        Views into the batch's buffers (writing to them writes to the batch).
    geometry : Geometry
        Spacing, origin, direction of the item.
    nodules : DataFrame
        The item's rows of the batch nodule table (world mm).
    source : str or None
        Where the item is loaded from.
    rng : numpy.random.Generator
        Deterministic per (seed, batch position, action, item) generator for random actions.
    warnings : list of str
        Warnings an item method adds with :meth:`warn` while it runs (the batch files them
        under the action's name, and pipeline reports list them).
    """

    index: int
    id: str
    images: NDArray[Any] | None
    masks: NDArray[Any] | None
    lungs: NDArray[Any] | None
    geometry: Geometry
    nodules: pd.DataFrame
    source: str | None = None
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    n_threads: int = 1
    warnings: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> NDArray[np.float64]:
        """(z, y, x) voxel size in mm."""
        return self.geometry.spacing

    @property
    def origin(self) -> NDArray[np.float64]:
        """World (z, y, x) mm of voxel (0, 0, 0)."""
        return self.geometry.origin

    @property
    def direction(self) -> NDArray[np.float64]:
        """3x3 axis cosines in (z, y, x)."""
        return self.geometry.direction

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) of the item's images."""
        if self.images is None:
            raise InvalidScanError(f"item {self.id!r} has no images (load it first)")
        z, y, x = self.images.shape
        return int(z), int(y), int(x)

    def voxel_to_world(self, zyx: ArrayLike) -> NDArray[np.float64]:
        """Voxel indices (N, 3) -> world mm (N, 3), (z, y, x)."""
        return self.geometry.voxel_to_world(zyx)

    def world_to_voxel(self, zyx: ArrayLike) -> NDArray[np.float64]:
        """World mm (N, 3) -> continuous voxel indices (N, 3), (z, y, x)."""
        return self.geometry.world_to_voxel(zyx)

    def warn(self, message: str) -> None:
        """Record a warning about this item (listed in ``batch.warnings`` and run reports)."""
        self.warnings.append(str(message))


def _reader_warnings(info: Mapping[str, Any]) -> list[str]:
    """What a reader decided on its own (``info["warnings"]``, files skipped in a DICOM
    folder), as one line each."""
    out = [str(w) for w in info.get("warnings") or []]
    skipped = info.get("skipped") or []
    if skipped:
        shown = "; ".join(
            f"{Path(str(s.get('file', s))).name}: {s.get('reason', '')}"
            if isinstance(s, Mapping)
            else str(s)
            for s in skipped[:5]
        )
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        out.append(f"{len(skipped)} file(s) of the folder not read ({shown}{more})")
    return out


class CTBatch:
    """A batch of CT scans of any shapes: one buffer per component + per-item geometry.

    Parameters
    ----------
    ids : sequence of str
        Item ids (unique).
    sources : sequence of str or None, optional
        Where each item is loaded from (a file or folder); used by :meth:`load`.
    n_workers : int, optional
        Threads for item-parallel actions (default: usable cores).

    See Also
    --------
    CTBatch.from_arrays : build a batch from in-memory volumes.
    ctflow.Dataset.create_batch : batches from a dataset.

    Examples
    --------
    >>> import numpy as np
    >>> import ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.full((4, 6, 6), -1000, np.int16)], ids=["a"])
    >>> b.normalize_hu(-1000, 400).images.max()
    np.float32(0.0)
    """

    #: names of the components stored one buffer each
    components = SKYSCRAPER

    def __init__(
        self,
        ids: Sequence[str],
        sources: Sequence[str | os.PathLike[str] | None] | None = None,
        *,
        n_workers: int | None = None,
    ) -> None:
        self.ids: list[str] = [str(i) for i in ids]
        if len(set(self.ids)) != len(self.ids):
            dup = sorted({i for i in self.ids if self.ids.count(i) > 1})
            raise InvalidParameterError(f"batch ids must be unique; repeated: {dup}")
        n = len(self.ids)
        if sources is None:
            self.sources: list[str | None] = [None] * n
        else:
            if len(sources) != n:
                raise InvalidParameterError(
                    f"batch: got {len(sources)} sources for {n} ids; they must match"
                )
            self.sources = [None if s is None else str(s) for s in sources]
        self._data: dict[str, Ragged] = {}
        self.spacing: NDArray[np.float64] = np.ones((n, 3))
        self.origin: NDArray[np.float64] = np.zeros((n, 3))
        self.direction: NDArray[np.float64] = np.tile(np.eye(3), (n, 1, 1))
        self.nodules: pd.DataFrame = empty_nodules()
        self.n_workers = n_workers
        self.on_error = "raise"
        self.failed: list[ItemFailure] = []
        self.dumped: list[str] = []
        self.skipped: list[str] = []
        self.info: list[dict[str, Any]] = [{} for _ in range(n)]
        self.warnings: list[list[str]] = [[] for _ in range(n)]
        self._positions: list[int] = list(range(n))
        self._seed: np.random.SeedSequence | None = None
        self._n_random_calls = 0
        self.patches: NDArray[Any] | None = None
        self.patch_grids: list[Any] = []

    # ------------------------------------------------------------------ components
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
        """True when the batch holds ``component`` ("images", "masks" or "lungs")."""
        return component in self._data

    def ragged(self, component: str = "images") -> Ragged:
        """The storage of one component: every item's volume in one buffer.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16), np.zeros((3, 5, 5), np.int16)])
        >>> b.ragged().shapes.tolist(), b.ragged().buffer.size
        ([[2, 4, 4], [3, 5, 5]], 107)
        """
        data = self._data.get(component)
        if data is None:
            raise InvalidParameterError(f"the batch has no {component}")
        return data

    def set_component(self, name: str, volumes: Sequence[NDArray[Any]] | None) -> CTBatch:
        """Set one component from one (Z, Y, X) array per item (copied into one buffer).

        ``masks`` and ``lungs`` must match the items' image shapes; ``images`` sets the shapes
        (masks and lungs of other shapes are dropped). ``None`` removes the component.

        Examples
        --------
        >>> import numpy as np
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
            if np.ndim(vol) != 3:
                raise InvalidScanError(
                    f"{name} of item {item_id!r} must be 3-D (z, y, x); got {np.shape(vol)}"
                )
        self._put(name, Ragged.from_items(vols))
        return self

    @property
    def bounds(self) -> NDArray[np.int64]:
        """(N + 1,) offsets of the items along the stacked z axis."""
        out = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self.shapes[:, 0], out=out[1:])
        return out

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        images: Sequence[NDArray[Any]],
        *,
        ids: Sequence[str] | None = None,
        spacing: ArrayLike | None = None,
        origin: ArrayLike | None = None,
        direction: ArrayLike | None = None,
        masks: Sequence[NDArray[Any]] | None = None,
        nodules: pd.DataFrame | None = None,
        n_workers: int | None = None,
    ) -> CTBatch:
        """Build a batch from in-memory (Z, Y, X) volumes of any shapes.

        ``spacing`` / ``origin`` are (3,) for all items or (N, 3); ``direction`` (3, 3) or
        (N, 3, 3). Ids default to ``"0", "1", ...``.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)], spacing=(2.0, 0.5, 0.5))
        >>> b[0].spacing.tolist()
        [2.0, 0.5, 0.5]
        """
        n = len(images)
        if n == 0:
            raise InvalidParameterError("from_arrays: give at least one volume")
        batch = cls([str(i) for i in range(n)] if ids is None else ids, n_workers=n_workers)
        sp = (
            np.ones((n, 3))
            if spacing is None
            else np.broadcast_to(np.asarray(spacing, np.float64), (n, 3))
        )
        org = (
            np.zeros((n, 3))
            if origin is None
            else np.broadcast_to(np.asarray(origin, np.float64), (n, 3))
        )
        dirs = (
            np.tile(np.eye(3), (n, 1, 1))
            if direction is None
            else np.broadcast_to(np.asarray(direction, np.float64), (n, 3, 3))
        )
        geoms = [Geometry(sp[i], org[i], dirs[i]) for i in range(n)]
        arrays = [np.asarray(a) for a in images]
        batch._set_items({"images": arrays, "masks": None if masks is None else list(masks)}, geoms)
        if nodules is not None:
            batch.nodules = read_annotations(nodules)
        return batch

    @classmethod
    def concat(cls, batches: Sequence[CTBatch]) -> CTBatch:
        """One batch of the items of ``batches``, in order (their arrays copied into one buffer
        per component).

        Components must be present in all batches or in none; ids must be unique.

        Examples
        --------
        >>> import numpy as np
        >>> a = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)], ids=["a"])
        >>> b = CTBatch.from_arrays([np.ones((3, 6, 5), np.int16)], ids=["b"])
        >>> c = CTBatch.concat([a, b])
        >>> c.ids, c.shapes.tolist()
        (['a', 'b'], [[2, 4, 4], [3, 6, 5]])
        """
        parts = [b for b in batches if len(b) > 0]
        first = batches[0] if batches else None
        out_cls = type(first) if first is not None else cls
        ids = [i for b in parts for i in b.ids]
        out = out_cls(ids, [s for b in parts for s in b.sources])
        if first is not None:
            out.n_workers, out.on_error = first.n_workers, first.on_error
            out._seed = first._seed
            out._n_random_calls = max(b._n_random_calls for b in batches)
        out.failed = [f for b in batches for f in b.failed]
        out.dumped = [i for b in batches for i in b.dumped]
        out.skipped = [i for b in batches for i in b.skipped]
        if not parts:
            return out
        out.info = [dict(d) for b in parts for d in b.info]
        out.warnings = [list(w) for b in parts for w in b.warnings]
        out._positions = [p for b in parts for p in b._positions]
        out.spacing = np.concatenate([b.spacing for b in parts])
        out.origin = np.concatenate([b.origin for b in parts])
        out.direction = np.concatenate([b.direction for b in parts])
        out.nodules = pd.concat([b.nodules for b in parts], ignore_index=True)
        for name in SKYSCRAPER:
            have = [b.has(name) for b in parts]
            if not any(have):
                continue
            if not all(have):
                missing = [i for b in parts if not b.has(name) for i in b.ids]
                raise InvalidScanError(f"concat: items {missing} have no {name} while others do")
            views = [v for b in parts for v in b._data[name].items()]
            out._data[name] = Ragged.from_items(views)
        if all(b.patches is not None for b in parts):
            out.patches = np.concatenate([b.patches for b in parts if b.patches is not None])
            out.patch_grids = [g for b in parts for g in b.patch_grids]
        return out

    def _set_items(
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
                if np.ndim(arr) != 3:
                    raise InvalidScanError(
                        f"{name} of item {item_id!r} must be 3-D (z, y, x); got {np.shape(arr)}"
                    )
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
        self.spacing = np.stack([g.spacing for g in geometries]) if geometries else np.ones((0, 3))
        self.origin = np.stack([g.origin for g in geometries]) if geometries else np.zeros((0, 3))
        self.direction = (
            np.stack([g.direction for g in geometries]) if geometries else np.zeros((0, 3, 3))
        )

    # ------------------------------------------------------------------ item access
    def __len__(self) -> int:
        return len(self.ids)

    def _index(self, key: int | str) -> int:
        if isinstance(key, str):
            try:
                return self.ids.index(key)
            except ValueError:
                raise KeyError(f"no item {key!r} in batch; ids: {self.ids}") from None
        n = len(self)
        i = int(key)
        if not -n <= i < n:
            raise IndexError(f"item index {key} out of range for a batch of {n}")
        return i % n

    def geometry(self, key: int | str) -> Geometry:
        """The Geometry of one item."""
        i = self._index(key)
        return Geometry(self.spacing[i], self.origin[i], self.direction[i])

    def _view(self, name: str, i: int) -> NDArray[Any] | None:
        data = self._data.get(name)
        return None if data is None else data.item(i)

    def get(self, key: int | str, component: str | None = None) -> Any:
        """An item (:class:`CTItem`) by position or id, or one of its components.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)], ids=["x"])
        >>> b.get("x", "images").shape
        (2, 4, 4)
        """
        i = self._index(key)
        item = CTItem(
            index=i,
            id=self.ids[i],
            images=self._view("images", i),
            masks=self._view("masks", i),
            lungs=self._view("lungs", i),
            geometry=self.geometry(i),
            nodules=self.nodules[self.nodules["id"] == self.ids[i]],
            source=self.sources[i],
        )
        return item if component is None else getattr(item, component)

    def __getitem__(self, key: int | str) -> CTItem:
        return self.get(key)

    def __iter__(self) -> Iterator[CTItem]:
        for i in range(len(self)):
            yield self.get(i)

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
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)] * 3)
        >>> u = b.unstack()
        >>> u.shape, u.base is not None
        ((3, 2, 4, 4), True)
        """
        data = self._data.get(component) if component in SKYSCRAPER else None
        if data is None:
            raise InvalidParameterError(f"unstack: component {component!r} is not loaded")
        return data.unstack(component, self.ids)

    def voxel_to_world(self, key: int | str, zyx: ArrayLike) -> NDArray[np.float64]:
        """Voxel indices of item ``key`` to world mm, (z, y, x)."""
        return self.geometry(key).voxel_to_world(zyx)

    def world_to_voxel(self, key: int | str, zyx: ArrayLike) -> NDArray[np.float64]:
        """World mm to continuous voxel indices of item ``key``, (z, y, x)."""
        return self.geometry(key).world_to_voxel(zyx)

    @classmethod
    def action_names(cls) -> list[str]:
        """Names of all methods usable as pipeline actions on this class."""
        return sorted(
            name
            for name in dir(cls)
            if not name.startswith("_") and getattr(getattr(cls, name, None), ACTION_ATTR, False)
        )

    def __repr__(self) -> str:
        data = self._data.get("images")
        if data is None:
            desc = "not loaded"
        else:
            if data.uniform_yx:
                parts = [f"images={self.images.shape} {data.dtype}"]  # type: ignore[union-attr]
            else:
                parts = [f"images=ragged {data.dtype}"]
            for name in ("masks", "lungs"):
                other = self._data.get(name)
                if other is not None:
                    parts.append(f"{name}={other.dtype}")
            parts.append(f"nodules={len(self.nodules)}")
            desc = ", ".join(parts)
        shown = ", ".join(self.ids[:4]) + (", ..." if len(self) > 4 else "")
        return f"{type(self).__name__}(n={len(self)}, ids=[{shown}], {desc})"

    def warn(self, key: int | str, action_name: str, message: str) -> None:
        """Record a warning about one item (``"<action>: <message>"`` in ``batch.warnings``)."""
        entry = f"{action_name}: {message}"
        bucket = self.warnings[self._index(key)]
        if entry not in bucket:
            bucket.append(entry)

    # ------------------------------------------------------------------ randomness
    def set_random_state(self, seed: int | None, position: int) -> None:
        """Seed the batch's random actions from a run seed and the batch's position in the run."""
        entropy = seed if seed is not None else np.random.SeedSequence().entropy
        self._seed = np.random.SeedSequence(entropy, spawn_key=(int(position),))
        self._n_random_calls = 0

    def _next_seed(self) -> np.random.SeedSequence:
        if self._seed is None:
            self._seed = np.random.SeedSequence()
        call = self._n_random_calls
        self._n_random_calls += 1
        return np.random.SeedSequence(self._seed.entropy, spawn_key=(*self._seed.spawn_key, call))

    @property
    def rng(self) -> np.random.Generator:
        """A fresh generator for one batch-level random draw (deterministic in a seeded run)."""
        return np.random.default_rng(self._next_seed())

    # ------------------------------------------------------------------ parallel machinery
    def _workers(self, n_workers: int | None) -> int:
        """Threads for one action: the argument, the batch's own, a fair share, or all cores."""
        explicit = n_workers or self.n_workers
        if explicit:
            return int(explicit)
        share = current_share()
        return share.threads() if share is not None else default_n_workers()

    def _run_items(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        n_workers: int | None,
        target: str,
    ) -> CTBatch:
        """Run ``func(self, item, *args, **kwargs)`` on every item and assemble the results."""
        name = func.__name__
        n = len(self)
        if n == 0:
            return self
        workers = self._workers(n_workers)
        seq = self._next_seed()
        n_threads = max(1, workers // n)
        items = [self.get(i) for i in range(n)]
        for item in items:
            pos = self._positions[item.index]
            item.rng = np.random.default_rng(
                np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, pos))
            )
            item.n_threads = n_threads
        futures = map_items(
            lambda it: func(self, it, *args, **kwargs),
            items,
            n_workers=workers,
            target=target,  # type: ignore[arg-type]
        )
        results: list[Any] = []
        keep: list[int] = []
        for item, fut in zip(items, futures, strict=True):
            for message in item.warnings:
                self.warn(item.index, name, message)
            exc = fut.exception()
            if exc is None:
                results.append(fut.result())
                keep.append(item.index)
                continue
            exc.add_note(f"ctflow: in action {name!r} on item {item.id!r} (#{item.index})")
            if self.on_error != "skip":
                raise exc
            self.failed.append(ItemFailure(item.id, name, exc))
        if len(keep) < n:
            self._keep(keep)
        # ctflow's own item methods return arrays they allocated (views have a base)
        self._assemble(name, results, fresh=func.__module__ == __name__)
        return self

    def _keep(self, indices: Sequence[int]) -> None:
        """Drop all items except ``indices`` (in place)."""
        idx = list(indices)
        kept_ids = [self.ids[i] for i in idx]
        self.nodules = self.nodules[self.nodules["id"].isin(kept_ids)].reset_index(drop=True)
        self.ids = kept_ids
        self.sources = [self.sources[i] for i in idx]
        self.info = [self.info[i] for i in idx]
        self.warnings = [self.warnings[i] for i in idx]
        self._positions = [self._positions[i] for i in idx]
        self._data = {name: data.take(idx) for name, data in self._data.items()} if idx else {}
        self.spacing, self.origin = self.spacing[idx], self.origin[idx]
        self.direction = self.direction[idx]

    def _assemble(self, name: str, results: Sequence[Any], *, fresh: bool = False) -> None:
        """Build new components from per-item results (arrays, dicts or None)."""
        if not results or all(r is None for r in results):
            return
        dicts: list[dict[str, Any]] = []
        for r, item_id in zip(results, self.ids, strict=True):
            if r is None:
                dicts.append({})
            elif isinstance(r, np.ndarray):
                dicts.append({"images": r})
            elif isinstance(r, Mapping):
                unknown = set(r) - _RESULT_KEYS - _INTERNAL_KEYS
                if unknown:
                    raise InvalidParameterError(
                        f"{name}: item {item_id!r} returned unknown components {sorted(unknown)}; "
                        f"allowed: images, masks, lungs, spacing, origin, direction, geometry, "
                        f"nodules, info, warnings"
                    )
                dicts.append(dict(r))
            else:
                raise InvalidParameterError(
                    f"{name}: item {item_id!r} returned {type(r).__name__}; an item method must "
                    f"return an array, a dict of components or None"
                )
        geoms: list[Geometry] = []
        for i, d in enumerate(dicts):
            if "geometry" in d:
                geoms.append(d["geometry"])
            else:
                geoms.append(
                    Geometry(
                        d.get("spacing", self.spacing[i]),
                        d.get("origin", self.origin[i]),
                        d.get("direction", self.direction[i]),
                    )
                )
        shapes = self.shapes
        loaded = self.has("images")
        changed_shape = any(
            "images" in d and (not loaded or np.shape(d["images"]) != tuple(shapes[i]))
            for i, d in enumerate(dicts)
        )
        new: dict[str, Sequence[NDArray[Any]] | Ragged | None] = {}
        for comp in SKYSCRAPER:
            given = [d.get(comp) for d in dicts]
            old = self._data.get(comp)
            if all(g is None for g in given):
                if old is None or (changed_shape and comp != "images"):
                    new[comp] = None  # absent, or cannot follow a shape change it missed
                else:
                    new[comp] = old  # unchanged: reuse the buffer, no copy
                continue
            arrays = []
            for i, g in enumerate(given):
                if g is None:
                    if old is None:
                        raise InvalidScanError(
                            f"{name}: item {self.ids[i]!r} returned no {comp} while other items did"
                        )
                    arrays.append(old.item(i))
                else:
                    arrays.append(np.asarray(g))
            new[comp] = arrays
        if any("nodules" in d for d in dicts):
            tables = []
            for i, d in enumerate(dicts):
                t = d.get("nodules")
                if t is None:
                    t = self.nodules[self.nodules["id"] == self.ids[i]]
                else:
                    t = t.copy()
                    t["id"] = self.ids[i]
                tables.append(t.loc[:, list(NODULE_COLUMNS)])
            self.nodules = pd.concat(tables, ignore_index=True) if tables else empty_nodules()
        for i, d in enumerate(dicts):
            if "info" in d:
                self.info[i].update(d["info"])
            for entry in d.get("_recorded_warnings", ()):
                if entry not in self.warnings[i]:
                    self.warnings[i].append(entry)
            for message in d.get("warnings", ()):
                self.warn(i, name, message)
        self._set_items(new, geoms, fresh=fresh)

    def _require(self, what: str, *components: str) -> None:
        for comp in components:
            if not self.has(comp):
                hint = (
                    "load() first"
                    if comp == "images"
                    else (
                        "create_mask() or load a dump with masks"
                        if comp == "masks"
                        else "segment()"
                    )
                )
                raise InvalidParameterError(f"{what}: the batch has no {comp}; call {hint}")

    # ================================================================== actions: I/O
    @action
    @inbatch_parallel
    def load(
        self,
        item: CTItem,
        fmt: str | None = None,
        components: Sequence[str] | None = None,
        series_uid: str | None = None,
        allow_uneven: bool = False,
    ) -> dict[str, Any]:
        """Load every item from its source (file or folder).

        Arrays keep their stored orientation; the direction matrix carries it, so world
        positions equal SimpleITK's for the same file (see :mod:`ctflow.io.reader`).

        Parameters
        ----------
        fmt : {"mhd", "nifti", "nrrd", "dicom", "ctflow", "sitk"}, optional
            Force a format; default: inferred from the source. "sitk" reads through SimpleITK
            what the native readers refuse on purpose (Analyze, ASCII NRRD, ...).
        components : sequence of str, optional
            For ctflow dumps: which of ``images``, ``masks``, ``lungs`` to read (default: all
            stored). Dumps also restore the nodule table.
        series_uid : str, optional
            DICOM folders: the series to read (default: the CT series with most slices).
        allow_uneven : bool, default False
            DICOM folders: resample missing slices / uneven spacing onto a regular grid instead
            of refusing the series.

        Examples
        --------
        >>> import tempfile, numpy as np, ctflow as cf
        >>> from ctflow.io.metaimage import write_metaimage
        >>> p = write_metaimage(f"{tempfile.mkdtemp()}/s1.mhd", np.zeros((2, 4, 4), np.int16),
        ...                     cf.Geometry((2.0, 1.0, 1.0)))
        >>> cf.Dataset.from_paths([p]).create_batch(["s1"]).load().images.shape
        (2, 4, 4)
        """
        from ctflow.io.reader import detect_format, read_scan

        if item.source is None:
            raise InvalidParameterError(f"load: item {item.id!r} has no source path")
        kind = detect_format(item.source) if fmt is None else fmt
        if kind == "ctflow":
            from ctflow.io.store import read_item

            stored = read_item(item.source, components)
            out: dict[str, Any] = dict(stored.components)
            out["geometry"] = stored.geometry
            out["nodules"] = stored.nodules
            out["_recorded_warnings"] = stored.warnings  # "action: message" as recorded
            return out
        dicom_kw: dict[str, Any] = {}
        if kind == "dicom":
            dicom_kw = {"series_uid": series_uid, "allow_uneven": allow_uneven}
        scan = read_scan(item.source, kind, **dicom_kw)
        return {
            "images": scan.images,
            "geometry": scan.geometry,
            "info": scan.info,
            "warnings": _reader_warnings(scan.info),
        }

    @action
    @inbatch_parallel
    def dump(
        self,
        item: CTItem,
        dst: str | os.PathLike[str],
        components: Sequence[str] | None = None,
        skip_existing: bool = False,
        compression: str = "lz4",
    ) -> None:
        """Write every item to ``<dst>/<id>/`` in the ctflow format (blosc2 + meta.json).

        Writing is atomic per item; ``skip_existing=True`` leaves complete items alone so an
        interrupted run can be resumed. ``batch.dumped`` / ``batch.skipped`` list the ids.
        ``compression`` is ``"lz4"`` (fastest to load back) or ``"zstd"`` (~20 % smaller).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> d = tempfile.mkdtemp()
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)], ids=["a"]).dump(d)
        >>> b.dumped
        ['a']
        """
        from ctflow.io.store import write_item

        wanted = SKYSCRAPER if components is None else tuple(components)
        unknown = set(wanted) - set(SKYSCRAPER)
        if unknown:
            raise InvalidParameterError(
                f"dump: unknown components {sorted(unknown)}; expected some of {SKYSCRAPER}"
            )
        if item.images is None:
            raise InvalidParameterError(f"dump: item {item.id!r} has no images; load() first")
        comps = {c: getattr(item, c) for c in wanted}
        comps["images"] = item.images
        written = write_item(
            dst,
            item.id,
            comps,
            item.geometry,
            nodules=item.nodules,
            source=item.source,
            skip_existing=skip_existing,
            compression=compression,
            warnings=self.warnings[item.index],
        )
        (self.dumped if written is not None else self.skipped).append(item.id)
        return None

    # ================================================================== actions: geometry
    @action
    @inbatch_parallel
    def unify_spacing(
        self,
        item: CTItem,
        spacing: ArrayLike = (1.0, 1.0, 1.0),
        shape: ArrayLike | None = None,
        order: int = 1,
        padding: str = "reflect",
        dtype: Any = None,
        anti_alias: bool = False,
    ) -> dict[str, Any]:
        """Resample every item to exactly ``spacing`` mm, optionally to a fixed ``shape``.

        The output grid is centred on the scan's centre; with ``shape`` it is cropped or padded
        (``padding``: "reflect", "edge" or "constant" = -1000 HU air) within the same single
        resampling pass. Images use ``order`` (0 nearest, 1 linear, 3 cubic); masks and lungs are
        resampled as labels (nearest), never interpolated. Output images are float32 for
        ``order >= 1`` unless ``dtype`` says otherwise (e.g. ``np.int16`` rounds back to HU).
        Origin and spacing are updated so world points keep pointing at the same anatomy.
        Without ``shape`` each item keeps its own field of view (items of a batch may then
        differ in shape). ``shape`` may hold ``None`` on an axis to keep that axis's field of
        view, e.g. ``(None, 384, 384)`` fixes only the in-plane size.
        ``anti_alias=True`` smooths axes that are downsampled (Gaussian, sigma from the
        spacing ratio) before sampling, as image pyramids do.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((10, 8, 8), np.int16)], spacing=(2.0, 1.0, 1.0))
        >>> b.unify_spacing((1.0, 1.0, 1.0)).images.shape
        (20, 8, 8)
        """
        from ctflow.ops.resample import unify_spacing

        images = self._item_images(item, "unify_spacing")
        kw: dict[str, Any] = {"shape": shape, "padding": padding, "n_threads": item.n_threads}
        out, geometry = unify_spacing(
            images, item.geometry, spacing, order=order, dtype=dtype, anti_alias=anti_alias, **kw
        )
        result: dict[str, Any] = {"images": out, "geometry": geometry}
        for comp in ("masks", "lungs"):
            arr = getattr(item, comp)
            if arr is not None:
                result[comp], _ = unify_spacing(
                    arr, item.geometry, spacing, order=0, **{**kw, "padding": "constant", "cval": 0}
                )
        return result

    @action
    @inbatch_parallel
    def resize(
        self,
        item: CTItem,
        shape: ArrayLike = (128, 256, 256),
        order: int = 1,
        dtype: Any = None,
        anti_alias: bool = False,
    ) -> dict[str, Any]:
        """Resample every item to ``shape`` voxels, keeping its field of view.

        Spacing becomes ``old_spacing * old_shape / shape``; the grid stays centred, so world
        positions of the anatomy are unchanged. Masks/lungs are resampled as labels (nearest).

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((10, 8, 8), np.int16)])
        >>> b.resize((5, 4, 4)).spacing.tolist()
        [[2.0, 2.0, 2.0]]
        """
        from ctflow.ops.resample import resize

        images = self._item_images(item, "resize")
        out, geometry = resize(
            images,
            item.geometry,
            shape,
            order=order,
            dtype=dtype,
            n_threads=item.n_threads,
            anti_alias=anti_alias,
        )
        result: dict[str, Any] = {"images": out, "geometry": geometry}
        for comp in ("masks", "lungs"):
            arr = getattr(item, comp)
            if arr is not None:
                result[comp], _ = resize(arr, item.geometry, shape, order=0)
        return result

    @action
    @inbatch_parallel
    def crop(self, item: CTItem, start: ArrayLike, shape: ArrayLike) -> dict[str, Any]:
        """Cut the box ``start`` .. ``start + shape`` (voxels) out of every item.

        The box must lie inside each item; the origin moves to the box's first voxel.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((10, 8, 8), np.int16)], origin=(0.0, 0.0, 0.0))
        >>> b.crop((2, 1, 1), (4, 4, 4)).origin.tolist()
        [[2.0, 1.0, 1.0]]
        """
        st = np.asarray(start, dtype=np.int64)
        sh = np.asarray(as_shape(shape, where="crop"), dtype=np.int64)
        full = np.asarray(self._item_images(item, "crop").shape)
        if st.shape != (3,) or np.any(st < 0) or np.any(st + sh > full):
            raise InvalidParameterError(
                f"crop: box start={tuple(np.atleast_1d(st).tolist())} shape={tuple(sh.tolist())} "
                f"must lie inside item {item.id!r} of shape {tuple(full.tolist())}"
            )
        return self._cut(item, st, sh)

    @action
    @inbatch_parallel
    def central_crop(self, item: CTItem, shape: ArrayLike) -> dict[str, Any]:
        """Cut a box of ``shape`` voxels around each item's centre (start = (Z - shape) // 2).

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((10, 8, 8), np.int16)])
        >>> b.central_crop((4, 4, 4)).origin.tolist()
        [[3.0, 2.0, 2.0]]
        """
        sh = np.asarray(as_shape(shape, where="central_crop"), dtype=np.int64)
        full = np.asarray(self._item_images(item, "central_crop").shape)
        if np.any(sh > full):
            raise InvalidParameterError(
                f"central_crop: shape {tuple(sh.tolist())} is larger than item {item.id!r} "
                f"of shape {tuple(full.tolist())}; use pad() or unify_spacing(shape=...)"
            )
        return self._cut(item, (full - sh) // 2, sh)

    def _cut(
        self, item: CTItem, start: NDArray[np.int64], shape: NDArray[np.int64]
    ) -> dict[str, Any]:
        box = tuple(slice(int(a), int(a + b)) for a, b in zip(start, shape, strict=True))
        out: dict[str, Any] = {"geometry": item.geometry.shifted(start)}
        for comp in SKYSCRAPER:
            arr = getattr(item, comp)
            if arr is not None:
                out[comp] = np.ascontiguousarray(arr[box])
        return out

    @action
    @inbatch_parallel
    def pad(
        self, item: CTItem, shape: ArrayLike, mode: str = "constant", value: float = -1000.0
    ) -> dict[str, Any]:
        """Pad every item symmetrically up to at least ``shape`` (extra voxel goes after).

        ``mode`` is a :func:`numpy.pad` mode; with "constant" images get ``value`` (air) and
        masks/lungs get 0. The origin moves so the anatomy keeps its world position.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)])
        >>> b.pad((4, 4, 4)).origin.tolist(), b.images.shape
        ([[-1.0, 0.0, 0.0]], (4, 4, 4))
        """
        target = np.asarray(as_shape(shape, where="pad"), dtype=np.int64)
        allowed = ("constant", "edge", "reflect", "symmetric", "wrap")
        if mode not in allowed:
            raise InvalidParameterError(f"pad: mode must be one of {allowed}; got {mode!r}")
        full = np.asarray(self._item_images(item, "pad").shape)
        extra = np.maximum(target - full, 0)
        before = extra // 2
        widths = [(int(b), int(e - b)) for b, e in zip(before, extra, strict=True)]
        out: dict[str, Any] = {"geometry": item.geometry.shifted(-before)}
        for comp in SKYSCRAPER:
            arr = getattr(item, comp)
            if arr is None:
                continue
            if mode == "constant":
                fill = value if comp == "images" else 0
                out[comp] = np.pad(arr, widths, mode="constant", constant_values=fill)
            else:
                out[comp] = np.pad(arr, widths, mode=mode)  # type: ignore[call-overload]
        return out

    @action
    @inbatch_parallel
    def flip(self, item: CTItem, axis: int | Sequence[int] = 0) -> dict[str, Any]:
        """Reverse voxel order along ``axis`` (0 = z, 1 = y, 2 = x) of every item.

        Geometry is updated (origin moves to the far end, the axis' direction is negated), so
        every voxel keeps its world position: the anatomy does not move in world mm, only the
        array order changes. Nodule tables stay valid.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.arange(3, dtype=np.int16).reshape(3, 1, 1)])
        >>> b.flip(0).images.ravel().tolist(), b.origin[0].tolist(), b.direction[0][0].tolist()
        ([2, 1, 0], [2.0, 0.0, 0.0], [-1.0, 0.0, 0.0])
        """
        axes = sorted({int(a) for a in np.atleast_1d(axis)})
        if not axes or any(a not in (0, 1, 2) for a in axes):
            raise InvalidParameterError(f"flip: axis must be 0, 1 or 2 (z, y, x); got {axis!r}")
        shape = np.asarray(self._item_images(item, "flip").shape)
        start = np.zeros(3)
        direction = item.geometry.direction.copy()
        for a in axes:
            start[a] = shape[a] - 1
            direction[:, a] *= -1
        origin = item.geometry.voxel_to_world(start)
        out: dict[str, Any] = {"geometry": Geometry(item.spacing, origin, direction)}
        for comp in SKYSCRAPER:
            arr = getattr(item, comp)
            if arr is not None:
                out[comp] = np.ascontiguousarray(np.flip(arr, axis=tuple(axes)))
        return out

    @action
    @inbatch_parallel
    def reorient(self, item: CTItem, code: str = "LPS") -> dict[str, Any] | None:
        """Permute and flip every item's axes so they follow an orientation code (exact).

        ``code`` is one of the 48 three-letter DICOM-style codes SimpleITK's ``DICOMOrient``
        takes (``"LPS"``, ``"RAS"``, ``"SLA"``, ...). Its letters describe the array axes x,
        y, z (ctflow axes 2, 1, 0) in DICOM's convention: ``"LPS"`` means x grows toward the
        patient's left, y toward posterior, z toward superior — the identity direction. The
        result equals ``sitk.DICOMOrient(image, code)`` voxel for voxel and in spacing, origin
        and direction: no interpolation, every voxel keeps its world position (nodule tables
        stay valid), masks and lungs follow. An item already in that orientation is left as
        it is (no copy). Train on scans brought to one orientation, as TorchIO's
        ``ToCanonical`` / MONAI's ``Orientationd`` do: otherwise a RAS-stored NIfTI and an
        LPS DICOM reach the network mirrored.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.arange(8, dtype=np.int16).reshape(2, 2, 2)])
        >>> np.diag(b.reorient("RAS").direction[0]).tolist()    # y and x now run the other way
        [1.0, -1.0, -1.0]
        >>> b.images[0].tolist(), b.voxel_to_world(0, (0, 0, 0)).tolist()
        ([[3, 2], [1, 0]], [0.0, 1.0, 1.0])
        """
        from ctflow.ops.orient import reorient

        images = self._item_images(item, "reorient")
        view, geometry = reorient(images, item.geometry, code)
        if view is images:
            return None  # already in that orientation: nothing moves, nothing is copied
        out: dict[str, Any] = {"images": np.ascontiguousarray(view), "geometry": geometry}
        for comp in ("masks", "lungs"):
            arr = getattr(item, comp)
            if arr is not None:
                out[comp] = np.ascontiguousarray(reorient(arr, item.geometry, code)[0])
        return out

    @action
    @inbatch_parallel
    def rotate(
        self,
        item: CTItem,
        angle: float,
        axes: Sequence[int] = (1, 2),
        random: bool = False,
        order: int = 1,
        cval: float = -1000.0,
        dtype: Any = None,
    ) -> dict[str, Any]:
        """Rotate every item by ``angle`` degrees about the centre of the plane ``axes``.

        The rotation is in millimetres: on a plane whose two spacings differ (0.68 x 0.73 mm
        pixels, or a plane that includes z) the content turns by ``angle`` in world space, not
        in voxel indices (:func:`ctflow.ops.spatial.rotate`; on equal spacings this is
        ``scipy.ndimage.rotate(..., reshape=False)``). Masks and lungs are rotated as labels
        (nearest). The direction and origin turn with the content (:meth:`Geometry.rotated`),
        so every voxel keeps pointing at the world position of the anatomy it shows: nodule
        tables stay valid and ``create_mask`` after ``rotate`` is right.

        Parameters
        ----------
        angle : float
            Degrees; with ``random=True`` each item draws its angle uniformly from
            ``[-angle, angle]`` (reproducible from the run's seed).
        axes : pair of int, default (1, 2)
            The rotation plane; (1, 2) rotates the axial plane about z.
        order : {0, 1}
            Interpolation of images.
        cval : float, default -1000
            Image value where the source lies outside the scan (air).
        dtype : numpy dtype, optional
            Output image dtype (default float32 for ``order=1``, unchanged for ``order=0``).

        Examples
        --------
        >>> import numpy as np
        >>> img = np.zeros((1, 5, 5), np.int16); img[0, 4, 2] = 100
        >>> b = CTBatch.from_arrays([img]).rotate(90, order=0)
        >>> np.argwhere(b.images == 100).tolist(), b.voxel_to_world(0, (0, 2, 4)).tolist()
        ([[0, 2, 4]], [0.0, 4.0, 2.0])
        """
        from ctflow.ops.spatial import rotate

        images = self._item_images(item, "rotate")
        theta = float(angle)
        if not np.isfinite(theta):
            raise InvalidParameterError(f"rotate: angle must be a finite number; got {angle!r}")
        if random:
            theta = float(item.rng.uniform(-abs(theta), abs(theta)))
        geometry = item.geometry.rotated(images.shape, theta, axes)
        plane = (int(axes[0]), int(axes[1]))
        kw: dict[str, Any] = {"n_threads": item.n_threads, "spacing": item.spacing}
        out: dict[str, Any] = {
            "images": rotate(images, theta, plane, order=order, cval=cval, dtype=dtype, **kw),
            "geometry": geometry,
            "info": {"rotate_deg": theta},
        }
        for comp in ("masks", "lungs"):
            arr = getattr(item, comp)
            if arr is not None:
                out[comp] = rotate(arr, theta, plane, order=0, cval=0, **kw)
        return out

    # ================================================================== actions: intensity
    @action
    def normalize_hu(
        self,
        min_hu: float = -1000.0,
        max_hu: float = 400.0,
        dtype: str = "float32",
        inplace: bool = True,
    ) -> CTBatch:
        """Clip HU to [min_hu, max_hu] and scale to [0, 1] float32 (or 0..255 uint8).

        One fused pass over the whole skyscraper, threaded; float32 images the batch allocated
        itself (e.g. the output of ``unify_spacing``) are overwritten in place, so the step
        needs no second volume (``inplace=False`` always writes a new array, e.g. when you keep
        a reference to the HU images). Arrays a user handed in (``from_arrays``) are never
        modified.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.array([[[-2000, -300, 1000]]], np.int16)])
        >>> b.normalize_hu(-1000, 400).images.ravel().tolist()
        [0.0, 0.5, 1.0]
        """
        from ctflow.ops.intensity import normalize_hu

        self._require("normalize_hu", "images")
        data = self._data["images"]
        images = data.buffer  # every item at once, whatever the shapes: the op is voxelwise
        in_place = (
            inplace
            and data.owned
            and images.dtype == np.dtype(dtype)
            and images.flags.c_contiguous
            and images.flags.writeable
        )
        out = normalize_hu(
            images,
            min_hu,
            max_hu,
            dtype,
            out=images if in_place else None,
            n_threads=self._workers(None),
        )
        self._data["images"] = data.with_buffer(out, owned=True)
        return self

    @action
    @inbatch_parallel
    def apply_noise(
        self, item: CTItem, sigma: float = 10.0, kind: str = "gaussian"
    ) -> NDArray[np.float32]:
        """Add zero-mean noise of standard deviation ``sigma`` (image units) to every item.

        Each item draws from its own generator, derived from the run's seed, the batch's
        position and the item: results do not depend on threads, prefetch or engine. Output is
        float32.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((4, 16, 16), np.int16)])
        >>> b.set_random_state(0, 0)
        >>> round(float(b.apply_noise(sigma=5.0).images.std()), 0)
        5.0
        """
        from ctflow.ops.augment import apply_noise

        images = self._item_images(item, "apply_noise")
        return apply_noise(images, sigma, item.rng, kind=kind)  # type: ignore[arg-type]

    @action
    @inbatch_parallel
    def cutout(
        self,
        item: CTItem,
        shape: ArrayLike,
        start: ArrayLike | None = None,
        n_boxes: int = 1,
        fill: Any = "min",
    ) -> NDArray[Any]:
        """Fill ``n_boxes`` boxes of ``shape`` voxels with one value ("random erasing").

        ``start`` fixes the box corner; by default each box's corner is drawn uniformly so the
        box lies inside the item. ``fill`` is a value or "min" / "max" / "mean" of the item.
        Masks are left alone (the label is what the network should still predict).

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.ones((4, 8, 8), np.int16)])
        >>> int(b.cutout((2, 2, 2), start=(0, 0, 0), fill=0).images.sum())
        248
        """
        from ctflow.ops.augment import cutout

        images = self._item_images(item, "cutout")
        box = np.asarray(as_shape(shape, where="cutout"), dtype=np.int64)
        if not isinstance(n_boxes, int | np.integer) or n_boxes < 1:
            raise InvalidParameterError(f"cutout: n_boxes must be >= 1; got {n_boxes!r}")
        out = images
        for _ in range(int(n_boxes)):
            if start is None:
                high = np.maximum(np.asarray(images.shape) - box, 0) + 1
                corner = item.rng.integers(0, high)
            else:
                corner = np.asarray(start, dtype=np.int64)
            out = cutout(out, corner, box, fill=fill)
        return out

    # ================================================================== actions: anatomy
    @action
    @inbatch_parallel
    def segment(
        self,
        item: CTItem,
        threshold: float = -320.0,
        min_lung_ml: float = 15.0,
        fill_holes: bool = True,
        closing_mm: float = 5.0,
        blank: bool = False,
        blank_value: float = -1000.0,
    ) -> dict[str, Any]:
        """Segment the lungs of every item into ``lungs`` (uint8 0/1).

        A fast classical method (:func:`ctflow.ops.lungs.segment_lungs`): air threshold,
        removal of outside air and bowel gas, largest lung components, 3-D closing and 2-D hole
        filling that keeps juxta-pleural nodules. Needs HU images: call it before
        ``normalize_hu``. With ``blank=True`` image voxels outside the lungs are set to
        ``blank_value``.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.full((8, 32, 32), -1000, np.int16)])
        >>> int(b.segment().lungs.sum())   # air only: no body, so no lungs
        0
        """
        from ctflow.ops.lungs import segment_lungs

        images = self._item_images(item, "segment")
        normalised = images.dtype.kind == "f" and images.size > 0
        normalised = normalised and 0.0 <= float(images.min()) <= float(images.max()) <= 1.0
        if normalised:
            raise InvalidScanError(
                f"segment: item {item.id!r} looks normalised (values in [0, 1]); the lung "
                f"mask needs HU — call segment() before normalize_hu()"
            )
        lungs = segment_lungs(
            images,
            item.geometry,
            threshold=threshold,
            min_lung_ml=min_lung_ml,
            fill_holes=fill_holes,
            closing_mm=closing_mm,
            n_threads=item.n_threads,
        )
        out: dict[str, Any] = {"lungs": lungs}
        found_ml = float(np.count_nonzero(lungs)) * float(np.prod(item.spacing)) / 1000.0
        if found_ml == 0.0:
            item.warn("no lungs found: the lung mask is empty (is this a chest CT?)")
        elif found_ml < PLAUSIBLE_LUNG_ML:
            item.warn(
                f"only {found_ml:.0f} ml of lung found (adult lungs hold 3-7 l): the scan may not "
                f"be a chest CT, or shows only part of the lungs"
            )
        if blank:
            out["images"] = np.where(lungs.astype(bool), images, images.dtype.type(blank_value))
        return out

    @action
    @inbatch_parallel
    def crop_to_lungs(
        self, item: CTItem, margin_mm: float | Sequence[float] = 10.0, shape: Any = None
    ) -> dict[str, Any]:
        """Crop every item to the box around its lungs, enlarged by ``margin_mm`` per side.

        Items of different lung sizes get boxes of different shapes (a batch holds any
        shapes); pass ``shape`` (voxels) to cut a box of that shape centred on the lungs instead
        (padded with air where it leaves the scan), e.g. to stack the items for a network. An
        item without lungs found is kept whole. Origins move with the box.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((10, 20, 20), np.int16)])
        >>> b.lungs = np.zeros((10, 20, 20), np.uint8); b.lungs[4:6, 5:10, 8:12] = 1
        >>> b.crop_to_lungs(margin_mm=1.0).images.shape
        (4, 7, 6)
        """
        from ctflow.ops.lungs import lung_bbox

        images = self._item_images(item, "crop_to_lungs")
        if item.lungs is None:
            raise InvalidParameterError("crop_to_lungs: the batch has no lungs; call segment()")
        start, size = lung_bbox(item.lungs, item.geometry, margin_mm)
        if shape is None:
            return self._cut(item, start, size)
        want = np.asarray(as_shape(shape, where="crop_to_lungs"), dtype=np.int64)
        begin = start + size // 2 - want // 2
        return self._cut_padded(item, begin, want, images)

    def _cut_padded(
        self,
        item: CTItem,
        start: NDArray[np.int64],
        shape: NDArray[np.int64],
        images: NDArray[Any],
    ) -> dict[str, Any]:
        from ctflow.ops.sampling import extract_crop

        fill = float(images.min()) if images.size else 0.0
        out: dict[str, Any] = {"geometry": item.geometry.shifted(start)}
        for comp in SKYSCRAPER:
            arr = getattr(item, comp)
            if arr is not None:
                out[comp] = extract_crop(arr, start, shape, fill if comp == "images" else 0)
        return out

    # ================================================================== actions: projections
    @action
    @inbatch_parallel
    def make_xip(
        self,
        item: CTItem,
        depth: int = 3,
        stride: int = 2,
        mode: str = "max",
        projection: str = "axial",
        padding: str | None = None,
    ) -> dict[str, Any]:
        """Sliding-window intensity projection (MIP / MinIP / mean / median) of every item.

        Window ``k`` along the projection axis reduces ``depth`` slices starting at
        ``k * stride``; the output voxel sits at the window's centre, spacing along the axis is
        multiplied by ``stride`` (see :mod:`ctflow.ops.xip`). Masks and lungs get a maximum
        projection (a voxel is in a nodule if any slice of its window is).

        Examples
        --------
        >>> import numpy as np
        >>> img = np.arange(6, dtype=np.int16).reshape(6, 1, 1)
        >>> b = CTBatch.from_arrays([img]).make_xip(depth=3, stride=2)
        >>> b.images.ravel().tolist(), b.origin[0].tolist(), b.spacing[0].tolist()
        ([2, 4], [1.0, 0.0, 0.0], [2.0, 1.0, 1.0])
        """
        from ctflow.ops.xip import make_xip, xip_geometry

        images = self._item_images(item, "make_xip")
        kw: dict[str, Any] = {"projection": projection, "padding": padding}
        out: dict[str, Any] = {
            "images": make_xip(images, depth, stride, mode, **kw),  # type: ignore[arg-type]
            "geometry": xip_geometry(item.geometry, depth, stride, **kw),
        }
        for comp in ("masks", "lungs"):
            arr = getattr(item, comp)
            if arr is not None:
                out[comp] = make_xip(arr, depth, stride, "max", **kw)
        return out

    # ================================================================== actions: annotations
    @action
    def fetch_nodules(self, annotations: str | os.PathLike[str] | pd.DataFrame) -> CTBatch:
        """Take this batch's nodules from a LUNA16 table (csv path or DataFrame), by item id.

        The table has ``seriesuid, coordX, coordY, coordZ, diameter_mm`` (world mm) or ctflow's
        ``id, z, y, x, diameter``. Rows of other scans are ignored; items without nodules are fine.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> ann = pd.DataFrame({"seriesuid": ["a", "b"], "coordX": [1.0, 2.0], "coordY": [0.0, 0.0],
        ...                     "coordZ": [3.0, 3.0], "diameter_mm": [5.0, 6.0]})
        >>> b = CTBatch.from_arrays([np.zeros((2, 2, 2), np.int16)], ids=["a"])
        >>> b.fetch_nodules(ann).nodules[["id", "z", "x"]].values.tolist()
        [['a', 3.0, 1.0]]
        """
        table = annotations_table(annotations)  # a csv is parsed once per run, not per batch
        self.nodules = table[table["id"].isin(self.ids)].reset_index(drop=True)
        return self

    @action
    @inbatch_parallel
    def create_mask(self, item: CTItem, mode: str = "ellipsoid") -> dict[str, Any]:
        """Rasterise each item's nodules into ``masks`` (uint8 0/1), in world millimetres.

        A voxel is inside a nodule when its world position is inside the nodule's sphere
        ("ellipsoid") or cube ("cuboid") of the annotated diameter, so masks are right for any
        spacing and direction. Items without nodules get an all-zero mask.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> ann = pd.DataFrame({"id": ["a"], "z": [5.0], "y": [5.0], "x": [5.0], "diameter": [4.0]})
        >>> b = CTBatch.from_arrays([np.zeros((11, 11, 11), np.int16)], ids=["a"], nodules=ann)
        >>> int(b.create_mask().masks.sum())
        33
        """
        from ctflow.ops.masks import create_mask

        shape = self._item_images(item, "create_mask").shape
        centers = item.nodules[["z", "y", "x"]].to_numpy(np.float64)
        diameters = item.nodules["diameter"].to_numpy(np.float64)
        mask = create_mask(shape, item.geometry, centers, diameters, mode=mode)
        if len(centers) == 0:
            item.warn(
                "the item has no nodules: its mask is all zero (none annotated, or no "
                "fetch_nodules before create_mask)"
            )
        elif not mask.any():
            item.warn(
                f"none of its {len(centers)} nodule(s) covers a voxel centre of the scan (outside "
                f"the field of view, or smaller than a voxel): its mask is all zero"
            )
        return {"masks": mask}

    @action
    def binarize_mask(self, threshold: float = 0.5) -> CTBatch:
        """Turn ``masks`` (e.g. predicted probabilities) into uint8 0/1: 1 where ``> threshold``.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((1, 1, 3), np.int16)])
        >>> b.masks = np.array([[[0.2, 0.5, 0.9]]], np.float32)
        >>> b.binarize_mask(0.5).masks.ravel().tolist()
        [0, 0, 1]
        """
        from ctflow.ops.masks import binarize_mask

        self._require("binarize_mask", "masks")
        data = self._data["masks"]
        self._data["masks"] = data.with_buffer(binarize_mask(data.buffer, threshold))
        return self

    @action
    @inbatch_parallel
    def fetch_nodules_from_mask(self, item: CTItem) -> dict[str, Any]:
        """Replace each item's nodules by the connected components of its ``masks``.

        Centres are the components' voxel centroids in world mm; diameters are those of the
        sphere of the same volume (mm). Use after ``predict_on_scan`` + ``binarize_mask``.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((9, 9, 9), np.int16)], ids=["a"])
        >>> b.masks = np.zeros((9, 9, 9), np.uint8); b.masks[3:6, 3:6, 3:6] = 1
        >>> b.fetch_nodules_from_mask().nodules[["id", "z", "y", "x"]].values.tolist()
        [['a', 4.0, 4.0, 4.0]]
        """
        from ctflow.ops.masks import nodules_from_mask

        if item.masks is None:
            raise InvalidParameterError(
                "fetch_nodules_from_mask: the batch has no masks; call create_mask() or "
                "predict_on_scan()"
            )
        centers, diameters = nodules_from_mask(item.masks, item.geometry)
        table = pd.DataFrame(
            {
                "id": pd.Series([item.id] * len(diameters), dtype="str"),
                "z": centers[:, 0],
                "y": centers[:, 1],
                "x": centers[:, 2],
                "diameter": diameters,
            }
        )
        return {"nodules": table}

    # ================================================================== actions: sampling
    @action
    def sample_nodules(
        self,
        batch_size: int,
        nodule_size: ArrayLike = (32, 64, 64),
        share: float = 0.5,
        variance: ArrayLike | None = None,
        histo: Any = None,
        pad_value: float | None = None,
    ) -> CTBatch:
        """Sample a NEW batch of crops: ``share`` centred on nodules, the rest random.

        Parameters
        ----------
        batch_size : int
            Number of crops.
        nodule_size : 3 ints
            Crop shape (z, y, x) in voxels.
        share : float in [0, 1]
            Fraction of crops centred on a nodule (rounded).
        variance : 3 floats, optional
            Variance (voxels²) of a normal jitter of the crop centre around the nodule centre;
            the jitter is limited so the whole nodule stays inside its crop.
        histo : (counts, edges), optional
            ``numpy.histogramdd`` of relative (z, y, x) positions to draw random crop centres from.
        pad_value : float, optional
            Fill for crops reaching outside a scan that is smaller than the crop (default: the
            minimum of that scan's images, i.e. air).

        Returns
        -------
        CTBatch
            Crops with their own origin (shifted), the parent's spacing/direction, masks/lungs
            when present, and the nodules that lie inside each crop. Ids are
            ``<parent>_<position>_<k>`` and ``info[k]`` records parent, start and kind.
            Random crops never overlap a nodule; when that is impossible fewer random crops are
            returned and a warning is recorded in ``warnings`` (of the parents and their crops).

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> ann = pd.DataFrame({"id": ["a"], "z": [20.0], "y": [20.0], "x": [20.0],
        ...                     "diameter": [6.0]})
        >>> b = CTBatch.from_arrays([np.zeros((40, 40, 40), np.int16)], ids=["a"], nodules=ann)
        >>> crops = b.sample_nodules(2, (8, 8, 8), share=1.0)
        >>> crops.images.shape, len(crops.nodules)
        ((16, 8, 8), 2)
        """
        from ctflow.ops.sampling import extract_crop, sample_crop_starts

        self._require("sample_nodules", "images")
        crop_shape = as_shape(nodule_size, what="nodule_size", where="sample_nodules")
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise InvalidParameterError(
                f"sample_nodules: batch_size must be a positive integer; got {batch_size!r}"
            )
        if not 0.0 <= float(share) <= 1.0:
            raise InvalidParameterError(f"sample_nodules: share must be in [0, 1]; got {share!r}")
        var = (
            None
            if variance is None
            else as_spacing(variance, what="variance", where="sample_nodules")
        )
        rng = self.rng
        shapes = [tuple(int(v) for v in s) for s in self.shapes]
        centers, owners, radii = [], [], []
        for i in range(len(self)):
            item_nods = self.nodules[self.nodules["id"] == self.ids[i]]
            if len(item_nods) == 0:
                continue
            g = self.geometry(i)
            c = g.world_to_voxel(item_nods[["z", "y", "x"]].to_numpy(np.float64))
            centers.append(c)
            owners.append(np.full(len(c), i))
            radii.append(
                item_nods["diameter"].to_numpy(np.float64)[:, None] / 2 / g.spacing[None, :]
            )
        nod_vox = np.concatenate(centers) if centers else np.zeros((0, 3))
        nod_items = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
        nod_radii = np.concatenate(radii) if radii else np.zeros((0, 3))
        plan = sample_crop_starts(
            shapes,
            nod_vox,
            nod_items,
            nod_radii,
            batch_size=int(batch_size),
            crop_shape=crop_shape,
            share=float(share),
            variance=var,
            rng=rng,
            histo=histo,
        )
        for message in plan.warnings:
            text = message.removeprefix("sample_crop_starts: ").removeprefix("sample_nodules: ")
            for i in range(len(self)):
                self.warn(i, "sample_nodules", text)
        fills: dict[int, float] = {}

        def fill_for(i: int, start: NDArray[Any]) -> float:
            """Padding value: only computed for crops that reach outside their scan."""
            if pad_value is not None:
                return float(pad_value)
            inside = np.all(start >= 0) and np.all(start + crop_shape <= shapes[i])
            if inside:
                return 0.0  # unused: nothing to pad
            if i not in fills:
                view = self._view("images", i)
                assert view is not None
                fills[i] = float(view.min())
            return fills[i]

        # each crop's nodule rows are picked with numpy and taken from the table once at the end
        # (per-crop pandas indexing held the GIL for most of this action)
        table_ids = self.nodules["id"].to_numpy()
        table_world = self.nodules[["z", "y", "x"]].to_numpy(np.float64)
        rows_of = {pid: np.flatnonzero(table_ids == pid) for pid in dict.fromkeys(self.ids)}
        item_geoms = [self.geometry(i) for i in range(len(self))]
        pos = self._seed.spawn_key[0] if self._seed is not None and self._seed.spawn_key else 0
        ids, sources, geoms, infos = [], [], [], []
        comps: dict[str, list[NDArray[Any]]] = {c: [] for c in SKYSCRAPER if self.has(c)}
        picked: list[NDArray[np.intp]] = []
        owners_of_rows: list[str] = []
        for k, (i, start) in enumerate(zip(plan.items, plan.starts, strict=True)):
            i = int(i)
            crop_id = f"{self.ids[i]}_{pos}_{k}"
            ids.append(crop_id)
            sources.append(self.sources[i])
            g = item_geoms[i].shifted(start)
            geoms.append(g)
            for comp in comps:
                view = self._view(comp, i)
                assert view is not None
                value = fill_for(i, np.asarray(start)) if comp == "images" else 0
                comps[comp].append(extract_crop(view, start, crop_shape, value))
            infos.append(
                {
                    "parent": self.ids[i],
                    "start": [int(v) for v in start],
                    "kind": "nodule" if plan.is_nodule[k] else "random",
                }
            )
            candidates = rows_of[self.ids[i]]
            if candidates.size:
                vox = g.world_to_voxel(table_world[candidates])
                inside = np.all((vox >= -0.5) & (vox <= np.asarray(crop_shape) - 0.5), axis=1)
                picked.append(candidates[inside])
                owners_of_rows.extend([crop_id] * int(inside.sum()))
        out = type(self)(ids, sources, n_workers=self.n_workers)
        out.on_error = self.on_error
        out._seed = self._seed
        out._n_random_calls = self._n_random_calls
        if not ids:
            out.info, out.warnings = [], []
            out.failed = list(self.failed)
            return out
        out._set_items(comps, geoms, fresh=True)
        if picked:  # rows of the crops' parents were looked at (maybe none inside a crop)
            crops_nodules = self.nodules.iloc[np.concatenate(picked)].reset_index(drop=True)
            crops_nodules["id"] = owners_of_rows
            out.nodules = crops_nodules
        else:
            out.nodules = empty_nodules()
        out.info = infos
        parent_index = {pid: k for k, pid in enumerate(self.ids)}
        out.warnings = [list(self.warnings[parent_index[str(info["parent"])]]) for info in infos]
        out.failed = list(self.failed)
        return out

    # ================================================================== actions: inference
    @action
    def get_patches(
        self,
        shape: ArrayLike,
        stride: ArrayLike | None = None,
        component: str = "images",
        pad_value: Any = "edge",
    ) -> CTBatch:
        """Cut every item into patches covering all of it, into ``batch.patches``.

        ``batch.patches`` is one array ``(Σ n_i, pz, py, px)`` (items in order, patches in
        :class:`ctflow.ops.patches.PatchGrid` order) and ``batch.patch_grids`` the grids, so a
        network's outputs on the patches can be put back with :meth:`load_from_patches`.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((8, 8, 8), np.int16)] * 2)
        >>> b.get_patches((4, 4, 4)).patches.shape
        (16, 4, 4, 4)
        """
        from ctflow.ops.patches import get_patches

        self._require("get_patches", component)
        parts, grids = [], []
        for i in range(len(self)):
            view = self._view(component, i)
            assert view is not None
            p, g = get_patches(view, shape, stride, pad_value=pad_value)
            parts.append(p)
            grids.append(g)
        self.patches = np.concatenate(parts) if parts else None
        self.patch_grids = grids
        return self

    @action
    def load_from_patches(self, patches: NDArray[Any] | None = None, dst: str = "masks") -> CTBatch:
        """Put patches (default: ``batch.patches``) back into ``dst``, averaging overlaps.

        ``patches`` must be in the order :meth:`get_patches` produced (e.g. a network's
        predictions on them); the result is float32 in ``dst`` ("masks", "lungs" or "images").

        Examples
        --------
        >>> import numpy as np
        >>> img = np.arange(512, dtype=np.int16).reshape(8, 8, 8)
        >>> b = CTBatch.from_arrays([img]).get_patches((4, 4, 4), (2, 2, 2))
        >>> bool(np.array_equal(b.load_from_patches(dst="masks").masks, img))
        True
        """
        from ctflow.ops.patches import assemble_patches

        grids = self.patch_grids
        if not grids:
            raise InvalidParameterError("load_from_patches: call get_patches() first")
        source = self.patches if patches is None else np.asarray(patches)
        if dst not in SKYSCRAPER:
            raise InvalidParameterError(f"load_from_patches: dst must be one of {SKYSCRAPER}")
        total = sum(g.n_patches for g in grids)
        if source is None or source.ndim != 4 or len(source) != total:
            got = None if source is None else source.shape
            raise InvalidParameterError(
                f"load_from_patches: expected {total} patches (n, pz, py, px) for this batch's "
                f"grids; got {got}"
            )
        volumes, k = [], 0
        for g in grids:
            volumes.append(assemble_patches(source[k : k + g.n_patches], g))
            k += g.n_patches
        self._set_component(dst, volumes)
        return self

    @action
    def predict_on_scan(
        self,
        fn: Callable[[NDArray[Any]], ArrayLike],
        patch_shape: ArrayLike,
        stride: ArrayLike | None = None,
        batch_size: int = 8,
        component: str = "images",
        dst: str = "masks",
        pad_value: Any = "edge",
    ) -> CTBatch:
        """Run ``fn`` (e.g. a network) over patches of every item; reassemble into ``dst``.

        Patches are cut on demand, ``batch_size`` at a time, so whole scans work with a model
        that only takes small inputs; overlapping predictions are averaged. ``fn`` gets an
        array ``(B, pz, py, px)`` and returns one of the same shape. Items run one after
        another (models are rarely thread-safe); the result is float32, e.g. probabilities to
        pass to :meth:`binarize_mask`.

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.ones((8, 8, 8), np.int16)])
        >>> float(b.predict_on_scan(lambda x: x * 0.5, (4, 4, 4)).masks.max())
        0.5
        """
        from ctflow.ops.patches import predict_on_volume

        self._require("predict_on_scan", component)
        if dst not in SKYSCRAPER:
            raise InvalidParameterError(f"predict_on_scan: dst must be one of {SKYSCRAPER}")
        volumes = []
        for i in range(len(self)):
            view = self._view(component, i)
            assert view is not None
            volumes.append(
                predict_on_volume(view, fn, patch_shape, stride, batch_size, pad_value=pad_value)
            )
        self._set_component(dst, volumes)
        return self

    def _set_component(self, name: str, volumes: Sequence[NDArray[Any]]) -> None:
        shapes = [tuple(int(v) for v in s) for s in self.shapes]
        for vol, shape, item_id in zip(volumes, shapes, self.ids, strict=True):
            if vol.shape != shape:
                raise InvalidScanError(
                    f"{name} of item {item_id!r} would be {vol.shape}; its images are {shape}"
                )
        self.set_component(name, volumes if volumes else None)

    # ================================================================== pictures
    def show(self, key: int | str = 0, **kwargs: Any) -> Any:
        """A matplotlib Figure of one item: axial, coronal and sagittal slices and a MIP.

        Masks, lungs and nodules are overlaid; axes are world millimetres, shown in radiological
        orientation whatever the stored orientation. Keyword arguments go to
        :func:`ctflow.viz.show_scan` (``center`` in world mm, ``window``, ``mip_mm``, ``title``,
        ``figsize``, ``dpi``, ``nodules``); by default the view centres on the first nodule.

        Examples
        --------
        >>> import numpy as np
        >>> fig = CTBatch.from_arrays([np.zeros((8, 16, 16), np.int16)], ids=["a"]).show(0)
        >>> len(fig.axes) >= 4
        True
        """
        from ctflow.viz import show_item

        return show_item(self.get(key), **kwargs)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _item_images(item: CTItem, what: str) -> NDArray[Any]:
        if item.images is None:
            raise InvalidParameterError(
                f"{what}: item {item.id!r} has no images; call load() first"
            )
        return item.images

    def subset(self, keys: Sequence[int | str]) -> CTBatch:
        """A new batch with copies of the chosen items (by position or id).

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16), np.ones((3, 5, 5), np.int16)])
        >>> s = b.subset([1])
        >>> s.ids, s.shapes.tolist(), bool(np.shares_memory(s[0].images, b[1].images))
        (['1'], [[3, 5, 5]], False)
        """
        out = self._select([self._index(k) for k in keys], copy=True)
        return out

    def _select(self, idx: Sequence[int], *, copy: bool) -> CTBatch:
        """The items ``idx`` as a new batch: copies, or (``copy=False``) views of this batch's
        buffers where possible (one item: always a view)."""
        out = type(self)([self.ids[i] for i in idx], [self.sources[i] for i in idx])
        out.n_workers, out.on_error = self.n_workers, self.on_error
        out._seed, out._n_random_calls = self._seed, self._n_random_calls
        out.info = [dict(self.info[i]) for i in idx]
        out.warnings = [list(self.warnings[i]) for i in idx]
        out._positions = [self._positions[i] for i in idx]
        out.spacing = self.spacing[list(idx)].copy()
        out.origin = self.origin[list(idx)].copy()
        out.direction = self.direction[list(idx)].copy()
        for name, data in self._data.items():
            views = [data.item(i) for i in idx]
            if copy:
                views = [np.array(v) for v in views] if len(views) == 1 else views
                out._data[name] = Ragged.from_items(views, dtype=data.dtype, fresh=True)
            else:
                out._data[name] = Ragged.from_items(views, dtype=data.dtype)
        out.nodules = self.nodules[self.nodules["id"].isin(out.ids)].reset_index(drop=True)
        return out

    def export(
        self, key: int | str, path: str | os.PathLike[str], component: str = "images"
    ) -> Path:
        """Write one item's component as ``.mhd``/``.mha``/``.nii``/``.nii.gz`` for a viewer.

        Geometry is preserved: SimpleITK, 3D Slicer or ITK-SNAP show the voxels at the same
        world positions as ctflow.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)], ids=["a"])
        >>> b.export("a", f"{tempfile.mkdtemp()}/a.nii.gz").name
        'a.nii.gz'
        """
        from ctflow.io.writer import write_scan

        arr = self.get(key, component)
        if arr is None:
            raise InvalidParameterError(f"export: component {component!r} is not loaded")
        return write_scan(path, arr, self.geometry(key))


#: RadIO's class names, for people coming from RadIO: one batch class does it all now.
CTImagesBatch = CTBatch
CTImagesMaskedBatch = CTBatch
