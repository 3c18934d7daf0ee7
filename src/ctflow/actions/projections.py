"""Projection actions: sliding-window MIP / MinIP / mean / median."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ctflow.actions.base import ItemAction
from ctflow.validation import as_choice, as_int

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = ["MakeXIP"]


class MakeXIP(ItemAction):
    """Sliding-window intensity projection (MIP / MinIP / mean / median) of every item.

    Window ``k`` along the projection axis reduces ``depth`` slices starting at
    ``k * stride``; the output voxel sits at the window's centre, spacing along the axis is
    multiplied by ``stride`` (see :mod:`ctflow.ops.xip`). Masks and lungs get a maximum
    projection (a voxel is in a nodule if any slice of its window is).

    Parameters
    ----------
    depth : int, default 3
        Slices reduced per window (>= 1); without ``padding`` it must not exceed the length of
        the projection axis (checked when the action runs).
    stride : int, default 2
        Step between windows, in slices (>= 1); the spacing along the axis is multiplied by it.
    mode : {"max", "min", "mean", "median"}, default "max"
        Reduction of the images: MIP, MinIP, mean or median. "max" and "min" keep the images'
        dtype, "mean" and "median" give float32; masks and lungs always use "max".
    projection : {"axial", "coronal", "sagittal"}, default "axial"
        Project along z (axis 0), y (axis 1) or x (axis 2).
    padding : {None, "reflect"}, default None
        None: whole windows only, ``(n - depth) // stride + 1`` output slices. "reflect":
        mirror the axis at both ends: ``ceil(n / stride)`` windows, window ``k`` centred on
        slice ``k * stride`` (``k * stride + 0.5`` for an even ``depth``).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> img = np.arange(6, dtype=np.int16).reshape(6, 1, 1)
    >>> b = cf.CTBatch.from_arrays([img]).make_xip(depth=3, stride=2)
    >>> b.images.ravel().tolist(), b.origin[0].tolist(), b.spacing[0].tolist()
    ([2, 4], [1.0, 0.0, 0.0], [2.0, 1.0, 1.0])
    """

    name = "make_xip"
    family = "projections"
    depth: int = 3
    stride: int = 2
    mode: str = "max"
    projection: str = "axial"
    padding: str | None = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        from ctflow.ops.xip import PROJECTIONS, XIP_MODES

        as_int(self.depth, "depth", self.name, lo=1)
        as_int(self.stride, "stride", self.name, lo=1)
        as_choice(self.mode, XIP_MODES, "mode", self.name)
        as_choice(self.projection, tuple(PROJECTIONS), "projection", self.name)
        if self.padding is not None:
            as_choice(self.padding, ("reflect",), "padding", self.name)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Project one item and its masks."""
        from ctflow.ops.xip import make_xip, xip_geometry

        images = item.require_images(self.name)
        kw: dict[str, Any] = {"projection": self.projection, "padding": self.padding}
        out: dict[str, Any] = {
            "images": make_xip(images, self.depth, self.stride, self.mode, **kw),  # type: ignore[arg-type]
            "geometry": xip_geometry(item.geometry, self.depth, self.stride, **kw),
        }
        for comp in ("masks", "lungs"):
            arr = getattr(item, comp)
            if arr is not None:
                out[comp] = make_xip(arr, self.depth, self.stride, "max", **kw)
        return out
