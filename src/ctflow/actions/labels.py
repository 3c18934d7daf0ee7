"""Label encodings of ``masks``: one channel per class and back.

A segmentation model is trained against one-hot targets and returns one probability channel per
class; a viewer, a metric or ``fetch_nodules_from_mask`` wants one label map. ``one_hot`` turns
each item's label map (Z, Y, X) into (C, Z, Y, X) channels, ``argmax`` turns channels back into
a label map. Masks with channels follow every geometric action (each channel as probabilities,
linear) and ``invert``, and reach torch as (N, C, Z, Y, X).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ctflow.actions.base import ItemAction
from ctflow.errors import InvalidParameterError
from ctflow.validation import as_dtype, as_int

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = ["Argmax", "OneHot"]


def _values(action: ItemAction, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        # ctflow.labels.label_dtype refuses labels above 65535 (uint16) when the action runs
        values = tuple(as_int(v, "values", action.name, lo=0, hi=65535) for v in value)
    except TypeError:
        values = ()
    if not values or len(set(values)) != len(values):
        raise action.invalid("values", "distinct label values, one per channel", value)
    return values


def _masks(item: CTItem, action: str, ndim: int) -> Any:
    masks = item.masks
    if masks is None:
        raise InvalidParameterError(f"{action}: item {item.id!r} has no masks")
    if masks.ndim != ndim:
        want = "a label map (Z, Y, X)" if ndim == 3 else "channels (C, Z, Y, X)"
        raise InvalidParameterError(
            f"{action}: the masks of item {item.id!r} have shape {masks.shape}; expected {want}"
        )
    return masks


class OneHot(ItemAction):
    """Turn every item's label map into one channel per class: masks become (C, Z, Y, X).

    Channel ``c`` is 1 where the label is ``c`` (``n_classes`` channels), or where it is
    ``values[c]`` (labels that are not consecutive, e.g. ``values=(0, 1, 2, 5)``). A label
    without a channel is an error (it would vanish).

    Parameters
    ----------
    n_classes : int, optional
        Channels for labels ``0 .. n_classes - 1``, an integer in [1, 65536]. Give exactly one
        of ``n_classes`` and ``values``.
    values : sequence of int, optional
        The label of each channel (instead of ``n_classes``): distinct integers in [0, 65535],
        at least one.
    dtype : {"uint8", "float32"}, default "uint8"
        Channel dtype (numpy spellings accepted). uint8 takes a quarter of float32's memory;
        torch hand-off converts on the way.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((1, 1, 3), np.int16)])
    >>> b = b.set_component("masks", [np.array([[[0, 2, 5]]], np.uint8)])
    >>> b.one_hot(values=(0, 2, 5))[0].masks[:, 0, 0].tolist()
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    """

    name = "one_hot"
    family = "labels"
    n_classes: int | None = None
    values: Sequence[int] | None = None
    dtype: Any = "uint8"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        if (self.n_classes is None) == (self.values is None):
            raise self.invalid("n_classes", "n_classes or values (one of the two)", self.n_classes)
        if self.n_classes is not None:
            as_int(self.n_classes, "n_classes", self.name, lo=1, hi=65536)
        self._set("values", _values(self, self.values))
        as_dtype(self.dtype, [np.uint8, np.float32], "dtype", self.name)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Encode one item's labels."""
        from ctflow.labels import one_hot

        masks = _masks(item, self.name, 3)
        out = one_hot(masks, self.n_classes, values=self.values, dtype=np.dtype(self.dtype))
        return {"masks": out}


class Argmax(ItemAction):
    """Turn every item's (C, Z, Y, X) masks into a label map: the largest channel per voxel.

    Channel ``c`` stands for label ``c``, or ``values[c]``. Ties go to the first channel.

    Parameters
    ----------
    values : sequence of int, optional
        The label of each channel: distinct integers in [0, 65535], one per channel of the
        masks (a different count fails when run). Default None: channel ``c`` gives label ``c``. The
        labels are uint8 (uint16 above 255).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((1, 1, 2), np.int16)])
    >>> p = np.array([[[[0.2, 0.7]]], [[[0.8, 0.3]]]], np.float32)
    >>> b.set_component("masks", [p]).argmax(values=(0, 5)).masks.tolist()
    [[[5, 0]]]
    """

    name = "argmax"
    family = "labels"
    values: Sequence[int] | None = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("values", _values(self, self.values))

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Decode one item's channels."""
        from ctflow.labels import argmax

        return {"masks": argmax(_masks(item, self.name, 4), values=self.values)}
