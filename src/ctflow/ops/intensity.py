"""Intensity transforms of scans: HU windowing / normalisation.

:func:`normalize_hu` clips Hounsfield units to ``[min_hu, max_hu]`` and scales them to ``[0, 1]``
float32, or to ``0..255`` uint8 (rounded half up: ``floor(t * 255 + 0.5)``). It is one fused
pass (a numba ``nogil`` kernel from :mod:`ctflow.kernels.intensity`) over the flat array, with
no temporaries, reading int16, uint8, float32 (or any integer / float64) input directly;
``n_threads`` splits the flat range over threads. The per-voxel arithmetic is float64 in
registers, so the float32 result is the correctly rounded value of
``(clip(x, min_hu, max_hu) - min_hu) / (max_hu - min_hu)``.

NaN voxels (float inputs) stay NaN in a float32 output; a uint8 output cannot hold NaN, so
:class:`~ctflow.errors.InvalidScanError` is raised instead. ``+-inf`` clip like any value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ctflow import memory
from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.kernels.intensity import (
    STREAM_STORES,
    normalize_float32,
    normalize_int16_float32_stream,
    normalize_int_float32,
    normalize_uint8,
)
from ctflow.threads import run_ranges
from ctflow.tuning import settings
from ctflow.validation import as_dtype, as_float, as_threads

__all__ = ["NORMALIZE_DTYPES", "normalize_hu"]

#: Output dtypes of :func:`normalize_hu`.
NORMALIZE_DTYPES = (np.dtype(np.float32), np.dtype(np.uint8))
#: Voxels below which extra threads are not worth starting.
_MIN_VOXELS_PER_THREAD = 1 << 18
#: Largest integral window for which the division-free kernel is exact (see its docstring).
_MAX_EXACT_SPAN = 2**26


def normalize_hu(
    image: NDArray[Any],
    min_hu: float = -1000.0,
    max_hu: float = 400.0,
    dtype: DTypeLike = "float32",
    *,
    out: NDArray[Any] | None = None,
    n_threads: int = 1,
) -> NDArray[Any]:
    """Clip HU to ``[min_hu, max_hu]`` and scale to ``[0, 1]`` float32 (or ``0..255`` uint8).

    ``t = (clip(x, min_hu, max_hu) - min_hu) / (max_hu - min_hu)``; float32 output stores ``t``,
    uint8 output stores ``floor(t * 255 + 0.5)``.

    Parameters
    ----------
    image : ndarray
        Volume of any shape (normally (z, y, x)); integer (int16 HU, uint8 ...), float32 or
        float64. A non-contiguous array is copied once.
    min_hu, max_hu : float, default -1000.0, 400.0
        The HU window; ``min_hu < max_hu``.
    dtype : {"float32", "uint8"}, default "float32"
        Output dtype (numpy dtypes accepted).
    out : ndarray, optional
        C-contiguous writeable array of ``image``'s shape and of ``dtype`` to write into; may be
        ``image`` itself (in-place) when the dtypes match.
    n_threads : int, default 1
        Threads splitting the flat voxel range (the kernel releases the GIL).

    Returns
    -------
    ndarray
        ``out`` when given, else a new array of ``image``'s shape.

    Raises
    ------
    InvalidParameterError
        Bad ``image`` type, window, ``dtype``, ``out`` or ``n_threads``.
    InvalidScanError
        ``image`` has NaN voxels and ``dtype`` is uint8.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.array([-2000, -1000, -300, 400, 3000], dtype=np.int16)
    >>> normalize_hu(img).tolist()
    [0.0, 0.0, 0.5, 1.0, 1.0]
    >>> normalize_hu(img, dtype="uint8").tolist()
    [0, 0, 128, 255, 255]
    """
    where = "normalize_hu"
    if not isinstance(image, np.ndarray):
        raise InvalidParameterError(
            f"{where}: image must be an ndarray; got {type(image).__name__}"
        )
    if image.dtype.kind not in "iuf" or image.dtype == np.float16:
        raise InvalidParameterError(
            f"{where}: image must be an integer, float32 or float64 array; got dtype {image.dtype}"
        )
    lo = as_float(min_hu, "min_hu", where, unit="(HU)")
    hi = as_float(max_hu, "max_hu", where, unit="(HU)")
    if not lo < hi:
        raise InvalidParameterError(
            f"{where}: min_hu must be < max_hu; got min_hu={min_hu!r}, max_hu={max_hu!r}"
        )
    out_dtype = as_dtype(dtype, NORMALIZE_DTYPES, "dtype", where, none=False)
    assert out_dtype is not None  # none=False
    n_threads = as_threads(n_threads, where)
    if out is None:
        result = memory.empty(image.shape, out_dtype)
    else:
        if not isinstance(out, np.ndarray) or out.shape != image.shape or out.dtype != out_dtype:
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise InvalidParameterError(
                f"{where}: out must be a {out_dtype} array of shape {image.shape}; got {got}"
            )
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise InvalidParameterError(f"{where}: out must be C-contiguous and writeable")
        result = out
    src = np.ascontiguousarray(image).reshape(-1)
    dst = result.reshape(-1)
    kernel: Callable[..., Any] = normalize_uint8 if out_dtype == np.uint8 else normalize_float32
    args: tuple[float, ...] = (lo, hi)
    exact_int = lo.is_integer() and hi.is_integer() and hi - lo < _MAX_EXACT_SPAN
    if out_dtype == np.float32 and src.dtype.kind in "iu" and exact_int:
        kernel, args = normalize_int_float32, (lo, hi, 1.0 / (hi - lo))  # no division per voxel
        if STREAM_STORES and settings().streaming and src.dtype == np.int16:  # bypasses the cache
            kernel = normalize_int16_float32_stream
    parts = run_ranges(
        lambda a, b: kernel(src, dst, *args, a, b),
        dst.size,
        n_threads,
        min_size=_MIN_VOXELS_PER_THREAD,
    )
    counts = [c for *_, c in parts]
    if out_dtype == np.uint8:
        n_nan = sum(int(c) for c in counts)
        if n_nan:
            raise InvalidScanError(
                f"{where}: image must not contain NaN for a uint8 output; got {n_nan} NaN voxels "
                f"(use dtype='float32' to keep them as NaN)"
            )
    return result
