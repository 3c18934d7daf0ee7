"""Resampling actions: reorient, unify_spacing and resize.

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

from ctflow.actions.base import ItemAction
from ctflow.actions.geometry_base import LABELS, _check_interpolation, _step
from ctflow.labels import each_channel, resample_mask
from ctflow.validation import as_bool, as_choice, as_dtype, as_shape, as_spacing

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = ["Reorient", "Resize", "UnifySpacing"]


#: The image value ``unify_spacing(padding="constant")`` pads with (air, HU).
_AIR_HU = -1000.0


def _resample_dtypes() -> tuple[np.dtype[Any], ...]:
    from ctflow.ops.resample import OUTPUT_DTYPES

    return OUTPUT_DTYPES


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

    Parameters
    ----------
    code : str, default "LPS"
        The target orientation: 3 letters, one of R/L, one of A/P and one of S/I in any order
        (48 codes), for the array axes x, y, z. Case-insensitive; stored upper-case.

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

    Parameters
    ----------
    spacing : float or 3 floats (z, y, x), default (1.0, 1.0, 1.0)
        Output spacing in mm, finite and positive; one number is used on every axis.
    shape : 3 ints (z, y, x), optional
        Output shape in voxels, positive (one number is used on every axis); an axis may be
        None to keep its field of view. Default None: every item keeps its field of view.
    order : {0, 1, 3}, default 1
        Interpolation of the images: nearest neighbour, linear or cubic B-spline.
    padding : {"reflect", "edge", "constant"}, default "reflect"
        Image samples outside the scan: mirrored, edge voxels repeated, or -1000 HU (air).
        Masks and lungs get 0 there whatever the padding.
    dtype : numpy dtype, optional
        Output image dtype: float32, int16, uint8, int8, uint16, int32, uint32 or int64 (integer
        outputs are rounded half away from zero and clipped; with ``padding="constant"`` it
        must hold -1000: uint8, int8, uint16 and uint32 are refused). Default None: float32 for
        orders 1 and 3, the input dtype for order 0 (float32 for a float64 input).
    anti_alias : bool, default False
        Before interpolating, smooth every downsampled axis (factor ``f > 1``) with a Gaussian
        of sigma ``(f - 1) / 2`` voxels. Ignored for order 0.
    labels_interpolation : {"nearest", "onehot"}, default "nearest"
        How integer label masks are resampled: nearest neighbour, or each label's indicator
        linearly then the argmax. Probability masks are linear and lungs nearest either way.

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
        dtype = as_dtype(self.dtype, _resample_dtypes(), "dtype", self.name)
        if self.padding == "constant" and dtype is not None and dtype.kind in "iu":
            info = np.iinfo(dtype)
            if not info.min <= _AIR_HU <= info.max:  # ops.resample refuses it when run
                raise self.invalid(
                    "dtype",
                    f"one that holds the padding value {_AIR_HU:g} (air) with "
                    f"padding='constant' (float32, int16, int32 or int64)",
                    self.dtype,
                )
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

    Parameters
    ----------
    shape : 3 ints (z, y, x), default (128, 256, 256)
        Output shape in voxels, positive (one number is used on every axis).
    order : {0, 1, 3}, default 1
        Interpolation of the images: nearest neighbour, linear or cubic B-spline.
    dtype : numpy dtype, optional
        Output image dtype: float32, int16, uint8, int8, uint16, int32, uint32 or int64 (integer
        outputs are rounded half away from zero and clipped). Default None: float32 for orders
        1 and 3, the input dtype for order 0 (float32 for a float64 input).
    anti_alias : bool, default False
        Before interpolating, smooth every downsampled axis (factor ``f > 1``) with a Gaussian
        of sigma ``(f - 1) / 2`` voxels. Ignored for order 0.
    labels_interpolation : {"nearest", "onehot"}, default "nearest"
        How integer label masks are resampled: nearest neighbour, or each label's indicator
        linearly then the argmax. Probability masks are linear and lungs nearest either way.

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
