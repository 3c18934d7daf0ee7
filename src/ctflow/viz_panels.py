"""The drawing behind :mod:`ctflow.viz`: colours, mask overlays and one view panel.

:func:`draw_panel` draws one axial, coronal or sagittal view (a slice or a MIP slab) of a
:class:`Display` with lungs, masks and nodule circles on a matplotlib Axes. The display frame
is made by :mod:`ctflow.viz_frame` and what a mask holds is read by :mod:`ctflow.viz_masks`;
their public names are importable from here too.

Masks are drawn by what they hold (:func:`describe_mask`):

* **binary** (values 0 and 1, any dtype): translucent red, as always;
* **label map** (whole numbers beyond 0 and 1, e.g. {0, 1, 2, 5}): one colour per label value,
  :func:`label_color` — a fixed qualitative palette (:data:`LABEL_COLORS`) indexed by the value,
  wrapping, so a label has the same colour in every picture whatever other labels are present;
  :func:`legend_handles` lists each label with its colour and, when given, its name;
* **probabilities** (floats in [0, 1] that are not all whole): a heat overlay — red whose opacity
  grows with the probability (0 transparent, 1 at 60 %) — and a red contour at 0.5, the
  boundary ``binarize_mask(0.5)`` would draw.

On a MIP panel a mask is its maximum over the slab: the highest label, the highest probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.deps import optional_import

optional_import("matplotlib", "pictures (ctflow.viz)")  # MissingDependencyError: ctflow[viz]

from matplotlib.colors import (
    BoundaryNorm,
    LinearSegmentedColormap,
    ListedColormap,
    to_rgba,
)
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch

from ctflow.viz_frame import (
    Display,
    check_component,
    default_center,
    display_frame,
    nodule_rows,
)
from ctflow.viz_masks import MaskLabels, check_label_names, describe_mask, mask_focus

__all__ = [
    "CUT_COLOR",
    "LABEL_ALPHA",
    "LABEL_COLORS",
    "LUNG_COLOR",
    "MASK_COLOR",
    "NODULE_COLOR",
    "PROBABILITY_ALPHA",
    "Display",
    "MaskLabels",
    "check_component",
    "check_label_names",
    "default_center",
    "describe_mask",
    "display_frame",
    "draw_mask",
    "draw_panel",
    "label_color",
    "legend_handles",
    "mask_focus",
    "nodule_rows",
    "overlay",
]

#: Colour of the lung overlay.
LUNG_COLOR = "#3fa9f5"
#: Colour of the nodule-mask overlay.
MASK_COLOR = "red"
#: Colour of the annotated-nodule circles.
NODULE_COLOR = "yellow"
#: Colour of the lines where the other planes cut a view.
CUT_COLOR = "cyan"
#: Colours of label values 1, 2, 3, ... (label ``v`` gets ``LABEL_COLORS[(v - 1) % 10]``):
#: distinct hues, none grey (the scan), yellow (nodule circles) or cyan (plane cuts).
LABEL_COLORS = (
    "#e6194b",  # red
    "#3cb44b",  # green
    "#4363d8",  # blue
    "#f58231",  # orange
    "#911eb4",  # purple
    "#f032e6",  # magenta
    "#bfef45",  # lime
    "#469990",  # teal
    "#9a6324",  # brown
    "#fabed4",  # pink
)
#: Opacity of a label map's colours.
LABEL_ALPHA = 0.5
#: Opacity of a probability of 1 in the heat overlay (0 is transparent).
PROBABILITY_ALPHA = 0.6
#: The most labels a legend lists (the rest are counted in a last entry).
LEGEND_MAX = 24


def label_color(value: float) -> str:
    """Return the colour of label ``value``: a fixed palette, wrapping after 10 labels.

    Parameters
    ----------
    value : int
        A label value (whole number; 0 is background and not drawn).

    Returns
    -------
    str
        A hex colour of :data:`LABEL_COLORS`.

    Examples
    --------
    >>> label_color(1), label_color(5), label_color(11) == label_color(1)
    ('#e6194b', '#911eb4', True)
    """
    return LABEL_COLORS[(int(value) - 1) % len(LABEL_COLORS)]


def legend_handles(info: MaskLabels) -> list[Any]:
    """Return matplotlib legend handles for a mask: one per label, or the probability keys.

    A binary mask gets an entry only when its label 1 has a name.

    Examples
    --------
    >>> [h.get_label() for h in legend_handles(MaskLabels("labels", (1, 2, 5), {2: "lung"}))]
    ['1', '2: lung', '5']
    """
    if info.kind == "probabilities":
        return [
            Patch(facecolor=MASK_COLOR, alpha=PROBABILITY_ALPHA, label="probability (opacity)"),
            Line2D([], [], color=MASK_COLOR, lw=1.5, label="probability 0.5"),
        ]
    if info.kind == "binary":
        if not info.values or 1 not in info.names:
            return []
        return [Patch(facecolor=MASK_COLOR, alpha=0.45, label=info.text(1))]
    shown = info.values[:LEGEND_MAX]
    out: list[Any] = [
        Patch(facecolor=label_color(v), alpha=LABEL_ALPHA, label=info.text(v)) for v in shown
    ]
    if len(info.values) > len(shown):
        more = len(info.values) - len(shown)
        out.append(Patch(facecolor="none", edgecolor="none", label=f"... {more} more labels"))
    return out


_VIEWS = {
    # name: (fixed axis, vertical axis, horizontal axis, imshow origin)
    "axial": (0, 1, 2, "upper"),
    "coronal": (1, 0, 2, "lower"),
    "sagittal": (2, 0, 1, "lower"),
}
_AXIS_NAMES = ("z", "y", "x")


def _extent(d: Display, vert: int, horiz: int, origin: str) -> tuple[float, float, float, float]:
    """Return imshow's ``extent`` of a view (outer voxel faces, display coordinates)."""
    h0, h1 = d.limits(horiz)
    v0, v1 = d.limits(vert)
    # "upper": row 0 at the top (y grows downwards: anterior up); "lower": row 0 at the bottom
    return (h0, h1, v1, v0) if origin == "upper" else (h0, h1, v0, v1)


def _plane(arr: NDArray[Any], axis: int, k: int) -> NDArray[Any]:
    """Return slice ``k`` of ``arr`` along ``axis``."""
    plane: NDArray[Any] = np.take(arr, k, axis=axis)  # numpy types a scalar take as Any
    return plane


def overlay(ax: Any, plane: NDArray[Any], color: str, alpha: float, **kw: Any) -> None:
    """Draw the nonzero voxels of a 2-D ``plane`` in one translucent ``color`` on ``ax``.

    Parameters
    ----------
    ax : matplotlib Axes
        Where to draw.
    plane : ndarray (rows, columns)
        A mask slice; nothing is drawn when it is all zero.
    color : str
        A matplotlib colour.
    alpha : float
        Opacity.
    **kw
        Passed to ``ax.imshow`` (``extent``, ``origin``).
    """
    if not plane.any():
        return
    ax.imshow(
        np.ma.masked_where(plane == 0, np.ones(plane.shape, np.uint8)),
        cmap=ListedColormap([color]),
        alpha=alpha,
        interpolation="nearest",
        **kw,
    )


def draw_mask(ax: Any, plane: NDArray[Any], info: MaskLabels | None, **kw: Any) -> None:
    """Draw a 2-D mask ``plane`` as ``info`` says: binary, one colour per label, probabilities.

    Parameters
    ----------
    ax : matplotlib Axes
        Where to draw.
    plane : ndarray (rows, columns)
        A slice (or slab maximum) of the mask.
    info : MaskLabels or None
        What the whole mask holds (:func:`describe_mask`); None: binary.
    **kw
        Passed to ``ax.imshow`` / ``ax.contour`` (``extent``, ``origin``).

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> ax = Figure().add_subplot()
    >>> draw_mask(ax, np.array([[0, 2], [5, 5]], np.uint8), describe_mask(np.array([2, 5])))
    >>> ax.images[0].get_array().tolist()  # label values, 0 masked out
    [[None, 2], [5, 5]]
    """
    if info is None or info.kind == "binary":
        overlay(ax, plane, MASK_COLOR, 0.45, **kw)
        return
    if info.kind == "labels":
        if not info.values or not plane.any():
            return
        values = np.asarray(info.values, np.float64)
        bounds = np.concatenate(
            ([values[0] - 0.5], (values[1:] + values[:-1]) / 2, [values[-1] + 0.5])
        )
        ax.imshow(
            np.ma.masked_equal(plane, 0),
            cmap=ListedColormap([label_color(v) for v in info.values]),
            norm=BoundaryNorm(bounds, len(info.values)),
            alpha=LABEL_ALPHA,
            interpolation="nearest",
            **kw,
        )
        return
    p = np.asarray(plane, np.float64)
    if not np.any(p > 0):
        return
    red = to_rgba(MASK_COLOR)
    heat = LinearSegmentedColormap.from_list(
        "probability", [(*red[:3], 0.0), (*red[:3], PROBABILITY_ALPHA)]
    )
    ax.imshow(
        np.ma.masked_equal(p, 0.0), cmap=heat, vmin=0.0, vmax=1.0, interpolation="nearest", **kw
    )
    if p.max() > 0.5 and p.min() < 0.5:
        ax.contour(p, levels=[0.5], colors=[MASK_COLOR], linewidths=1.5, **kw)


def draw_panel(
    ax: Any,
    d: Display,
    view: str,
    center: NDArray[np.float64],
    window: tuple[float, float] | None,
    *,
    mip_mm: float | None = None,
    cuts: bool = True,
) -> None:
    """Draw one view through ``center`` (display frame) into ``ax``.

    Parameters
    ----------
    ax : matplotlib Axes
        Where to draw.
    d : Display
        The volumes in the display frame.
    view : {"axial", "coronal", "sagittal"}
        The plane.
    center : ndarray of 3 float
        Display coordinates (z, y, x) the planes go through.
    window : (lo, hi) or None
        Grey-level range.
    mip_mm : float, optional
        Draw a maximum intensity projection over a slab this thick (display units) instead
        of a slice.
    cuts : bool, default True
        Draw the lines where the other two planes cut this one.
    """
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
        overlay(ax, lungs, LUNG_COLOR, 0.3, **kw)
    if masks is not None:
        draw_mask(ax, masks, d.mask_labels, **kw)
    for row in d.nodules:
        r = row[3] / 2
        dist = max(abs(row[fixed] - plane_coord) - half, 0.0)
        if dist >= r:
            continue
        radius = float(np.sqrt(r * r - dist * dist))
        xy = (float(row[horiz]), float(row[vert]))
        ax.add_patch(Circle(xy, radius, fill=False, color=NODULE_COLOR, lw=1.3, ls="--"))
    if cuts and mip_mm is None:
        ax.axhline(float(center[vert]), color=CUT_COLOR, lw=0.6, alpha=0.5)
        ax.axvline(float(center[horiz]), color=CUT_COLOR, lw=0.6, alpha=0.5)
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
