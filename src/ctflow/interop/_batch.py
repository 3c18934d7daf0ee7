"""The one-item batch that the ``from_*`` converters of :mod:`ctflow.interop` return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from numpy.typing import NDArray

from ctflow.geometry import Geometry


def batch_from_volumes(volumes: Mapping[str, NDArray[Any]], geometry: Geometry, ident: str) -> Any:
    """Return a one-item :class:`~ctflow.CTBatch` of ``images`` (+ ``masks``, ``lungs``)."""
    from ctflow.batch import CTBatch

    batch = CTBatch.from_arrays(
        [volumes["images"]],
        ids=[ident],
        spacing=geometry.spacing,
        origin=geometry.origin,
        direction=geometry.direction,
        masks=[volumes["masks"]] if "masks" in volumes else None,
    )
    if "lungs" in volumes:
        batch.lungs = volumes["lungs"]
    return batch
