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
(world mm), so it stays valid through every action that moves voxels. Per item,
``warnings`` lists what an action decided on its own and ``history`` the actions applied,
with their parameters as drawn.

The batch is the data structure; the actions are objects (:mod:`ctflow.actions`). Its action
methods (``batch.unify_spacing(...)``, from :class:`~ctflow.actions.ActionMethods`) run the
action on the batch at once; :meth:`CTBatch.run_items` is how an item action runs on every
item (:mod:`ctflow.assembly`).

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ctflow.actions.custom import user_actions
from ctflow.actions.methods import ActionMethods
from ctflow.components import SKYSCRAPER, Components
from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.io.annotations import empty_nodules
from ctflow.item import CTItem, ItemFailure
from ctflow.ragged import Ragged
from ctflow.threads import available_threads

if TYPE_CHECKING:
    from ctflow.actions.base import Action, ItemAction

__all__ = ["CTBatch", "CTImagesBatch", "CTImagesMaskedBatch", "CTItem", "ItemFailure"]


class CTBatch(Components, ActionMethods):
    """A batch of CT scans of any shapes: one buffer per component + per-item geometry.

    Parameters
    ----------
    ids : sequence of str
        Item ids (unique).
    sources : sequence of str or None, optional
        Where each item is loaded from (a file or folder); used by :meth:`load`.
    labels : sequence of str or None, optional
        Each item's label file (read into ``masks`` by :meth:`load`), or None.
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
        labels: Sequence[str | os.PathLike[str] | None] | None = None,
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
        if labels is not None and len(labels) != n:
            raise InvalidParameterError(
                f"batch: got {len(labels)} label sources for {n} ids; they must match"
            )
        self.label_sources: list[str | None] = (
            [None] * n if labels is None else [None if s is None else str(s) for s in labels]
        )
        self._data: dict[str, Ragged] = {}
        self.spacing: NDArray[np.float64] = np.ones((n, 3))
        self.origin: NDArray[np.float64] = np.zeros((n, 3))
        self.direction: NDArray[np.float64] = np.tile(np.eye(3), (n, 1, 1))
        self.nodules: pd.DataFrame = empty_nodules()
        self.n_workers = n_workers
        self.on_error = "raise"
        #: asked before each item of an item action starts (the run's Ctrl-C; see ctflow.runs)
        self.should_stop: Callable[[], bool] | None = None
        self.failed: list[ItemFailure] = []
        self.dumped: list[str] = []
        self.skipped: list[str] = []
        self.info: list[dict[str, Any]] = [{} for _ in range(n)]
        self.warnings: list[list[str]] = [[] for _ in range(n)]
        self.history: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        self.positions: list[int] = list(range(n))
        self._seed: np.random.SeedSequence | None = None
        self._n_random_calls = 0
        self.patches: NDArray[Any] | None = None
        self.patch_grids: list[Any] = []

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
        from ctflow.batch_build import batch_from_arrays

        return batch_from_arrays(
            cls,
            images,
            ids=ids,
            spacing=spacing,
            origin=origin,
            direction=direction,
            masks=masks,
            nodules=nodules,
            n_workers=n_workers,
        )

    @classmethod
    def concat(cls, batches: Sequence[CTBatch]) -> CTBatch:
        """Return one batch of the items of ``batches``, in order.

        Their arrays are copied into one buffer per component.

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
        from ctflow.batch_build import concat_batches

        return concat_batches(cls, batches)

    # ------------------------------------------------------------------ item access
    def __len__(self) -> int:
        """Return the number of items."""
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
        """Return the Geometry of one item."""
        i = self._index(key)
        return Geometry(self.spacing[i], self.origin[i], self.direction[i])

    def get(self, key: int | str, component: str | None = None) -> Any:
        """Return an item (:class:`CTItem`) by position or id, or one of its components.

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
            label_source=self.label_sources[i],
            warnings=list(self.warnings[i]),
            history=[dict(e) for e in self.history[i]],
        )
        return item if component is None else getattr(item, component)

    def __getitem__(self, key: int | str) -> CTItem:
        """Return the item at ``key``."""
        item: CTItem = self.get(key)
        return item

    def __iter__(self) -> Iterator[CTItem]:
        """Iterate over the items."""
        for i in range(len(self)):
            yield self.get(i)

    def voxel_to_world(self, key: int | str, zyx: ArrayLike) -> NDArray[np.float64]:
        """Voxel indices of item ``key`` to world mm, (z, y, x)."""
        return self.geometry(key).voxel_to_world(zyx)

    def world_to_voxel(self, key: int | str, zyx: ArrayLike) -> NDArray[np.float64]:
        """World mm to continuous voxel indices of item ``key``, (z, y, x)."""
        return self.geometry(key).world_to_voxel(zyx)

    @classmethod
    def action_names(cls) -> list[str]:
        """Names of the built-in actions and of this class's ``@cf.action`` methods."""
        builtin = {n for n in vars(ActionMethods) if not n.startswith("_")}
        return sorted(builtin | set(user_actions(cls)))

    def __repr__(self) -> str:
        """Return a readable summary."""
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

    # ------------------------------------------------------------------ records
    def warn(self, key: int | str, action_name: str, message: str) -> None:
        """Record a warning about one item (``"<action>: <message>"`` in ``batch.warnings``)."""
        entry = f"{action_name}: {message}"
        bucket = self.warnings[self._index(key)]
        if entry not in bucket:
            bucket.append(entry)

    def add_history(self, key: int | str, entry: Mapping[str, Any]) -> None:
        """Append an action's record (JSON) to one item's history."""
        self.history[self._index(key)].append(dict(entry))

    # ------------------------------------------------------------------ running actions
    def _then(self, action: Action) -> CTBatch:
        return action(self)

    def run_items(
        self,
        action: ItemAction,
        *,
        params: Sequence[Mapping[str, Any]] | None = None,
        n_workers: int | None = None,
        target: str = "threads",
        record: bool = True,
    ) -> CTBatch:
        """Run an item action on every item (in parallel) and assemble the results.

        ``params`` gives each item's parameters instead of drawing them (a replay). See
        :mod:`ctflow.assembly`.
        """
        from ctflow.assembly import run_items

        return run_items(
            self, action, params=params, n_workers=n_workers, target=target, record=record
        )

    def require(self, what: str, *components: str) -> None:
        """Raise a clear error when the batch lacks one of ``components``."""
        hints = {
            "images": "load() first",
            "masks": "create_mask() or load a dump with masks",
            "lungs": "segment()",
        }
        for comp in components:
            if not self.has(comp):
                from ctflow.lazy import LAZY_HINT, is_lazy

                if is_lazy(self):
                    raise InvalidParameterError(f"{what}: {LAZY_HINT}")
                raise InvalidParameterError(
                    f"{what}: the batch has no {comp}; call {hints.get(comp, comp)}"
                )

    def threads(self, n_workers: int | None = None) -> int:
        """Threads for one action: the argument, the batch's own, a fair share, or all cores."""
        explicit = n_workers or self.n_workers
        if explicit:
            return int(explicit)
        return available_threads()

    # ------------------------------------------------------------------ randomness
    def set_random_state(self, seed: int | None, position: int) -> None:
        """Seed the batch's random actions from a run seed and the batch's position in the run."""
        entropy = seed if seed is not None else np.random.SeedSequence().entropy
        self._seed = np.random.SeedSequence(entropy, spawn_key=(int(position),))
        self._n_random_calls = 0

    @property
    def position(self) -> int:
        """The batch's position in its run (0 outside a run)."""
        if self._seed is not None and self._seed.spawn_key:
            return int(self._seed.spawn_key[0])
        return 0

    def next_seed(self) -> np.random.SeedSequence:
        """Return the seed of the next random call (deterministic in a seeded run)."""
        if self._seed is None:
            self._seed = np.random.SeedSequence()
        call = self._n_random_calls
        self._n_random_calls += 1
        return np.random.SeedSequence(self._seed.entropy, spawn_key=(*self._seed.spawn_key, call))

    @property
    def rng(self) -> np.random.Generator:
        """A fresh generator for one batch-level random draw (deterministic in a seeded run)."""
        return np.random.default_rng(self.next_seed())

    # ------------------------------------------------------------------ selections
    def keep(self, indices: Sequence[int]) -> None:
        """Drop all items except ``indices`` (in place)."""
        idx = list(indices)
        kept_ids = [self.ids[i] for i in idx]
        self.nodules = self.nodules[self.nodules["id"].isin(kept_ids)].reset_index(drop=True)
        self.ids = kept_ids
        self.sources = [self.sources[i] for i in idx]
        self.label_sources = [self.label_sources[i] for i in idx]
        self.info = [self.info[i] for i in idx]
        self.warnings = [self.warnings[i] for i in idx]
        self.history = [self.history[i] for i in idx]
        self.positions = [self.positions[i] for i in idx]
        self._data = {name: data.take(idx) for name, data in self._data.items()} if idx else {}
        self.spacing, self.origin = self.spacing[idx], self.origin[idx]
        self.direction = self.direction[idx]

    def derive(
        self, ids: Sequence[str], sources: Sequence[str | None], *, parents: Sequence[int] = ()
    ) -> CTBatch:
        """Return a new, empty batch of the same class and settings.

        Threads, error policy and random state are shared; with ``parents``, item ``k`` starts
        with the warnings and history of item ``parents[k]`` of this batch (crops of a scan).
        """
        out = type(self)(ids, sources, n_workers=self.n_workers)
        out.on_error = self.on_error
        out.should_stop = self.should_stop
        out._seed, out._n_random_calls = self._seed, self._n_random_calls
        out.failed = list(self.failed)
        if parents:
            out.warnings = [list(self.warnings[p]) for p in parents]
            out.history = [[dict(e) for e in self.history[p]] for p in parents]
        return out

    def subset(self, keys: Sequence[int | str]) -> CTBatch:
        """Return a new batch with copies of the chosen items (by position or id).

        Examples
        --------
        >>> import numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16), np.ones((3, 5, 5), np.int16)])
        >>> s = b.subset([1])
        >>> s.ids, s.shapes.tolist(), bool(np.shares_memory(s[0].images, b[1].images))
        (['1'], [[3, 5, 5]], False)
        """
        return self.select([self._index(k) for k in keys], copy=True)

    def select(self, idx: Sequence[int], *, copy: bool) -> CTBatch:
        """Return the items ``idx`` as a new batch.

        Copies, or (``copy=False``) views of this batch's buffers where possible (one item:
        always a view).
        """
        from ctflow.batch_build import select_items

        return select_items(self, idx, copy=copy)

    # ------------------------------------------------------------------ pictures and files
    def show(self, key: int | str = 0, **kwargs: Any) -> Any:
        """Return a matplotlib Figure of one item: axial, coronal and sagittal slices and a MIP.

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

    def export(
        self,
        key: int | str,
        path: str | os.PathLike[str],
        component: str = "images",
        channel: int | None = None,
    ) -> Path:
        """Write one item's component as ``.mhd``/``.mha``/``.nii``/``.nii.gz`` for a viewer.

        Geometry is preserved: SimpleITK, 3D Slicer or ITK-SNAP show the voxels at the same
        world positions as ctflow. A label map keeps its values (uint8/uint16); masks with
        channels (C, Z, Y, X) are written one ``channel`` at a time (or ``argmax()`` first).
        After ``invert()`` the file lies on the original scan's grid, so a viewer overlays it
        on the original file. Missing parent folders are created.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)], ids=["a"])
        >>> b.export("a", f"{tempfile.mkdtemp()}/a.nii.gz").name
        'a.nii.gz'
        """
        from ctflow.io.writer import export_component

        arr = self.get(key, component)
        return export_component(
            arr, self.geometry(key), path, component=component, key=key, channel=channel
        )


#: RadIO's class names, for people coming from RadIO: one batch class does it all now.
CTImagesBatch = CTBatch
CTImagesMaskedBatch = CTBatch
