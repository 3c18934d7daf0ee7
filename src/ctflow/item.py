"""One item of a batch: views of its volumes, its geometry, nodules, record and generator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidScanError, describe
from ctflow.geometry import Geometry

__all__ = ["CTItem", "ItemFailure"]


@dataclass
class ItemFailure:
    """An item dropped from a batch under ``on_error="skip"``."""

    id: str
    action: str
    error: BaseException

    def __str__(self) -> str:
        """Return the summary."""
        return f"{self.id}: {self.action}: {describe(self.error)}"


@dataclass
class CTItem:
    """One item of a batch: views into the batch's buffers plus the item's geometry.

    Attributes
    ----------
    index : int
        Position in the batch.
    id : str
        Item id.
    images, masks, lungs : ndarray (Z, Y, X) or None
        Views into the batch's buffers (writing to them writes to the batch).
    geometry : Geometry
        Spacing, origin, direction of the item.
    nodules : DataFrame
        The item's rows of the batch nodule table (world mm).
    source : str or None
        Where the item is loaded from.
    label_source : str or None
        The item's label file (read into ``masks`` by ``load``), if any.
    rng : numpy.random.Generator
        Deterministic per (seed, batch position, action, item) generator for random actions.
    rngs : list of numpy.random.Generator
        One generator per action of a fused group (``rngs[0] is rng``).
    warnings : list of str
        The item's warnings so far (``"action: message"``).
    history : list of dict
        The actions applied to the item so far, with their parameters as drawn (JSON).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> item = cf.CTBatch.from_arrays([np.zeros((2, 3, 4), np.int16)], ids=["a"])[0]
    >>> item.id, item.shape, item.spacing.tolist()
    ('a', (2, 3, 4), [1.0, 1.0, 1.0])
    """

    index: int
    id: str
    images: NDArray[Any] | None
    masks: NDArray[Any] | None
    lungs: NDArray[Any] | None
    geometry: Geometry
    nodules: pd.DataFrame
    source: str | None = None
    label_source: str | None = None
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    rngs: list[np.random.Generator] = field(default_factory=list, repr=False)
    n_threads: int = 1
    warnings: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    new_warnings: list[str] = field(default_factory=list, repr=False)

    @property
    def spacing(self) -> NDArray[np.float64]:
        """(z, y, x) voxel size in mm."""
        return self.geometry.spacing

    @property
    def origin(self) -> NDArray[np.float64]:
        """World (z, y, x) mm of voxel (0, 0, 0)."""
        return self.geometry.origin

    @property
    def direction(self) -> NDArray[np.float64]:
        """3x3 axis cosines in (z, y, x)."""
        return self.geometry.direction

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) of the item's images."""
        if self.images is None:
            raise InvalidScanError(f"item {self.id!r} has no images (load it first)")
        z, y, x = self.images.shape
        return int(z), int(y), int(x)

    def voxel_to_world(self, zyx: ArrayLike) -> NDArray[np.float64]:
        """Voxel indices (N, 3) -> world mm (N, 3), (z, y, x)."""
        return self.geometry.voxel_to_world(zyx)

    def world_to_voxel(self, zyx: ArrayLike) -> NDArray[np.float64]:
        """World mm (N, 3) -> continuous voxel indices (N, 3), (z, y, x)."""
        return self.geometry.world_to_voxel(zyx)

    def warn(self, message: str) -> None:
        """Record a warning about this item (filed under the running action's name)."""
        self.new_warnings.append(str(message))

    def require_images(self, what: str) -> NDArray[Any]:
        """Return the item's images, or a clear error naming ``what`` needs them."""
        if self.images is None:
            from ctflow.errors import InvalidParameterError

            raise InvalidParameterError(
                f"{what}: item {self.id!r} has no images; call load() first"
            )
        return self.images
