"""Actions that move voxels: reorient, resize, unify_spacing, rotate, flip, crops and pads.

Each keeps world positions right: the item's geometry is updated so every voxel points at the
anatomy it shows, and nodule tables (world mm) stay valid. Masks follow by their content
(:func:`ctflow.labels.resample_mask`): label maps keep their values (nearest neighbour, or
per-label linear interpolation and argmax with ``labels_interpolation="onehot"``),
probabilities (float) are interpolated linearly, channels (C, Z, Y, X) one by one. Lungs are
labels (nearest).

The actions live in sibling modules, one per kind, and are re-exported here:
:mod:`ctflow.actions.geometry_resample` (:class:`Reorient`, :class:`UnifySpacing`,
:class:`Resize`), :mod:`ctflow.actions.geometry_crop` (:class:`Crop`, :class:`CentralCrop`,
:class:`Pad`, :func:`cut`, :func:`cut_padded`) and :mod:`ctflow.actions.geometry_flip_rotate`
(:class:`Flip`, :class:`Rotate`, :func:`flipped_geometry`); what they share is in
:mod:`ctflow.actions.geometry_base`.
"""

from __future__ import annotations

from ctflow.actions.geometry_crop import CentralCrop, Crop, Pad, cut, cut_padded
from ctflow.actions.geometry_flip_rotate import Flip, Rotate, flipped_geometry
from ctflow.actions.geometry_resample import Reorient, Resize, UnifySpacing

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
