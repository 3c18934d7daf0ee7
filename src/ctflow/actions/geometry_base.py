"""What the geometry actions share: the components that move and their grid step in a fused pass.

Used by :mod:`ctflow.actions.geometry_resample`, :mod:`ctflow.actions.geometry_crop` and
:mod:`ctflow.actions.geometry_flip_rotate`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctflow.actions.base import ItemAction
from ctflow.geometry import Geometry
from ctflow.validation import as_choice

__all__ = ["COMPONENTS", "LABELS"]

LABELS = ("masks", "lungs")
COMPONENTS = ("images", "masks", "lungs")


def _check_interpolation(action: ItemAction, value: str) -> None:
    from ctflow.ops.affine import LABEL_MODES

    as_choice(value, LABEL_MODES, "labels_interpolation", action.name)


def _check_cval(action: ItemAction, cval: float, dtype: Any, *, rounded: bool = False) -> None:
    """Refuse an image fill ``cval`` that an explicit integer output ``dtype`` cannot hold.

    The resampling ops refuse it when they run (:func:`ctflow.ops.spatial.rotate` compares
    ``cval`` itself, :func:`ctflow.ops.affine.output_arrays` ``round(cval)``: ``rounded``);
    with ``dtype`` given that does not depend on the data, so the constructor refuses it.
    ``dtype=None`` (the images' own dtype for ``order=0``) is left to the ops.
    """
    if dtype is None:
        return
    dt = np.dtype(dtype)
    if dt.kind not in "iu":
        return
    info = np.iinfo(dt)
    value = round(cval) if rounded else cval
    if not info.min <= value <= info.max:
        raise action.invalid("cval", f"in [{info.min}, {info.max}] for dtype {dt.name}", cval)


def _step(state: Any, shape: Any, geometry: Geometry, interpolates: bool = True) -> Any:
    """Return the :class:`~ctflow.actions.fusion.GridStep` from ``state``'s grid to a new one."""
    from ctflow.actions.fusion import GridStep, index_map

    shape = tuple(int(v) for v in shape)
    return GridStep(shape, geometry, index_map(state.geometry, geometry), interpolates)
