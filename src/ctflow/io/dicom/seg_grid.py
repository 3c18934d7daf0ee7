"""Grids of a DICOM SEG: the grid of a DICOM series, a reference grid, the frames' own grid.

``_series_grid`` reads a series' grid from its headers (for reading and writing a SEG);
``_own_grid`` and ``_on_reference`` place a SEG's frames on a grid (rules in
:mod:`ctflow.io.dicom.seg`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import (
    CorruptFileError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry
from ctflow.io.dicom.folder import _check_folder, _scan
from ctflow.io.dicom.headers import _Header
from ctflow.io.dicom.seg_headers import _Frames
from ctflow.io.dicom.series import _choose, _sort_and_space, _validate
from ctflow.io.voxels import max_voxels_bytes
from ctflow.validation import as_shape

if TYPE_CHECKING:
    from ctflow.io.scan import Scan

_AXIS_TOL = 1e-3  # |cosine| of parallel axes may fall this short of 1
_VOXEL_TOL = 0.1  # a frame position may be this far (in voxels) off a voxel centre
_POS_TOL_MM = 0.01  # frame positions closer than this are one plane
_MAX_STEP_DIVISOR = 16  # the inferred slice step divides the smallest gap by at most this


@dataclass
class _SeriesGrid:
    """A DICOM series' slices (sorted) and the grid ctflow reads them on."""

    folder: Path
    series_uid: str
    headers: list[_Header]
    geometry: Geometry
    shape: tuple[int, int, int]


def _series_grid(
    folder: Any, where: str, series_uid: str | None = None, prefer: str = ""
) -> _SeriesGrid:
    """Return the grid of a DICOM series folder from the slice headers (no pixel read).

    ``series_uid`` must be in the folder; ``prefer`` is taken when it is, else the default
    series (the one :func:`~ctflow.io.dicom.read_dicom_series` reads).
    """
    p = _check_folder(folder, where)
    groups, _ = _scan(p, datasets=True)
    if not groups:
        raise CorruptFileError(f"{where}: {p}: no DICOM files (no readable DICOM image)")
    if series_uid is None and prefer in groups:
        series_uid = prefer
    uid = _choose(p, groups, series_uid, [])
    slices = [h for h in groups[uid] if not h.is_localizer]
    if any(h.is_multiframe for h in slices):
        raise UnsupportedFormatError(
            f"{where}: {p}: series {uid!r} is multi-frame CT; ctflow reads classic slices"
        )
    _validate(p, slices)
    slices, dz, r, c, n, _ = _sort_and_space(p, slices, False, {"warnings": []})
    first = slices[0]
    assert first.position is not None and first.pixel_spacing is not None
    direction = np.column_stack([n[::-1], c[::-1], r[::-1]])
    spacing = (dz, float(first.pixel_spacing[0]), float(first.pixel_spacing[1]))
    geometry = Geometry(spacing, first.position[::-1], direction)
    return _SeriesGrid(
        p, uid, slices, geometry, (len(slices), int(first.rows or 0), int(first.cols or 0))
    )


def _as_reference(
    reference: Scan | tuple[Geometry, Any] | str | os.PathLike[str], referenced_uid: str, where: str
) -> tuple[Geometry, tuple[int, int, int], str]:
    """Return (geometry, shape, series UID or "") of a reference grid."""
    from ctflow.io.scan import Scan

    if isinstance(reference, Scan):
        return reference.geometry, reference.shape, str(reference.info.get("series_uid", "") or "")
    if isinstance(reference, tuple) and len(reference) == 2 and isinstance(reference[0], Geometry):
        return reference[0], as_shape(reference[1], what="reference shape", where=where), ""
    if isinstance(reference, str | os.PathLike):
        grid = _series_grid(reference, where, prefer=referenced_uid)
        return grid.geometry, grid.shape, grid.series_uid
    raise InvalidParameterError(
        f"{where}: reference must be a DICOM series folder, a Scan or a (Geometry, shape) pair; "
        f"got {type(reference).__name__}"
    )


def _z_step(p: Path, d: NDArray[np.float64], frames: _Frames, info: dict[str, Any]) -> float:
    """Return the slice step of the frames' own grid (rules in :mod:`ctflow.io.dicom.seg`)."""
    planes = np.sort(d)
    planes = planes[np.concatenate([[True], np.diff(planes) > _POS_TOL_MM])]
    if len(planes) == 1:
        for value, source in (
            (frames.spacing_between, "SpacingBetweenSlices"),
            (frames.thickness, "SliceThickness"),
        ):
            if value is not None:
                info["z_spacing_source"] = source
                return value
        info["z_spacing_source"] = "default"
        return 1.0
    gaps = np.diff(planes)
    candidates = (
        [(frames.spacing_between, "SpacingBetweenSlices")] if frames.spacing_between else []
    )
    candidates += [(float(gaps.min()) / k, "frames") for k in range(1, _MAX_STEP_DIVISOR + 1)]
    for step, source in candidates:
        assert step is not None
        q = gaps / step
        if np.all(np.abs(q - np.rint(q)) <= _VOXEL_TOL):
            info["z_spacing_source"] = source
            if source == "frames" and np.any(np.rint(q) > 1):
                info["warnings"].append(
                    f"the frames skip planes and the SEG gives no SpacingBetweenSlices: the slice "
                    f"step {step:.6g} mm was inferred from the frame positions; pass reference= "
                    "(the series) to put the labels on the series' grid"
                )
            return step
    raise InvalidScanError(
        f"read_dicom_seg: {p}: the frame positions along the slice normal are not on a regular "
        f"grid (gaps {np.round(gaps, 4).tolist()[:10]} mm); pass reference= (the series)"
    )


def _own_grid(
    p: Path, frames: _Frames, info: dict[str, Any]
) -> tuple[Geometry, tuple[int, int, int], NDArray[np.int64]]:
    """Return the grid spanning the frames and each frame's (z, y, x) voxel offset."""
    pos = frames.positions
    a, b, d = pos @ frames.row, pos @ frames.col, pos @ frames.normal
    dy, dx = (float(v) for v in frames.pixel_spacing)
    dz = _z_step(p, d, frames, info)
    grid = np.column_stack([(d - d.min()) / dz, (b - b.min()) / dy, (a - a.min()) / dx])
    offsets = np.rint(grid).astype(np.int64)
    k = int(np.argmax(np.abs(grid - offsets).max(axis=1)))
    if np.abs(grid[k] - offsets[k]).max() > _VOXEL_TOL:
        raise InvalidScanError(
            f"read_dicom_seg: {p}: frame {k} (ImagePositionPatient {pos[k].tolist()}) is not on "
            "the grid of the other frames (shifted by a fraction of a pixel or slice)"
        )
    shape = (
        int(offsets[:, 0].max()) + 1,
        int(offsets[:, 1].max()) + frames.rows,
        int(offsets[:, 2].max()) + frames.cols,
    )
    _check_size(p, shape)
    origin = a.min() * frames.row + b.min() * frames.col + d.min() * frames.normal
    direction = np.column_stack([frames.normal[::-1], frames.col[::-1], frames.row[::-1]])
    return Geometry((dz, dy, dx), origin[::-1], direction), shape, offsets


def _check_size(p: Path, shape: tuple[int, ...]) -> None:
    n_bytes = int(np.prod(shape, dtype=np.float64))
    limit = max_voxels_bytes()
    if n_bytes > limit:
        raise InvalidScanError(
            f"read_dicom_seg: {p}: the labels would need a grid of {shape} voxels = {n_bytes} "
            f"bytes; refusing grids larger than MAX_VOXELS_BYTES = {limit} (frames far apart?)"
        )


def _on_reference(
    p: Path, frames: _Frames, geometry: Geometry, shape: tuple[int, int, int]
) -> NDArray[np.int64] | None:
    """Return each frame's voxel offset on the reference grid, or None to resample.

    None when the frames are another plane of the grid or have another pixel spacing; an
    InvalidScanError when they are oblique to it or lie between its voxels.
    """
    axes = geometry.direction[::-1, :]  # column j: voxel axis j (z, y, x) as a world xyz vector
    for name, vec in (("row", frames.row), ("column", frames.col)):
        if np.abs(axes.T @ vec).max() < 1 - _AXIS_TOL:
            raise InvalidScanError(
                f"read_dicom_seg: {p}: the SEG's frames (ImageOrientationPatient {frames.iop}) "
                f"disagree with the orientation of the grid they should go on (its axes z, y, x "
                f"= {np.round(axes.T, 4).tolist()} in x, y, z): their {name} direction is "
                "oblique to it; a SEG must lie on the planes of the images it segments"
            )
    same = (
        frames.row @ axes[:, 2] > 1 - _AXIS_TOL
        and frames.col @ axes[:, 1] > 1 - _AXIS_TOL
        and np.allclose(frames.pixel_spacing, geometry.spacing[1:], rtol=1e-3, atol=0)
    )
    if not same:
        return None
    grid = geometry.world_to_voxel(frames.positions[:, ::-1])
    offsets = np.rint(grid).astype(np.int64)
    k = int(np.argmax(np.abs(grid - offsets).max(axis=1)))
    if np.abs(grid[k] - offsets[k]).max() > _VOXEL_TOL:
        raise InvalidScanError(
            f"read_dicom_seg: {p}: frame {k} (ImagePositionPatient {frames.positions[k].tolist()}) "
            f"lies between the voxels of the grid it should go on (voxel {np.round(grid[k], 3)}"
            f" of a grid of {shape}): not a SEG of these images?"
        )
    return offsets
