"""Turn a NRRD header's space fields into a Geometry, as ITK's NrrdIO does.

The rules (space directions or spacings, RAS/LAS to LPS, origins from axis mins) are in the
package docstring of :mod:`ctflow.io.nrrd`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidScanError, UnsupportedFormatError
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.nrrd.header import _Header

# space name (lower case) -> (canonical name, world dimension, sign flips to LPS or None)
_RAS = (-1.0, -1.0, 1.0)
_LAS = (1.0, -1.0, 1.0)
_SPACES: dict[str, tuple[str, int, tuple[float, float, float] | None]] = {
    **dict.fromkeys(["right-anterior-superior", "ras"], ("RAS", 3, _RAS)),
    **dict.fromkeys(["left-anterior-superior", "las"], ("LAS", 3, _LAS)),
    **dict.fromkeys(["left-posterior-superior", "lps"], ("LPS", 3, (1.0, 1.0, 1.0))),
    **dict.fromkeys(["right-anterior-superior-time", "rast"], ("RAST", 4, None)),
    **dict.fromkeys(["left-anterior-superior-time", "last"], ("LAST", 4, None)),
    **dict.fromkeys(["left-posterior-superior-time", "lpst"], ("LPST", 4, None)),
    "scanner-xyz": ("scanner-xyz", 3, None),
    "scanner-xyz-time": ("scanner-xyz-time", 4, None),
    "3d-right-handed": ("3D-right-handed", 3, None),
    "3d-left-handed": ("3D-left-handed", 3, None),
    "3d-right-handed-time": ("3D-right-handed-time", 4, None),
    "3d-left-handed-time": ("3D-left-handed-time", 4, None),
}
_VECTOR = re.compile(r"\(([^()]*)\)|(none)", re.IGNORECASE)


def _vector(path: Path, key: str, text: str, n: int) -> list[float]:
    """Parse the inside of one ``(a,b,c)`` vector as ``n`` finite numbers."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise InvalidScanError(
            f"{path}: NRRD field {key!r} needs vectors of {n} finite numbers; got ({text})"
        )
    return vals


def _vectors(path: Path, key: str, value: str, n: int) -> list[list[float] | None]:
    """Parse ``(a,b,c) (d,e,f) none ...`` into vectors (None for ``none``)."""
    out: list[list[float] | None] = []
    rest = value.strip()
    pos = 0
    for m in _VECTOR.finditer(rest):
        if rest[pos : m.start()].strip():
            break
        out.append(None if m.group(2) else _vector(path, key, m.group(1), n))
        pos = m.end()
    if rest[pos:].strip() or not out:
        raise InvalidScanError(
            f"{path}: NRRD field {key!r} must be '(x,y,z)' vectors or 'none'; got {value!r}"
        )
    return out


def _geometry(h: _Header, n_axes: int, info: dict[str, Any]) -> Geometry:
    """Return the LPS geometry of the header; note the space in ``info``."""
    p = h.path
    space_dim = 0
    flips: tuple[float, float, float] | None = None
    found = h.get("space")
    if found is not None:
        key = found[1].strip().lower()
        if key not in _SPACES:
            raise UnsupportedFormatError(
                f"{p}: unknown NRRD space {found[1]!r}; known: RAS, LAS, LPS (and their long "
                "names), scanner-xyz, 3D-right-handed, 3D-left-handed"
            )
        name, space_dim, flips = _SPACES[key]
        info["space"] = name
    dims = h.ints("spacedimension", 1)
    if dims is not None:
        if space_dim and dims[0] != space_dim:
            raise InvalidScanError(
                f"{p}: NRRD 'space dimension' {dims[0]} disagrees with space {info['space']}"
            )
        space_dim = dims[0]
        info.setdefault("space", f"{space_dim}-D (no named space)")
    if space_dim and space_dim != n_axes:
        raise UnsupportedFormatError(
            f"{p}: NRRD space has {space_dim} world axes but the image has {n_axes} domain axes "
            "(time spaces are not supported)"
        )
    if space_dim:
        if h.get("spacings") is not None:
            raise InvalidScanError(
                f"{p}: NRRD header has both 'space' and 'spacings'; with a space, the voxel "
                "size comes from 'space directions' only"
            )
        found = h.get("spacedirections")
        if found is None:
            raise InvalidScanError(
                f"{p}: NRRD header has a space but no 'space directions': the voxel size and "
                "orientation are unknown"
            )
        vecs = _vectors(p, found[0], found[1], space_dim)
        if len(vecs) != n_axes or any(v is None for v in vecs):
            raise InvalidScanError(
                f"{p}: NRRD 'space directions' must give one (x,y,z) vector per axis; got "
                f"{found[1]!r}"
            )
        cols = np.array(vecs, dtype=np.float64).T  # column j = world step of axis j
        if flips is not None:
            cols *= np.array(flips)[:, None]
        with np.errstate(over="ignore", invalid="ignore"):  # 1e308-long vectors: refused below
            spacing_xyz = np.sqrt((cols * cols).sum(axis=0))
        if np.any(spacing_xyz <= 0):
            raise InvalidScanError(
                f"{p}: NRRD 'space directions' must be non-zero vectors (zero spacing); got "
                f"{found[1]!r}"
            )
        if not np.all(np.isfinite(spacing_xyz)):
            raise InvalidScanError(
                f"{p}: NRRD 'space directions' must be finite vectors (a voxel size beyond "
                f"float64); got {found[1]!r}"
            )
        d_sitk = cols / spacing_xyz[None, :]
        origin_xyz = np.zeros(3)
        found = h.get("spaceorigin")
        if found is not None:
            vecs = _vectors(p, found[0], found[1], space_dim)
            vec = vecs[0]
            if len(vecs) != 1 or vec is None:
                raise InvalidScanError(
                    f"{p}: NRRD 'space origin' must be one (x,y,z) vector; got {found[1]!r}"
                )
            origin_xyz = np.array(vec, dtype=np.float64)
            if flips is not None:
                origin_xyz = origin_xyz * np.array(flips)
    else:
        spacings = h.floats("spacings", n_axes)
        if spacings is None or not all(math.isfinite(v) for v in spacings):
            raise InvalidScanError(
                f"{p}: NRRD header gives no voxel size (no 'space directions' and no finite "
                f"'spacings' for every axis; got {spacings})"
            )
        spacing_xyz = np.array(spacings, dtype=np.float64)
        d_sitk = np.eye(3)
        origin_xyz = _origin_from_mins(h, n_axes, spacing_xyz)
        info["space"] = None
    if np.any(spacing_xyz <= 0):
        raise InvalidScanError(
            f"{p}: NRRD spacing must be positive (x y z) in mm; got {spacing_xyz.tolist()}"
        )
    try:
        return Geometry(
            spacing_xyz[::-1], origin_xyz[::-1], direction_from_sitk(tuple(d_sitk.ravel()))
        )
    except InvalidScanError as exc:
        raise InvalidScanError(f"{p}: NRRD space directions: {exc}") from None


def _origin_from_mins(h: _Header, n_axes: int, spacing_xyz: NDArray[np.float64]) -> NDArray[Any]:
    """Compute the origin from axis mins as teem's ``nrrdOriginCalculate`` (0 without them).

    Cell centering is the default: the origin is then half a voxel past the axis min.
    """
    mins = h.floats("axismins", n_axes)
    if mins is None or not all(math.isfinite(v) for v in mins):
        return np.zeros(3)
    sizes = h.ints("sizes", n_axes)
    assert sizes is not None
    centers = h.words("centers", n_axes) or ["???"] * n_axes
    maxs = h.floats("axismaxs", n_axes)
    origin = np.zeros(3)
    for k in range(n_axes):
        cell = centers[k].lower() != "node"
        if maxs is not None and math.isfinite(maxs[k]):
            step = (maxs[k] - mins[k]) / (sizes[k] if cell else max(sizes[k] - 1, 1))
        else:
            step = float(spacing_xyz[k])
        origin[k] = mins[k] + (step / 2 if cell else 0.0)
    return origin
