"""The one-item batch that the ``from_*`` converters of :mod:`ctflow.interop` return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from numpy.typing import NDArray

from ctflow.geometry import Geometry


def batch_from_volumes(volumes: Mapping[str, NDArray[Any]], geometry: Geometry, ident: str) -> Any:
    """Return a one-item :class:`~ctflow.CTBatch` of ``images`` (+ ``masks``, ``lungs``).

    The arrays keep their dtypes; ``masks`` may be (Z, Y, X) or (C, Z, Y, X).

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.geometry import Geometry
    >>> vols = {"images": np.zeros((2, 3, 4), np.int16), "masks": np.zeros((3, 2, 3, 4), np.uint8)}
    >>> batch_from_volumes(vols, Geometry((1, 1, 1)), "a")[0].masks.shape
    (3, 2, 3, 4)
    """
    from ctflow.batch import CTBatch
    from ctflow.ragged import Ragged

    masks = volumes.get("masks")
    batch = CTBatch.from_arrays(
        [volumes["images"]],
        ids=[ident],
        spacing=geometry.spacing,
        origin=geometry.origin,
        direction=geometry.direction,
        masks=[masks] if masks is not None and masks.ndim == 3 else None,
    )
    if masks is not None and masks.ndim == 4:  # channels: (C, Z, Y, X)
        batch.masks = Ragged.from_items([masks])
    if "lungs" in volumes:
        batch.lungs = volumes["lungs"]
    return batch
