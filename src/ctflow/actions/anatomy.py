"""Anatomy actions: the lung mask and crops around it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ctflow.actions.base import ItemAction
from ctflow.actions.geometry_crop import cut, cut_padded
from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.validation import as_bool, as_float, as_shape

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = ["PLAUSIBLE_LUNG_ML", "CropToLungs", "Segment"]

#: ``segment`` warns when it finds less lung than this (millilitres): a head or abdomen scan,
#: or a field of view that shows only part of the lungs.
PLAUSIBLE_LUNG_ML = 300.0


class Segment(ItemAction):
    """Segment the lungs of every item into ``lungs`` (uint8 0/1).

    A fast classical method (:func:`ctflow.ops.lungs.segment_lungs`): air threshold, removal
    of outside air and bowel gas, largest lung components, 3-D closing and 2-D hole filling
    that keeps juxta-pleural nodules. Needs HU images: call it before ``normalize_hu``. With
    ``blank=True`` image voxels outside the lungs are set to ``blank_value``. An empty mask,
    or one holding less than :data:`PLAUSIBLE_LUNG_ML`, is a warning of the item.

    Parameters
    ----------
    threshold : float, default -320.0
        Voxels with ``HU < threshold`` are air-like (the first step of the segmentation); a
        finite number in [-900, -100].
    min_lung_ml : float, default 15.0
        Smallest volume (mL) of an air component kept as lung; in [0, 1e6].
    fill_holes : bool, default True
        Fill the 2-D holes of the mask per axial slice (vessels, airway walls, nodules inside
        the lung); holes larger than 50 cm² (the mediastinum) stay open.
    closing_mm : float, default 5.0
        Radius (mm) of the 3-D closing ball that takes in juxta-pleural nodules; in [0, 50], 0
        turns the closing off.
    blank : bool, default False
        Also set the image voxels outside the lungs to ``blank_value`` (masks are untouched).
    blank_value : float, default -1000.0
        Image value outside the lungs with ``blank=True``, converted to the images' dtype; any
        finite number. Unused when ``blank`` is False.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.full((8, 32, 32), -1000, np.int16)])
    >>> int(b.segment().lungs.sum())   # air only: no body, so no lungs
    0
    """

    name = "segment"
    family = "anatomy"
    threshold: float = -320.0
    min_lung_ml: float = 15.0
    fill_holes: bool = True
    closing_mm: float = 5.0
    blank: bool = False
    blank_value: float = -1000.0

    def __post_init__(self) -> None:
        """Check the parameters (the limits of :func:`~ctflow.ops.lungs.segment_lungs`)."""
        from ctflow.ops.lungs import MAX_CLOSING_MM, MAX_MIN_LUNG_ML, THRESHOLD_RANGE

        lo, hi = THRESHOLD_RANGE
        threshold = as_float(self.threshold, "threshold", self.name, lo=lo, hi=hi, unit="(HU)")
        self._set("threshold", threshold)
        min_ml = as_float(
            self.min_lung_ml, "min_lung_ml", self.name, lo=0.0, hi=MAX_MIN_LUNG_ML, unit="(mL)"
        )
        self._set("min_lung_ml", min_ml)
        as_bool(self.fill_holes, "fill_holes", self.name)
        closing = as_float(
            self.closing_mm, "closing_mm", self.name, lo=0.0, hi=MAX_CLOSING_MM, unit="(mm)"
        )
        self._set("closing_mm", closing)
        as_bool(self.blank, "blank", self.name)
        self._set("blank_value", as_float(self.blank_value, "blank_value", self.name))

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Segment one item's lungs."""
        from ctflow.ops.lungs import segment_lungs

        images = item.require_images(self.name)
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
            threshold=self.threshold,
            min_lung_ml=self.min_lung_ml,
            fill_holes=self.fill_holes,
            closing_mm=self.closing_mm,
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
        if self.blank:
            out["images"] = np.where(
                lungs.astype(bool), images, images.dtype.type(self.blank_value)
            )
        return out


class CropToLungs(ItemAction):
    """Crop every item to the box around its lungs, enlarged by ``margin_mm`` per side.

    Items of different lung sizes get boxes of different shapes (a batch holds any shapes);
    pass ``shape`` (voxels) to cut a box of that shape centred on the lungs instead (padded
    with air where it leaves the scan), e.g. to stack the items for a network. An item without
    lungs found is kept whole. Origins move with the box.

    Parameters
    ----------
    margin_mm : float or 3 floats (z, y, x), default 10.0
        Margin added on each side of the lungs' box, mm (each >= 0): one number for every axis
        or one per axis, rounded up to whole voxels; the box is clipped to the scan.
    shape : 3 ints (z, y, x), optional
        Cut a box of exactly this many voxels (positive; one number is used on every axis)
        centred on the margin box, images padded with their minimum and masks / lungs with 0
        where it leaves the scan. Default None: the margin box itself.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((10, 20, 20), np.int16)])
    >>> b.lungs = np.zeros((10, 20, 20), np.uint8); b.lungs[4:6, 5:10, 8:12] = 1
    >>> b.crop_to_lungs(margin_mm=1.0).images.shape
    (4, 7, 6)
    """

    name = "crop_to_lungs"
    family = "anatomy"
    margin_mm: float | Sequence[float] = 10.0
    shape: Sequence[int] | None = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        margin = self.margin_mm
        values = list(margin) if isinstance(margin, Sequence) else [margin]
        if len(values) not in (1, 3):
            raise self.invalid("margin_mm", "one or 3 numbers >= 0 (mm)", margin)
        checked = [as_float(v, "margin_mm", self.name, lo=0.0, unit="(mm)") for v in values]
        self._set("margin_mm", checked[0] if len(checked) == 1 else tuple(checked))
        if self.shape is not None:
            self._set("shape", as_shape(self.shape, where=self.name))

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Crop one item to its lungs."""
        from ctflow.ops.lungs import lung_bbox

        item.require_images(self.name)
        if item.lungs is None:
            raise InvalidParameterError("crop_to_lungs: the batch has no lungs; call segment()")
        start, size = lung_bbox(item.lungs, item.geometry, self.margin_mm)
        if self.shape is None:
            return cut(item, start, size)
        want = np.asarray(self.shape, dtype=np.int64)
        return cut_padded(item, start + size // 2 - want // 2, want)
