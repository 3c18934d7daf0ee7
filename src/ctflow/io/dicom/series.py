"""Choose the series to read, check its headers, sort its slices and find the z spacing.

The rules (which series wins, what is an error, what ``allow_uneven=True`` resamples) are in
the package docstring of :mod:`ctflow.io.dicom`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import (
    CorruptFileError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.io.dicom.headers import _Header, _Unread

_POS_TOL_MM = 0.01  # duplicate positions / absolute spacing tolerance
_REL_TOL = 0.01  # relative spacing tolerance (1 % of the median step)
_GAP_FACTOR = 1.5  # a step this many times the median means missing slice(s)
_DRIFT_PIXELS = 0.1  # allowed in-plane drift of slice origins, in pixels
_COSINE_TOL = 0.01  # allowed deviation of IOP cosines from unit length / orthogonality
_SIZE_TOL = 0.02  # "same size as the series' files": within 2 % of their median size
_DIGITS = re.compile(r"[0-9]+")


def _choose(
    folder: Path,
    groups: dict[str, list[_Header]],
    series_uid: str | None,
    skipped: list[dict[str, str]],
) -> str:
    """Return the UID of the series to read (rules in :mod:`ctflow.io.dicom`); note scouts."""
    if series_uid is not None:
        if series_uid not in groups:
            raise InvalidParameterError(
                f"read_dicom_series: series_uid {series_uid!r} is not in {folder}; "
                f"found {sorted(groups)}"
            )
        return series_uid

    def slices(uid: str) -> list[_Header]:
        return [h for h in groups[uid] if not h.is_localizer]

    ct = [u for u in groups if any(h.is_ct for h in groups[u])]
    candidates = [u for u in ct if slices(u) and not any(h.is_multiframe for h in groups[u])]
    if not candidates:
        multiframe = [u for u in ct if any(h.is_multiframe for h in groups[u])]
        if multiframe:
            return multiframe[0]  # refused with a clear message by the caller
        if ct:
            raise InvalidScanError(
                f"{folder}: holds only localizer images (ImageType LOCALIZER); "
                "an axial CT series is needed"
            )
        found = sorted({h.modality or "none" for hs in groups.values() for h in hs})
        raise InvalidScanError(
            f"{folder}: not a CT series (Modality {', '.join(found)}); ctflow reads CT only"
        )

    def thickness(uid: str) -> float:
        t = slices(uid)[0].slice_thickness
        return t if t is not None and t > 0 else math.inf

    chosen = min(candidates, key=lambda u: (-len(slices(u)), thickness(u), u))
    main_orientation = slices(chosen)[0].orientation
    for uid in candidates:
        if uid == chosen or len(slices(uid)) != 1:
            continue
        o = slices(uid)[0].orientation
        if (
            main_orientation is not None
            and o is not None
            and not np.allclose(o, main_orientation, atol=1e-3)
        ):
            for h in slices(uid):
                reason = f"scout: single-slice series {uid} whose orientation differs from the "
                skipped.append({"file": str(h.path), "reason": reason + "main series"})
    return chosen


def _name_pattern(name: str) -> str:
    """Return a file name with every run of digits replaced by ``#`` (``slice#.dcm``)."""
    return _DIGITS.sub("#", name)


def _claim(u: _Unread, uid: str, patterns: set[str], median: float | None) -> str:
    """Say why the unread file ``u`` counts as a damaged slice of series ``uid`` ("": it does not).

    ``patterns`` are the name patterns of the series' files; ``median`` their median size, or
    None when their sizes differ by more than ``_SIZE_TOL`` (compressed slices).
    """
    if u.special or u.foreign or u.path.name.upper() == "DICOMDIR":
        return ""
    if u.damaged:
        if u.series_uid is None:
            return "its damaged header does not tell which series it belongs to"
        return "its header names this series" if u.series_uid == uid else ""
    if u.dicom:  # a whole DICOM header that is not an image (report, DICOMDIR ...)
        return ""
    pattern = _name_pattern(u.path.name)
    if pattern in patterns:
        return f"its name follows the pattern of the series' file names ({pattern!r})"
    if median is not None and u.size is not None and abs(u.size - median) <= _SIZE_TOL * median:
        return f"its size ({u.size} bytes) is that of the series' files (median {median:.0f} bytes)"
    return ""


def _refuse_damaged(uid: str, slices: list[_Header], unread: list[_Unread]) -> None:
    """Refuse the series when a file of the folder is a damaged slice of it (rules in the doc).

    A damaged file that may be one of the series' slices is never skipped (the volume would
    silently lose a slice) nor reported as a gap: it is a CorruptFileError naming it.
    """
    patterns = {_name_pattern(h.path.name) for h in slices}
    sizes = np.array([h.size for h in slices], dtype=np.float64)
    median: float | None = float(np.median(sizes)) if len(sizes) else None
    if median is not None and np.any(np.abs(sizes - median) > _SIZE_TOL * median):
        median = None
    claimed = [(u, why) for u in unread if (why := _claim(u, uid, patterns, median))]
    if not claimed:
        return
    u, why = claimed[0]
    more = ""
    if len(claimed) > 1:
        names = ", ".join(c.path.name for c, _ in claimed[1:6])
        dots = " ..." if len(claimed) > 6 else ""
        more = f"; {len(claimed) - 1} more such file(s): {names}{dots}"
    raise CorruptFileError(
        f"{u.path}: {u.reason}; it is taken as a slice of the series "
        f"{uid or '(no SeriesInstanceUID)'} being read because {why}, so the series cannot be "
        f"read whole (repair or remove the file){more}"
    )


def _require(h: _Header, keyword: str, value: Any, why: str) -> Any:
    """Return a header value the reader needs; refuse a missing or malformed one."""
    if keyword in h.problems:
        raise InvalidScanError(f"{h.path}: cannot read {keyword} ({h.problems[keyword]})")
    if value is None:
        raise InvalidScanError(f"{h.path}: missing {keyword}; {why}")
    return value


def _validate(folder: Path, slices: list[_Header]) -> None:
    """Check the headers of the series about to be read, one by one and against each other."""
    first = slices[0]
    for h in slices:
        if h.is_multiframe:
            raise UnsupportedFormatError(
                f"{h.path}: multi-frame CT (SOP class {h.sop_class or 'unknown'}, "
                f"NumberOfFrames {h.n_frames}) is not supported: ctflow reads classic "
                "single-frame CT slices (Enhanced CT Image Storage keeps its geometry in "
                "per-frame functional groups, which are not parsed; such files are often "
                "derived maps, not HU). Convert it to single-frame slices first"
            )
        rows = _require(h, "Rows", h.rows, "every slice needs its image size")
        cols = _require(h, "Columns", h.cols, "every slice needs its image size")
        if rows <= 0 or cols <= 0:
            raise InvalidScanError(
                f"{h.path}: Rows and Columns must be positive; got {rows} x {cols}"
            )
        _require(h, "ImagePositionPatient", h.position, "a slice cannot be placed without it")
        _require(h, "ImageOrientationPatient", h.orientation, "a slice needs its orientation")
        ps = _require(h, "PixelSpacing", h.pixel_spacing, "in-plane spacing is unknown")
        if np.any(ps <= 0):
            raise InvalidScanError(
                f"{h.path}: PixelSpacing must be 2 positive numbers (between rows, between "
                f"columns) in mm; got {tuple(ps.tolist())}"
            )
        for keyword in ("RescaleSlope", "RescaleIntercept", "SamplesPerPixel"):
            if keyword in h.problems:
                raise InvalidScanError(f"{h.path}: cannot read {keyword} ({h.problems[keyword]})")
        if h.slope == 0:
            raise InvalidScanError(f"{h.path}: RescaleSlope must be non-zero; got 0")
        if h.samples not in (None, 1) or h.photometric not in ("", "MONOCHROME1", "MONOCHROME2"):
            raise UnsupportedFormatError(
                f"{h.path}: CT slices must be grayscale (SamplesPerPixel 1, MONOCHROME1/2); "
                f"got SamplesPerPixel {h.samples}, PhotometricInterpretation {h.photometric!r}"
            )
    odd = [h for h in slices if (h.rows, h.cols) != (first.rows, first.cols)]
    if odd:
        raise InvalidScanError(
            f"{folder}: all slices of a series must have the same Rows x Columns; got "
            f"{first.rows}x{first.cols} ({first.path.name}) and {odd[0].rows}x{odd[0].cols} "
            f"({odd[0].path.name})"
        )
    assert first.orientation is not None and first.pixel_spacing is not None
    orientations = np.array([h.orientation for h in slices])
    spacings = np.array([h.pixel_spacing for h in slices])
    same_orientation = np.isclose(orientations, first.orientation, atol=1e-4).all(axis=1)
    same_spacing = np.isclose(spacings, first.pixel_spacing, rtol=1e-5, atol=1e-4).all(axis=1)
    for k in np.flatnonzero(~(same_orientation & same_spacing))[:1]:
        h = slices[k]
        assert h.orientation is not None and h.pixel_spacing is not None
        if not same_orientation[k]:
            raise InvalidScanError(
                f"{folder}: all slices must share ImageOrientationPatient; got "
                f"{first.orientation.tolist()} ({first.path.name}) and "
                f"{h.orientation.tolist()} ({h.path.name})"
            )
        raise InvalidScanError(
            f"{folder}: all slices must share PixelSpacing; got "
            f"{first.pixel_spacing.tolist()} ({first.path.name}) and "
            f"{h.pixel_spacing.tolist()} ({h.path.name})"
        )


def _cosines(h: _Header) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Return the orthonormal (row cosine, column cosine, normal), all (x, y, z)."""
    assert h.orientation is not None
    r, c = h.orientation[:3], h.orientation[3:]
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    dot = float(r @ c) / (nr * nc) if nr > 0 and nc > 0 else 1.0
    if abs(nr - 1) > _COSINE_TOL or abs(nc - 1) > _COSINE_TOL or abs(dot) > _COSINE_TOL:
        raise InvalidScanError(
            f"{h.path}: ImageOrientationPatient must be two orthogonal unit vectors (row "
            f"cosine, column cosine); got {h.orientation.tolist()} (norms {nr:.4g}, {nc:.4g}, "
            f"cosine between them {dot:.4g})"
        )
    r = r / nr
    c = c - (c @ r) * r
    c = c / np.linalg.norm(c)
    return r, c, np.cross(r, c)


def _where(h: _Header) -> str:
    """Name a slice for messages: file name and ImagePositionPatient."""
    assert h.position is not None
    return f"{h.path.name} (ImagePositionPatient {[round(v, 4) for v in h.position.tolist()]})"


_Sorted = tuple[
    list[_Header],
    float,
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64] | None,
]


def _sort_and_space(
    folder: Path, slices: list[_Header], allow_uneven: bool, info: dict[str, Any]
) -> _Sorted:
    """Sort along the normal; return (sorted slices, z spacing, r, c, n, positions).

    ``positions`` (each slice's distance along n) is not None when the slices must be
    resampled onto a regular grid (uneven spacing or missing slices, ``allow_uneven=True``).
    """
    r, c, n = _cosines(slices[0])
    pos = np.array([h.position for h in slices], dtype=np.float64)
    dist = pos @ n
    order = np.argsort(dist, kind="stable")
    slices = [slices[i] for i in order]
    pos, dist = pos[order], dist[order]
    warnings: list[str] = info["warnings"]
    if len(slices) == 1:
        h = slices[0]
        for value, source in (
            (h.spacing_between, "SpacingBetweenSlices"),
            (h.slice_thickness, "SliceThickness"),
        ):
            if value is not None and value > 0:
                info["z_spacing_source"] = source
                return slices, float(value), r, c, n, None
        info["z_spacing_source"] = "default"
        warnings.append("single slice without SpacingBetweenSlices/SliceThickness: z spacing 1 mm")
        return slices, 1.0, r, c, n, None
    info["z_spacing_source"] = "positions"
    steps = np.diff(dist)
    k = int(np.argmin(steps))
    if steps[k] < _POS_TOL_MM:
        raise InvalidScanError(
            f"{folder}: two slices at the same position ({dist[k]:.3f} mm along the slice "
            f"normal): {_where(slices[k])} and {_where(slices[k + 1])}; a series needs one "
            "slice per position (duplicate files, or several acquisitions in one series?)"
        )
    step = float(np.median(steps))
    tol = max(_POS_TOL_MM, _REL_TOL * step)
    dev = np.abs(steps - step)
    k = int(np.argmax(dev))
    problem = ""
    if steps[k] > _GAP_FACTOR * step:
        problem = (
            f"missing slice(s): a gap of {steps[k]:.4g} mm ({steps[k] / step:.2f} x the median "
            f"step {step:.4g} mm) between {_where(slices[k])} and {_where(slices[k + 1])}"
        )
    elif dev[k] > tol:
        problem = (
            f"uneven slice spacing: step {steps[k]:.4g} mm between {_where(slices[k])} and "
            f"{_where(slices[k + 1])} differs from the median step {step:.4g} mm by more than "
            f"{tol:.3g} mm"
        )
    positions = None
    if problem:
        if not allow_uneven:
            raise InvalidScanError(
                f"{folder}: {problem}; pass allow_uneven=True to resample it onto a regular grid"
            )
        positions = dist - dist[0]
        n_out = int(np.floor(positions[-1] / step + 1e-3)) + 1
        warnings.append(
            f"{problem}; resampled onto a regular grid of {n_out} slices {step:.4g} mm apart "
            f"(linear interpolation along the slice normal, from {len(slices)} slices)"
        )
    # in-plane drift of slice origins off the line through the first origin along n
    offset = pos - pos[0]
    drift = np.hypot(offset @ r, offset @ c)
    k = int(np.argmax(drift))
    assert slices[0].pixel_spacing is not None
    limit = _DRIFT_PIXELS * float(slices[0].pixel_spacing.min())
    if drift[k] > max(_POS_TOL_MM, limit):
        problem = (
            f"slice origins drift {drift[k]:.4g} mm in-plane off the slice normal (gantry tilt "
            f"or sheared stack) at {_where(slices[k])}; ctflow's orthogonal Geometry cannot "
            "represent it"
        )
        if not allow_uneven:
            raise InvalidScanError(
                f"{folder}: {problem}; pass allow_uneven=True to read it as an orthogonal grid"
            )
        warnings.append(f"{problem}; read as an orthogonal grid")
    return slices, step, r, c, n, positions
