"""Pictures of scans: orthogonal slices and a MIP with lung masks, nodule masks and nodules.

Figures are matplotlib ``Figure`` objects made without pyplot (no global state, no display
needed), so they work in scripts, tests and headless servers; save one with
``fig.savefig("scan.png")``.

* :func:`show_scan` — four panels: axial, coronal and sagittal slices through one point, and an
  axial maximum intensity projection (MIP) over a slab around it. Lungs (blue), masks and
  annotated nodules (yellow circles, where their sphere cuts the plane) are overlaid.
* :func:`show_item` — the same for an item of a batch (``batch[i]``): what ``CTBatch.show``
  draws.
* :func:`show_slice` — one axial slice (voxel index ``z``) with the same overlays.

Masks are drawn by what they hold: a binary mask in translucent red; a label map (organs, lobes,
lesions: values such as {0, 1, 2, 5}) with one colour per label value — a fixed palette indexed
by the value, so label 2 has the same colour in every picture — and a legend of the labels
(``label_names={1: "body", 2: "lung"}`` adds names); float probabilities as a heat overlay (red,
more opaque where more probable) with a red contour at 0.5. See :mod:`ctflow.viz_panels`.

The display frame and the panels are drawn by :mod:`ctflow.viz_panels`. Axes are world
millimetres of the LPS frame (x to the patient's left, y to the back, z to the head). Scans
whose direction matrix is a signed permutation (every axis-aligned scan: LPS, RAS NIfTI,
sagittal acquisitions, flipped arrays) are shown in the radiological convention — patient's
right on the left of axial and coronal views, anterior on the left of sagittal views, head up —
whatever order the voxels are stored in. Oblique scans are shown along their voxel axes, in
millimetres from voxel (0, 0, 0).

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
>>> labels = np.zeros(vol.shape, np.uint8)
>>> labels[8:12, 10:20, 4:14], labels[8:12, 10:20, 18:28], labels[9:11, 14:16, 8:10] = 1, 2, 5
>>> fig = show_scan(vol, Geometry((2.0, 1.0, 1.0)), masks=labels, label_names={2: "lung"})
>>> [t.get_text() for t in fig.legends[0].get_texts()]
['1', '2: lung', '5']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.deps import optional_import

optional_import("matplotlib", "pictures (ctflow.viz)")  # MissingDependencyError: ctflow[viz]

from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.validation import as_float
from ctflow.viz_frame import check_component, default_center, display_frame, nodule_rows
from ctflow.viz_masks import MaskLabels, describe_mask, mask_focus
from ctflow.viz_panels import (
    LUNG_COLOR,
    NODULE_COLOR,
    draw_mask,
    draw_panel,
    legend_handles,
    overlay,
)

__all__ = ["show_item", "show_scan", "show_slice"]

HU_WINDOW = (-1000.0, 400.0)


def _window_for(
    images: NDArray[Any], window: tuple[float, float] | None
) -> tuple[float, float] | None:
    """Return the grey range to draw: the HU default means [0, 1] on normalised images."""
    if window is None or tuple(window) != HU_WINDOW or images.dtype.kind != "f" or not images.size:
        return window
    lo, hi = float(np.nanmin(images)), float(np.nanmax(images))
    return (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else window


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
    label_names: Mapping[int, str] | None = None,
) -> Figure:
    """Axial, coronal and sagittal slices through a point, and an axial MIP, with overlays.

    Parameters
    ----------
    images : ndarray (Z, Y, X)
        HU (shown with ``window``) or normalised values (float in [0, 1], as after
        ``normalize_hu``: shown over [0, 1] when ``window`` is the HU default).
    geometry : Geometry, optional
        Spacing, origin and direction: world-mm axes and nodule placement. Without it, voxel
        axes.
    masks : ndarray (Z, Y, X), optional
        On the images' grid: a binary mask (translucent red), a label map (one colour per
        label value, with a legend) or float probabilities (heat overlay and a contour at
        0.5); see the module docstring. On the MIP: the maximum over the slab.
    lungs : ndarray (Z, Y, X), optional
        Lung mask (translucent blue), on the images' grid.
    nodules : DataFrame or sequence of (z, y, x, diameter)
        World-mm nodules (ctflow's nodule table works as is), drawn as yellow dashed circles
        where their sphere cuts each plane (on the MIP: where it meets the slab).
    center : 3 floats, optional
        World (z, y, x) mm where the three planes cross. Default: the largest nodule, else the
        centre of the mask (of a label map: a voxel of its rarest label, the smallest
        structure), else of the lungs, else of the volume.
    window : (lo, hi) or None, default (-1000, 400)
        Grey-level range; None: the data's range.
    mip_mm : float, default 20
        Thickness of the MIP slab around ``center`` (mm; voxels without geometry).
    title : str, optional
        Figure title (default: shape and spacing).
    figsize, dpi
        Figure size in inches and resolution.
    label_names : mapping of int to str, optional
        Names of label values for the legend, e.g. ``{1: "body", 2: "lung"}``.

    Returns
    -------
    matplotlib.figure.Figure
        Four axes: axial, coronal, sagittal, axial MIP; ``fig.legends[0]`` lists the labels of a
        label map (or the keys of a probability overlay) under the panels.

    Raises
    ------
    InvalidParameterError
        Arrays that are not 3-D or not on the images' grid, bad nodule rows, bad ``center``,
        float masks that are neither probabilities nor whole-number labels, bad label names.

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.geometry import Geometry
    >>> fig = show_scan(np.zeros((8, 16, 16), np.int16), Geometry((2.0, 1.0, 1.0)))
    >>> len(fig.axes), fig.axes[1].get_ylabel()
    (4, 'z (mm, LPS)')
    """
    d = display_frame(images, geometry, masks, lungs, nodules, label_names)
    window = _window_for(images, window)
    if center is None:
        c = default_center(d)
    else:
        c = np.asarray(center, dtype=np.float64)
        if c.shape != (3,) or not np.all(np.isfinite(c)):
            raise InvalidParameterError(
                f"show_scan: center must be 3 finite world coordinates (z, y, x) mm; got {center!r}"
            )
        if geometry is not None and d.unit == "mm, voxel axes":
            c = geometry.world_to_voxel(c) * geometry.spacing
    mip = as_float(mip_mm, "mip_mm", "show_scan", lo=0.0, lo_open=True)
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, view in zip(axes[:3], ("axial", "coronal", "sagittal"), strict=True):
        draw_panel(ax, d, view, c, window)
    draw_panel(axes[3], d, "axial", c, window, mip_mm=mip)
    sp = ", ".join(f"{v:.3g}" for v in (geometry.spacing if geometry is not None else np.ones(3)))
    legend = []
    if d.lungs is not None:
        legend.append("lungs: blue")
    if d.mask_labels is not None:
        legend.append(_mask_note(d.mask_labels))
    if len(d.nodules):
        legend.append(f"{len(d.nodules)} annotated nodule(s): yellow")
    head = title or f"{images.shape} voxels (z, y, x), spacing ({sp}) mm"
    fig.suptitle(head + ("\n" + "; ".join(legend) if legend else ""))
    info = d.mask_labels
    handles = [] if info is None else legend_handles(info)
    if info is not None and handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(len(handles), 8),
            title=None if info.kind == "probabilities" else "mask labels",
            frameon=False,
        )
    return fig


def _mask_note(info: MaskLabels) -> str:
    """Return the title's words for the mask: binary as before, else what the legend shows."""
    if info.kind == "binary":
        return "nodule mask: red" if 1 not in info.names else f"mask ({info.text(1)}): red"
    if info.kind == "probabilities":
        return "probability mask: red, opacity = probability, contour at 0.5"
    return f"label map: {len(info.values)} label(s), colours in the legend"


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
    label_names: Mapping[int, str] | None = None,
) -> Figure:
    """Draw axial slice ``z`` (voxel index along axis 0) of a volume with optional overlays.

    Parameters
    ----------
    images : ndarray (Z, Y, X)
        HU (shown with ``window``) or normalised values (float in [0, 1], as after
        ``normalize_hu``: shown over [0, 1] when ``window`` is the HU default).
    masks : ndarray (Z, Y, X), optional
        Binary mask (red), label map (one colour per label, legend) or probabilities (heat
        overlay, contour at 0.5), as in :func:`show_scan`.
    lungs : ndarray (Z, Y, X), optional
        Lung mask (translucent blue).
    geometry : Geometry, optional
        For world-mm axes and to place ``nodules`` outlines.
    z : int, optional
        Slice index; default: the slice with the most mask voxels (of a label map: of its rarest
        label; of probabilities: of at least 0.5), else the middle.
    nodules : DataFrame or sequence of (z, y, x, diameter)
        World-mm nodules drawn as circles (yellow) where they cut the slice.
    window : (lo, hi) or None
        Display range.
    title : str, optional
    ax : matplotlib Axes, optional
        Draw into this axes instead of a new figure.
    label_names : mapping of int to str, optional
        Names of label values for the legend (drawn in the axes).

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
    images = check_component(images, "images")
    info = None
    if masks is not None:
        masks = check_component(masks, "masks", images.shape)
        info = describe_mask(masks, label_names)
    if lungs is not None:
        lungs = check_component(lungs, "lungs", images.shape)
    rows = nodule_rows(nodules)
    if z is None:
        focus = None if masks is None else mask_focus(masks, info)
        if focus is not None and focus.any():
            z = int(np.argmax(np.count_nonzero(focus.reshape(focus.shape[0], -1), axis=1)))
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
    vmin, vmax = _window_for(images, window) or (None, None)
    ax.imshow(images[z], cmap="gray", vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
    if lungs is not None:
        overlay(ax, lungs[z], LUNG_COLOR, 0.25, extent=extent)
    if masks is not None:
        draw_mask(ax, masks[z], info, extent=extent)
        handles = legend_handles(info) if info is not None else []
        if handles:
            ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.7)
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
            ax.add_patch(Circle(xy, rad, fill=False, color=NODULE_COLOR, lw=1.2, ls="--"))
    ax.set_title(title or f"axial slice z={z}")
    return fig
