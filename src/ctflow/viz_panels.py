"""The drawing behind :mod:`ctflow.viz`: the display frame, overlays and one view panel.

:func:`display_frame` turns images, overlays, a geometry and nodules into a :class:`Display`
whose voxel axes run along +z, +y, +x of the frame the pictures are drawn in (world LPS mm for
axis-aligned scans, voxel axes otherwise); :func:`draw_panel` draws one axial, coronal or
sagittal view (a slice or a MIP slab) with lungs, masks and nodule circles on a matplotlib
Axes.

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

from collections.abc import Mapping
from dataclasses import dataclass, field
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

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.validation import check_geometry

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


@dataclass(frozen=True)
class MaskLabels:
    """What a mask holds, which decides how it is drawn (see the module docstring).

    Attributes
    ----------
    kind : {"binary", "labels", "probabilities"}
        How the mask is drawn.
    values : tuple of int
        The nonzero labels present (``(1,)`` for a non-empty binary mask; empty for
        probabilities).
    names : mapping of int to str
        Names the user gave to label values, shown in the legend.
    counts : tuple of int
        Voxels of each label of ``values``.
    """

    kind: str
    values: tuple[int, ...] = ()
    names: Mapping[int, str] = field(default_factory=dict)
    counts: tuple[int, ...] = ()

    @property
    def rarest(self) -> int | None:
        """Return the label with the fewest voxels (the first of them on a tie), or None."""
        if not self.values:
            return None
        return self.values[int(np.argmin(self.counts))]

    def text(self, value: int) -> str:
        """Return the legend text of label ``value``: ``"2: lung"``, or ``"2"`` unnamed."""
        name = self.names.get(value)
        return f"{value}: {name}" if name else str(value)


def check_label_names(names: Any) -> dict[int, str]:
    """Return ``{label value: name}`` from a mapping of whole numbers to strings.

    Raises
    ------
    InvalidParameterError
        Not a mapping, a key that is not a whole number, a name that is not a string.

    Examples
    --------
    >>> check_label_names({1: "body", "2": "lung"})
    {1: 'body', 2: 'lung'}
    """
    if names is None:
        return {}
    if not isinstance(names, Mapping):
        raise InvalidParameterError(
            f"viz: label_names must map label values to names, e.g. {{1: 'body', 2: 'lung'}}; "
            f"got {type(names).__name__}"
        )
    out: dict[int, str] = {}
    for key, name in names.items():
        try:
            value = int(key)
            whole = float(key) == value
        except (TypeError, ValueError):
            whole = False
        if not whole or not isinstance(name, str):
            raise InvalidParameterError(
                f"viz: label_names must map whole-number label values to strings; "
                f"got {key!r}: {name!r}"
            )
        out[value] = name
    return out


def describe_mask(masks: NDArray[Any], label_names: Any = None) -> MaskLabels:
    """Return whether ``masks`` is binary, a label map or probabilities, and its labels.

    Parameters
    ----------
    masks : ndarray
        Any dtype: bool, integers, or floats (whole-number floats are labels).
    label_names : mapping of int to str, optional
        Names of label values.

    Returns
    -------
    MaskLabels

    Raises
    ------
    InvalidParameterError
        Floats that are neither whole numbers nor probabilities in [0, 1] (NaN, logits).

    Examples
    --------
    >>> describe_mask(np.array([0, 2, 5, 2], np.uint8))
    MaskLabels(kind='labels', values=(2, 5), names={}, counts=(2, 1))
    >>> describe_mask(np.array([0.0, 0.3, 0.9], np.float32)).kind
    'probabilities'
    >>> describe_mask(np.array([0, 1], np.int16)).kind
    'binary'
    """
    names = check_label_names(label_names)
    arr = np.asarray(masks)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.all(np.isfinite(arr)):
            raise InvalidParameterError("viz: masks hold NaN or infinite values")
        if not np.array_equal(arr, np.round(arr)):
            lo, hi = float(arr.min()), float(arr.max())
            if lo < 0 or hi > 1:
                raise InvalidParameterError(
                    f"viz: float masks must be probabilities in [0, 1] or whole-number labels; "
                    f"got values {lo:g}..{hi:g}"
                )
            return MaskLabels("probabilities", (), names)
    if arr.dtype in (np.uint8, np.uint16):
        bins = np.bincount(arr.ravel(), minlength=2)
        values = np.flatnonzero(bins)
        counts = bins[values]
    else:
        values, counts = np.unique(arr, return_counts=True)
    keep = values != 0
    labels = tuple(int(v) for v in values[keep].tolist())
    kind = "binary" if set(labels) <= {1} else "labels"
    return MaskLabels(kind, labels, names, tuple(int(n) for n in counts[keep].tolist()))


def mask_focus(masks: NDArray[Any], info: MaskLabels | None) -> NDArray[np.bool_]:
    """Return the voxels a picture of ``masks`` centres on.

    A binary mask's voxels; a label map's rarest label (the smallest structure: a lesion
    among organs); probabilities of at least 0.5 (any nonzero when none reaches it).

    Examples
    --------
    >>> m = np.array([1, 1, 5, 2, 2], np.uint8)
    >>> mask_focus(m, describe_mask(m)).tolist()
    [False, False, True, False, False]
    """
    if info is not None and info.kind == "labels" and info.rarest is not None:
        return np.asarray(masks == info.rarest)
    if info is not None and info.kind == "probabilities":
        sure = np.asarray(masks >= 0.5)
        if sure.any():
            return sure
    return np.asarray(masks != 0)


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
    return np.take(arr, k, axis=axis)


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
