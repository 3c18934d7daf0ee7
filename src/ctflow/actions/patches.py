"""Patch actions: cut items into patches, put predictions back, predict on whole scans."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.actions.base import BatchAction
from ctflow.errors import InvalidParameterError
from ctflow.validation import as_choice, as_int, as_shape

if TYPE_CHECKING:
    from ctflow.batch import CTBatch

__all__ = ["GetPatches", "LoadFromPatches", "PredictOnScan"]

_COMPONENTS = ("images", "masks", "lungs")


def _stride(value: Any, where: str) -> tuple[int, int, int] | None:
    return None if value is None else as_shape(value, what="stride", where=where)


def _pad_value(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return as_choice(value, ("edge",), "pad_value", where)
    from ctflow.validation import as_float

    return as_float(value, "pad_value", where)


class GetPatches(BatchAction):
    """Cut every item into patches covering all of it, into ``batch.patches``.

    ``batch.patches`` is one array ``(Σ n_i, pz, py, px)`` (items in order, patches in
    :class:`ctflow.ops.patches.PatchGrid` order) and ``batch.patch_grids`` the grids, so a
    network's outputs on the patches can be put back with ``load_from_patches``. Items may
    have any shapes.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((8, 8, 8), np.int16)] * 2)
    >>> b.get_patches((4, 4, 4)).patches.shape
    (16, 4, 4, 4)
    """

    name = "get_patches"
    family = "patches"
    shape: ArrayLike
    stride: ArrayLike | None = None
    component: str = "images"
    pad_value: Any = "edge"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("shape", as_shape(self.shape, where=self.name))
        self._set("stride", _stride(self.stride, self.name))
        as_choice(self.component, _COMPONENTS, "component", self.name)
        self._set("pad_value", _pad_value(self.pad_value, self.name))

    def run(self, batch: CTBatch) -> CTBatch:
        """Cut every item."""
        from ctflow.ops.patches import get_patches

        batch.require(self.name, self.component)
        parts, grids = [], []
        data = batch.ragged(self.component)
        for i in range(len(batch)):
            p, g = get_patches(data.item(i), self.shape, self.stride, pad_value=self.pad_value)
            parts.append(p)
            grids.append(g)
        batch.patches = np.concatenate(parts) if parts else None
        batch.patch_grids = grids
        return batch


class LoadFromPatches(BatchAction):
    """Put patches (default: ``batch.patches``) back into ``dst``, averaging overlaps.

    ``patches`` must be in the order ``get_patches`` produced (e.g. a network's predictions
    on them); the result is float32 in ``dst`` ("masks", "lungs" or "images").

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> img = np.arange(512, dtype=np.int16).reshape(8, 8, 8)
    >>> b = cf.CTBatch.from_arrays([img]).get_patches((4, 4, 4), (2, 2, 2))
    >>> bool(np.array_equal(b.load_from_patches(dst="masks").masks, img))
    True
    """

    name = "load_from_patches"
    family = "patches"
    patches: NDArray[Any] | None = None
    dst: str = "masks"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        if self.patches is not None:
            arr = np.asarray(self.patches)
            if arr.ndim != 4:
                raise self.invalid("patches", "an array (n, pz, py, px) or None", arr.shape)
            self._set("patches", arr)
        as_choice(self.dst, _COMPONENTS, "dst", self.name)

    def run(self, batch: CTBatch) -> CTBatch:
        """Assemble every item's patches."""
        from ctflow.ops.patches import assemble_patches

        grids = batch.patch_grids
        if not grids:
            raise InvalidParameterError("load_from_patches: call get_patches() first")
        source = batch.patches if self.patches is None else self.patches
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
        batch.set_component(self.dst, volumes)
        return batch


class PredictOnScan(BatchAction):
    """Run ``fn`` (e.g. a network) over patches of every item; reassemble into ``dst``.

    Patches are cut on demand, ``batch_size`` at a time, so whole scans work with a model that
    only takes small inputs; overlapping predictions are averaged. ``fn`` gets an array
    ``(B, pz, py, px)`` and returns one of the same shape. Items run one after another (models
    are rarely thread-safe); the result is float32, e.g. probabilities to pass to
    ``binarize_mask``.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.ones((8, 8, 8), np.int16)])
    >>> float(b.predict_on_scan(lambda x: x * 0.5, (4, 4, 4)).masks.max())
    0.5
    """

    name = "predict_on_scan"
    family = "patches"
    fn: Callable[[NDArray[Any]], ArrayLike]
    patch_shape: ArrayLike
    stride: ArrayLike | None = None
    batch_size: int = 8
    component: str = "images"
    dst: str = "masks"
    pad_value: Any = "edge"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        if not callable(self.fn):
            raise self.invalid("fn", "a callable (B, pz, py, px) -> same shape", self.fn)
        self._set("patch_shape", as_shape(self.patch_shape, what="patch_shape", where=self.name))
        self._set("stride", _stride(self.stride, self.name))
        as_int(self.batch_size, "batch_size", self.name, lo=1)
        as_choice(self.component, _COMPONENTS, "component", self.name)
        as_choice(self.dst, _COMPONENTS, "dst", self.name)
        self._set("pad_value", _pad_value(self.pad_value, self.name))

    def run(self, batch: CTBatch) -> CTBatch:
        """Predict on every item, one after another."""
        from ctflow.ops.patches import predict_on_volume

        batch.require(self.name, self.component)
        data = batch.ragged(self.component)
        volumes = []
        for i, item_id in enumerate(batch.ids):
            try:
                volumes.append(
                    predict_on_volume(
                        data.item(i),
                        self.fn,
                        self.patch_shape,
                        self.stride,
                        self.batch_size,
                        pad_value=self.pad_value,
                    )
                )
            except Exception as exc:
                exc.add_note(f"ctflow: in action 'predict_on_scan' on item {item_id!r} (#{i})")
                raise
        batch.set_component(self.dst, volumes)
        return batch
