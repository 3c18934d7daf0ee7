"""The in-memory result of reading one scan file (or DICOM series): voxels plus geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.geometry import Geometry

__all__ = ["Scan"]


@dataclass
class Scan:
    """One scan as read from disk.

    Attributes
    ----------
    images : ndarray (Z, Y, X)
        Voxels, HU, int16 for CT (float32 only for float source files).
    geometry : Geometry
        Spacing, origin and direction in (z, y, x), world LPS mm.
    source : str
        The path the scan came from.
    info : dict
        Format-specific facts worth reporting (e.g. skipped DICOM files, modality).
    """

    images: NDArray[Any]
    geometry: Geometry
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) of the volume."""
        z, y, x = self.images.shape
        return int(z), int(y), int(x)

    def __repr__(self) -> str:
        return (
            f"Scan(shape={self.shape}, dtype={np.dtype(self.images.dtype).name}, "
            f"{self.geometry!r}, source={self.source!r})"
        )
