"""One LUNA16-like synthetic chest CT phantom: the scan, its nodule table and its label map.

:func:`make_phantom` builds one int16 HU volume (the anatomy of
:class:`ctflow.synthetic_anatomy.Phantom`, nodules drawn from :mod:`ctflow.synthetic_stats`)
with a geometry and a LUNA16 annotations table in world LPS mm; :func:`phantom_labels` gives
its ground-truth label map. :func:`ctflow.synthetic.make_dataset` writes such phantoms to
files; every name here is also importable from :mod:`ctflow.synthetic`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.io.scan import Scan
from ctflow.synthetic_anatomy import Phantom
from ctflow.synthetic_stats import (
    NODULE_DIAMETER_BINS_MM,
    as_generator,
    sample_nodule_counts,
    sample_nodule_diameters,
)
from ctflow.validation import as_int, as_shape, as_spacing

__all__ = ["ANNOTATION_COLUMNS", "PHANTOM_LABELS", "make_phantom", "phantom_labels"]

#: Columns of a LUNA16 annotations table.
ANNOTATION_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]

_UID_ROOT = "1.3.6.1.4.1.14519.5.2.1.6279.6001."  # the LIDC-IDRI / LUNA16 UID root
_MIN_SHAPE = (4, 16, 16)


def _series_uid(rng: np.random.Generator) -> str:
    """Draw a LUNA16-like series UID (the LIDC-IDRI root and 30 random digits)."""
    a = int(rng.integers(10**14, 10**15))
    b = int(rng.integers(0, 10**15))
    return f"{_UID_ROOT}{a}{b:015d}"


def make_phantom(
    shape: ArrayLike = (120, 256, 256),
    spacing: ArrayLike = (1.25, 0.7, 0.7),
    origin: ArrayLike | None = None,
    n_nodules: int | None = None,
    *,
    seed: int | np.random.Generator = 0,
    direction: ArrayLike | None = None,
) -> tuple[Scan, pd.DataFrame]:
    """Make one LUNA16-like chest CT phantom and its nodule annotations.

    Parameters
    ----------
    shape : 3 ints
        (Z, Y, X) voxels; at least (4, 16, 16).
    spacing : 3 floats
        (z, y, x) mm.
    origin : 3 floats, optional
        World (z, y, x) mm of voxel (0, 0, 0); drawn LUNA-like (z in [-300, -100], y and x in
        [-200, -150]) when omitted.
    n_nodules : int, optional
        Number of nodules; drawn from :data:`NODULES_PER_SCAN_COUNTS` when omitted. A nodule
        that cannot fit in the lungs of a tiny volume (< 3 mm) is left out.
    seed : int or numpy.random.Generator
        Everything is drawn from it: same seed, same phantom and table.
    direction : (3, 3) array_like, optional
        Direction matrix in (z, y, x) (see :class:`~ctflow.geometry.Geometry`); identity when
        omitted. The voxels are laid out the same; only the world mapping changes.

    Returns
    -------
    scan : Scan
        int16 HU ``images``, ``geometry``, ``info`` with ``seriesuid``, ``phantom`` (the
        anatomy in phantom mm = voxel index x spacing: ``body``, ``lungs``, ``spine``) and
        ``nodules`` (centre voxel index (z, y, x), diameter mm).
    nodules : pandas.DataFrame
        LUNA16 columns ``seriesuid, coordX, coordY, coordZ, diameter_mm`` (world LPS mm).

    Examples
    --------
    >>> scan, nod = make_phantom((32, 64, 64), (2.0, 0.8, 0.8), n_nodules=1, seed=3)
    >>> centre = scan.geometry.world_to_voxel(nod[["coordZ", "coordY", "coordX"]].to_numpy())
    >>> z, y, x = np.rint(centre[0]).astype(int)
    >>> bool(scan.images[z, y, x] > -300)
    True
    """
    shp = as_shape(shape, where="make_phantom")
    if any(s < m for s, m in zip(shp, _MIN_SHAPE)):
        raise InvalidParameterError(f"make_phantom: shape must be at least {_MIN_SHAPE}; got {shp}")
    sp = np.asarray(as_spacing(spacing, where="make_phantom"))
    rng = as_generator(seed, "make_phantom")
    if n_nodules is not None:
        n_nodules = as_int(n_nodules, "n_nodules", "make_phantom", lo=0)
    uid = _series_uid(rng)
    if origin is None:
        origin = (rng.uniform(-300, -100), rng.uniform(-200, -150), rng.uniform(-200, -150))
    try:
        geometry = Geometry(sp, origin, direction)
    except InvalidScanError as exc:
        raise InvalidParameterError(f"make_phantom: {exc}") from None
    n = int(sample_nodule_counts(1, seed=rng)[0]) if n_nodules is None else n_nodules

    ph = Phantom(shp, sp, rng)
    vol = ph.render()
    ph.paint_vessels(vol, ph.vessels(rng))
    diameters = sample_nodule_diameters(n, seed=rng)
    placed = ph.nodules(diameters, rng, min_diameter=NODULE_DIAMETER_BINS_MM[0])
    ph.paint_nodules(vol, placed)
    ph.add_noise(vol, rng)

    centres_vox = np.array([c / sp for c, _, _ in placed], np.float64).reshape(-1, 3)
    world = geometry.voxel_to_world(centres_vox).reshape(-1, 3)
    table = pd.DataFrame(
        {
            "seriesuid": [uid] * len(placed),
            "coordX": world[:, 2],
            "coordY": world[:, 1],
            "coordZ": world[:, 0],
            "diameter_mm": [2.0 * r for _, r, _ in placed],
        },
        columns=ANNOTATION_COLUMNS,
    )
    info: dict[str, Any] = {
        "format": "synthetic",
        "seriesuid": uid,
        "phantom": ph.describe(),
        "nodules": [
            {"center_voxel": (c / sp).tolist(), "diameter_mm": 2.0 * r, "hu": v}
            for c, r, v in placed
        ],
    }
    return Scan(vol, geometry, "", info), table


#: The label values of :func:`phantom_labels` and ``make_dataset(labels=True)``.
PHANTOM_LABELS = {0: "background", 1: "body", 2: "right lung", 3: "left lung", 4: "nodule"}


def phantom_labels(scan: Scan) -> NDArray[np.uint8]:
    """Return the ground-truth label map of a phantom made by :func:`make_phantom`.

    Labels (:data:`PHANTOM_LABELS`): 1 body (inside the skin ellipse: fat, muscle, ribs,
    spine), 2 the right lung and 3 the left lung (the ellipsoids the lung HU was drawn in,
    vessels included), 4 nodules (their spheres), 0 outside the body. Drawn from the anatomy
    recorded in ``scan.info`` on the voxel grid as made (phantom mm = voxel index x spacing),
    so it lies on the scan voxel for voxel.

    Examples
    --------
    >>> scan, _ = make_phantom((16, 48, 48), (2.0, 1.0, 1.0), n_nodules=1, seed=2)
    >>> labels = phantom_labels(scan)
    >>> sorted(np.unique(labels).tolist()), int(labels[8, 0, 0])
    ([0, 1, 2, 3, 4], 0)
    >>> bool(np.median(scan.images[labels == 2]) < -700)   # the right lung is lung
    True
    """
    info = scan.info.get("phantom") if isinstance(scan.info, dict) else None
    if not info:
        raise InvalidParameterError("phantom_labels: the scan was not made by make_phantom")
    shape = scan.shape
    sp = scan.geometry.spacing
    z = (np.arange(shape[0]) * sp[0])[:, None, None]
    y = (np.arange(shape[1]) * sp[1])[None, :, None]
    x = (np.arange(shape[2]) * sp[2])[None, None, :]
    body = info["body"]
    (cy, cx), (ay, ax) = body["center_mm"], body["semi_axes_mm"]
    out = np.zeros(shape, np.uint8)
    out[:] = (((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2 <= 1.0)[0]
    for lung in info["lungs"]:
        c, a = np.asarray(lung["center_mm"]), np.asarray(lung["semi_axes_mm"])
        inside = ((z - c[0]) / a[0]) ** 2 + ((y - c[1]) / a[1]) ** 2 + ((x - c[2]) / a[2]) ** 2
        right = c[2] < (shape[2] - 1) / 2 * sp[2]  # low x index: the patient's right (LPS)
        out[inside <= 1.0] = 2 if right else 3
    for nodule in scan.info.get("nodules", []):
        c = np.asarray(nodule["center_voxel"]) * sp
        r = nodule["diameter_mm"] / 2
        out[((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= r * r] = 4
    return out
