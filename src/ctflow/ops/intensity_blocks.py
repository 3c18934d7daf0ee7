"""The threaded block loops shared by the intensity augmentations of one scan.

:mod:`ctflow.ops.intensity_random` and :mod:`ctflow.ops.intensity_spatial` run their voxel-wise
maps a block of slices at a time on threads (:func:`_over_slices`); below
``_MIN_VOXELS_PER_THREAD`` voxels per thread no extra thread is started (:func:`_min_size`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.threads import run_ranges

#: Voxels below which extra threads are not worth starting.
_MIN_VOXELS_PER_THREAD = 1 << 18


def _min_size(voxels_per_item: int) -> int:
    """Items (slices, rows) a thread takes at least, when each holds ``voxels_per_item`` voxels."""
    return max(1, _MIN_VOXELS_PER_THREAD // max(1, voxels_per_item))


def _as_float32_copy(image: NDArray[Any], out: NDArray[np.float32], a: int, b: int) -> None:
    """``out[a:b] = image[a:b]`` as float32 (slices ``[a, b)``)."""
    np.copyto(out[a:b], image[a:b], casting="unsafe")


def _over_slices(
    fn: Callable[[int, int], None], shape: tuple[int, ...], n_threads: int, block: int
) -> None:
    """Run ``fn(z0, z1)`` over the slices in blocks of about ``block`` voxels, on threads."""
    plane = max(1, int(shape[1]) * int(shape[2]))
    step = max(1, block // plane)

    def part(a: int, b: int) -> None:
        for z in range(a, b, step):
            fn(z, min(z + step, b))

    run_ranges(part, int(shape[0]), n_threads, min_size=_min_size(plane))
