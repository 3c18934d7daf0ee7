"""Pictures of scans: orthogonal slices and a MIP with lung masks, nodule masks and nodules.

Figures are matplotlib ``Figure`` objects made without pyplot (no global state, no display
needed), so they work in scripts, tests and headless servers; save one with
``fig.savefig("scan.png")``.

* :func:`show_scan` — four panels: axial, coronal and sagittal slices through one point, and an
  axial maximum intensity projection (MIP) over a slab around it. Lungs (blue), nodule masks
  (red) and annotated nodules (yellow circles, where their sphere cuts the plane) are overlaid.
* :func:`show_item` — the same for an item of a batch (``batch[i]``): what ``CTBatch.show``
  draws.
* :func:`show_slice` — one axial slice (voxel index ``z``) with the same overlays.

Axes are world millimetres of the LPS frame (x to the patient's left, y to the back, z to the
head). Scans whose direction matrix is a signed permutation (every axis-aligned scan: LPS, RAS
NIfTI, sagittal acquisitions, flipped arrays) are shown in the radiological convention —
patient's right on the left of axial and coronal views, anterior on the left of sagittal views,
head up — whatever order the voxels are stored in. Oblique scans are shown along their voxel
axes, in millimetres from voxel (0, 0, 0).

Examples
--------
>>> import numpy as np
>>> from ctflow.geometry import Geometry
>>> vol = np.full((20, 32, 32), -1000, np.int16)
>>> fig = show_scan(vol, Geometry((2.0, 1.0, 1.0)), nodules=[(20.0, 16.0, 16.0, 6.0)])
>>> [ax.get_title() for ax in fig.axes]  # doctest: +NORMALIZE_WHITESPACE
['axial z = 20.0 mm', 'coronal y = 16.0 mm', 'sagittal x = 16.0 mm',
 'axial MIP, z = 9.0 .. 31.0 mm']
>>> fig.axes[0].get_xlabel()
'x (mm, LPS)'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry

__all__ = ["show_item", "show_scan", "show_slice"]

_LUNG_COLOR = "#3fa9f5"
_MASK_COLOR = "red"
_NODULE_COLOR = "yellow"
_CUT_COLOR = "cyan"


# ---------------------------------------------------------------------------------------------
def _as_nodules(nodules: Any) -> NDArray[np.float64]:
    """(N, 4) array of (z, y, x, diameter) world mm from a DataFrame or a sequence of rows."""
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


def _check_volume(arr: Any, what: str, shape: tuple[int, ...] | None = None) -> NDArray[Any]:
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.size == 0:
        got = f"shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise InvalidParameterError(f"viz: {what} must be a non-empty (Z, Y, X) array; got {got}")
    if shape is not None and arr.shape != shape:
        raise InvalidParameterError(
            f"viz: {what} has shape {arr.shape}; the images have {shape} (same grid needed)"
        )
    return arr


def _signed_permutation(direction: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """The rounded direction if it is a signed permutation matrix (axis-aligned), else None."""
    rounded = np.round(direction)
    if not np.allclose(direction, rounded, atol=1e-3):
        return None
    if not (np.all(np.abs(rounded).sum(axis=0) == 1) and np.all(np.abs(rounded).sum(axis=1) == 1)):
        return None
    return rounded


@dataclass
class _Display:
    """Volumes re-ordered so voxel axes (0, 1, 2) run along +z, +y, +x of the display frame."""

    images: NDArray[Any]
    masks: NDArray[Any] | None
    lungs: NDArray[Any] | None
    spacing: NDArray[np.float64]
    origin: NDArray[np.float64]
    nodules: NDArray[np.float64]  # (N, 4) display frame (z, y, x, diameter)
    unit: str  # axis label suffix

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.images.shape
        return int(z), int(y), int(x)

    def coord(self, axis: int, index: float) -> float:
        return float(self.origin[axis] + self.spacing[axis] * index)

    def index(self, axis: int, coord: float) -> int:
        k = int(np.rint((coord - self.origin[axis]) / self.spacing[axis]))
        return int(np.clip(k, 0, self.shape[axis] - 1))

    def limits(self, axis: int) -> tuple[float, float]:
        return self.coord(axis, -0.5), self.coord(axis, self.shape[axis] - 0.5)


def _display(
    images: NDArray[Any],
    geometry: Geometry | None,
    masks: NDArray[Any] | None,
    lungs: NDArray[Any] | None,
    nodules: Any,
) -> _Display:
    images = _check_volume(images, "images")
    if masks is not None:
        masks = _check_volume(masks, "masks", images.shape)
    if lungs is not None:
        lungs = _check_volume(lungs, "lungs", images.shape)
    if geometry is not None and not isinstance(geometry, Geometry):
        raise InvalidParameterError(
            f"viz: geometry must be a ctflow Geometry; got {type(geometry).__name__}"
        )
    rows = _as_nodules(nodules)
    if geometry is None:
        sp = np.ones(3)
        return _Display(images, masks, lungs, sp, np.zeros(3), rows, "voxels")
    perm = _signed_permutation(geometry.direction)
    if perm is None:  # oblique: voxel axes, mm from voxel (0, 0, 0)
        sp = geometry.spacing.copy()
        disp = rows.copy()
        if len(rows):
            disp[:, :3] = geometry.world_to_voxel(rows[:, :3]) * sp
        return _Display(images, masks, lungs, sp, np.zeros(3), disp, "mm, voxel axes")
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
    return _Display(
        out_images,
        reorient(masks),
        reorient(lungs),
        geometry.spacing[list(order)].copy(),
        origin,
        rows,
        "mm, LPS",
    )


# ---------------------------------------------------------------------------------------------
_VIEWS = {
    # name: (fixed axis, vertical axis, horizontal axis, imshow origin)
    "axial": (0, 1, 2, "upper"),
    "coronal": (1, 0, 2, "lower"),
    "sagittal": (2, 0, 1, "lower"),
}
_AXIS_NAMES = ("z", "y", "x")


def _extent(d: _Display, vert: int, horiz: int, origin: str) -> tuple[float, float, float, float]:
    h0, h1 = d.limits(horiz)
    v0, v1 = d.limits(vert)
    # "upper": row 0 at the top (y grows downwards: anterior up); "lower": row 0 at the bottom
    return (h0, h1, v1, v0) if origin == "upper" else (h0, h1, v0, v1)


def _plane(arr: NDArray[Any], axis: int, k: int) -> NDArray[Any]:
    return np.take(arr, k, axis=axis)


def _overlay(ax: Any, plane: NDArray[Any], color: str, alpha: float, **kw: Any) -> None:
    if not plane.any():
        return
    ax.imshow(
        np.ma.masked_where(plane == 0, np.ones(plane.shape, np.uint8)),
        cmap=ListedColormap([color]),
        alpha=alpha,
        interpolation="nearest",
        **kw,
    )


def _panel(
    ax: Any,
    d: _Display,
    view: str,
    center: NDArray[np.float64],
    window: tuple[float, float] | None,
    *,
    mip_mm: float | None = None,
    cuts: bool = True,
) -> None:
    """Draw one view through ``center`` (display frame) into ``ax``."""
    from ctflow.ops.xip import make_xip

    fixed, vert, horiz, origin = _VIEWS[view]
    extent = _extent(d, vert, horiz, origin)
    kw = {"extent": extent, "origin": origin}
    plane_coord = float(center[fixed])
    if mip_mm is None:
        k = d.index(fixed, plane_coord)
        plane_coord = d.coord(fixed, k)
        img = _plane(d.images, fixed, k)
        masks = None if d.masks is None else _plane(d.masks, fixed, k)
        lungs = None if d.lungs is None else _plane(d.lungs, fixed, k)
        half = 0.0
    else:
        k0 = d.index(fixed, plane_coord - mip_mm / 2)
        k1 = d.index(fixed, plane_coord + mip_mm / 2) + 1
        lo, hi = d.coord(fixed, k0 - 0.5), d.coord(fixed, k1 - 0.5)
        plane_coord, half = (lo + hi) / 2, (hi - lo) / 2
        slab = d.images[k0:k1]
        img = make_xip(np.ascontiguousarray(slab), depth=k1 - k0, mode="max")[0]
        masks = None if d.masks is None else d.masks[k0:k1].max(axis=0)
        lungs = None
    vmin, vmax = window if window is not None else (None, None)
    ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest", **kw)
    if lungs is not None:
        _overlay(ax, lungs, _LUNG_COLOR, 0.3, **kw)
    if masks is not None:
        _overlay(ax, masks, _MASK_COLOR, 0.45, **kw)
    for row in d.nodules:
        r = row[3] / 2
        dist = max(abs(row[fixed] - plane_coord) - half, 0.0)
        if dist >= r:
            continue
        radius = float(np.sqrt(r * r - dist * dist))
        xy = (float(row[horiz]), float(row[vert]))
        ax.add_patch(Circle(xy, radius, fill=False, color=_NODULE_COLOR, lw=1.3, ls="--"))
    if cuts and mip_mm is None:
        ax.axhline(float(center[vert]), color=_CUT_COLOR, lw=0.6, alpha=0.5)
        ax.axvline(float(center[horiz]), color=_CUT_COLOR, lw=0.6, alpha=0.5)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel(f"{_AXIS_NAMES[horiz]} ({d.unit})")
    ax.set_ylabel(f"{_AXIS_NAMES[vert]} ({d.unit})")
    unit = "" if d.unit == "voxels" else " mm"
    name = _AXIS_NAMES[fixed]
    if mip_mm is None:
        ax.set_title(f"{view} {name} = {plane_coord:.1f}{unit}")
    else:
        lo, hi = plane_coord - half, plane_coord + half
        ax.set_title(f"{view} MIP, {name} = {lo:.1f} .. {hi:.1f}{unit}")


def _default_center(d: _Display) -> NDArray[np.float64]:
    """The largest nodule, else the centre of the nodule mask, of the lungs, of the volume."""
    if len(d.nodules):
        return d.nodules[int(np.argmax(d.nodules[:, 3])), :3].copy()
    for arr in (d.masks, d.lungs):
        if arr is not None and arr.any():
            idx = np.argwhere(arr).mean(axis=0)
            return np.array([d.coord(a, float(idx[a])) for a in range(3)])
    return np.array([d.coord(a, (d.shape[a] - 1) / 2) for a in range(3)])


def show_scan(
    images: NDArray[Any],
    geometry: Geometry | None = None,
    *,
    masks: NDArray[Any] | None = None,
    lungs: NDArray[Any] | None = None,
    nodules: Any = (),
    center: ArrayLike | None = None,
    window: tuple[float, float] | None = (-1000.0, 400.0),
    mip_mm: float = 20.0,
    title: str | None = None,
    figsize: tuple[float, float] = (11.0, 10.0),
    dpi: int = 100,
) -> Figure:
    """Axial, coronal and sagittal slices through a point, and an axial MIP, with overlays.

    Parameters
    ----------
    images : ndarray (Z, Y, X)
        HU (shown with ``window``) or normalised values (pass ``window=None``).
    geometry : Geometry, optional
        Spacing, origin and direction: world-mm axes and nodule placement. Without it, voxel
        axes.
    masks, lungs : ndarray (Z, Y, X), optional
        Nodule mask (red) and lung mask (translucent blue), on the images' grid.
    nodules : DataFrame or sequence of (z, y, x, diameter)
        World-mm nodules (ctflow's nodule table works as is), drawn as yellow dashed circles
        where their sphere cuts each plane (on the MIP: where it meets the slab).
    center : 3 floats, optional
        World (z, y, x) mm where the three planes cross. Default: the largest nodule, else the
        centre of the nodule mask, else of the lungs, else of the volume.
    window : (lo, hi) or None, default (-1000, 400)
        Grey-level range; None: the data's range.
    mip_mm : float, default 20
        Thickness of the MIP slab around ``center`` (mm; voxels without geometry).
    title : str, optional
        Figure title (default: shape and spacing).
    figsize, dpi
        Figure size in inches and resolution.

    Returns
    -------
    matplotlib.figure.Figure
        Four axes: axial, coronal, sagittal, axial MIP.

    Raises
    ------
    InvalidParameterError
        Arrays that are not 3-D or not on the images' grid, bad nodule rows, bad ``center``.

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.geometry import Geometry
    >>> fig = show_scan(np.zeros((8, 16, 16), np.int16), Geometry((2.0, 1.0, 1.0)))
    >>> len(fig.axes), fig.axes[1].get_ylabel()
    (4, 'z (mm, LPS)')
    """
    d = _display(images, geometry, masks, lungs, nodules)
    if center is None:
        c = _default_center(d)
    else:
        c = np.asarray(center, dtype=np.float64)
        if c.shape != (3,) or not np.all(np.isfinite(c)):
            raise InvalidParameterError(
                f"show_scan: center must be 3 finite world coordinates (z, y, x) mm; got {center!r}"
            )
        if geometry is not None and d.unit == "mm, voxel axes":
            c = geometry.world_to_voxel(c) * geometry.spacing
    if not (isinstance(mip_mm, int | float) and mip_mm > 0):
        raise InvalidParameterError(f"show_scan: mip_mm must be a positive number; got {mip_mm!r}")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, view in zip(axes[:3], ("axial", "coronal", "sagittal"), strict=True):
        _panel(ax, d, view, c, window)
    _panel(axes[3], d, "axial", c, window, mip_mm=float(mip_mm))
    sp = ", ".join(f"{v:.3g}" for v in (geometry.spacing if geometry is not None else np.ones(3)))
    legend = []
    if d.lungs is not None:
        legend.append("lungs: blue")
    if d.masks is not None:
        legend.append("nodule mask: red")
    if len(d.nodules):
        legend.append(f"{len(d.nodules)} annotated nodule(s): yellow")
    head = title or f"{images.shape} voxels (z, y, x), spacing ({sp}) mm"
    fig.suptitle(head + ("\n" + "; ".join(legend) if legend else ""))
    return fig


def show_item(item: Any, **kwargs: Any) -> Figure:
    """:func:`show_scan` of one batch item (``batch[i]``): images, masks, lungs, nodules.

    Parameters
    ----------
    item : CTItem
        An item of a :class:`~ctflow.batch.CTBatch` (anything with ``images``, ``masks``,
        ``lungs``, ``geometry``, ``nodules`` and ``id``).
    **kwargs
        Passed to :func:`show_scan` (``center``, ``window``, ``mip_mm``, ``title``, ...).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((8, 16, 16), np.int16)], ids=["a"])
    >>> show_item(b[0]).texts[0].get_text()
    'a: (8, 16, 16) voxels (z, y, x), spacing (1, 1, 1) mm'
    """
    if getattr(item, "images", None) is None:
        raise InvalidParameterError(
            f"show: item {getattr(item, 'id', '?')!r} has no images; load() first"
        )
    images = item.images
    geometry = item.geometry
    if "title" not in kwargs:
        sp = ", ".join(f"{v:.3g}" for v in geometry.spacing)
        kwargs["title"] = f"{item.id}: {images.shape} voxels (z, y, x), spacing ({sp}) mm"
    kwargs.setdefault("nodules", item.nodules)
    return show_scan(images, geometry, masks=item.masks, lungs=item.lungs, **kwargs)


# ---------------------------------------------------------------------------------------------
def show_slice(
    images: NDArray[Any],
    *,
    masks: NDArray[Any] | None = None,
    lungs: NDArray[Any] | None = None,
    geometry: Geometry | None = None,
    z: int | None = None,
    nodules: Sequence[tuple[float, float, float, float]] | Any = (),
    window: tuple[float, float] | None = (-1000.0, 400.0),
    title: str | None = None,
    ax: Any = None,
) -> Figure:
    """Draw axial slice ``z`` (voxel index along axis 0) of a volume with optional overlays.

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
    nodules : DataFrame or sequence of (z, y, x, diameter)
        World-mm nodules drawn as circles (yellow) where they cut the slice.
    window : (lo, hi) or None
        Display range.
    title : str, optional
    ax : matplotlib Axes, optional
        Draw into this axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.geometry import Geometry
    >>> fig = show_slice(np.zeros((4, 8, 8), np.int16), geometry=Geometry((1, 1, 1)), z=2)
    >>> fig.axes[0].get_xlabel()
    'x (mm, LPS)'
    """
    images = _check_volume(images, "images")
    if masks is not None:
        masks = _check_volume(masks, "masks", images.shape)
    if lungs is not None:
        lungs = _check_volume(lungs, "lungs", images.shape)
    rows = _as_nodules(nodules)
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
        _overlay(ax, lungs[z], _LUNG_COLOR, 0.25, extent=extent)
    if masks is not None:
        _overlay(ax, masks[z], _MASK_COLOR, 0.45, extent=extent)
    if geometry is not None:
        for nz, ny_, nx_, diameter in rows:
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
            ax.add_patch(Circle(xy, rad, fill=False, color=_NODULE_COLOR, lw=1.2, ls="--"))
    ax.set_title(title or f"axial slice z={z}")
    return fig
