"""The in-memory result of reading one scan file (or DICOM series): voxels plus geometry.

Examples
--------
>>> import numpy as np
>>> from ctflow.geometry import Geometry
>>> scan = Scan(np.zeros((2, 3, 4), np.int16), Geometry((2.0, 1.0, 1.0)), "a.mhd",
...             {"format": "mhd", "skipped": [{"file": "x.txt", "reason": "not a DICOM file"}]})
>>> scan.shape, scan.skipped[0]["file"]
((2, 3, 4), 'x.txt')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.geometry import Geometry

__all__ = ["Scan"]

#: ``info`` keys that :meth:`Scan.describe` shows in detail (the rest are printed as they are).
_LONG_KEYS = ("files", "series", "skipped", "warnings", "key_values")


@dataclass
class Scan:
    """One scan as read from disk.

    Attributes
    ----------
    images : ndarray (Z, Y, X)
        Voxels in the file's stored orientation (the direction matrix carries it), HU int16
        for CT (float32 only when the values need it).
    geometry : Geometry
        Spacing, origin and direction in (z, y, x), world LPS mm.
    source : str
        The path the scan came from.
    info : dict
        JSON-friendly, format-specific facts: always ``format`` and ``reader``; ``warnings``
        (list of str) when the reader accepted something questionable; for DICOM series
        ``skipped`` (``[{"file", "reason"}]``: every file of the folder that was not read) and
        ``series`` (every series found, with ``chosen``).
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

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Files of the source that were not read, with the reason (``[]`` for single files)."""
        return list(self.info.get("skipped", []))

    @property
    def warnings(self) -> list[str]:
        """What the reader accepted but you should know (e.g. uneven spacing read anyway)."""
        return list(self.info.get("warnings", []))

    def describe(self) -> str:
        """Return a human-readable multi-line summary (what ``ctflow info`` prints).

        Examples
        --------
        >>> import numpy as np
        >>> from ctflow.geometry import Geometry
        >>> s = Scan(np.zeros((1, 2, 2), np.int16), Geometry((1, 1, 1)), "s", {"format": "x"})
        >>> print(s.describe().splitlines()[1])
        shape:     (1, 2, 2) (z, y, x), int16
        """
        img, g = self.images, self.geometry
        lines = [
            f"source:    {self.source}",
            f"shape:     {self.shape} (z, y, x), {np.dtype(img.dtype).name}",
            f"spacing:   {tuple(round(float(v), 6) for v in g.spacing)} mm (z, y, x)",
            f"origin:    {tuple(round(float(v), 4) for v in g.origin)} mm (z, y, x), LPS",
            f"direction: {g.direction.round(6).tolist()}",
        ]
        if img.size:
            mean = float(img.mean(dtype=np.float64))
            lines.append(f"values:    min {img.min()} max {img.max()} mean {mean:.1f}")
        for key, value in self.info.items():
            if key not in _LONG_KEYS:
                lines.append(f"{key + ':':<10} {value}")
        if "files" in self.info:
            lines.append(f"files:     {len(self.info['files'])} read")
        for s in self.info.get("series", []):
            mark = "*" if s.get("chosen") else " "
            lines.append(
                f"series:  {mark} {s.get('uid')} {s.get('modality')} {s.get('n_files')} file(s) "
                f"{s.get('description', '')!r}"
            )
        for w in self.warnings:
            lines.append(f"warning:   {w}")
        for s in self.skipped:
            lines.append(f"skipped:   {s['file']}: {s['reason']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        """Return a one-line summary: shape, dtype, geometry and source."""
        return (
            f"Scan(shape={self.shape}, dtype={np.dtype(self.images.dtype).name}, "
            f"{self.geometry!r}, source={self.source!r})"
        )
