"""Random actions for training: additive noise and cutout (drawn per item, recorded).

Each draws its parameters from the item's own generator (:meth:`make_params`) and applies them
deterministically (:meth:`apply`), so a seeded run gives the same output whatever the thread
count, prefetch or engine, and the record in the item's history applies again exactly.

The random intensity actions (``random_gamma``, ``random_contrast``, ``random_blur``,
``random_bias_field``, ``random_noise``: TorchIO's parameterisation, applied with probability
``p``) are in :mod:`ctflow.actions.augmentation_intensity`; the random geometric ones
(``random_flip``, ``random_affine``, ``random_elastic``) in :mod:`ctflow.actions.augment_geometry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.actions.base import ItemAction
from ctflow.validation import as_choice, as_float, as_int, as_shape

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = ["ApplyNoise", "Cutout"]

#: Exclusive upper bound of the seeds drawn for noise fields (also used by
#: :mod:`ctflow.actions.augmentation_intensity`).
_SEED_HIGH = 2**63 - 1


class ApplyNoise(ItemAction):
    """Add zero-mean noise of standard deviation ``sigma`` (image units) to every item.

    Each item draws a seed for its noise field from its own generator, derived from the run's
    seed, the batch's position and the item: results do not depend on threads, prefetch or
    engine, and the seed is recorded in the item's history. Output is float32.

    Parameters
    ----------
    sigma : float, default 10.0
        Standard deviation of the noise, in image units (HU for CT); a finite number >= 0.
    kind : {"gaussian", "uniform"}, default "gaussian"
        The distribution: normal ``N(0, sigma²)``, or uniform on ``[-sigma·√3, sigma·√3]``
        (the same standard deviation).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((4, 16, 16), np.int16)])
    >>> b.set_random_state(0, 0)
    >>> round(float(b.apply_noise(sigma=5.0).images.std()), 0)
    5.0
    """

    name = "apply_noise"
    family = "augmentation"
    sigma: float = 10.0
    kind: str = "gaussian"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("sigma", as_float(self.sigma, "sigma", self.name, lo=0.0, unit="(image units)"))
        as_choice(self.kind, ("gaussian", "uniform"), "kind", self.name)

    def make_params(self, item: CTItem) -> dict[str, Any]:
        """Return the seed of this item's noise field."""
        return {"seed": int(item.rng.integers(_SEED_HIGH))}

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> NDArray[np.float32]:
        """Add the noise field of ``params["seed"]``."""
        from ctflow.ops.augment import apply_noise

        images = item.require_images(self.name)
        rng = np.random.default_rng(int(params["seed"]))
        return apply_noise(images, self.sigma, rng, kind=self.kind)  # type: ignore[arg-type]


class Cutout(ItemAction):
    """Fill ``n_boxes`` boxes of ``shape`` voxels with one value ("random erasing").

    ``start`` fixes the box corner; by default each box's corner is drawn uniformly so the box
    lies inside the item (recorded in its history). ``fill`` is a value or "min" / "max" /
    "mean" of the item. Masks are left alone (the label is what the network should still
    predict).

    Parameters
    ----------
    shape : 3 ints (z, y, x)
        Size of each box in voxels, positive (one number is used on every axis). Required.
    start : 3 ints (z, y, x), optional
        Corner of every box, each >= 0 (all ``n_boxes`` boxes then coincide); a box reaching
        past the item is clipped. Default None: each box's corner is drawn per item so the box
        lies inside the item (corner 0 on an axis where the item is smaller than the box).
    n_boxes : int, default 1
        Boxes per item (>= 1); drawn boxes may overlap.
    fill : float or {"min", "max", "mean"}, default "min"
        The value, or that statistic of the item's images ("min" is air); rounded half away
        from zero for integer images, and it must fit their dtype.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.ones((4, 8, 8), np.int16)])
    >>> int(b.cutout((2, 2, 2), start=(0, 0, 0), fill=0).images.sum())
    248
    """

    name = "cutout"
    family = "augmentation"
    shape: Sequence[int]
    start: Sequence[int] | None = None
    n_boxes: int = 1
    fill: Any = "min"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("shape", as_shape(self.shape, where=self.name))
        if self.start is not None:
            try:
                st = tuple(as_int(v, "start", self.name, lo=0) for v in self.start)
            except TypeError:
                st = ()
            if len(st) != 3:
                raise self.invalid("start", "3 integers >= 0 (z, y, x) or None", self.start)
            self._set("start", st)
        self._set("n_boxes", as_int(self.n_boxes, "n_boxes", self.name, lo=1))
        if isinstance(self.fill, str):
            as_choice(self.fill, ("min", "max", "mean"), "fill", self.name)
        else:
            self._set("fill", as_float(self.fill, "fill", self.name))

    def make_params(self, item: CTItem) -> dict[str, Any]:
        """Return the corner of every box."""
        shape = np.asarray(item.require_images(self.name).shape)
        starts = []
        for _ in range(self.n_boxes):
            if self.start is None:
                high = np.maximum(shape - np.asarray(self.shape), 0) + 1
                starts.append([int(v) for v in item.rng.integers(0, high)])
            else:
                starts.append([int(v) for v in self.start])
        return {"starts": starts}

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> NDArray[Any]:
        """Fill the boxes."""
        from ctflow.ops.augment import cutout

        out = item.require_images(self.name)
        for corner in params["starts"]:
            out = cutout(out, np.asarray(corner, dtype=np.int64), self.shape, fill=self.fill)
        return out
