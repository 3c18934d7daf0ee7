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

from ctflow import validation
from ctflow.errors import InvalidScanError

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
    """Validate a (z, y, x) spacing and return it as a float64 array.

    The rule is :func:`ctflow.validation.as_spacing`'s: 3 finite positive floats, a scalar
    used for all three axes.

    Parameters
    ----------
    value : float or array_like of 3 floats
        The spacing, mm.
    what, where : str
        Name of the value and of the caller, for the error message.

    Returns
    -------
    ndarray of 3 float64
        A new array.

    Raises
    ------
    InvalidParameterError
        ``value`` is not 3 finite positive floats (or one).

    Examples
    --------
    >>> as_spacing(1.0)
    array([1., 1., 1.])
    """
    return np.array(validation.as_spacing(value, what=what, where=where), dtype=np.float64)


def as_shape(value: ArrayLike, *, what: str = "shape", where: str = "") -> tuple[int, int, int]:
    """Validate a (z, y, x) shape and return it as a tuple of 3 ints.

    The rule is :func:`ctflow.validation.as_shape`'s: 3 positive integers, a scalar used for
    all three axes.

    Parameters
    ----------
    value : int or sequence of 3 ints
        The shape, voxels.
    what, where : str
        Name of the value and of the caller, for the error message.

    Returns
    -------
    tuple of 3 int

    Raises
    ------
    InvalidParameterError
        ``value`` is not 3 positive integers (or one).

    Examples
    --------
    >>> as_shape((32, 64, 64))
    (32, 64, 64)
    """
    return validation.as_shape(value, what=what, where=where)


def _as_vector(value: ArrayLike, what: str) -> NDArray[np.float64]:
    """Return ``value`` as 3 finite float64 (z, y, x); InvalidScanError otherwise."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise InvalidScanError(f"{what} must be 3 finite floats (z, y, x); got {value!r}")
    return arr


def _as_direction(value: ArrayLike | None) -> NDArray[np.float64]:
    """Return a finite orthonormal (3, 3) direction (identity for None; (9,) is reshaped)."""
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

    Parameters
    ----------
    direction_xyz : sequence of 9 floats
        ``image.GetDirection()`` of a SimpleITK image.

    Returns
    -------
    ndarray (3, 3) float64
        The same matrix with rows and columns reversed.

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

    Parameters
    ----------
    direction_zyx : array_like (3, 3) or (9,)
        A ctflow direction matrix.

    Returns
    -------
    tuple of 9 float
        What ``image.SetDirection`` takes.

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

    Raises
    ------
    InvalidScanError
        A spacing that is not 3 positive finite floats, an origin that is not 3 finite floats,
        or a direction that is not a finite orthonormal 3x3 matrix (to 1e-4).

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
        """4x4 matrix mapping homogeneous (z, y, x, 1) voxel indices to world (z, y, x, 1).

        Examples
        --------
        >>> Geometry((2.0, 1.0, 1.0), (5.0, 0.0, 0.0)).affine[0].tolist()
        [2.0, 0.0, 0.0, 5.0]
        """
        a = np.eye(4)
        a[:3, :3] = self.direction * self.spacing[None, :]
        a[:3, 3] = self.origin
        return a

    def voxel_to_world(self, zyx: ArrayLike) -> NDArray[np.float64]:
        """Map voxel indices to world millimetres: ``origin + direction @ (spacing * v)``.

        Parameters
        ----------
        zyx : array_like (N, 3) or (3,)
            Voxel indices (z, y, x); continuous values allowed.

        Returns
        -------
        ndarray, float64, same shape as ``zyx``
            World LPS mm, (z, y, x) order.

        Examples
        --------
        >>> Geometry((2.0, 1.0, 1.0), (5.0, 0.0, 0.0)).voxel_to_world((1, 2, 3)).tolist()
        [7.0, 2.0, 3.0]
        """
        v = np.asarray(zyx, dtype=np.float64)
        return self.origin + (v * self.spacing) @ self.direction.T

    def world_to_voxel(self, zyx: ArrayLike) -> NDArray[np.float64]:
        """Map world millimetres to continuous voxel indices (the inverse of voxel_to_world).

        Parameters
        ----------
        zyx : array_like (N, 3) or (3,)
            World LPS mm, (z, y, x) order.

        Returns
        -------
        ndarray, float64, same shape as ``zyx``
            Continuous voxel indices (z, y, x); round them for the voxel a point falls in.

        Examples
        --------
        >>> Geometry((2.0, 1.0, 1.0), (5.0, 0.0, 0.0)).world_to_voxel((8.0, 2.0, 3.0)).tolist()
        [1.5, 2.0, 3.0]
        """
        w = np.asarray(zyx, dtype=np.float64)
        return ((w - self.origin) @ self.direction) / self.spacing

    # -- derived geometries ------------------------------------------------------------------
    def shifted(self, start: ArrayLike) -> Geometry:
        """Geometry of a sub-volume whose voxel (0, 0, 0) is this one's voxel ``start``.

        Parameters
        ----------
        start : array_like of 3 floats
            Voxel index (z, y, x) of the new first voxel; may be negative (padding before) or
            fractional.

        Returns
        -------
        Geometry
            Same spacing and direction, origin at ``voxel_to_world(start)``.

        Examples
        --------
        >>> Geometry((2.0, 1.0, 1.0)).shifted((-1, 0, 3)).origin.tolist()
        [-2.0, 0.0, 3.0]
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

        Parameters
        ----------
        old_shape : 3 ints
            Shape (z, y, x) of the grid this geometry describes.
        new_shape : 3 ints
            Shape of the new grid.
        new_spacing : array_like of 3 floats
            Spacing of the new grid, mm.

        Returns
        -------
        Geometry
            ``new_spacing``, the same direction, and the origin that keeps the centre.

        Examples
        --------
        >>> g = Geometry((1.0, 1.0, 1.0)).resampled((4, 4, 4), (2, 2, 2), (2.0, 2.0, 2.0))
        >>> g.origin.tolist()
        [0.5, 0.5, 0.5]
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

        Parameters
        ----------
        shape : 3 ints
            Shape (z, y, x) of the rotated volume (the same before and after).
        angle_deg : float
            Rotation angle, degrees, as given to ``rotate``.
        axes : pair of int
            The rotation plane, as given to ``rotate`` (order does not matter, negative axes
            count from the end).

        Returns
        -------
        Geometry
            Same spacing, origin ``O'`` and direction ``D'`` above.

        Raises
        ------
        InvalidParameterError
            ``axes`` is not two different axes of a (z, y, x) volume.

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
        a, b = validation.as_plane(axes, "axes", "rotated")
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
        """Return the plain-Python form (lists) for JSON.

        Returns
        -------
        dict
            ``{"spacing": [3 floats], "origin": [3 floats], "direction": [[3 floats] x 3]}``;
            ``Geometry(**d)`` rebuilds an equal geometry.

        Examples
        --------
        >>> Geometry((2.0, 1.0, 1.0)).as_dict()["spacing"]
        [2.0, 1.0, 1.0]
        """
        return {
            "spacing": self.spacing.tolist(),
            "origin": self.origin.tolist(),
            "direction": self.direction.tolist(),
        }

    def __eq__(self, other: object) -> bool:
        """Compare spacing, origin and direction exactly (bit for bit)."""
        if not isinstance(other, Geometry):
            return NotImplemented
        return (
            np.array_equal(self.spacing, other.spacing)
            and np.array_equal(self.origin, other.origin)
            and np.array_equal(self.direction, other.direction)
        )

    def __hash__(self) -> int:
        """Hash the exact bytes of spacing, origin and direction (consistent with ``==``)."""
        return hash((self.spacing.tobytes(), self.origin.tobytes(), self.direction.tobytes()))

    def __repr__(self) -> str:
        """Show spacing and origin with ``%g`` and the direction rounded to 4 decimals."""
        sp = ", ".join(f"{v:g}" for v in self.spacing)
        org = ", ".join(f"{v:g}" for v in self.origin)
        ident = np.allclose(self.direction, np.eye(3))
        d = "identity" if ident else str(self.direction.round(4).tolist())
        return f"Geometry(spacing=({sp}), origin=({org}), direction={d})"
