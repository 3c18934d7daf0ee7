"""The anatomy of a synthetic chest CT phantom, drawn slab by slab in int16.

:class:`Phantom` lays out an elliptic body with a subcutaneous fat layer, a ring of ribs, a
spine with discs, two ellipsoidal lungs with branching vessels, and spherical nodules strictly
inside the lungs, in fractions of the field of view (so it fits any shape and spacing), then adds
gaussian noise. Every position is in *phantom mm* (voxel index x spacing, (z, y, x));
:func:`ctflow.synthetic.make_phantom` maps them to world coordinates through the scan's
geometry. Building is slab-wise int16: no float volume is ever allocated.

Tissue levels are :data:`TISSUE_HU`, the noise :data:`NOISE_SIGMA_HU`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["NOISE_SIGMA_HU", "TISSUE_HU", "Ellipsoid", "Phantom"]

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

_NODULE_EDGE_MM = 1.0  # width of the soft nodule border (linear ramp to the background)
_FAT_FROM = 0.93  # body normalised radius where subcutaneous fat starts
_RIB_RING = (0.82, 0.89)  # body normalised radii of the rib ring
_RIB_PERIOD_MM, _RIB_THICK_MM, _RIB_SLOPE = 26.0, 9.0, -1.0
_MAX_VESSEL_SEGMENTS = 400  # per lung
_VERTEBRA_PERIOD_MM, _DISC_THICK_MM = 30.0, 6.0


@dataclass(frozen=True)
class Ellipsoid:
    """An axis-aligned ellipsoid in phantom mm (voxel index x spacing), (z, y, x).

    Attributes
    ----------
    center : ndarray of 3 float64
        Centre, phantom mm.
    semi : ndarray of 3 float64
        Semi-axes, mm.

    Examples
    --------
    >>> Ellipsoid(np.zeros(3), np.array([2.0, 1.0, 1.0])).rho(np.array([1.0, 0.0, 0.0]))
    0.5
    """

    center: NDArray[np.float64]
    semi: NDArray[np.float64]

    def rho(self, p: NDArray[np.float64]) -> float:
        """Return the normalised radius of point ``p`` (< 1 inside, 1 on the surface)."""
        return float(np.sqrt(np.sum(((p - self.center) / self.semi) ** 2)))

    def as_dict(self) -> dict[str, list[float]]:
        """Return ``{"center_mm": [...], "semi_axes_mm": [...]}`` (plain lists, for JSON)."""
        return {"center_mm": self.center.tolist(), "semi_axes_mm": self.semi.tolist()}


def _axis_mm(lo: int, hi: int, step: float) -> NDArray[np.float32]:
    """Phantom mm (float32) of voxel indices ``lo .. hi - 1`` along an axis of ``step`` mm."""
    return (np.arange(lo, hi, dtype=np.float64) * step).astype(np.float32)


def _box(
    lo_mm: NDArray[np.float64], hi_mm: NDArray[np.float64], sp: NDArray[np.float64], shape: Any
) -> tuple[slice, slice, slice] | None:
    """Voxel box covering ``[lo_mm, hi_mm]`` clipped to ``shape``; None when empty."""
    lo = np.maximum(np.floor(lo_mm / sp).astype(np.int64), 0)
    hi = np.minimum(np.ceil(hi_mm / sp).astype(np.int64) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))


def _grid(box: tuple[slice, slice, slice], sp: NDArray[np.float64]) -> list[NDArray[np.float32]]:
    """Open (broadcastable) grid of the phantom mm of the voxels of ``box``."""
    z = _axis_mm(box[0].start, box[0].stop, sp[0])[:, None, None]
    y = _axis_mm(box[1].start, box[1].stop, sp[1])[None, :, None]
    x = _axis_mm(box[2].start, box[2].stop, sp[2])[None, None, :]
    return [z, y, x]


def _inside(lung: Ellipsoid, g: list[NDArray[np.float32]]) -> NDArray[np.bool_]:
    """Which points of the grid ``g`` lie inside ``lung`` (float32 arithmetic)."""
    c = lung.center.astype(np.float32)
    s = lung.semi.astype(np.float32)
    q = ((g[0] - c[0]) / s[0]) ** 2 + ((g[1] - c[1]) / s[1]) ** 2 + ((g[2] - c[2]) / s[2]) ** 2
    return np.asarray(q <= 1.0)


class Phantom:
    """The anatomy of one phantom (drawn from ``rng``) and its slab-wise renderer.

    The body, lungs, spine and rib phase are drawn at construction (in that order, from
    ``rng``); :meth:`render` draws the static anatomy, then :meth:`vessels`,
    :meth:`paint_vessels`, :meth:`nodules`, :meth:`paint_nodules` and :meth:`add_noise` are
    applied in that order (the order of the random draws that make a phantom reproducible).

    Parameters
    ----------
    shape : 3 ints
        (Z, Y, X) voxels.
    sp : ndarray of 3 float64
        Spacing (z, y, x), mm.
    rng : numpy.random.Generator
        Source of the anatomy's randomness.

    Examples
    --------
    >>> ph = Phantom((8, 32, 32), np.array([2.0, 1.0, 1.0]), np.random.default_rng(0))
    >>> vol = ph.render()
    >>> vol.dtype.name, int(vol[4, 0, 0]), int(vol[4, 16, 9])   # air; inside the left lung
    ('int16', -1000, -850)
    """

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
            lungs.append(Ellipsoid(center, semi))
        self.lungs = lungs
        self.spine_center = np.array([c[1] + 0.2 * ext[1], c[2]])  # (y, x)
        self.spine_radius = 0.055 * min(ext[1], ext[2])
        self.rib_phase = rng.uniform(0, _RIB_PERIOD_MM)
        self.vertebra_phase = rng.uniform(0, _VERTEBRA_PERIOD_MM)

    # -- the static anatomy, one z slice at a time ---------------------------------------------
    def render(self) -> NDArray[np.int16]:
        """Draw the static anatomy (body, fat, ribs, spine, lungs) one z slice at a time.

        Returns
        -------
        ndarray of int16, shape ``shape``
            HU, noise-free, without vessels or nodules.
        """
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
        """Draw the vessel trees: branching random walks from each hilum.

        Returns
        -------
        list of (a, b, radius, lung)
            Segments from ``a`` to ``b`` (phantom mm) of ``radius`` mm in lung ``lung``.
        """
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
        """Paint vessel segments into ``vol``, clipped to their lung (in place)."""
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
    def nodules(
        self, diameters: NDArray[np.float64], rng: np.random.Generator, min_diameter: float = 3.0
    ) -> list[tuple[Any, float, float]]:
        """Place spherical nodules strictly inside the lungs.

        Parameters
        ----------
        diameters : ndarray of float
            Wanted diameters, mm; a nodule is shrunk to fit its lung, and left out when even
            ``min_diameter`` does not fit.
        rng : numpy.random.Generator
            Draws the lung, position and HU of each nodule.
        min_diameter : float, default 3.0
            Smallest diameter placed, mm.

        Returns
        -------
        list of (centre, radius, hu)
            Centre in phantom mm, radius mm, nodule HU.
        """
        margin = _NODULE_EDGE_MM / 2 + float(self.sp.max())
        placed: list[tuple[Any, float, float]] = []
        for d in diameters:
            lung = self.lungs[int(rng.integers(len(self.lungs)))]
            min_axis = float(lung.semi.min())
            r = min(float(d) / 2, min_axis - margin)
            if r < min_diameter / 2:
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
        """Paint nodules into ``vol`` with a soft 1 mm border (in place)."""
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
        """Add gaussian noise of :data:`NOISE_SIGMA_HU`, one float32 slice at a time (in place).

        Values are rounded to int16 and floored at -1024 HU.
        """
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

    def describe(self) -> dict[str, Any]:
        """Return the anatomy in phantom mm (plain Python, for ``Scan.info["phantom"]``).

        Returns
        -------
        dict
            ``body`` (centre and semi-axes in (y, x), where fat starts, the rib ring), ``lungs``
            (:meth:`Ellipsoid.as_dict` of each) and ``spine`` (centre in (y, x), radius).
        """
        return {
            "body": {
                "center_mm": self.c[1:].tolist(),
                "semi_axes_mm": self.body_semi.tolist(),
                "fat_from": _FAT_FROM,
                "rib_ring": list(_RIB_RING),
            },
            "lungs": [lung.as_dict() for lung in self.lungs],
            "spine": {"center_mm": self.spine_center.tolist(), "radius_mm": self.spine_radius},
        }
