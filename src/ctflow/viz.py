"""Pictures of scans: an axial slice with nodule masks, lung masks and nodule outlines overlaid.

Figures are matplotlib ``Figure`` objects made without pyplot (no global state, no display
needed), so they work in scripts, tests and headless servers. Axes are in world millimetres
(x and y of the LPS frame) for axis-aligned scans, in voxels otherwise.

Examples
--------
>>> import numpy as np
>>> from ctflow.geometry import Geometry
>>> fig = show_slice(np.zeros((4, 8, 8), np.int16), geometry=Geometry((1, 1, 1)), z=2)
>>> fig.axes[0].get_xlabel()
'x (mm, LPS)'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry

__all__ = ["show_slice"]


def show_slice(
    images: NDArray[Any],
    *,
    masks: NDArray[Any] | None = None,
    lungs: NDArray[Any] | None = None,
    geometry: Geometry | None = None,
    z: int | None = None,
    nodules: Sequence[tuple[float, float, float, float]] = (),
    window: tuple[float, float] | None = (-1000.0, 400.0),
    title: str | None = None,
    ax: Any = None,
) -> Figure:
    """Draw axial slice ``z`` of a volume with optional overlays.

    Parameters
    ----------
    images : ndarray (Z, Y, X)
        HU (shown with ``window``) or normalised values (pass ``window=None``).
    masks, lungs : ndarray (Z, Y, X), optional
        Nodule mask (red) and lung mask (translucent blue) overlays.
    geometry : Geometry, optional
        For world-mm axes and to place ``nodules`` outlines.
    z : int, optional
        Slice index; default: the slice with the most mask voxels, else the middle.
    nodules : sequence of (z, y, x, diameter)
        World-mm nodules drawn as circles (yellow) where they cut the slice.
    window : (lo, hi) or None
        Display range.
    title : str, optional
    ax : matplotlib Axes, optional
        Draw into this axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if images.ndim != 3:
        raise InvalidParameterError(
            f"show_slice: images must be (Z, Y, X); got shape {images.shape}"
        )
    if z is None:
        if masks is not None and masks.any():
            z = int(np.argmax(masks.reshape(masks.shape[0], -1).sum(axis=1)))
        else:
            z = images.shape[0] // 2
    if not 0 <= z < images.shape[0]:
        raise InvalidParameterError(f"show_slice: z must be in [0, {images.shape[0]}); got {z}")
    if ax is None:
        fig = Figure(figsize=(6, 6), dpi=110)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    ny, nx = images.shape[1:]
    aligned = geometry is not None and np.allclose(np.abs(geometry.direction), np.eye(3))
    if aligned:
        assert geometry is not None
        corner0 = geometry.voxel_to_world([z, -0.5, -0.5])
        corner1 = geometry.voxel_to_world([z, ny - 0.5, nx - 0.5])
        extent = (corner0[2], corner1[2], corner1[1], corner0[1])
        ax.set_xlabel("x (mm, LPS)")
        ax.set_ylabel("y (mm, LPS)")
    else:
        extent = (-0.5, nx - 0.5, ny - 0.5, -0.5)
        ax.set_xlabel("x (voxels)")
        ax.set_ylabel("y (voxels)")
    vmin, vmax = window if window is not None else (None, None)
    ax.imshow(images[z], cmap="gray", vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
    if lungs is not None:
        overlay = np.ma.masked_where(lungs[z] == 0, lungs[z])
        ax.imshow(
            overlay,
            cmap=ListedColormap(["tab:blue"]),
            alpha=0.25,
            extent=extent,
            interpolation="nearest",
        )
    if masks is not None:
        overlay = np.ma.masked_where(masks[z] == 0, masks[z])
        ax.imshow(
            overlay,
            cmap=ListedColormap(["red"]),
            alpha=0.45,
            extent=extent,
            interpolation="nearest",
        )
    if geometry is not None:
        for nz, ny_, nx_, diameter in nodules:
            vox = geometry.world_to_voxel([nz, ny_, nx_])
            dz_mm = abs(vox[0] - z) * geometry.spacing[0]
            r = diameter / 2
            if dz_mm >= r:
                continue
            r_slice = float(np.sqrt(r * r - dz_mm * dz_mm))
            if aligned:
                centre = geometry.voxel_to_world([z, vox[1], vox[2]])
                xy, rad = (centre[2], centre[1]), r_slice
            else:
                xy, rad = (vox[2], vox[1]), r_slice / geometry.spacing[2]
            ax.add_patch(Circle(xy, rad, fill=False, color="yellow", lw=1.2, ls="--"))
    ax.set_title(title or f"axial slice z={z}")
    return fig
