"""Masks across the interop boundary: label values, dtypes and channel axes kept exactly.

A ctflow ``masks`` component is a label map (uint8 / uint16 values such as {0, 1, 2, 5}), float
probabilities, or a (C, Z, Y, X) encoding of either (``one_hot``); ``lungs`` is a uint8 label
map. Every converter of :mod:`ctflow.interop` goes through this module so that none of them
binarises labels or casts them to float:

* :func:`for_torch` — the one change a peer forces: torch has no usable uint16 / uint32 tensors
  (no ``flip``, no arithmetic), so those become int32 / int64 (what TorchIO and MONAI do to
  such arrays themselves). Every other dtype crosses unchanged, without a copy.
* :func:`record_dtypes` — the ctflow dtype of each mask, stored next to the data (under
  :data:`DTYPES_KEY` of the TorchIO Subject / MONAI dict), since transforms may hand labels back
  as int32, int64 or float32 (TorchIO's ``RandomAffine``, MONAI's ``Spacingd``).
* :func:`mask_from_peer` — back into ctflow: to the recorded (or requested) dtype, exactly (whole
  numbers in range), else an :class:`~ctflow.errors.InvalidScanError`; with no record, integer
  labels become uint8 (uint16 above 255), floats stay floats.

Examples
--------
>>> import numpy as np
>>> lab = np.array([[[0, 1, 2, 300]]], np.uint16)
>>> peer = for_torch(lab)
>>> peer.dtype
dtype('int32')
>>> back = mask_from_peer(peer.astype(np.float32), "uint16", "example")
>>> back.dtype, back.tolist()
(dtype('uint16'), [[[0, 1, 2, 300]]])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError

__all__ = [
    "DTYPES_KEY",
    "for_torch",
    "mask_from_peer",
    "record_dtypes",
    "recorded_dtype",
    "spatial_to_xyz",
    "spatial_to_zyx",
]

#: Key of the Subject / dict entry that holds ``{key: ctflow dtype}`` of the masks handed over.
DTYPES_KEY = "ctflow_dtypes"

_TORCH_SAFE: dict[np.dtype[Any], np.dtype[Any]] = {
    np.dtype(np.uint16): np.dtype(np.int32),
    np.dtype(np.uint32): np.dtype(np.int64),
}


def for_torch(arr: NDArray[Any]) -> NDArray[Any]:
    """Return ``arr`` in a dtype torch supports fully, converted exactly (no copy when it is).

    bool -> uint8, uint16 -> int32, uint32 -> int64; uint64 -> int64 when its values fit.

    Examples
    --------
    >>> for_torch(np.zeros(2, np.uint8)).dtype, for_torch(np.zeros(2, np.uint16)).dtype
    (dtype('uint8'), dtype('int32'))
    """
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype in _TORCH_SAFE:
        return arr.astype(_TORCH_SAFE[arr.dtype])
    if arr.dtype == np.uint64:
        if arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise InvalidScanError(
                f"labels up to {int(arr.max())} do not fit in torch's int64; got uint64 masks"
            )
        return arr.astype(np.int64)
    return arr


def spatial_to_xyz(arr: NDArray[Any]) -> NDArray[Any]:
    """(Z, Y, X) -> (X, Y, Z), (C, Z, Y, X) -> (C, X, Y, Z): a transposed view, no copy.

    Examples
    --------
    >>> spatial_to_xyz(np.zeros((4, 2, 3, 5))).shape
    (4, 5, 3, 2)
    """
    if arr.ndim == 3:
        return arr.transpose(2, 1, 0)
    if arr.ndim == 4:
        return arr.transpose(0, 3, 2, 1)
    raise InvalidScanError(f"expected a (Z, Y, X) or (C, Z, Y, X) volume; got shape {arr.shape}")


def spatial_to_zyx(arr: NDArray[Any]) -> NDArray[Any]:
    """Undo :func:`spatial_to_xyz`: a C-contiguous array (copied only when needed).

    Examples
    --------
    >>> spatial_to_zyx(spatial_to_xyz(np.zeros((4, 2, 3, 5)))).shape
    (4, 2, 3, 5)
    """
    return np.ascontiguousarray(spatial_to_xyz(arr))


def record_dtypes(items: Mapping[str, NDArray[Any] | None]) -> dict[str, str]:
    """Return ``{key: dtype name}`` of the given masks (those that are not None).

    Examples
    --------
    >>> record_dtypes({"label": np.zeros(1, np.uint16), "lungs": None})
    {'label': 'uint16'}
    """
    return {key: np.dtype(arr.dtype).name for key, arr in items.items() if arr is not None}


def recorded_dtype(record: Any, key: str) -> str | None:
    """Return the dtype name recorded for ``key`` (None when there is no usable record).

    A batch of TorchIO subjects collates the record into lists (one name per subject): one
    name for them all is used, different names are none.

    Examples
    --------
    >>> recorded_dtype({"label": "uint16"}, "label"), recorded_dtype(None, "label")
    ('uint16', None)
    """
    if not isinstance(record, Mapping):
        return None
    value = record.get(key)
    if isinstance(value, (list, tuple)) and value and all(v == value[0] for v in value):
        value = value[0]
    return value if isinstance(value, str) else None


def mask_from_peer(arr: NDArray[Any], dtype: DTypeLike | None, where: str) -> NDArray[Any]:
    """Return a mask coming back from torch / MONAI / TorchIO in ctflow's dtype, exactly.

    Parameters
    ----------
    arr : ndarray
        The values as the peer holds them (any dtype).
    dtype : dtype-like or None
        The dtype to return (recorded when the mask left ctflow, or asked for). None: bool and
        integer labels become uint8 (uint16 above 255; other integers stay as they are), floats
        keep their dtype (probabilities, or labels a peer cast to float).
    where : str
        Names the mask in error messages.

    Returns
    -------
    ndarray
        Same values, the chosen dtype.

    Raises
    ------
    InvalidScanError
        Integer ``dtype`` asked for values that are not whole numbers in its range (a label map
        resampled with linear interpolation, for instance).

    Examples
    --------
    >>> mask_from_peer(np.array([0, 2, 5], np.int64), None, "m").dtype
    dtype('uint8')
    >>> mask_from_peer(np.array([0.25, 1.0], np.float32), None, "m").dtype
    dtype('float32')
    """
    if dtype is None:
        if arr.dtype == np.bool_:
            return arr.astype(np.uint8)
        if np.issubdtype(arr.dtype, np.integer):
            lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
            if lo < 0 or hi > 65535:
                return arr
            return arr.astype(np.uint8 if hi <= 255 else np.uint16)
        return arr
    try:
        target = np.dtype(dtype)
    except TypeError as exc:
        raise InvalidParameterError(f"{where}: {dtype!r} is not a numpy dtype") from exc
    if arr.dtype == target:
        return arr
    if np.issubdtype(target, np.integer) or target == np.bool_:
        _check_exact(arr, target, where)
    elif not np.issubdtype(target, np.floating):
        raise InvalidParameterError(f"{where}: masks must be integers or floats; got {target}")
    return arr.astype(target)


def _check_exact(arr: NDArray[Any], target: np.dtype[Any], where: str) -> None:
    """Raise unless every value of ``arr`` is a whole number ``target`` holds."""
    if arr.size == 0:
        return
    info = (0, 1) if target == np.bool_ else (np.iinfo(target).min, np.iinfo(target).max)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InvalidScanError(f"{where}: the labels hold NaN or infinite values")
        frac = arr != np.round(arr)
        if frac.any():
            example = float(arr[frac].flat[0])
            raise InvalidScanError(
                f"{where}: was {target} in ctflow but now holds values that are not whole "
                f"numbers (e.g. {example:g}): resample label maps with nearest-neighbour "
                f"interpolation (MONAI mode='nearest'; TorchIO LabelMap does it itself)"
            )
    lo, hi = arr.min(), arr.max()
    if lo < info[0] or hi > info[1]:
        raise InvalidScanError(
            f"{where}: values {lo:g}..{hi:g} do not fit in {target} (its range is "
            f"{info[0]}..{info[1]})"
        )
