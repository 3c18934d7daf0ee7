"""The label map a DICOM SEG or RT Structure Set is drawn on, one plane at a time.

:data:`OVERLAP` lists the rules for segments (ROIs) sharing a voxel; ``_Canvas`` applies them
(the rules are in :mod:`ctflow.io.dicom.seg` and :mod:`ctflow.io.dicom.rtstruct`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidScanError
from ctflow.io.dicom.label_objects import Segment
from ctflow.labels import label_dtype

__all__ = ["OVERLAP"]

#: How overlapping segments (or ROIs) become labels: refuse, first wins, last wins, channels.
OVERLAP = ("error", "first", "last", "channels")


class _Canvas:
    """A label map (or one channel per segment) drawn one 2-D plane at a time.

    Planes hold label values (0 = nothing). The overlap rule does not depend on the order in
    which planes come: "first" / "last" compare the segments' ranks.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        segments: Sequence[Segment],
        overlap: str,
        where: str,
        kind: str = "segments",
    ) -> None:
        self.segments = {s.value: s for s in segments}
        self.overlap = overlap
        self.where = where
        self.kind = kind
        top = max([s.value for s in segments], default=0)
        self.rank = np.zeros(top + 1, np.int64)
        for i, s in enumerate(segments):
            self.rank[s.value] = i + 1
        if overlap == "channels":
            self.out = np.zeros((len(segments), *shape), np.uint8)
            self.channel = {s.value: i for i, s in enumerate(segments)}
        else:
            self.out = np.zeros(shape, label_dtype(np.array([top])))

    def add(self, z: int, y0: int, x0: int, values: NDArray[Any]) -> bool:
        """Draw ``values`` with its pixel (0, 0) at voxel (z, y0, x0).

        Returns False when some of its non-zero pixels fell outside the grid (dropped).
        """
        n_z, n_y, n_x = self.out.shape[-3:]
        h, w = values.shape
        ya, yb, xa, xb = max(y0, 0), min(y0 + h, n_y), max(x0, 0), min(x0 + w, n_x)
        if not (0 <= z < n_z and ya < yb and xa < xb):
            return not values.any()
        part = values[ya - y0 : yb - y0, xa - x0 : xb - x0]
        kept = part.shape == values.shape or np.count_nonzero(part) == np.count_nonzero(values)
        if part.any():
            self._draw(z, slice(ya, yb), slice(xa, xb), part)
        return kept

    def _draw(self, z: int, ys: slice, xs: slice, part: NDArray[Any]) -> None:
        if self.overlap == "channels":
            for v in np.unique(part[part > 0]).tolist():
                self.out[self.channel[v], z, ys, xs][part == v] = 1
            return
        region = self.out[z, ys, xs]
        new = part != 0
        if self.overlap == "error":
            clash = new & (region != 0) & (region != part)
            if clash.any():
                raise self._clash(z, ys, xs, clash, region, part)
            region[new] = part[new]
            return
        taken = region != 0
        if self.overlap == "first":
            new &= ~taken | (self.rank[region] > self.rank[part])
        else:
            new &= ~taken | (self.rank[region] < self.rank[part])
        region[new] = part[new]

    def _clash(
        self,
        z: int,
        ys: slice,
        xs: slice,
        clash: NDArray[np.bool_],
        region: NDArray[Any],
        part: NDArray[Any],
    ) -> InvalidScanError:
        i, j = (int(v[0]) for v in np.nonzero(clash))
        a, b = self.segments[int(region[i, j])], self.segments[int(part[i, j])]
        voxel = (z, ys.start + i, xs.start + j)
        return InvalidScanError(
            f"{self.where}: {self.kind} {a.number} {a.label!r} and {b.number} {b.label!r} "
            f"overlap ({int(clash.sum())} voxel(s) of slice {z}, e.g. voxel (z, y, x) = {voxel}); "
            "a label map holds one label per voxel: pass overlap='first' or 'last' to choose, or "
            "overlap='channels' for one binary channel per segment"
        )
