"""Validation shared by the per-scan operations."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidScanError

__all__ = ["check_volume"]


def check_volume(image: Any, where: str) -> NDArray[Any]:
    """``image`` itself when it is a non-empty 3-D boolean / integer / float ndarray.

    Raises
    ------
    InvalidScanError
        Naming ``where`` and what is wrong.

    Examples
    --------
    >>> check_volume(np.zeros((1, 2, 2), np.int16), "op").shape
    (1, 2, 2)
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        got = f"shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidScanError(f"{where}: image must be a 3-D (z, y, x) ndarray; got {got}")
    if image.dtype.kind not in "biuf" or image.size == 0:
        raise InvalidScanError(
            f"{where}: image must be a non-empty boolean, integer or float volume; "
            f"got dtype {image.dtype}, shape {image.shape}"
        )
    return image
