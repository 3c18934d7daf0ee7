"""ctflow geometry <-> the RAS affine of nibabel, MONAI and TorchIO.

ctflow arrays are indexed ``(z, y, x)`` and their geometry maps a voxel index to **LPS** world
millimetres, ordered (z, y, x) too (:mod:`ctflow.geometry`). nibabel, MONAI and TorchIO hold
the same voxels as ``(x, y, z)``-ordered arrays (the transpose) with a 4x4 affine mapping
homogeneous index ``(i, j, k, 1)`` to **RAS** world ``(x, y, z, 1)`` mm. RAS and LPS differ by
the sign of x and y, so for ``A = ras_affine(geometry)``::

    A[:3, :3] = diag(-1, -1, 1) @ D_xyz @ diag(spacing_xyz)
    A[:3, 3]  = diag(-1, -1, 1) @ origin_xyz

where ``D_xyz``, ``spacing_xyz``, ``origin_xyz`` are ctflow's direction, spacing and origin with
their (z, y, x) order reversed (``D_xyz`` is SimpleITK's direction matrix). The array goes with
``images.transpose(2, 1, 0)``.

Examples
--------
>>> import numpy as np
>>> from ctflow.geometry import Geometry
>>> g = Geometry(spacing=(2.5, 0.7, 0.8), origin=(-300.0, 20.0, -150.0))
>>> ras_affine(g)
array([[  -0.8,    0. ,    0. ,  150. ],
       [   0. ,   -0.7,    0. ,  -20. ],
       [   0. ,    0. ,    2.5, -300. ],
       [   0. ,    0. ,    0. ,    1. ]])
>>> geometry_from_ras_affine(ras_affine(g)) == g
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidScanError
from ctflow.geometry import Geometry

__all__ = ["LPS_TO_RAS", "geometry_from_ras_affine", "ras_affine", "to_xyz", "to_zyx"]

#: Flip of x and y between the LPS (ITK, DICOM, ctflow) and RAS (NIfTI, MONAI, TorchIO) frames.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def ras_affine(geometry: Geometry) -> NDArray[np.float64]:
    """4x4 affine from (x, y, z)-ordered voxel indices to RAS world mm.

    Parameters
    ----------
    geometry : Geometry
        ctflow geometry ((z, y, x), LPS).

    Returns
    -------
    ndarray (4, 4), float64
        The affine nibabel / MONAI / TorchIO use for ``images.transpose(2, 1, 0)``.

    Examples
    --------
    >>> from ctflow.geometry import Geometry
    >>> ras_affine(Geometry((1.0, 1.0, 1.0), (5.0, 6.0, 7.0)))[:3, 3].tolist()
    [-7.0, -6.0, 5.0]
    """
    if not isinstance(geometry, Geometry):
        raise InvalidScanError(f"ras_affine: expected a Geometry; got {type(geometry).__name__}")
    d_xyz = geometry.direction[::-1, ::-1]
    out = np.eye(4)
    out[:3, :3] = LPS_TO_RAS @ d_xyz @ np.diag(geometry.spacing[::-1])
    out[:3, 3] = LPS_TO_RAS @ geometry.origin[::-1]
    return out


def geometry_from_ras_affine(affine: ArrayLike) -> Geometry:
    """Return the ctflow geometry of an (x, y, z) array with a RAS affine (see ras_affine).

    Parameters
    ----------
    affine : array_like (4, 4)
        A nibabel / MONAI / TorchIO affine (any float dtype, torch tensors included).

    Returns
    -------
    Geometry
        For the array transposed to (z, y, x).

    Raises
    ------
    InvalidScanError
        The affine is not 4x4 and finite, has a zero-length axis, or shears (its axes are not
        orthogonal: ctflow geometries are spacing x rotation).

    Examples
    --------
    >>> import numpy as np
    >>> geometry_from_ras_affine(np.diag([-0.7, -0.7, 2.5, 1.0])).spacing.tolist()
    [2.5, 0.7, 0.7]
    """
    a = _as_numpy(affine).astype(np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise InvalidScanError(f"affine must be a finite 4x4 matrix; got shape {a.shape}")
    m = LPS_TO_RAS @ a[:3, :3]  # columns: LPS world (x, y, z) step of voxel axes i, j, k
    spacing_xyz = np.linalg.norm(m, axis=0)
    if np.any(spacing_xyz <= 0):
        raise InvalidScanError(f"affine has a zero-length voxel axis: {a.round(6).tolist()}")
    d_xyz = m / spacing_xyz
    if not np.allclose(d_xyz.T @ d_xyz, np.eye(3), atol=1e-4):
        raise InvalidScanError(
            f"affine axes are not orthogonal (a shear ctflow cannot represent): "
            f"{a.round(6).tolist()}"
        )
    origin_xyz = LPS_TO_RAS @ a[:3, 3]
    return Geometry(spacing_xyz[::-1], origin_xyz[::-1], d_xyz[::-1, ::-1])


def to_xyz(volume: NDArray[Any]) -> NDArray[Any]:
    """(z, y, x) -> (x, y, z): a transposed view, no copy."""
    return volume.transpose(2, 1, 0)


def to_zyx(volume: NDArray[Any]) -> NDArray[Any]:
    """(x, y, z) -> (z, y, x), C-contiguous (copied only when needed)."""
    return np.ascontiguousarray(volume.transpose(2, 1, 0))


def _as_numpy(value: Any) -> NDArray[Any]:
    """Return a numpy array from an ndarray, a torch tensor (MONAI MetaTensor too) or a sequence."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if hasattr(value, "as_tensor"):  # MONAI MetaTensor -> plain tensor
            value = value.as_tensor()
        return np.asarray(value.numpy())
    return np.asarray(value)
