"""Intensity actions: HU windows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ctflow.actions.base import BatchAction
from ctflow.validation import as_bool, as_float

if TYPE_CHECKING:
    from ctflow.batch import CTBatch

__all__ = ["NormalizeHU"]


class NormalizeHU(BatchAction):
    """Clip HU to [min_hu, max_hu] and scale to [0, 1] float32 (or 0..255 uint8).

    One fused, threaded pass over every item's voxels at once (the batch's whole images
    buffer, whatever the items' shapes). Float32 images the batch allocated itself (e.g. the
    output of ``unify_spacing``) are overwritten in place, so the step needs no second volume
    (``inplace=False`` always writes a new array, e.g. when you keep a reference to the HU
    images). Arrays a user handed in (``from_arrays``) are never modified.

    Parameters
    ----------
    min_hu : float, default -1000.0
        Lower end of the HU window: values at or below it become 0. Any finite number.
    max_hu : float, default 400.0
        Upper end of the window: values at or above it become 1 (255 for uint8). A finite
        number greater than ``min_hu``.
    dtype : {"float32", "uint8"}, default "float32"
        Output dtype: [0, 1] float32, or 0..255 uint8 (``floor(t * 255 + 0.5)``). Any numpy
        spelling of the two (``np.uint8``) is accepted and stored as its name.
    inplace : bool, default True
        Write into the images buffer when the batch allocated it itself and it already has
        the output dtype; False always writes a new array.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.array([[[-2000, -300, 1000]]], np.int16)])
    >>> b.normalize_hu(-1000, 400).images.ravel().tolist()
    [0.0, 0.5, 1.0]
    """

    name = "normalize_hu"
    family = "intensity"
    #: voxel by voxel: commutes with crops, flips and reorientation (see actions.fusion)
    pointwise = True
    min_hu: float = -1000.0
    max_hu: float = 400.0
    dtype: str = "float32"
    inplace: bool = True

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        lo = as_float(self.min_hu, "min_hu", self.name, unit="(HU)")
        hi = as_float(self.max_hu, "max_hu", self.name, unit="(HU)")
        if not lo < hi:
            raise self.invalid("max_hu", f"greater than min_hu={lo:g}", self.max_hu)
        self._set("min_hu", lo)
        self._set("max_hu", hi)
        self._set("dtype", _window_dtype(self))
        as_bool(self.inplace, "inplace", self.name)

    def run(self, batch: CTBatch) -> CTBatch:
        """Window every item's images in one pass."""
        from ctflow.ops.intensity import normalize_hu

        batch.require("normalize_hu", "images")
        data = batch.ragged("images")
        images = data.buffer  # every item at once, whatever the shapes: the op is voxelwise
        in_place = (
            self.inplace
            and data.owned
            and images.dtype == np.dtype(self.dtype)
            and images.flags.c_contiguous
            and images.flags.writeable
        )
        out = normalize_hu(
            images,
            self.min_hu,
            self.max_hu,
            self.dtype,
            out=images if in_place else None,
            n_threads=batch.threads(),
        )
        batch.put_buffer("images", out)
        return batch


def _window_dtype(action: NormalizeHU) -> str:
    """Return "float32" or "uint8" from any spelling numpy accepts."""
    try:
        name = np.dtype(action.dtype).name
    except TypeError:
        name = ""
    if isinstance(action.dtype, bool) or name not in ("float32", "uint8"):
        raise action.invalid("dtype", "'float32' or 'uint8'", action.dtype)
    return name
