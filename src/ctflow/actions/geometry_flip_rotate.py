"""Flip and rotate actions, and the flipped geometry :class:`~ctflow.actions.RandomFlip` reuses.

Both keep world positions right: the direction and origin turn with the content, so every
voxel points at the anatomy it shows and nodule tables stay valid. A rotation resamples its
masks by their content (:func:`ctflow.labels.resample_mask`; lungs nearest); a flip only
reverses the voxel order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ctflow.actions.base import ItemAction
from ctflow.actions.geometry_base import (
    COMPONENTS,
    LABELS,
    _check_cval,
    _check_interpolation,
    _step,
)
from ctflow.geometry import Geometry
from ctflow.labels import resample_mask
from ctflow.validation import as_axes, as_bool, as_choice, as_dtype, as_float, as_plane

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = ["Flip", "Rotate", "flipped_geometry"]


def flipped_geometry(shape: Sequence[int], geometry: Geometry, axes: Sequence[int]) -> Geometry:
    """Return the geometry keeping world positions when a grid is reversed along ``axes``."""
    start = np.zeros(3)
    direction = geometry.direction.copy()
    for a in axes:
        start[a] = shape[a] - 1
        direction[:, a] *= -1
    return Geometry(geometry.spacing, geometry.voxel_to_world(start), direction)


def flipped(item: CTItem, axes: Sequence[int]) -> dict[str, Any]:
    """Every component reversed along ``axes``, with the geometry that keeps world positions."""
    shape = item.require_images("flip").shape
    out: dict[str, Any] = {"geometry": flipped_geometry(shape, item.geometry, axes)}
    for comp in COMPONENTS:
        arr = getattr(item, comp)
        if arr is not None:
            spatial = tuple(int(a) - 3 for a in axes)  # counted from the end: channels stay
            out[comp] = np.ascontiguousarray(np.flip(arr, axis=spatial))
    return out


class Flip(ItemAction):
    """Reverse voxel order along ``axis`` (0 = z, 1 = y, 2 = x) of every item.

    Geometry is updated (origin moves to the far end, the axis' direction is negated), so
    every voxel keeps its world position: the anatomy does not move in world mm, only the
    array order changes. Nodule tables stay valid.

    Parameters
    ----------
    axis : int or sequence of int, default 0
        The axis, or distinct axes, to reverse: 0 (z), 1 (y), 2 (x); negative values count
        back (-1 is x). Stored as a sorted tuple.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.arange(3, dtype=np.int16).reshape(3, 1, 1)])
    >>> b.flip(0).images.ravel().tolist(), b.origin[0].tolist(), b.direction[0][0].tolist()
    ([2, 1, 0], [2.0, 0.0, 0.0], [-1.0, 0.0, 0.0])
    """

    name = "flip"
    family = "geometry"
    axis: int | Sequence[int] = 0

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("axis", as_axes(self.axis, "axis", self.name))

    exact_step = True

    def fusable(self) -> bool:
        """Flips join a fused geometry pass."""
        return True

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return the reversed grid."""
        geometry = flipped_geometry(state.shape, state.geometry, self.axis)  # type: ignore[arg-type]
        return _step(state, state.shape, geometry, interpolates=False)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Flip one item."""
        return flipped(item, as_axes(self.axis, "axis", self.name))


class Rotate(ItemAction):
    """Rotate every item by ``angle`` degrees about the centre of the plane ``axes``.

    The rotation is in millimetres: on a plane whose two spacings differ (0.68 x 0.73 mm
    pixels, or a plane that includes z) the content turns by ``angle`` in world space, not in
    voxel indices (:func:`ctflow.ops.spatial.rotate`). Label masks keep their values (nearest,
    or ``labels_interpolation="onehot"``), probability masks are linear, lungs nearest. The
    direction and origin turn with the content (:meth:`Geometry.rotated`), so
    every voxel keeps pointing at the world position of the anatomy it shows: nodule tables
    stay valid and ``create_mask`` after ``rotate`` is right.

    Parameters
    ----------
    angle : float
        Degrees, any finite number (required); with ``random=True`` each item draws its angle
        uniformly from ``[-|angle|, |angle|]`` (reproducible from the run's seed; recorded in
        its history).
    axes : pair of int, default (1, 2)
        The rotation plane: two different axes, (0, 1), (0, 2) or (1, 2) (negative values
        count back; stored sorted); (1, 2) rotates the axial plane about z.
    random : bool, default False
        Draw the angle per item instead of rotating every item by ``angle``.
    order : {0, 1}, default 1
        Interpolation of images: nearest neighbour or linear.
    cval : float, default -1000
        Image value where the source lies outside the scan (air); any finite number, within
        the range of ``dtype`` when that is an integer dtype. Masks and lungs get 0 there.
    dtype : numpy dtype, optional
        Output image dtype: float32, int16, uint8, int8, uint16, int32 or uint32. Default
        None: float32 for ``order=1``, unchanged for ``order=0``.
    labels_interpolation : {"nearest", "onehot"}, default "nearest"
        How integer label masks are rotated: nearest neighbour, or each label's indicator
        linearly then the argmax. Probability masks are linear and lungs nearest either way.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> img = np.zeros((1, 5, 5), np.int16); img[0, 4, 2] = 100
    >>> b = cf.CTBatch.from_arrays([img]).rotate(90, order=0)
    >>> np.argwhere(b.images == 100).tolist(), b.voxel_to_world(0, (0, 2, 4)).tolist()
    ([[0, 2, 4]], [0.0, 4.0, 2.0])
    """

    name = "rotate"
    family = "geometry"
    angle: float
    axes: Sequence[int] = (1, 2)
    random: bool = False
    order: int = 1
    cval: float = -1000.0
    dtype: Any = None
    labels_interpolation: str = "nearest"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        _check_interpolation(self, self.labels_interpolation)
        self._set("angle", as_float(self.angle, "angle", self.name, unit="(degrees)"))
        self._set("axes", as_plane(self.axes, "axes", self.name))
        as_bool(self.random, "random", self.name)
        as_choice(self.order, (0, 1), "order", self.name)
        self._set("cval", as_float(self.cval, "cval", self.name))
        kinds = [np.float32, np.int16, np.uint8, np.int8, np.uint16, np.int32, np.uint32]
        as_dtype(self.dtype, kinds, "dtype", self.name)
        _check_cval(self, self.cval, self.dtype)

    def make_params(self, item: CTItem) -> dict[str, Any]:
        """Return the angle of this item (drawn in ``[-angle, angle]`` when ``random``)."""
        if not self.random:
            return {}
        return {"angle": float(item.rng.uniform(-abs(self.angle), abs(self.angle)))}

    def fusable(self) -> bool:
        """Rotations join a fused geometry pass."""
        return True

    @property
    def step_cval(self) -> float:
        """Image value outside the scan."""
        return float(self.cval)

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return the rotated grid (same shape; direction and origin turned)."""
        theta = float(params.get("angle", self.angle))
        plane = (int(self.axes[0]), int(self.axes[1]))
        return _step(state, state.shape, state.geometry.rotated(state.shape, theta, plane))

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Rotate one item and its masks."""
        from ctflow.ops.spatial import rotate

        images = item.require_images(self.name)
        theta = float(params.get("angle", self.angle))
        plane = (int(self.axes[0]), int(self.axes[1]))
        geometry = item.geometry.rotated(images.shape, theta, plane)
        kw: dict[str, Any] = {"n_threads": item.n_threads, "spacing": item.spacing}
        out: dict[str, Any] = {
            "images": rotate(
                images, theta, plane, order=self.order, cval=self.cval, dtype=self.dtype, **kw
            ),
            "geometry": geometry,
        }

        def linear(v: Any, outside: float) -> Any:
            return rotate(v, theta, plane, order=1, cval=outside, dtype=np.float32, **kw)

        def nearest(v: Any) -> Any:
            return rotate(v, theta, plane, order=0, cval=0, **kw)

        for comp in LABELS:
            arr = getattr(item, comp)
            if arr is not None:
                mode = self.labels_interpolation if comp == "masks" else "nearest"
                out[comp] = resample_mask(arr, linear, nearest, mode)
        return out
