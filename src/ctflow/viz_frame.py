"""The display frame of :mod:`ctflow.viz`: volumes and nodules re-ordered along +z, +y, +x.

:func:`display_frame` checks images, overlays, a geometry and nodules and turns them into a
:class:`Display` whose voxel axes run along +z, +y, +x of the frame the pictures are drawn in
(world LPS mm for axis-aligned scans, voxel axes otherwise); :func:`default_center` picks where
the planes of a picture cross. Nothing here needs matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.validation import check_geometry
from ctflow.viz_masks import MaskLabels, describe_mask, mask_focus

__all__ = ["Display", "check_component", "default_center", "display_frame", "nodule_rows"]


def nodule_rows(nodules: Any) -> NDArray[np.float64]:
    """Return nodules as an (N, 4) array of (z, y, x, diameter) world mm.

    Parameters
    ----------
    nodules : DataFrame, sequence of 4-tuples, or None
        ctflow's nodule table (columns ``z, y, x, diameter``) or rows of them.

    Returns
    -------
    ndarray (N, 4) float64

    Raises
    ------
    InvalidParameterError
        A table without those columns, or rows that are not 4 numbers.

    Examples
    --------
    >>> nodule_rows([(1, 2, 3, 4)]).tolist(), nodule_rows(None).shape
    ([[1.0, 2.0, 3.0, 4.0]], (0, 4))
    """
    if nodules is None:
        return np.zeros((0, 4))
    if hasattr(nodules, "columns"):  # a DataFrame (ctflow's nodule table)
        missing = [c for c in ("z", "y", "x", "diameter") if c not in nodules.columns]
        if missing:
            raise InvalidParameterError(
                f"viz: a nodule table needs the columns z, y, x, diameter (world mm); "
                f"missing {missing}"
            )
        return np.asarray(nodules[["z", "y", "x", "diameter"]].to_numpy(np.float64))
    arr = np.asarray(list(nodules), dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InvalidParameterError(
            f"viz: nodules must be rows of (z, y, x, diameter) in world mm; got shape {arr.shape}"
        )
    return arr


def check_component(arr: Any, what: str, shape: tuple[int, ...] | None = None) -> NDArray[Any]:
    """Return ``arr`` when it is a non-empty 3-D array (of ``shape`` when given).

    Parameters
    ----------
    arr : object
        The images, masks or lungs to draw.
    what : str
        Its name, for the error message.
    shape : tuple of int, optional
        The images' shape, which overlays must have (same grid).

    Raises
    ------
    InvalidParameterError
        ``arr`` is not a non-empty (Z, Y, X) ndarray, or not of ``shape``.

    Examples
    --------
    >>> check_component(np.zeros((1, 2, 2)), "masks", (1, 2, 2)).shape
    (1, 2, 2)
    """
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.size == 0:
        got = f"shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise InvalidParameterError(f"viz: {what} must be a non-empty (Z, Y, X) array; got {got}")
    if shape is not None and arr.shape != shape:
        raise InvalidParameterError(
            f"viz: {what} has shape {arr.shape}; the images have {shape} (same grid needed)"
        )
    return arr


def _signed_permutation(direction: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """Return the rounded direction if it is a signed permutation (axis-aligned), else None."""
    rounded = np.round(direction)
    if not np.allclose(direction, rounded, atol=1e-3):
        return None
    if not (np.all(np.abs(rounded).sum(axis=0) == 1) and np.all(np.abs(rounded).sum(axis=1) == 1)):
        return None
    return rounded


@dataclass
class Display:
    """Volumes re-ordered so voxel axes (0, 1, 2) run along +z, +y, +x of the display frame.

    Attributes
    ----------
    images, masks, lungs : ndarray (or None)
        The volumes, as views in display order.
    spacing, origin : ndarray of 3 float64
        Display-frame spacing and position of voxel (0, 0, 0) (mm, or voxels).
    nodules : ndarray (N, 4)
        Nodules in the display frame (z, y, x, diameter).
    unit : str
        Axis label suffix: ``"mm, LPS"``, ``"mm, voxel axes"`` or ``"voxels"``.
    mask_labels : MaskLabels or None
        What the masks hold: binary, label map or probabilities (:func:`describe_mask`).
    """

    images: NDArray[Any]
    masks: NDArray[Any] | None
    lungs: NDArray[Any] | None
    spacing: NDArray[np.float64]
    origin: NDArray[np.float64]
    nodules: NDArray[np.float64]  # (N, 4) display frame (z, y, x, diameter)
    unit: str  # axis label suffix
    mask_labels: MaskLabels | None = None  # what the masks hold (how they are drawn)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the images in display order."""
        z, y, x = self.images.shape
        return int(z), int(y), int(x)

    def coord(self, axis: int, index: float) -> float:
        """Return the display coordinate of (continuous) voxel ``index`` along ``axis``."""
        return float(self.origin[axis] + self.spacing[axis] * index)

    def index(self, axis: int, coord: float) -> int:
        """Return the voxel nearest to display coordinate ``coord`` along ``axis`` (clipped)."""
        k = int(np.rint((coord - self.origin[axis]) / self.spacing[axis]))
        return int(np.clip(k, 0, self.shape[axis] - 1))

    def limits(self, axis: int) -> tuple[float, float]:
        """Return the outer faces of the first and last voxels along ``axis``."""
        return self.coord(axis, -0.5), self.coord(axis, self.shape[axis] - 0.5)


def display_frame(
    images: NDArray[Any],
    geometry: Geometry | None,
    masks: NDArray[Any] | None,
    lungs: NDArray[Any] | None,
    nodules: Any,
    label_names: Any = None,
) -> Display:
    """Put volumes and nodules in the display frame (see :mod:`ctflow.viz`).

    Axis-aligned scans (a signed-permutation direction) are flipped and transposed to world
    (z, y, x) order with world-mm coordinates; oblique scans keep their voxel axes, in mm from
    voxel (0, 0, 0); without a geometry the axes are voxels.

    Parameters
    ----------
    images : ndarray (Z, Y, X)
        The images.
    geometry : Geometry or None
        Their geometry.
    masks, lungs : ndarray (Z, Y, X) or None
        Overlays on the images' grid.
    nodules : DataFrame or sequence of (z, y, x, diameter)
        World-mm nodules.
    label_names : mapping of int to str, optional
        Names of the masks' label values.

    Returns
    -------
    Display

    Raises
    ------
    InvalidParameterError
        Bad arrays, geometry, nodules or label names.

    Examples
    --------
    >>> d = display_frame(np.zeros((2, 3, 4)), Geometry((1, 1, 1), (0, 0, 0), -np.eye(3)),
    ...                   None, None, ())
    >>> d.origin.tolist(), d.unit
    ([-1.0, -2.0, -3.0], 'mm, LPS')
    """
    images = check_component(images, "images")
    if masks is not None:
        masks = check_component(masks, "masks", images.shape)
    if lungs is not None:
        lungs = check_component(lungs, "lungs", images.shape)
    if geometry is not None:
        check_geometry(geometry, "viz")
    rows = nodule_rows(nodules)
    info = None if masks is None else describe_mask(masks, label_names)
    if geometry is None:
        sp = np.ones(3)
        return Display(images, masks, lungs, sp, np.zeros(3), rows, "voxels", info)
    perm = _signed_permutation(geometry.direction)
    if perm is None:  # oblique: voxel axes, mm from voxel (0, 0, 0)
        sp = geometry.spacing.copy()
        disp = rows.copy()
        if len(rows):
            disp[:, :3] = geometry.world_to_voxel(rows[:, :3]) * sp
        return Display(images, masks, lungs, sp, np.zeros(3), disp, "mm, voxel axes", info)
    # flip the voxel axes that run against their world axis, then order them as world z, y, x
    signs = perm.sum(axis=0)  # sign of each voxel axis' world direction
    world_axis = np.abs(perm).argmax(axis=0)  # world axis of each voxel axis
    flips = tuple(int(j) for j in range(3) if signs[j] < 0)
    order = tuple(int(np.flatnonzero(world_axis == w)[0]) for w in range(3))
    shape = np.asarray(images.shape)
    start = np.where(signs < 0, shape - 1, 0)
    origin = geometry.voxel_to_world(start)

    def reorient(arr: NDArray[Any] | None) -> NDArray[Any] | None:
        if arr is None:
            return None
        out = np.flip(arr, axis=flips) if flips else arr
        return out.transpose(order)

    out_images = reorient(images)
    assert out_images is not None
    return Display(
        out_images,
        reorient(masks),
        reorient(lungs),
        geometry.spacing[list(order)].copy(),
        origin,
        rows,
        "mm, LPS",
        info,
    )


def default_center(d: Display) -> NDArray[np.float64]:
    """Return where the planes cross by default (display frame).

    Parameters
    ----------
    d : Display
        The volumes and nodules in the display frame.

    Returns
    -------
    ndarray of 3 float64
        The centre of the largest nodule, else of the mask (:func:`mask_focus`: for a label map
        the voxel of its rarest label nearest to that label's centre), else of the lungs, else
        of the volume.
    """
    if len(d.nodules):
        return d.nodules[int(np.argmax(d.nodules[:, 3])), :3].copy()
    if d.masks is not None:
        focus = mask_focus(d.masks, d.mask_labels)
        if focus.any():
            points = np.argwhere(focus)
            idx = points.mean(axis=0)
            if d.mask_labels is not None and d.mask_labels.kind == "labels":
                idx = points[np.argmin(((points - idx) ** 2).sum(axis=1))].astype(np.float64)
            return np.array([d.coord(a, float(idx[a])) for a in range(3)])
    if d.lungs is not None and d.lungs.any():
        idx = np.argwhere(d.lungs).mean(axis=0)
        return np.array([d.coord(a, float(idx[a])) for a in range(3)])
    return np.array([d.coord(a, (d.shape[a] - 1) / 2) for a in range(3)])
