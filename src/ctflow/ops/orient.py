"""Exact reorientation of a scan to any of the 48 DICOM orientation codes (no interpolation).

:func:`reorient` gives what ``SimpleITK.DICOMOrient(image, code)`` gives — the same voxels in the
same order, and the same spacing, origin and direction — as a NumPy view (an axis permutation
plus reversed axes), without copying or resampling.

Orientation codes
-----------------
A code is 3 letters, one from each of ``{R, L}``, ``{A, P}`` and ``{S, I}``, in any order. As in
ITK's ``DICOMOrientImageFilter`` (and DICOM), each letter names the anatomical direction towards
which the voxel index *increases* along one array axis, and the letters are written in
SimpleITK's axis order ``(i, j, k)``, i.e. ctflow's ``(x, y, z)``::

    code[0] -> ctflow array axis 2 (x, columns)
    code[1] -> ctflow array axis 1 (y, rows)
    code[2] -> ctflow array axis 0 (z, slices)

So the identity direction (world LPS) is ``"LPS"``: x goes towards the patient's Left, y towards
Posterior, z towards Superior; a NIfTI stored RAS (positive diagonal affine) is ``"RAS"``, and a
scan whose slices are ordered from head to feet is ``"LPI"``.

Oblique directions
------------------
Each voxel axis gets the world axis it is closest to, chosen greedily over the whole matrix
exactly as ITK does: the entry of largest absolute cosine in the direction matrix fixes one
(voxel axis, world axis) pair, that row and column are struck out, and the largest of the rest
fixes the next pair. The sign of the chosen cosine picks the letter. On exact ties ITK keeps the
entry that comes last in row-major order of SimpleITK's ``(x, y, z)`` matrix, which is the first
in row-major order of ctflow's ``(z, y, x)`` matrix (what :func:`numpy.argmax` returns). This is
not always a per-column argmax: two voxel axes can be closest to the same world axis, and the
greedy rule still gives a valid code. :func:`orientation_code` equals
``sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines`` for every orthonormal matrix
(checked on random rotations and on matrices full of ties).

Reorienting never changes a direction cosine: the output direction's columns are the input's,
permuted and some negated (bit for bit, as in SimpleITK), so an oblique scan stays exactly as
oblique, merely relabelled. Its code becomes the requested one, except for matrices with exact
ties between cosines (e.g. a 45 degree rotation), where — in SimpleITK too — the tie-break
depends on the column order and the output's code may differ from the one asked for.
"""

from __future__ import annotations

from itertools import product
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.validation import as_shape, check_geometry, check_volume

__all__ = [
    "ORIENTATION_CODES",
    "OrientTransform",
    "orientation_code",
    "orientation_transform",
    "reorient",
    "reoriented_geometry",
]

# world axes in ctflow (z, y, x) order: (letter of +, letter of -); the world is LPS
_WORLD_LETTERS = (("S", "I"), ("P", "A"), ("L", "R"))
# letter -> (world axis in (z, y, x) order, positive?)
_LETTER_AXIS = {
    letter: (w, sign == 0)
    for w, pair in enumerate(_WORLD_LETTERS)
    for sign, letter in enumerate(pair)
}
_ORDER = "RLAPSI"


def _all_codes() -> tuple[str, ...]:
    """List the 48 valid codes, as 3-letter words over ``R < L < A < P < S < I``."""
    codes = []
    for a, b, c in product(_ORDER, repeat=3):
        axes = {_LETTER_AXIS[a][0], _LETTER_AXIS[b][0], _LETTER_AXIS[c][0]}
        if len(axes) == 3:
            codes.append(a + b + c)
    return tuple(codes)


#: The 48 orientation codes :func:`reorient` accepts, the same set ``SimpleITK.DICOMOrient``
#: accepts. Ordered as 3-letter words over the alphabet ``R < L < A < P < S < I``:
#: ``("RAS", "RAI", "RPS", "RPI", "RSA", "RSP", "RIA", "RIP", "LAS", ..., "ILP")``.
ORIENTATION_CODES: tuple[str, ...] = _all_codes()
_CODE_SET = frozenset(ORIENTATION_CODES)


class OrientTransform(NamedTuple):
    """How to get an array of one orientation from an array of another.

    Output array axis ``k`` (ctflow ``(z, y, x)`` order) is input axis ``axes[k]``, reversed when
    ``flips[k]``. A plain tuple ``(axes, flips)`` too, so it unpacks.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]


def _check_code(code: Any, where: str) -> str:
    """Return ``code`` upper-cased when it is one of :data:`ORIENTATION_CODES`."""
    if isinstance(code, str) and code.upper() in _CODE_SET:
        return code.upper()
    raise InvalidParameterError(
        f"{where}: code must be 3 letters, one of R/L, one of A/P, one of S/I "
        f'(e.g. "LPS"); got {code!r}'
    )


def _check_direction(direction: Any, where: str) -> NDArray[np.float64]:
    """Return ``direction`` as a finite (3, 3) float64 matrix ((9,) is reshaped)."""
    try:
        d = np.asarray(direction, dtype=np.float64)
    except (TypeError, ValueError):
        d = np.empty(0)
    if d.shape == (9,):
        d = d.reshape(3, 3)
    if d.shape != (3, 3) or not np.all(np.isfinite(d)):
        raise InvalidParameterError(
            f"{where}: direction must be a finite 3x3 matrix in ctflow (z, y, x) order "
            f"(column j = world unit vector of voxel axis j); got {direction!r}"
        )
    return d


def _code_of(d: NDArray[np.float64]) -> str:
    """ITK's greedy closest-axis assignment on a validated (z, y, x) direction matrix."""
    remaining = np.abs(d)
    letters = [""] * 3  # by voxel axis (z, y, x)
    for _ in range(3):
        # np.argmax: first maximum in row-major order of the (z, y, x) matrix = ITK's tie-break
        w, v = divmod(int(np.argmax(remaining)), 3)
        letters[v] = _WORLD_LETTERS[w][0 if d[w, v] > 0 else 1]
        remaining[w, :] = -1.0
        remaining[:, v] = -1.0
    return letters[2] + letters[1] + letters[0]


def orientation_code(direction: ArrayLike) -> str:
    """Return the 3-letter orientation code of a ctflow ``(z, y, x)`` direction matrix.

    Equal to ``sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
    direction_to_sitk(direction))``: letters in SimpleITK axis order ``(x, y, z)``, each the
    world direction the voxel index increases towards; oblique matrices take the closest axes
    (see the module docstring).

    Parameters
    ----------
    direction : array_like, shape (3, 3) or (9,)
        Column ``j`` = world unit vector (LPS, ``(z, y, x)``) of voxel axis ``j``.

    Returns
    -------
    str
        One of :data:`ORIENTATION_CODES`.

    Raises
    ------
    InvalidParameterError
        If ``direction`` is not a finite 3x3 matrix.

    Examples
    --------
    >>> import numpy as np
    >>> orientation_code(np.eye(3))
    'LPS'
    >>> orientation_code(np.diag([1.0, -1.0, -1.0]))  # a NIfTI stored RAS
    'RAS'
    >>> orientation_code([[0, 0, 1], [0, 1, 0], [1, 0, 0]])  # x along world z: sagittal stack
    'SPL'
    """
    return _code_of(_check_direction(direction, "orientation_code"))


def _transform(d: NDArray[np.float64], code: str) -> OrientTransform:
    """Compute the transform from the orientation of ``d`` to a valid upper-case ``code``."""
    current = _code_of(d)
    # letter of each input voxel axis in (z, y, x) order, and of each wanted output axis
    have = current[::-1]
    want = code[::-1]
    axes: list[int] = []
    flips: list[bool] = []
    for letter in want:
        world = _LETTER_AXIS[letter][0]
        src = next(a for a in range(3) if _LETTER_AXIS[have[a]][0] == world)
        axes.append(src)
        flips.append(have[src] != letter)
    return OrientTransform((axes[0], axes[1], axes[2]), (flips[0], flips[1], flips[2]))


def orientation_transform(direction: ArrayLike, code: str) -> OrientTransform:
    """Return the axis permutation and reversals that take a scan of ``direction`` to ``code``.

    Parameters
    ----------
    direction : array_like, shape (3, 3) or (9,)
        Direction of the input scan, ctflow ``(z, y, x)`` order.
    code : str
        Wanted orientation, one of :data:`ORIENTATION_CODES` (case-insensitive).

    Returns
    -------
    OrientTransform
        ``(axes, flips)``: output array axis ``k`` (``(z, y, x)`` order) is input axis
        ``axes[k]``, reversed when ``flips[k]``. ``np.transpose(image, axes)`` then reversing the
        flipped axes gives the output.

    Raises
    ------
    InvalidParameterError
        On a bad ``code`` or ``direction``.

    Examples
    --------
    >>> import numpy as np
    >>> orientation_transform(np.eye(3), "RAS")  # LPS -> RAS: reverse y and x
    OrientTransform(axes=(0, 1, 2), flips=(False, True, True))
    >>> orientation_transform(np.eye(3), "SPL")  # x <- z and z <- x
    OrientTransform(axes=(2, 1, 0), flips=(False, False, False))
    """
    c = _check_code(code, "orientation_transform")
    return _transform(_check_direction(direction, "orientation_transform"), c)


def _geometry_for(shape: tuple[int, ...], geometry: Geometry, t: OrientTransform) -> Geometry:
    """Compute the geometry of a scan of ``shape`` and ``geometry`` transformed by ``t``."""
    axes = list(t.axes)
    signs = np.where(t.flips, -1.0, 1.0)
    start = np.zeros(3)
    for k, a in enumerate(axes):
        if t.flips[k]:
            start[a] = shape[a] - 1
    origin = geometry.voxel_to_world(start)
    direction = geometry.direction[:, axes] * signs[None, :]  # exact: permute / negate only
    return Geometry(geometry.spacing[axes], origin, direction)


def reoriented_geometry(shape: ArrayLike, geometry: Geometry, code: str) -> Geometry:
    """Return the geometry :func:`reorient` gives a scan of ``shape`` and ``geometry``.

    For callers that move world-independent data (voxel-index tables, masks) along with a
    reoriented scan: every voxel keeps its world position, i.e. ``new.voxel_to_world(k)`` equals
    ``geometry.voxel_to_world(i)`` where ``i`` is the input voxel that output voxel ``k`` shows.

    Parameters
    ----------
    shape : array_like of 3 int
        Input array shape ``(z, y, x)``.
    geometry : Geometry
        Input geometry.
    code : str
        Wanted orientation, one of :data:`ORIENTATION_CODES` (case-insensitive).

    Returns
    -------
    Geometry
        Spacing permuted, direction columns permuted and negated (never otherwise changed),
        origin = world position of the new voxel ``(0, 0, 0)``.

    Raises
    ------
    InvalidParameterError
        On a bad ``shape``, ``geometry`` or ``code``.

    Examples
    --------
    >>> g = Geometry((2.0, 1.0, 0.5), origin=(10.0, 20.0, 30.0))
    >>> new = reoriented_geometry((5, 4, 3), g, "RAS")
    >>> new.origin, new.direction.diagonal()
    (array([10., 23., 31.]), array([ 1., -1., -1.]))
    >>> bool(np.allclose(new.voxel_to_world((0, 0, 0)), g.voxel_to_world((0, 3, 2))))
    True
    """
    where = "reoriented_geometry"
    c = _check_code(code, where)
    g = check_geometry(geometry, where)
    dims = as_shape(shape, where=where)
    return _geometry_for(dims, g, _transform(g.direction, c))


def reorient(image: NDArray[Any], geometry: Geometry, code: str) -> tuple[NDArray[Any], Geometry]:
    """Reorient a ``(z, y, x)`` volume to an orientation code, exactly like SimpleITK.

    Same voxels, spacing, origin and direction as ``SimpleITK.DICOMOrient(image, code)`` (see
    the module docstring for what the letters mean and how oblique scans are handled). Nothing
    is interpolated or copied: the result is a **view** of ``image`` (``np.transpose`` plus
    reversed slices), usually not C-contiguous — callers that need a C-contiguous array (a
    writer, a numba kernel, ``torch.from_numpy``) must copy it, e.g.
    ``np.ascontiguousarray(out)``, and must not write into it unless they mean to change
    ``image``.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        Any boolean, integer or float volume (HU image, uint8 mask, float32 ...).
    geometry : Geometry
        Geometry of ``image``.
    code : str
        Wanted orientation, one of :data:`ORIENTATION_CODES` (case-insensitive), e.g. ``"LPS"``
        (identity direction for an axis-aligned scan) or ``"RAS"``.

    Returns
    -------
    image : ndarray
        The reoriented view; ``image`` itself when the scan already has ``code``.
    geometry : Geometry
        The new geometry (see :func:`reoriented_geometry`); every voxel keeps its world
        position. Equal to ``geometry`` when the scan already has ``code``.

    Raises
    ------
    InvalidParameterError
        On a bad ``code`` or ``geometry``.
    InvalidScanError
        If ``image`` is not a non-empty 3-D numeric array.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    >>> g = Geometry((2.5, 0.7, 0.7))
    >>> out, g2 = reorient(img, g, "RAS")
    >>> out[0]
    array([[11, 10,  9,  8],
           [ 7,  6,  5,  4],
           [ 3,  2,  1,  0]], dtype=int16)
    >>> bool(np.shares_memory(out, img)), out.flags.c_contiguous
    (True, False)
    >>> back, g3 = reorient(out, g2, "lps")
    >>> bool(np.array_equal(back, img)), g3 == g
    (True, True)
    """
    where = "reorient"
    c = _check_code(code, where)
    g = check_geometry(geometry, where)
    image = check_volume(image, where)
    t = _transform(g.direction, c)
    if t.axes == (0, 1, 2) and not any(t.flips):
        return image, g
    view = np.transpose(image, t.axes)
    view = view[tuple(slice(None, None, -1) if f else slice(None) for f in t.flips)]
    return view, _geometry_for(image.shape, g, t)
