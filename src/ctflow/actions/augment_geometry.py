"""Random geometric augmentation: flips, 3-D affine transforms, elastic deformation.

Each action draws its parameters per item from the item's generator (``make_params``: the
same whatever the thread count, prefetch or engine), records them in the item's history, and
describes what it does to the item's grid (``grid_step``), so that a pipeline runs it in one
resampling pass with the geometric actions around it (:mod:`ctflow.actions.fusion`).

Two kinds of geometric change:

* ``random_flip`` reverses array axes like ``flip``: the geometry follows, every voxel keeps
  its world position (the network sees mirrored arrays; nodule tables stay valid; exact).
* ``random_affine`` and ``random_elastic`` move the anatomy within the item's grid, as
  TorchIO's ``RandomAffine`` / ``RandomElasticDeformation`` do: the grid (shape, spacing,
  origin, direction) is unchanged and the content is transformed in millimetres along the
  array axes (so a rotation is a rotation on anisotropic voxels too). Masks and lungs follow
  (labels nearest, probabilities linear), and the nodule table's world centres and
  diameters move with the anatomy. ``invert`` undoes ``random_affine`` exactly;
  ``random_elastic`` is for training and is refused by ``invert``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.actions.base import ItemAction
from ctflow.actions.geometry_base import _check_cval
from ctflow.validation import as_axes, as_choice, as_dtype, as_float, as_int

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = ["RandomAffine", "RandomElastic", "RandomFlip", "affine_in_frame"]


def _probability(action: ItemAction, value: Any) -> float:
    return as_float(value, "p", action.name, lo=0.0, hi=1.0)


def _range(action: ItemAction, value: Any, what: str, *, lo: float | None = None) -> list[float]:
    """Return a per-axis symmetric bound (one number or 3) as 3 floats >= 0."""
    values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value] * 3
    if len(values) != 3:
        raise action.invalid(what, "a number or 3 numbers (z, y, x)", value)
    return [as_float(v, what, action.name, lo=0.0 if lo is None else lo) for v in values]


def _plane_rotation(angle_deg: float, i: int, j: int) -> NDArray[np.float64]:
    r = np.eye(3)
    t = np.deg2rad(angle_deg)
    c, s = np.cos(t), np.sin(t)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def affine_in_frame(
    degrees: Sequence[float],
    scales: Sequence[float],
    shear: Sequence[float],
    translation_mm: Sequence[float],
) -> NDArray[np.float64]:
    """Return the 4x4 forward map of an affine augmentation, in mm along the array axes.

    A point ``u`` of the anatomy (mm from the grid's centre, axes z, y, x) moves to
    ``A u + t``, ``A = R_z R_y R_x K H``: ``R_z`` turns the (y, x) plane by ``degrees[0]``,
    ``R_y`` the (z, x) plane by ``degrees[1]``, ``R_x`` the (z, y) plane by ``degrees[2]``;
    ``K = diag(scales)`` (> 1 enlarges); ``H`` shears (``H[0, 1] = tan(shear[0])``,
    ``H[0, 2] = tan(shear[1])``, ``H[1, 2] = tan(shear[2])``, degrees); ``t`` is
    ``translation_mm``.

    Examples
    --------
    >>> affine_in_frame((90, 0, 0), (1, 1, 1), (0, 0, 0), (0, 0, 0))[:3, :3].round(6).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    """
    r = (
        _plane_rotation(degrees[0], 1, 2)
        @ _plane_rotation(degrees[1], 0, 2)
        @ _plane_rotation(degrees[2], 0, 1)
    )
    h = np.eye(3)
    h[0, 1], h[0, 2], h[1, 2] = (float(np.tan(np.deg2rad(v))) for v in shear)
    out = np.eye(4)
    out[:3, :3] = r @ np.diag(np.asarray(scales, dtype=np.float64)) @ h
    out[:3, 3] = np.asarray(translation_mm, dtype=np.float64)
    return out


class RandomFlip(ItemAction):
    """Flip every item along each of ``axes`` with probability ``p`` (drawn per axis, item).

    Like ``flip``, the voxel order is reversed and the geometry follows, so every voxel keeps
    its world position (exact; nodule tables stay valid; masks and lungs follow).

    Parameters
    ----------
    axes : int or sequence of int, default (0, 1, 2)
        The axes that may be flipped: distinct axes among 0 (z), 1 (y), 2 (x); negative values
        count back. Stored as a sorted tuple.
    p : float, default 0.5
        Probability in [0, 1] of a flip, drawn independently for every axis and item.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.arange(4, dtype=np.int16).reshape(1, 1, 4)] * 2)
    >>> b.set_random_state(0, 0)
    >>> b = b.random_flip(axes=2, p=0.5)
    >>> [h[-1]["params"]["axes"] for h in b.history]
    [[], [2]]
    """

    name = "random_flip"
    family = "augmentation"
    axes: int | Sequence[int] = (0, 1, 2)
    p: float = 0.5
    exact_step = True

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("axes", as_axes(self.axes, "axes", self.name))
        self._set("p", _probability(self, self.p))

    def make_params(self, item: CTItem) -> dict[str, Any]:
        """Return the axes this item is flipped along."""
        axes = as_axes(self.axes, "axes", self.name)
        draws = item.rng.random(len(axes))
        return {"axes": [int(a) for a, d in zip(axes, draws, strict=True) if d < self.p]}

    def fusable(self) -> bool:
        """Flips join a fused geometry pass."""
        return True

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return the reversed grid."""
        from ctflow.actions.fusion import GridStep, index_map
        from ctflow.actions.geometry_flip_rotate import flipped_geometry

        geometry = flipped_geometry(state.shape, state.geometry, params["axes"])
        matrix = index_map(state.geometry, geometry)
        return GridStep(tuple(state.shape), geometry, matrix, interpolates=False)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Flip one item along its drawn axes."""
        from ctflow.actions.geometry_flip_rotate import flipped

        if not params["axes"]:
            return None
        return flipped(item, params["axes"])


def _check_common(action: Any) -> None:
    """Check ``order``, ``cval``, ``dtype`` and ``labels_interpolation`` of an augmentation."""
    from ctflow.ops.affine import LABEL_MODES

    as_choice(action.order, (0, 1), "order", action.name)
    action._set("cval", as_float(action.cval, "cval", action.name))
    kinds = [np.float32, np.int16, np.uint8, np.int8, np.uint16, np.int32, np.uint32]
    as_dtype(action.dtype, kinds, "dtype", action.name)
    _check_cval(action, action.cval, action.dtype, rounded=True)  # resampled: cval rounded
    as_choice(action.labels_interpolation, LABEL_MODES, "labels_interpolation", action.name)


def _apply_moving(action: Any, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """Resample one item through the transform ``action`` drew for it."""
    from ctflow.actions.fusion import GridState, resample_item

    images = item.require_images(action.name)
    if not params.get("applied", True):
        dtype = action.dtype or (np.float32 if action.order == 1 else images.dtype)
        # the same dtype as the items that were transformed
        return None if images.dtype == dtype else {"images": images.astype(dtype)}
    step = action.grid_step(GridState.of(item), params)
    return resample_item(item, (action,), (step,))


class _MovesAnatomy:
    """What the augmentations that move the anatomy share.

    A mixin, not a dataclass: the fields ``order``, ``cval``, ``dtype`` and
    ``labels_interpolation`` are each class's own (a dataclass base would put them first).
    """

    cval: float

    @property
    def step_cval(self) -> float:
        """Image value where the moved anatomy leaves the grid."""
        return float(self.cval)

    def fusable(self) -> bool:
        """Augmentations join a fused geometry pass."""
        return True

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Resample one item through its drawn transform."""
        return _apply_moving(self, item, params)


class RandomAffine(_MovesAnatomy, ItemAction):
    """Rotate, scale, shear and translate every item's anatomy by random amounts (in mm).

    With probability ``p`` an item draws, per axis (z, y, x), a rotation angle in
    ``[-degrees, degrees]``, a scale in ``[1 - scales, 1 + scales]`` (one for all axes with
    ``isotropic=True``), a shear angle in ``[-shear, shear]`` and a translation in
    ``[-translation_mm, translation_mm]``, and its anatomy is transformed about the grid's
    centre (:func:`affine_in_frame`; in millimetres, right on anisotropic voxels). The grid
    is unchanged; images get ``cval`` where the anatomy leaves it, masks and lungs 0. The
    drawn values and the world map are recorded; ``invert`` undoes it.

    Parameters
    ----------
    degrees : float or 3 floats, default 10
        Largest rotation about z, y, x (degrees), each in [0, 180]; one number for all axes.
    scales : float or 3 floats, default 0.1
        Largest relative change of size (0.1: 0.9 to 1.1), each in [0, 1).
    shear : float or 3 floats, default 0
        Largest shear angle (degrees), each in [0, 60).
    translation_mm : float or 3 floats, default 0
        Largest shift (mm), each >= 0.
    isotropic : bool, default False
        Draw one scale for the three axes (from ``scales``' first value).
    p : float, default 1
        Probability in [0, 1] that an item is transformed.
    order : {0, 1}, default 1
        Interpolation of images: nearest neighbour or linear.
    cval : float, default -1000
        Image value where the moved anatomy leaves the grid (air); any finite number, within
        the range of ``dtype`` (rounded) when that is an integer dtype. Masks and lungs get 0
        there.
    dtype : numpy dtype, optional
        Output image dtype: float32, int16, uint8, int8, uint16, int32 or uint32. Default None:
        float32 for ``order=1``, unchanged for ``order=0``. Items left alone (``p``) are cast
        to it too, so every item of the batch gets the same dtype.
    labels_interpolation : {"nearest", "onehot"}, default "nearest"
        How integer label masks are resampled: nearest neighbour, or each label's indicator
        linearly then the argmax. Probability masks are linear and lungs nearest either way.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((8, 16, 16), np.int16)])
    >>> b.set_random_state(0, 0)
    >>> b = b.random_affine(degrees=(0, 0, 20), scales=0)
    >>> b.images.shape, sorted(b.history[0][-1]["params"])
    ((8, 16, 16), ['applied', 'degrees', 'scales', 'shear', 'translation_mm', 'world'])
    """

    name = "random_affine"
    family = "augmentation"
    degrees: float | Sequence[float] = 10.0
    scales: float | Sequence[float] = 0.1
    shear: float | Sequence[float] = 0.0
    translation_mm: float | Sequence[float] = 0.0
    isotropic: bool = False
    p: float = 1.0
    order: int = 1
    cval: float = -1000.0
    dtype: Any = None
    labels_interpolation: str = "nearest"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        degrees = _range(self, self.degrees, "degrees")
        if max(degrees) > 180:
            raise self.invalid("degrees", "at most 180", self.degrees)
        self._set("degrees", tuple(degrees))
        scales = _range(self, self.scales, "scales")
        if max(scales) >= 1:
            raise self.invalid(
                "scales", "below 1 (a scale of 1 - scales must stay > 0)", self.scales
            )
        self._set("scales", tuple(scales))
        shear = _range(self, self.shear, "shear")
        if max(shear) >= 60:
            raise self.invalid("shear", "below 60 degrees", self.shear)
        self._set("shear", tuple(shear))
        self._set("translation_mm", tuple(_range(self, self.translation_mm, "translation_mm")))
        if not isinstance(self.isotropic, bool):
            raise self.invalid("isotropic", "True or False", self.isotropic)
        self._set("p", _probability(self, self.p))
        _check_common(self)

    @staticmethod
    def _maps(
        shape: Sequence[int], geometry: Any, params: Mapping[str, Any]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return the index map (output -> input voxel) and the world map of ``params``."""
        forward = affine_in_frame(
            params["degrees"], params["scales"], params["shear"], params["translation_mm"]
        )
        backward = np.linalg.inv(forward)  # output point -> input point, mm about the centre
        sp = np.diag([*geometry.spacing, 1.0])
        centre = np.eye(4)
        centre[:3, 3] = (np.asarray(shape, dtype=np.float64) - 1) / 2 * geometry.spacing
        matrix = np.linalg.inv(sp) @ centre @ backward @ np.linalg.inv(centre) @ sp
        world = geometry.affine @ matrix @ np.linalg.inv(geometry.affine)
        return matrix, world

    def make_params(self, item: CTItem) -> dict[str, Any]:
        """Draw this item's rotation, scales, shear and translation (and record the world map)."""
        rng = item.rng
        if rng.random() >= self.p:
            return {"applied": False}
        deg = [float(rng.uniform(-d, d)) for d in self.degrees]  # type: ignore[union-attr]
        if self.isotropic:
            s = float(rng.uniform(-self.scales[0], self.scales[0]))  # type: ignore[index]
            sc = [1.0 + s] * 3
        else:
            sc = [1.0 + float(rng.uniform(-s, s)) for s in self.scales]  # type: ignore[union-attr]
        sh = [float(rng.uniform(-s, s)) for s in self.shear]  # type: ignore[union-attr]
        tr = [float(rng.uniform(-t, t)) for t in self.translation_mm]  # type: ignore[union-attr]
        params: dict[str, Any] = {
            "applied": True,
            "degrees": deg,
            "scales": sc,
            "shear": sh,
            "translation_mm": tr,
        }
        shape = item.require_images(self.name).shape
        params["world"] = self._maps(shape, item.geometry, params)[1].tolist()
        return params

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return the map of the drawn transform on ``state``'s grid (the grid is kept)."""
        from ctflow.actions.fusion import GridStep

        shape = tuple(int(v) for v in state.shape)
        if not params.get("applied", True):
            return GridStep(shape, state.geometry, np.eye(4), interpolates=False)
        matrix, world = self._maps(shape, state.geometry, params)
        return GridStep(shape, state.geometry, matrix, world=world)


class RandomElastic(_MovesAnatomy, ItemAction):
    """Deform every item's anatomy by a smooth random displacement field (in mm).

    A cubic B-spline field on ``control_points`` control points per axis (the outer
    ``locked_borders`` layers fixed at 0, so the borders stay) with each displacement drawn
    uniformly in ``[-max_displacement_mm, max_displacement_mm]`` (TorchIO's
    ``RandomElasticDeformation``); settings that could fold the anatomy (too large a
    displacement for the control spacing) are refused. The grid is unchanged; masks and lungs
    follow, nodule centres move with the anatomy. Not undone by ``invert``.

    Parameters
    ----------
    control_points : int, default 7
        Control points per axis (at least 4, and more than ``2 * locked_borders``).
    max_displacement_mm : float, default 7.5
        Largest displacement of a control point (mm), a finite number >= 0.
    locked_borders : {0, 1, 2}, default 2
        Layers of control points kept at 0 on each side (1: the layer outside the volume, 2:
        also the one on its border).
    p : float, default 1
        Probability in [0, 1] that an item is deformed.
    order : {0, 1}, default 1
        Interpolation of images: nearest neighbour or linear.
    cval : float, default -1000
        Image value where the moved anatomy leaves the grid (air); any finite number, within
        the range of ``dtype`` (rounded) when that is an integer dtype. Masks and lungs get 0
        there.
    dtype : numpy dtype, optional
        Output image dtype: float32, int16, uint8, int8, uint16, int32 or uint32. Default None:
        float32 for ``order=1``, unchanged for ``order=0``. Items left alone (``p``) are cast
        to it too, so every item of the batch gets the same dtype.
    labels_interpolation : {"nearest", "onehot"}, default "nearest"
        How integer label masks are resampled: nearest neighbour, or each label's indicator
        linearly then the argmax. Probability masks are linear and lungs nearest either way.
    """

    name = "random_elastic"
    family = "augmentation"
    control_points: int = 7
    max_displacement_mm: float = 7.5
    locked_borders: int = 2
    p: float = 1.0
    order: int = 1
    cval: float = -1000.0
    dtype: Any = None
    labels_interpolation: str = "nearest"
    elastic_step = True

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("control_points", as_int(self.control_points, "control_points", self.name, lo=4))
        self._set(
            "max_displacement_mm",
            as_float(self.max_displacement_mm, "max_displacement_mm", self.name, lo=0.0),
        )
        locked = as_int(self.locked_borders, "locked_borders", self.name, lo=0, hi=2)
        self._set("locked_borders", locked)  # random_elastic_field's range
        if self.control_points - 2 * self.locked_borders < 1:
            raise self.invalid(
                "locked_borders",
                f"small enough to leave a free control point of {self.control_points}",
                self.locked_borders,
            )
        self._set("p", _probability(self, self.p))
        _check_common(self)

    def make_params(self, item: CTItem) -> dict[str, Any]:
        """Draw this item's control-point displacements."""
        from ctflow.ops.warp import random_elastic_field

        rng = item.rng
        if rng.random() >= self.p:
            return {"applied": False}
        shape = item.require_images(self.name).shape
        coef, origin, step = random_elastic_field(
            shape,
            item.spacing,
            rng,
            control_points=self.control_points,
            max_displacement_mm=self.max_displacement_mm,
            locked_borders=self.locked_borders,
        )
        return {
            "applied": True,
            "coef": np.asarray(coef, dtype=np.float32).round(4).tolist(),
            "grid_origin": [float(v) for v in origin],
            "grid_step": [float(v) for v in step],
        }

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return the drawn displacement on ``state``'s grid (the grid is kept)."""
        from ctflow.actions.fusion import GridStep

        shape = tuple(int(v) for v in state.shape)
        if not params.get("applied", True):
            return GridStep(shape, state.geometry, np.eye(4), interpolates=False)
        elastic = (
            np.asarray(params["coef"], dtype=np.float32),
            np.asarray(params["grid_origin"], dtype=np.float64),
            np.asarray(params["grid_step"], dtype=np.float64),
        )
        return GridStep(shape, state.geometry, np.eye(4), elastic=elastic)
