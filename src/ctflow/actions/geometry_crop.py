"""Crop and pad actions: crop, central_crop and pad, and the box cuts they share.

The grid is cut or extended without interpolation: the origin moves with the box, so every
voxel keeps its world position and nodule tables stay valid. Masks and lungs are cut (or
padded with 0) with the images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ctflow.actions.base import ItemAction
from ctflow.actions.geometry_base import COMPONENTS, _step
from ctflow.labels import each_channel
from ctflow.validation import as_choice, as_float, as_int, as_shape

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = ["CentralCrop", "Crop", "Pad", "cut", "cut_padded"]


def cut(item: CTItem, start: ArrayLike, shape: ArrayLike) -> dict[str, Any]:
    """Every component's box ``start .. start + shape`` (inside the item) and its geometry."""
    st = np.asarray(start, dtype=np.int64)
    sh = np.asarray(shape, dtype=np.int64)
    box = (Ellipsis, *(slice(int(a), int(a + b)) for a, b in zip(st, sh, strict=True)))
    out: dict[str, Any] = {"geometry": item.geometry.shifted(st)}
    for comp in COMPONENTS:
        arr = getattr(item, comp)
        if arr is not None:
            out[comp] = np.ascontiguousarray(arr[box])
    return out


def cut_padded(item: CTItem, start: ArrayLike, shape: ArrayLike) -> dict[str, Any]:
    """Cut like :func:`cut`, but the box may leave the item.

    Images are padded with their minimum (air), masks and lungs with 0.
    """
    from ctflow.ops.sampling import extract_crop

    images = item.require_images("crop")
    fill = float(images.min()) if images.size else 0.0
    st = np.asarray(start, dtype=np.int64)
    out: dict[str, Any] = {"geometry": item.geometry.shifted(st)}
    for comp in COMPONENTS:
        arr = getattr(item, comp)
        if arr is not None:
            value = fill if comp == "images" else 0
            out[comp] = each_channel(arr, lambda v, f=value: extract_crop(v, st, shape, f))
    return out


class Crop(ItemAction):
    """Cut the box ``start`` .. ``start + shape`` (voxels) out of every item.

    The box must lie inside each item; the origin moves to the box's first voxel.

    Parameters
    ----------
    start : 3 ints (z, y, x)
        Voxel index of the box's first corner, each >= 0. Required.
    shape : 3 ints (z, y, x)
        Size of the box in voxels, positive (one number is used on every axis). Required;
        an item that ``start + shape`` does not fit in raises InvalidParameterError when run.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((10, 8, 8), np.int16)], origin=(0.0, 0.0, 0.0))
    >>> b.crop((2, 1, 1), (4, 4, 4)).origin.tolist()
    [[2.0, 1.0, 1.0]]
    """

    name = "crop"
    family = "geometry"
    start: Sequence[int]
    shape: Sequence[int]

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        try:
            st = [as_int(v, "start", self.name, lo=0) for v in self.start]
        except TypeError:
            st = []
        if len(st) != 3:
            raise self.invalid("start", "3 integers >= 0 (z, y, x)", self.start)
        self._set("start", tuple(st))
        self._set("shape", as_shape(self.shape, where=self.name))

    exact_step = True

    def fusable(self) -> bool:
        """Crops join a fused geometry pass: only the kept voxels are computed."""
        return True

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return the box's grid (checked to lie inside ``state``'s grid)."""
        from ctflow.errors import InvalidParameterError

        st, sh = np.asarray(self.start), np.asarray(self.shape)
        if np.any(st + sh > np.asarray(state.shape)):
            raise InvalidParameterError(
                f"crop: box start={self.start} shape={self.shape} must lie inside item "
                f"{state.id!r} of shape {tuple(state.shape)}"
            )
        return _step(state, sh, state.geometry.shifted(st), interpolates=False)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Cut one item."""
        from ctflow.errors import InvalidParameterError

        full = np.asarray(item.require_images(self.name).shape)
        st, sh = np.asarray(self.start), np.asarray(self.shape)
        if np.any(st + sh > full):
            raise InvalidParameterError(
                f"crop: box start={self.start} shape={self.shape} must lie inside item "
                f"{item.id!r} of shape {tuple(full.tolist())}"
            )
        return cut(item, st, sh)


class CentralCrop(ItemAction):
    """Cut a box of ``shape`` voxels around each item's centre (start = (Z - shape) // 2).

    Parameters
    ----------
    shape : 3 ints (z, y, x)
        Size of the box in voxels, positive (one number is used on every axis). Required; an
        item smaller than it on an axis raises InvalidParameterError when run (pad it first).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((10, 8, 8), np.int16)])
    >>> b.central_crop((4, 4, 4)).origin.tolist()
    [[3.0, 2.0, 2.0]]
    """

    name = "central_crop"
    family = "geometry"
    shape: Sequence[int]

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("shape", as_shape(self.shape, where=self.name))

    exact_step = True

    def fusable(self) -> bool:
        """Crops join a fused geometry pass: only the kept voxels are computed."""
        return True

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return the central box's grid."""
        from ctflow.errors import InvalidParameterError

        sh = np.asarray(self.shape, dtype=np.int64)
        full = np.asarray(state.shape)
        if np.any(sh > full):
            raise InvalidParameterError(
                f"central_crop: shape {self.shape} is larger than item {state.id!r} "
                f"of shape {tuple(full.tolist())}; use pad() or unify_spacing(shape=...)"
            )
        start = (full - sh) // 2
        return _step(state, sh, state.geometry.shifted(start), interpolates=False)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Cut one item's centre."""
        from ctflow.errors import InvalidParameterError

        sh = np.asarray(self.shape, dtype=np.int64)
        full = np.asarray(item.require_images(self.name).shape)
        if np.any(sh > full):
            raise InvalidParameterError(
                f"central_crop: shape {self.shape} is larger than item {item.id!r} "
                f"of shape {tuple(full.tolist())}; use pad() or unify_spacing(shape=...)"
            )
        return cut(item, (full - sh) // 2, sh)


class Pad(ItemAction):
    """Pad every item symmetrically up to at least ``shape`` (an extra voxel goes after).

    ``mode`` is a :func:`numpy.pad` mode; with "constant" images get ``value`` (air) and
    masks/lungs get 0. The origin moves so the anatomy keeps its world position.

    Parameters
    ----------
    shape : 3 ints (z, y, x)
        Smallest shape after padding, positive (one number is used on every axis). Required;
        axes already at least this long are left as they are (never cropped).
    mode : {"constant", "edge", "reflect", "symmetric", "wrap"}, default "constant"
        The :func:`numpy.pad` mode, for images, masks and lungs alike.
    value : float, default -1000.0
        Image value of the padding with ``mode="constant"`` (air); masks and lungs get 0. Any
        finite number; unused by the other modes.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)])
    >>> b.pad((4, 4, 4)).origin.tolist(), b.images.shape
    ([[-1.0, 0.0, 0.0]], (4, 4, 4))
    """

    name = "pad"
    family = "geometry"
    shape: Sequence[int]
    mode: str = "constant"
    value: float = -1000.0

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("shape", as_shape(self.shape, where=self.name))
        modes = ("constant", "edge", "reflect", "symmetric", "wrap")
        as_choice(self.mode, modes, "mode", self.name)
        self._set("value", as_float(self.value, "value", self.name))

    exact_step = True

    def fusable(self) -> bool:
        """Constant pads join a fused geometry pass (the value fills outside the scan)."""
        return self.mode == "constant"

    @property
    def step_cval(self) -> float:
        """Image value of the padding."""
        return float(self.value)

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return the padded grid."""
        full = np.asarray(state.shape)
        shape = np.maximum(np.asarray(self.shape), full)
        before = (shape - full) // 2
        return _step(state, shape, state.geometry.shifted(-before), interpolates=False)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Pad one item."""
        full = np.asarray(item.require_images(self.name).shape)
        extra = np.maximum(np.asarray(self.shape) - full, 0)
        before = extra // 2
        widths = [(int(b), int(e - b)) for b, e in zip(before, extra, strict=True)]
        out: dict[str, Any] = {"geometry": item.geometry.shifted(-before)}
        for comp in COMPONENTS:
            arr = getattr(item, comp)
            if arr is None:
                continue
            w = [(0, 0)] * (arr.ndim - 3) + widths  # channels are not padded
            if self.mode == "constant":
                fill = self.value if comp == "images" else 0
                out[comp] = np.pad(arr, w, mode="constant", constant_values=fill)
            else:
                out[comp] = np.pad(arr, w, mode=self.mode)  # type: ignore[call-overload]
        return out
