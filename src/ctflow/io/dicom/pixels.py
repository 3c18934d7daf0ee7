"""Decode the pixels of the chosen slices into one HU volume.

Uncompressed little-endian slices are read straight from the file into numpy; every other
transfer syntax is decoded by pydicom's plugins. Padding values become air, each slice gets
its own rescale, and slices with uneven spacing can be resampled onto a regular grid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ctflow.errors import CorruptFileError, CTFlowError, InvalidScanError, UnsupportedFormatError
from ctflow.io.dicom.headers import _Header
from ctflow.io.dicom.parse import (
    _after_pixels,
    _Damaged,
    _NotDicom,
    _open_file,
    _parse,
)
from ctflow.kernels.rescale import rescale_float32, rescale_int16
from ctflow.threads import available_threads, run_ranges


class _Int16Overflow(Exception):
    """Internal: a slice's HU do not fit int16 (the volume is redone as float32)."""


def _padding_range(h: _Header) -> tuple[int, int] | None:
    """Return the stored-value range of PixelPaddingValue (/RangeLimit), or None."""
    for key in ("PixelPaddingValue", "PixelPaddingRangeLimit"):
        if key in h.problems:
            raise InvalidScanError(f"{h.path}: cannot read {key} ({h.problems[key]})")
    value, limit = h.padding_value, h.padding_limit
    if value is None:
        return None
    if limit is None:
        return value, value
    return min(value, limit), max(value, limit)


def _pixel_format(h: _Header) -> tuple[np.dtype[Any], int, int]:
    """Return (little-endian dtype, BitsAllocated, BitsStored) of uncompressed pixels."""
    keys = ("BitsAllocated", "BitsStored", "PixelRepresentation")
    problems = {k: h.problems[k] for k in keys if k in h.problems}
    bits, stored, representation = h.bits_allocated, h.bits_stored, h.pixel_representation
    stored = bits if stored is None else stored
    if (
        problems
        or bits is None
        or stored is None
        or bits not in (8, 16, 32)
        or not 1 <= stored <= bits
        or representation not in (None, 0, 1)
    ):
        raise CorruptFileError(
            f"{h.path}: uncompressed pixels need BitsAllocated 8, 16 or 32, 1 <= BitsStored <= "
            f"BitsAllocated and PixelRepresentation 0 or 1; got BitsAllocated {bits}, "
            f"BitsStored {stored}, PixelRepresentation {representation}"
            + (f" ({'; '.join(f'{k}: {v}' for k, v in problems.items())})" if problems else "")
        )
    dtype = np.dtype(f"<{'i' if representation == 1 else 'u'}{bits // 8}")
    return dtype, bits, stored


def _check_length(h: _Header, n_bytes: int, rows: int, cols: int, bits: int) -> None:
    """Refuse pixel data whose length does not match Rows x Columns x BitsAllocated."""
    need = rows * cols * bits // 8
    if n_bytes not in (need, need + 1):
        raise CorruptFileError(
            f"{h.path}: PixelData holds {n_bytes} bytes but Rows x Columns x BitsAllocated/8 "
            f"= {rows} x {cols} x {bits // 8} = {need} (truncated or inconsistent file)"
        )


def _drop_unused_bits(arr: NDArray[Any], bits: int, stored: int) -> NDArray[Any]:
    """Mask or sign-extend the bits above BitsStored, as pydicom does."""
    if stored < bits:  # ignore unused high bits (mask / sign-extend), as pydicom does
        shift = bits - stored
        arr = np.right_shift(np.left_shift(arr, shift), shift)
    return arr


def _native_pixels(ds: Any, h: _Header, rows: int, cols: int) -> NDArray[Any]:
    """Return the uncompressed little-endian pixels of a dataset pydicom read whole."""
    dtype, bits, stored = _pixel_format(h)
    data = ds.PixelData
    _check_length(h, len(data), rows, cols, bits)
    arr = np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)
    return _drop_unused_bits(arr, bits, stored)


def _read_native_pixels(
    h: _Header, rows: int, cols: int, scratch: dict[np.dtype[Any], NDArray[Any]] | None = None
) -> NDArray[Any]:
    """Read uncompressed pixels straight from the file into numpy (``readinto``, no GIL).

    ``scratch`` keeps one (rows, cols) buffer per stored dtype for the next slices of the
    same thread (the pixels are then only valid until the next call).
    """
    assert h.pixel_offset is not None
    dtype, bits, stored = _pixel_format(h)
    kept = None if scratch is None else scratch.get(dtype)
    if kept is None or kept.shape != (rows, cols):
        kept = np.empty((rows, cols), dtype)
        if scratch is not None:
            scratch[dtype] = kept
    arr: NDArray[Any] = kept
    try:
        with _open_file(h.path) as fh:
            size = os.fstat(fh.fileno()).st_size
            left = max(0, size - h.pixel_offset)
            _check_length(h, min(h.pixel_length, left), rows, cols, bits)
            if h.pixel_length > left + 1:  # (one byte of slack: a missing odd-length pad)
                raise CorruptFileError(
                    f"{h.path}: the PixelData element claims {h.pixel_length} bytes but the file "
                    f"ends {left} bytes after its start (truncated or inconsistent file)"
                )
            fh.seek(h.pixel_offset)
            mv = arr.data.cast("B")
            pos = 0
            while pos < len(mv):
                n = fh.readinto(mv[pos:])
                if not n:
                    break
                pos += n
    except CorruptFileError:
        raise
    except OSError as exc:
        raise CorruptFileError(f"{h.path}: cannot read the pixel data ({exc})") from exc
    if pos != len(mv):
        _check_length(h, pos, rows, cols, bits)  # the file shrank while being read
    if stored < bits:  # in place: the buffer is this call's
        shift = bits - stored
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
    return arr


def _stored_pixels(
    h: _Header, rows: int, cols: int, scratch: dict[np.dtype[Any], NDArray[Any]] | None = None
) -> tuple[NDArray[Any], tuple[int, int] | None]:
    """Return the stored (pre-rescale) values of one slice and its padding range."""
    if h.pixel_offset is not None:
        return _read_native_pixels(h, rows, cols, scratch), _padding_range(h)
    try:
        # bounded like the header pass; stops after PixelData (trailing elements are not
        # parsed); large values are deferred, except in a deflated dataset (pydicom inflates it
        # in memory, and the header pass checked its inflated size)
        parsed = _parse(
            h.path,
            os.stat(h.path).st_size,
            _after_pixels,
            defer=h.transfer_syntax != DeflatedExplicitVRLittleEndian,
        )
    except (_Damaged, _NotDicom, OSError) as exc:
        raise CorruptFileError(f"{h.path}: cannot read the file ({exc})") from exc
    ds = parsed.dataset
    if parsed.state.problem:
        raise CorruptFileError(f"{h.path}: {parsed.state.problem}")
    if "PixelData" not in ds:
        raise CorruptFileError(f"{h.path}: no PixelData element (truncated file?)")
    padding = _padding_range(h)
    ts = UID(h.transfer_syntax or ds.file_meta.get("TransferSyntaxUID", ""))
    try:
        if ts.is_transfer_syntax and ts.is_little_endian and not ts.is_encapsulated:
            arr = _native_pixels(ds, h, rows, cols)
        else:
            arr = ds.pixel_array
    except CTFlowError:
        raise
    except Exception as exc:  # decoder plugins raise many types on bad data
        raise CorruptFileError(
            f"{h.path}: cannot decode the pixel data ({ts.name or 'unknown transfer syntax'}: "
            f"{type(exc).__name__}: {str(exc)[:150]})"
        ) from exc
    if arr.shape != (rows, cols) or arr.dtype.kind not in "iu":
        raise CorruptFileError(
            f"{h.path}: decoded pixel data must be {rows} x {cols} integers; got shape "
            f"{arr.shape}, dtype {arr.dtype}"
        )
    return arr, padding


def _rescale_into(
    h: _Header, rows: int, cols: int, out: NDArray[Any], scratch: dict[np.dtype[Any], Any]
) -> int:
    """Write the HU of one slice into ``out`` (int16 or float32); return its padding count.

    Raises ``_Int16Overflow`` when the HU of an int16 volume leave the int16 range.
    """
    stored, padding = _stored_pixels(h, rows, cols, scratch)
    slope = 1.0 if h.slope is None else h.slope
    intercept = 0.0 if h.intercept is None else h.intercept
    lo, hi = (1, 0) if padding is None else padding
    src = np.ascontiguousarray(stored).reshape(-1)
    if out.dtype == np.int16:
        if abs(slope) > 2**20 or abs(intercept) > 2**30:
            raise _Int16Overflow  # cannot be int16 HU (and could overflow int64)
        n = rescale_int16(src, out.reshape(-1), int(slope), int(intercept), lo, hi)
        if n < 0:
            raise _Int16Overflow
        return int(n)
    return int(rescale_float32(src, out.reshape(-1), float(slope), float(intercept), lo, hi))


def _decode(slices: list[_Header], rows: int, cols: int, dtype: type) -> tuple[NDArray[Any], int]:
    """Decode all slices into a new (n, rows, cols) HU volume of ``dtype``; padding count.

    Uncompressed slices are read on the reader's threads (file reads and the rescale kernel
    release the GIL), each thread with one reusable buffer of stored values; a series with
    compressed slices is decoded on one thread (pydicom's decoders hold the GIL).
    When slices fail, the error of the first failing slice in slice order is raised.
    """
    out: NDArray[Any] = np.empty((len(slices), rows, cols), dtype=dtype)

    def part(a: int, b: int) -> tuple[int, tuple[int, BaseException] | None]:
        scratch: dict[np.dtype[Any], Any] = {}
        total = 0
        for k in range(a, b):
            try:
                total += _rescale_into(slices[k], rows, cols, out[k], scratch)
            except (CTFlowError, _Int16Overflow) as exc:
                return total, (k, exc)
        return total, None

    # pydicom's parse and its decoder plugins hold the GIL: threads would only contend
    # (a JPEG 2000 series read slower on two threads than on one; docs/api/io.md)
    native = all(h.pixel_offset is not None for h in slices)
    parts = run_ranges(part, len(slices), available_threads() if native else 1, per_thread=4)
    failures = [failure for *_, (_, failure) in parts if failure is not None]
    if failures:
        raise min(failures, key=lambda f: f[0])[1]
    return out, sum(n for *_, (n, _) in parts)


def _resample_slices(
    images: NDArray[Any], positions: NDArray[np.float64], step: float
) -> NDArray[Any]:
    """Resample slices at ``positions`` (mm along the normal, first 0) onto ``0, step, ...``.

    Linear interpolation between the two nearest slices (no extrapolation: the grid stops at
    the last slice); int16 volumes are rounded back to int16 HU.
    """
    n_out = int(np.floor(positions[-1] / step + 1e-3)) + 1
    out = np.empty((n_out, *images.shape[1:]), images.dtype)
    last = len(positions) - 2
    for k in range(n_out):
        t = k * step
        j = min(max(int(np.searchsorted(positions, t, side="right")) - 1, 0), last)
        w = float(np.clip((t - positions[j]) / (positions[j + 1] - positions[j]), 0.0, 1.0))
        if w < 1e-6:
            out[k] = images[j]
        elif w > 1 - 1e-6:
            out[k] = images[j + 1]
        else:
            # one slice at a time in float64 (the volume itself never is)
            low, high = images[j].astype(np.float64), images[j + 1].astype(np.float64)
            mixed = low + (high - low) * w
            out[k] = np.rint(mixed) if out.dtype == np.int16 else mixed
    return out


def _check_decoder(folder: Path, ts: str) -> None:
    """Refuse a transfer syntax pydicom has no working decoder for, before decoding."""
    uid = UID(ts)
    if not ts or (uid.is_transfer_syntax and not uid.is_encapsulated):
        return  # native (or unknown: decided per file)
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise UnsupportedFormatError(
            f"{folder}: no pixel decoder is installed for transfer syntax {uid.name} ({ts}); "
            "install a pydicom decoder plugin for it (pylibjpeg-openjpeg, pylibjpeg-libjpeg, "
            "pylibjpeg-rle, pyjpegls or python-gdcm)"
        )
