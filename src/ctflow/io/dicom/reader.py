"""Read a folder of CT DICOM slices into a :class:`~ctflow.io.scan.Scan`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ctflow.errors import CorruptFileError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.io.dicom.folder import _check_folder, _scan, _series_info
from ctflow.io.dicom.pixels import _check_decoder, _decode, _Int16Overflow, _resample_slices
from ctflow.io.dicom.series import _choose, _refuse_damaged, _sort_and_space, _validate
from ctflow.io.remote import completer
from ctflow.io.scan import Scan
from ctflow.io.voxels import max_voxels_bytes

__all__ = ["read_dicom_series"]


def read_dicom_series(
    folder: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    allow_uneven: bool = False,
) -> Scan:
    """Read a folder of CT DICOM slices into one (z, y, x) HU volume with its geometry.

    The rules (which files, which series, slice order, spacing, geometry, rescale, padding)
    are in the package docstring of :mod:`ctflow.io.dicom`.

    Parameters
    ----------
    folder : path
        A folder of DICOM files (non-recursive; any file names).
    series_uid : str, optional
        SeriesInstanceUID to read when the folder holds several series (default: the CT
        series with the most slices; ties -> thinnest SliceThickness, then smallest UID).
    allow_uneven : bool
        Instead of refusing them, resample series with uneven spacing or missing slices onto a
        regular grid (median step, linear interpolation along the slice normal), and read
        series with drifting slice origins as an orthogonal grid; a warning goes to
        ``info["warnings"]``.

    Returns
    -------
    Scan
        ``images`` (Z, Y, X) int16 HU (float32 when a rescale is non-integral or HU leave the
        int16 range), geometry in (z, y, x) LPS mm, ``source`` the folder, and ``info`` with
        ``series_uid``, ``modality``, ``description``, ``n_slices``, ``files`` (in slice
        order), ``skipped`` (``[{"file", "reason"}]``), ``series`` (every series found),
        ``warnings``, ``z_spacing_source``, ``slice_thickness``, ``transfer_syntaxes``,
        ``padding_voxels`` (and ``resampled`` when ``allow_uneven`` resampled the slices).

    Raises
    ------
    CorruptFileError
        Missing folder (or a broken symbolic link), no DICOM files, unreadable or truncated
        pixel data, a damaged file that is (or may be) a slice of the series read (see the
        package rules).
    InvalidScanError
        No CT series, inconsistent or invalid geometry, duplicate positions, gaps, uneven
        spacing, a volume (as int16) over :data:`~ctflow.io.voxels.MAX_VOXELS_BYTES`.
    UnsupportedFormatError
        Multi-frame (enhanced) CT, colour images, a transfer syntax without a decoder.
    InvalidParameterError
        ``series_uid`` is not in the folder, ``folder`` is a file, or a path with a NUL byte or
        an over-long name.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from pydicom.data import get_testdata_file
    >>> folder = tempfile.mkdtemp()
    >>> _ = shutil.copy(get_testdata_file("CT_small.dcm"), folder)
    >>> scan = read_dicom_series(folder)
    >>> scan.shape, int(scan.images.min()), scan.info["modality"]
    ((1, 128, 128), -896, 'CT')
    """
    p = _check_folder(folder, "read_dicom_series")
    complete = completer(p)  # a folder fetched from object storage by its heads
    groups, unread = _scan(p, complete=complete)
    skipped = [u.as_dict() for u in unread]
    if not groups:
        example = next((u for u in unread if u.damaged), unread[0] if unread else None)
        detail = ""
        if example is not None:
            detail = f"; {len(unread)} file(s) skipped, e.g. {example.path}: {example.reason}"
        raise CorruptFileError(
            f"{p}: no DICOM files (no readable DICOM image in the folder{detail})"
        )
    uid = _choose(p, groups, series_uid, skipped)
    headers = groups[uid]
    if not any(h.is_ct for h in headers):
        found = sorted({h.modality or "none" for h in headers})
        raise InvalidScanError(
            f"{p}: not a CT series (Modality {', '.join(found)}) for series {uid!r}; "
            "ctflow reads CT only"
        )
    _refuse_damaged(uid, [h for h in headers if not h.is_localizer] or headers, unread)
    already = {d["file"] for d in skipped}
    others: list[str] = []  # other CT series that could have been read
    for u in sorted(groups):
        kept = [h for h in groups[u] if not h.is_localizer and str(h.path) not in already]
        if u != uid and any(h.is_ct and not h.is_multiframe for h in kept) and len(kept) > 1:
            others.append(f"{u or '(no UID)'} ({len(kept)} slices)")
        for h in groups[u]:
            if str(h.path) in already:
                continue
            if h.is_localizer:
                kind = "\\".join(h.image_type)
                reason = f"localizer (ImageType {kind})"
            elif u == uid:
                continue
            elif h.is_multiframe:
                reason = f"multi-frame CT (SOP class {h.sop_class}) is not supported"
            else:
                reason = (
                    f"another series ({u or 'no SeriesInstanceUID'}, Modality "
                    f"{h.modality or 'none'}, {len(groups[u])} file(s)); read with series_uid="
                )
            skipped.append({"file": str(h.path), "reason": reason})
    slices = [h for h in headers if not h.is_localizer]
    if not slices:
        raise InvalidScanError(
            f"{p}: series {uid!r} holds only localizer images (ImageType LOCALIZER); an axial "
            "CT series is needed"
        )
    _validate(p, slices)
    rows, cols = int(slices[0].rows or 0), int(slices[0].cols or 0)
    n_bytes = rows * cols * len(slices) * 2
    limit = max_voxels_bytes()
    if n_bytes > limit:
        raise InvalidScanError(
            f"{p}: the series claims {len(slices)} slices of {rows} x {cols} = {n_bytes} bytes "
            f"as int16; refusing volumes larger than MAX_VOXELS_BYTES = {limit} (corrupt header?)"
        )
    for ts in sorted({h.transfer_syntax for h in slices}):
        _check_decoder(p, ts)

    info: dict[str, Any] = {"format": "dicom", "reader": "ctflow.io.dicom", "warnings": []}
    if others and series_uid is None:
        info["warnings"].append(
            f"the folder holds {len(others) + 1} CT series; read {uid or '(no UID)'} "
            f"({len(slices)} slices) by the rule most slices > thinnest > smallest UID; "
            f"also found {', '.join(others)} (pass series_uid= to read another)"
        )
    slices, dz, r, c, n, positions = _sort_and_space(p, slices, allow_uneven, info)
    first = slices[0]
    assert first.position is not None and first.pixel_spacing is not None
    direction = np.column_stack([n[::-1], c[::-1], r[::-1]])
    spacing = (dz, float(first.pixel_spacing[0]), float(first.pixel_spacing[1]))
    geometry = Geometry(spacing, first.position[::-1], direction)

    if complete is not None:
        complete([h.path for h in slices])  # the chosen series' slices, whole
    integral = all(
        float(1.0 if h.slope is None else h.slope).is_integer()
        and float(0.0 if h.intercept is None else h.intercept).is_integer()
        for h in slices
    )
    try:
        images, n_padding = _decode(slices, rows, cols, np.int16 if integral else np.float32)
    except _Int16Overflow:
        images, n_padding = _decode(slices, rows, cols, np.float32)
        info["warnings"].append("HU values leave the int16 range: the volume is float32")
    if positions is not None:
        images = _resample_slices(images, positions, dz)
        info["resampled"] = {"from_slices": len(slices), "to_slices": int(images.shape[0])}
    info.update(
        {
            "series_uid": uid,
            "modality": first.modality,
            "description": first.description,
            "image_type": list(first.image_type),
            "n_slices": len(slices),
            "files": [str(h.path) for h in slices],
            "slice_thickness": first.slice_thickness,
            "transfer_syntaxes": sorted({h.transfer_syntax for h in slices}),
            "padding_voxels": n_padding,
            "skipped": skipped,
            "series": [
                {**_series_info(u, groups[u]).as_dict(), "chosen": u == uid} for u in sorted(groups)
            ],
        }
    )
    return Scan(images, geometry, str(p), info)
