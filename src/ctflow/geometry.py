"""Scan geometry: spacing, origin and direction, and the voxel <-> world mapping.

Conventions (used everywhere in ctflow)
---------------------------------------
* Arrays are indexed ``(z, y, x)``; every geometry vector is ordered ``(z, y, x)`` too.
* World coordinates are ITK/DICOM **LPS patient coordinates in millimetres** — the numbers
  SimpleITK's ``TransformIndexToPhysicalPoint`` returns — but ordered ``(z, y, x)``.
* ``origin`` is the world position of the *centre* of voxel ``(0, 0, 0)``.
* ``direction`` is a 3x3 matrix whose column ``j`` is the world unit vector of voxel axis ``j``
  (all in ``(z, y, x)`` order). It is SimpleITK's direction matrix with rows and columns
  reversed.  Then, for a voxel index ``v`` (continuous allowed)::

      world = origin + direction @ (spacing * v)

Geometry vectors are small, so they are float64; volumes never are.

Examples
--------
>>> import numpy as np
>>> g = Geometry(spacing=(2.5, 0.7, 0.7), origin=(-300.0, -180.0, -170.0))
>>> g.voxel_to_world(np.array([[1, 0, 10]]))
array([[-297.5, -180. , -163. ]])
>>> g.world_to_voxel(g.voxel_to_world(np.array([[4.0, 5.0, 6.0]])))
array([[4., 5., 6.]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError

__all__ = [
    "Geometry",
    "as_shape",
    "as_spacing",
    "direction_from_sitk",
    "direction_to_sitk",
]

_ORTHO_TOL = 1e-4
_EYE = np.eye(3)


def as_spacing(value: ArrayLike, *, what: str = "spacing", where: str = "") -> NDArray[np.float64]:
    """Validate a (z, y, x) spacing: 3 finite positive floats (a scalar is broadcast).

    Examples
    --------
    >>> as_spacing(1.0)
    array([1., 1., 1.])
    """
    prefix = f"{where}: " if where else ""
    try:
        arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (3,)).copy()
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"{prefix}{what} must be 3 positive floats (z, y, x) in mm; got {value!r}"
        ) from None
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InvalidParameterError(
            f"{prefix}{what} must be 3 positive floats (z, y, x) in mm; got {tuple(arr.tolist())}"
        )
    return arr


def as_shape(value: ArrayLike, *, what: str = "shape", where: str = "") -> tuple[int, int, int]:
    """Validate a (z, y, x) shape: 3 positive integers (a scalar is broadcast).

    Examples
    --------
    >>> as_shape((32, 64, 64))
    (32, 64, 64)
    """
    prefix = f"{where}: " if where else ""
    try:
        raw = np.broadcast_to(np.asarray(value), (3,))
        ints = np.asarray(raw, dtype=np.int64)
        ok = bool(np.all(ints == raw)) and bool(np.all(ints > 0))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(
            f"{prefix}{what} must be 3 positive integers (z, y, x); got {value!r}"
        )
    return (int(ints[0]), int(ints[1]), int(ints[2]))


def _as_vector(value: ArrayLike, what: str) -> NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise InvalidScanError(f"{what} must be 3 finite floats (z, y, x); got {value!r}")
    return arr


def _as_direction(value: ArrayLike | None) -> NDArray[np.float64]:
    if value is None:
        return np.eye(3)
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == (9,):
        arr = arr.reshape(3, 3)
    if arr.shape != (3, 3) or not np.all(np.isfinite(arr)):
        raise InvalidScanError(f"direction must be a finite 3x3 matrix; got {value!r}")
    # |D^T D - I| within allclose's tolerance (atol + rtol * |I|), without allclose's overhead:
    # a Geometry is built for every item of every action
    if not np.all(np.abs(arr.T @ arr - _EYE) <= _ORTHO_TOL + 1e-5 * _EYE):
        raise InvalidScanError(
            f"direction must be orthonormal (axis cosines); got {arr.round(6).tolist()}"
        )
    return arr


def direction_from_sitk(direction_xyz: Sequence[float]) -> NDArray[np.float64]:
    """Convert SimpleITK's row-major (x, y, z) direction tuple to ctflow's (z, y, x) matrix.

    Examples
    --------
    >>> direction_from_sitk((1, 0, 0, 0, 1, 0, 0, 0, 1))
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    """
    d = np.asarray(direction_xyz, dtype=np.float64).reshape(3, 3)
    return d[::-1, ::-1].copy()


def direction_to_sitk(direction_zyx: ArrayLike) -> tuple[float, ...]:
    """Convert ctflow's (z, y, x) direction matrix to SimpleITK's row-major (x, y, z) tuple.

    Examples
    --------
    >>> direction_to_sitk(np.eye(3))
    (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    """
    d = np.asarray(direction_zyx, dtype=np.float64).reshape(3, 3)
    return tuple(float(v) for v in d[::-1, ::-1].ravel())


@dataclass(frozen=True)
class Geometry:
    """Spacing, origin and direction of one scan, all in (z, y, x) order, world LPS mm.

    Parameters
    ----------
    spacing : array_like of 3 floats
        Distance between voxel centres along (z, y, x), mm; all > 0.
    origin : array_like of 3 floats, default (0, 0, 0)
        World position of the centre of voxel (0, 0, 0), mm.
    direction : array_like (3, 3), optional
        Column j = world unit vector of voxel axis j; identity if omitted.

    Examples
    --------
    >>> g = Geometry((1.0, 0.5, 0.5), (10.0, 0.0, 0.0))
    >>> g.shifted((2, 0, 0)).origin
    array([12.,  0.,  0.])
    """

    spacing: NDArray[np.float64]
    origin: NDArray[np.float64] = field(default_factory=lambda: np.zeros(3))
    direction: NDArray[np.float64] = field(default_factory=lambda: np.eye(3))

    def __init__(
        self,
        spacing: ArrayLike,
        origin: ArrayLike = (0.0, 0.0, 0.0),
        direction: ArrayLike | None = None,
    ) -> None:
        sp = np.asarray(spacing, dtype=np.float64)
        if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise InvalidScanError(
                f"spacing must be 3 positive finite floats (z, y, x) in mm; got {spacing!r}"
            )
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "origin", _as_vector(origin, "origin"))
        object.__setattr__(self, "direction", _as_direction(direction))

    # -- mapping -----------------------------------------------------------------------------
    @property
    def affine(self) -> NDArray[np.float64]:
        """4x4 matrix mapping homogeneous (z, y, x, 1) voxel indices to world (z, y, x, 1)."""
        a = np.eye(4)
        a[:3, :3] = self.direction * self.spacing[None, :]
        a[:3, 3] = self.origin
        return a

    def voxel_to_world(self, zyx: ArrayLike) -> NDArray[np.float64]:
        """Map voxel indices (N, 3) or (3,) (continuous allowed) to world mm, (z, y, x)."""
        v = np.asarray(zyx, dtype=np.float64)
        return self.origin + (v * self.spacing) @ self.direction.T

    def world_to_voxel(self, zyx: ArrayLike) -> NDArray[np.float64]:
        """Map world mm (N, 3) or (3,) to continuous voxel indices (z, y, x)."""
        w = np.asarray(zyx, dtype=np.float64)
        return ((w - self.origin) @ self.direction) / self.spacing

    # -- derived geometries ------------------------------------------------------------------
    def shifted(self, start: ArrayLike) -> Geometry:
        """Geometry of a sub-volume whose voxel (0, 0, 0) is this one's voxel ``start``.

        ``start`` may be negative (padding before) or fractional.
        """
        origin = self.voxel_to_world(np.asarray(start, dtype=np.float64))
        return Geometry(self.spacing, origin, self.direction)

    def resampled(
        self, old_shape: Sequence[int], new_shape: Sequence[int], new_spacing: ArrayLike
    ) -> Geometry:
        """Geometry of a grid of ``new_shape`` x ``new_spacing`` sharing this grid's centre.

        The centre of the field of view is kept, so a world point keeps pointing at the same
        anatomy; the direction is unchanged. This is the convention of every ctflow resampling
        action (``resize``, ``unify_spacing``): new voxel ``k`` sits at old continuous index
        ``c_old + (k - c_new) * new_spacing / old_spacing`` with ``c = (n - 1) / 2``.
        """
        new_sp = np.asarray(new_spacing, dtype=np.float64)
        c_old = (np.asarray(old_shape, dtype=np.float64) - 1) / 2
        c_new = (np.asarray(new_shape, dtype=np.float64) - 1) / 2
        start = c_old - c_new * new_sp / self.spacing
        origin = self.voxel_to_world(start)
        return Geometry(new_sp, origin, self.direction)

    def rotated(self, shape: Sequence[int], angle_deg: float, axes: Sequence[int]) -> Geometry:
        """Geometry of a rotated volume under which the anatomy keeps its world position.

        :func:`ctflow.ops.spatial.rotate` (given this geometry's ``spacing``) moves the content
        of the plane ``axes`` by ``angle_deg`` about the plane's centre ``c = (n - 1) / 2`` on a
        fixed grid: output voxel ``o`` takes input voxel ``i = c + M (o - c)``, with
        ``M = S⁻¹ R S`` (``S`` the spacing, ``R`` the voxel-space rotation, both embedded in
        3x3), which is a rotation by ``angle_deg`` in millimetres; ``M = R`` when the plane's
        two spacings agree (to a relative 1e-6, as in ``rotate``). The world position of that
        anatomy is ``O + D S i = O + D S (c - M c) + D S M o``, so the output gets

        * origin ``O' = O + D S (c - M c)`` (the world position of index ``c - M c``),
        * direction ``D' = D S M S⁻¹ = D R``, orthonormal for any spacing,
        * the same spacing,

        and every output voxel's world position is that of the anatomy it shows: nodule tables
        and world-mm masks stay valid.

        Examples
        --------
        >>> g = Geometry((1.0, 1.0, 1.0)).rotated((1, 5, 5), 90, (1, 2))
        >>> bool(np.allclose(g.voxel_to_world((0, 2, 4)), (0, 4, 2)))  # shows old voxel (0, 4, 2)
        True

        On 0.5 x 1.0 mm pixels, output (0, 0, 2) shows old voxel (0, 4, 4), 2 mm right of the
        centre (see :func:`ctflow.ops.spatial.rotate`):

        >>> g0 = Geometry((1.0, 0.5, 1.0))
        >>> g = g0.rotated((1, 9, 5), 90, (1, 2))
        >>> bool(np.allclose(g.voxel_to_world((0, 0, 2)), g0.voxel_to_world((0, 4, 4))))
        True
        >>> bool(np.allclose(g.direction.T @ g.direction, np.eye(3)))
        True
        """
        a, b = sorted(int(v) % 3 for v in axes)
        if a == b:
            raise InvalidParameterError(f"rotated: axes must be two different axes; got {axes!r}")
        sp = self.spacing
        t = np.deg2rad(float(angle_deg))
        cos_t, sin_t = np.cos(t), np.sin(t)
        m = np.eye(3)  # M = S⁻¹ R S; M = R if the plane's spacings agree (rotate's tolerance)
        m[a, a], m[b, b] = cos_t, cos_t
        if abs(sp[a] - sp[b]) <= 1e-6 * max(sp[a], sp[b]):
            m[a, b], m[b, a] = sin_t, -sin_t
        else:
            m[a, b], m[b, a] = sin_t * (sp[b] / sp[a]), -sin_t * (sp[a] / sp[b])
        c = (np.asarray(shape, dtype=np.float64) - 1) / 2
        origin = self.voxel_to_world(c - m @ c)
        direction = self.direction @ (sp[:, None] * m / sp[None, :])
        # D S M S⁻¹ = D R up to rounding (and up to the spacing mismatch tolerated above):
        # snap it to the nearest orthonormal matrix
        u, _, vt = np.linalg.svd(direction)
        return Geometry(sp, origin, u @ vt)

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists) for JSON."""
        return {
            "spacing": self.spacing.tolist(),
            "origin": self.origin.tolist(),
            "direction": self.direction.tolist(),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Geometry):
            return NotImplemented
        return (
            np.array_equal(self.spacing, other.spacing)
            and np.array_equal(self.origin, other.origin)
            and np.array_equal(self.direction, other.direction)
        )

    def __hash__(self) -> int:
        return hash((self.spacing.tobytes(), self.origin.tobytes(), self.direction.tobytes()))

    def __repr__(self) -> str:
        sp = ", ".join(f"{v:g}" for v in self.spacing)
        org = ", ".join(f"{v:g}" for v in self.origin)
        ident = np.allclose(self.direction, np.eye(3))
        d = "identity" if ident else str(self.direction.round(4).tolist())
        return f"Geometry(spacing=({sp}), origin=({org}), direction={d})"
