"""The way back: ``invert`` puts an item back on the grid its scan was loaded with.

Every geometric action of ctflow keeps each voxel at the world position of the anatomy it shows
(reorient, unify_spacing, resize, crop, central_crop, pad, flip, rotate, crop_to_lungs,
sample_nodules / sample_crops crops: each updates the geometry instead of moving anatomy). So the
way back from any chain of them is ONE resampling through world coordinates onto the loaded grid
(:func:`ctflow.ops.affine.resample_to`) — no blur from undoing the steps one by one, and the
shape, spacing, origin and direction of the result are the loaded scan's exactly. The loaded
grid comes from the item's history (``load`` records it).

Examples
--------
>>> import numpy as np, ctflow as cf
>>> b = cf.CTBatch.from_arrays([np.zeros((8, 8, 8), np.int16)])
>>> b.history[0].append({"action": "load", "args": {}, "params": {"grid": {
...     "shape": [8, 8, 8], "spacing": [1.0, 1.0, 1.0], "origin": [0.0, 0.0, 0.0],
...     "direction": np.eye(3).tolist()}}})
>>> b.unify_spacing((2.0, 2.0, 2.0)).images.shape, b.invert().images.shape
((4, 4, 4), (8, 8, 8))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.actions.base import ItemAction
from ctflow.actions.geometry_base import _check_cval
from ctflow.errors import InvalidScanError
from ctflow.geometry import Geometry
from ctflow.validation import as_choice, as_dtype, as_float

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = ["Invert", "anatomy_moves", "loaded_grid"]


def loaded_grid(history: Sequence[Mapping[str, Any]], item_id: str = "") -> tuple[Any, Geometry]:
    """Return the (shape, geometry) an item's scan was loaded with, from its history.

    Raises
    ------
    InvalidScanError
        The history holds no ``load`` with its grid (an item built in memory, or dumped by
        a ctflow older than the record).
    """
    for entry in history:
        if entry.get("action") != "load":
            continue
        grid = (entry.get("params") or {}).get("grid")
        if grid:
            geometry = Geometry(grid["spacing"], grid["origin"], grid["direction"])
            return tuple(int(v) for v in grid["shape"]), geometry
    raise InvalidScanError(
        f"invert: item {item_id!r} has no loaded grid in its history (it was not loaded by "
        f"ctflow's load, or its dump predates the record): nothing to invert onto"
    )


def anatomy_moves(
    history: Sequence[Mapping[str, Any]], item_id: str = ""
) -> NDArray[np.float64] | None:
    """Return the world map of the augmentations that moved the item's anatomy, or None.

    ``random_affine`` records, per item, the 4x4 map ``T`` from output world mm to input world
    mm; the item's image at world ``p`` shows the loaded anatomy at ``T_1(T_2(...T_n(p)))``.

    Raises
    ------
    InvalidScanError
        A ``random_elastic`` deformation is in the history (it has no exact inverse).
    """
    total: NDArray[np.float64] | None = None
    for entry in history:
        name = entry.get("action")
        params = entry.get("params") or {}
        if name == "random_elastic" and params.get("applied", True):
            raise InvalidScanError(
                f"invert: item {item_id!r} was deformed by random_elastic, which has no exact "
                f"inverse; augment after the steps you want to invert, or not at inference"
            )
        if name == "random_affine" and params.get("applied", True):
            world = np.asarray(params["world"], dtype=np.float64)
            total = world if total is None else total @ world
    return total


class Invert(ItemAction):
    """Bring every item back onto the grid its scan was loaded with, in one resampling pass.

    Images are resampled ``order`` 1 (linear) or 0; masks holding labels (integers) keep their
    labels — nearest neighbour, or per-label linear interpolation and argmax with
    ``labels_interpolation="onehot"`` — and masks holding probabilities (floats, also
    (C, Z, Y, X) channels) are linear; lungs are labels.
    Where the loaded grid reaches beyond what the item still covers (a crop, a rotation's
    corners) images get ``cval`` and masks 0. Shape, spacing, origin and direction become the
    loaded scan's exactly. Use it to hand a prediction back on the original scan, then
    ``export`` it.

    Parameters
    ----------
    labels_interpolation : {"nearest", "onehot"}, default "nearest"
        How integer label masks are resampled: nearest neighbour, or each label's indicator
        linearly then the argmax. Probability masks are linear and lungs nearest either way.
    order : {0, 1}, default 1
        Interpolation of images: nearest neighbour or linear.
    cval : float, default -1000
        Image value outside what the item covers (air); any finite number, within the range
        of ``dtype`` (rounded) when that is an integer dtype.
    dtype : numpy dtype, optional
        Image dtype: float32, int16, uint8, int8, uint16, int32 or uint32 (e.g. ``np.int16``
        rounds back to HU). Default None: float32 for ``order=1``, the images' dtype for
        ``order=0`` (float32 for float64).
    """

    name = "invert"
    family = "geometry"
    labels_interpolation: str = "nearest"
    order: int = 1
    cval: float = -1000.0
    dtype: Any = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        from ctflow.ops.affine import LABEL_MODES

        as_choice(self.labels_interpolation, LABEL_MODES, "labels_interpolation", self.name)
        as_choice(self.order, (0, 1), "order", self.name)
        self._set("cval", as_float(self.cval, "cval", self.name))
        kinds = [np.float32, np.int16, np.uint8, np.int8, np.uint16, np.int32, np.uint32]
        as_dtype(self.dtype, kinds, "dtype", self.name)
        _check_cval(self, self.cval, self.dtype, rounded=True)  # resample_matrix rounds it

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Resample one item onto its loaded grid."""
        from ctflow.labels import resample_mask
        from ctflow.ops.affine import resample_matrix

        images = item.require_images(self.name)
        shape, target = loaded_grid(item.history, item.id)
        moved = anatomy_moves(item.history, item.id)
        if tuple(images.shape) == shape and item.geometry == target and moved is None:
            return None  # already there
        # loaded voxel -> world -> (undo the augmentations) -> the item's voxel
        matrix = np.linalg.inv(item.geometry.affine)
        if moved is not None:
            matrix = matrix @ np.linalg.inv(moved)
        matrix = matrix @ target.affine
        kw: dict[str, Any] = {"n_threads": item.n_threads, "where": self.name}
        out: dict[str, Any] = {
            "images": resample_matrix(
                images,
                matrix,
                shape,
                order=self.order,
                cval=self.cval,
                dtype=self.dtype,
                **kw,
            ),
            "geometry": target,
        }

        def linear(v: Any, outside: float) -> Any:
            return resample_matrix(v, matrix, shape, order=1, cval=outside, **kw)

        def nearest(v: Any) -> Any:
            return resample_matrix(v, matrix, shape, order=0, cval=0, **kw)

        for comp in ("masks", "lungs"):
            arr = getattr(item, comp)
            if arr is not None:
                mode = self.labels_interpolation if comp == "masks" else "nearest"
                out[comp] = resample_mask(arr, linear, nearest, mode)
        return out
