"""Actions that move voxels: reorient, resize, unify_spacing, rotate, flip, crops and pads.

Each keeps world positions right: the item's geometry is updated so every voxel points at the
anatomy it shows, and nodule tables (world mm) stay valid. Masks follow by their content
(:func:`ctflow.labels.resample_mask`): label maps keep their values (nearest neighbour, or
per-label linear interpolation and argmax with ``labels_interpolation="onehot"``),
probabilities (float) are interpolated linearly, channels (C, Z, Y, X) one by one. Lungs are
labels (nearest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ctflow.actions.base import ItemAction
from ctflow.geometry import Geometry
from ctflow.labels import each_channel, resample_mask
from ctflow.validation import (
    as_axes,
    as_bool,
    as_choice,
    as_dtype,
    as_float,
    as_int,
    as_plane,
    as_shape,
    as_spacing,
)

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = [
    "CentralCrop",
    "Crop",
    "Flip",
    "Pad",
    "Reorient",
    "Resize",
    "Rotate",
    "UnifySpacing",
    "cut",
    "cut_padded",
    "flipped_geometry",
]

LABELS = ("masks", "lungs")
COMPONENTS = ("images", "masks", "lungs")


def _check_interpolation(action: ItemAction, value: str) -> None:
    from ctflow.ops.affine import LABEL_MODES

    as_choice(value, LABEL_MODES, "labels_interpolation", action.name)


def _resample_dtypes() -> tuple[np.dtype[Any], ...]:
    from ctflow.ops.resample import OUTPUT_DTYPES

    return OUTPUT_DTYPES


def _step(state: Any, shape: Any, geometry: Geometry, interpolates: bool = True) -> Any:
    """Return the :class:`~ctflow.actions.fusion.GridStep` from ``state``'s grid to a new one."""
    from ctflow.actions.fusion import GridStep, index_map

    shape = tuple(int(v) for v in shape)
    return GridStep(shape, geometry, index_map(state.geometry, geometry), interpolates)


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


class Reorient(ItemAction):
    """Permute and flip every item's axes so they follow an orientation code (exact).

    ``code`` is one of the 48 three-letter DICOM-style codes SimpleITK's ``DICOMOrient``
    takes (``"LPS"``, ``"RAS"``, ``"SLA"``, ...). Its letters describe the array axes x, y, z
    (ctflow axes 2, 1, 0) in DICOM's convention: ``"LPS"`` means x grows toward the patient's
    left, y toward posterior, z toward superior — the identity direction. The result equals
    ``sitk.DICOMOrient(image, code)`` voxel for voxel and in spacing, origin and direction: no
    interpolation, every voxel keeps its world position (nodule tables stay valid), masks and
    lungs follow. An item already in that orientation is left as it is (no copy). Train on
    scans brought to one orientation, as TorchIO's ``ToCanonical`` / MONAI's ``Orientationd``
    do: otherwise a RAS-stored NIfTI and an LPS DICOM reach the network mirrored.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.arange(8, dtype=np.int16).reshape(2, 2, 2)])
    >>> np.diag(b.reorient("RAS").direction[0]).tolist()    # y and x now run the other way
    [1.0, -1.0, -1.0]
    >>> b.images[0].tolist(), b.voxel_to_world(0, (0, 0, 0)).tolist()
    ([[3, 2], [1, 0]], [0.0, 1.0, 1.0])
    """

    name = "reorient"
    family = "geometry"
    code: str = "LPS"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        from ctflow.ops.orient import orientation_transform

        orientation_transform(np.eye(3), self.code)  # raises InvalidParameterError on a bad code
        self._set("code", self.code.upper())

    exact_step = True

    def fusable(self) -> bool:
        """Reorientation joins a fused geometry pass (:mod:`ctflow.actions.fusion`)."""
        return True

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return what reorienting does to ``state``'s grid."""
        from ctflow.ops.orient import reorient

        view, geometry = reorient(state.images, state.geometry, self.code)
        return _step(state, view.shape, geometry, interpolates=False)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Reorient one item (nothing when it already has the code)."""
        from ctflow.ops.orient import reorient

        images = item.require_images(self.name)
        view, geometry = reorient(images, item.geometry, self.code)
        if view is images:
            return None  # already in that orientation: nothing moves, nothing is copied
        out: dict[str, Any] = {"images": np.ascontiguousarray(view), "geometry": geometry}
        for comp in LABELS:
            arr = getattr(item, comp)
            if arr is not None:
                out[comp] = each_channel(
                    arr, lambda v: np.ascontiguousarray(reorient(v, item.geometry, self.code)[0])
                )
        return out


class UnifySpacing(ItemAction):
    """Resample every item to exactly ``spacing`` mm, optionally to a fixed ``shape``.

    The output grid is centred on the scan's centre; with ``shape`` it is cropped or padded
    (``padding``: "reflect", "edge" or "constant" = -1000 HU air) within the same single
    resampling pass. Images use ``order`` (0 nearest, 1 linear, 3 cubic); label masks keep
    their values (``labels_interpolation``: "nearest", or "onehot" = each label's indicator
    linear then argmax), probability masks are linear, lungs nearest. Output images are float32 for
    ``order >= 1`` unless ``dtype`` says otherwise (e.g. ``np.int16`` rounds back to HU).
    Origin and spacing are updated so world points keep pointing at the same anatomy.
    Without ``shape`` each item keeps its own field of view (items of a batch may then differ
    in shape). ``shape`` may hold ``None`` on an axis to keep that axis's field of view, e.g.
    ``(None, 384, 384)`` fixes only the in-plane size. ``anti_alias=True`` smooths axes that are
    downsampled (Gaussian, sigma from the spacing ratio) before sampling, as image pyramids do.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((10, 8, 8), np.int16)], spacing=(2.0, 1.0, 1.0))
    >>> b.unify_spacing((1.0, 1.0, 1.0)).images.shape
    (20, 8, 8)
    """

    name = "unify_spacing"
    family = "geometry"
    spacing: float | Sequence[float] = (1.0, 1.0, 1.0)
    shape: Sequence[int | None] | None = None
    order: int = 1
    padding: str = "reflect"
    dtype: Any = None
    anti_alias: bool = False
    labels_interpolation: str = "nearest"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        _check_interpolation(self, self.labels_interpolation)
        self._set("spacing", as_spacing(self.spacing, where=self.name))
        if self.shape is not None:
            self._set("shape", as_shape(self.shape, where=self.name, allow_none=True))
        as_choice(self.order, (0, 1, 3), "order", self.name)
        as_choice(self.padding, ("reflect", "edge", "constant"), "padding", self.name)
        as_dtype(self.dtype, _resample_dtypes(), "dtype", self.name)
        as_bool(self.anti_alias, "anti_alias", self.name)

    def fusable(self) -> bool:
        """Linear or nearest, no anti-aliasing, air (not reflect) padding of a fixed shape."""
        return (
            self.order in (0, 1)
            and not self.anti_alias
            and (self.shape is None or self.padding == "constant")
        )

    @property
    def step_cval(self) -> float | None:
        """Image value outside the scan in a fused pass (air when padding a fixed shape)."""
        return -1000.0 if self.shape is not None else None

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return the grid of ``spacing`` (and ``shape``) centred on ``state``'s grid."""
        new_sp = np.asarray(self.spacing, dtype=np.float64)
        n = np.floor(np.asarray(state.shape) * state.geometry.spacing / new_sp + 0.5)
        shape = [int(max(1, v)) for v in n]
        if self.shape is not None:
            shape = [shape[k] if v is None else int(v) for k, v in enumerate(self.shape)]
        geometry = state.geometry.resampled(state.shape, shape, new_sp)
        return _step(state, shape, geometry)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Resample one item and its masks."""
        from ctflow.ops.resample import unify_spacing

        images = item.require_images(self.name)
        kw: dict[str, Any] = {
            "shape": self.shape,
            "padding": self.padding,
            "n_threads": item.n_threads,
        }
        out, geometry = unify_spacing(
            images,
            item.geometry,
            self.spacing,
            order=self.order,
            dtype=self.dtype,
            anti_alias=self.anti_alias,
            **kw,
        )
        result: dict[str, Any] = {"images": out, "geometry": geometry}
        kw["padding"] = "constant"

        def linear(v: Any, outside: float) -> Any:
            return unify_spacing(v, item.geometry, self.spacing, order=1, cval=outside, **kw)[0]

        def nearest(v: Any) -> Any:
            return unify_spacing(v, item.geometry, self.spacing, order=0, cval=0, **kw)[0]

        for comp in LABELS:
            arr = getattr(item, comp)
            if arr is not None:
                mode = self.labels_interpolation if comp == "masks" else "nearest"
                result[comp] = resample_mask(arr, linear, nearest, mode)
        return result


class Resize(ItemAction):
    """Resample every item to ``shape`` voxels, keeping its field of view.

    Spacing becomes ``old_spacing * old_shape / shape``; the grid stays centred, so world
    positions of the anatomy are unchanged. Label masks keep their values (nearest, or
    ``labels_interpolation="onehot"``), probability masks are linear, lungs nearest.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((10, 8, 8), np.int16)])
    >>> b.resize((5, 4, 4)).spacing.tolist()
    [[2.0, 2.0, 2.0]]
    """

    name = "resize"
    family = "geometry"
    shape: Sequence[int] = (128, 256, 256)
    order: int = 1
    dtype: Any = None
    anti_alias: bool = False
    labels_interpolation: str = "nearest"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        _check_interpolation(self, self.labels_interpolation)
        self._set("shape", as_shape(self.shape, where=self.name))
        as_choice(self.order, (0, 1, 3), "order", self.name)
        as_dtype(self.dtype, _resample_dtypes(), "dtype", self.name)
        as_bool(self.anti_alias, "anti_alias", self.name)

    def fusable(self) -> bool:
        """Linear or nearest without anti-aliasing joins a fused geometry pass."""
        return self.order in (0, 1) and not self.anti_alias

    def grid_step(self, state: Any, params: Mapping[str, Any]) -> Any:
        """Return the grid of ``shape`` voxels over ``state``'s field of view."""
        new_sp = state.geometry.spacing * np.asarray(state.shape) / np.asarray(self.shape)
        geometry = state.geometry.resampled(state.shape, self.shape, new_sp)
        return _step(state, self.shape, geometry)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Resize one item and its masks."""
        from ctflow.ops.resample import resize

        images = item.require_images(self.name)
        out, geometry = resize(
            images,
            item.geometry,
            self.shape,
            order=self.order,
            dtype=self.dtype,
            n_threads=item.n_threads,
            anti_alias=self.anti_alias,
        )
        result: dict[str, Any] = {"images": out, "geometry": geometry}

        def linear(v: Any, outside: float) -> Any:
            return resize(v, item.geometry, self.shape, order=1, n_threads=item.n_threads)[0]

        def nearest(v: Any) -> Any:
            return resize(v, item.geometry, self.shape, order=0, n_threads=item.n_threads)[0]

        for comp in LABELS:
            arr = getattr(item, comp)
            if arr is not None:
                mode = self.labels_interpolation if comp == "masks" else "nearest"
                result[comp] = resample_mask(arr, linear, nearest, mode)
        return result


class Crop(ItemAction):
    """Cut the box ``start`` .. ``start + shape`` (voxels) out of every item.

    The box must lie inside each item; the origin moves to the box's first voxel.

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
        Degrees; with ``random=True`` each item draws its angle uniformly from
        ``[-angle, angle]`` (reproducible from the run's seed; recorded in its history).
    axes : pair of int, default (1, 2)
        The rotation plane; (1, 2) rotates the axial plane about z.
    random : bool, default False
        Draw the angle per item.
    order : {0, 1}
        Interpolation of images.
    cval : float, default -1000
        Image value where the source lies outside the scan (air).
    dtype : numpy dtype, optional
        Output image dtype (default float32 for ``order=1``, unchanged for ``order=0``).
    labels_interpolation : {"nearest", "onehot"}, default "nearest"
        How label masks are rotated.

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
