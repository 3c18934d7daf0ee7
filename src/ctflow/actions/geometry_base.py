"""What the geometry actions share: the components that move and their grid step in a fused pass.

Used by :mod:`ctflow.actions.geometry_resample`, :mod:`ctflow.actions.geometry_crop` and
:mod:`ctflow.actions.geometry_flip_rotate`.
"""

from __future__ import annotations

from typing import Any

from ctflow.actions.base import ItemAction
from ctflow.geometry import Geometry
from ctflow.validation import as_choice

__all__ = ["COMPONENTS", "LABELS"]

LABELS = ("masks", "lungs")
COMPONENTS = ("images", "masks", "lungs")


def _check_interpolation(action: ItemAction, value: str) -> None:
    from ctflow.ops.affine import LABEL_MODES

    as_choice(value, LABEL_MODES, "labels_interpolation", action.name)


def _step(state: Any, shape: Any, geometry: Geometry, interpolates: bool = True) -> Any:
    """Return the :class:`~ctflow.actions.fusion.GridStep` from ``state``'s grid to a new one."""
    from ctflow.actions.fusion import GridStep, index_map

    shape = tuple(int(v) for v in shape)
    return GridStep(shape, geometry, index_map(state.geometry, geometry), interpolates)
