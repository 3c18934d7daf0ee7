"""What a mask holds, read before it is drawn by :mod:`ctflow.viz_panels`.

:func:`describe_mask` tells a **binary** mask (values 0 and 1, any dtype), a **label map** (whole
numbers beyond 0 and 1, e.g. {0, 1, 2, 5}) and **probabilities** (floats in [0, 1] that are not
all whole) apart and lists the labels present, as a :class:`MaskLabels`; :func:`mask_focus`
picks the voxels a picture centres on. Nothing here needs matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError

__all__ = ["MaskLabels", "check_label_names", "describe_mask", "mask_focus"]


@dataclass(frozen=True)
class MaskLabels:
    """What a mask holds, which decides how it is drawn (see the module docstring).

    Attributes
    ----------
    kind : {"binary", "labels", "probabilities"}
        How the mask is drawn.
    values : tuple of int
        The nonzero labels present (``(1,)`` for a non-empty binary mask; empty for
        probabilities).
    names : mapping of int to str
        Names the user gave to label values, shown in the legend.
    counts : tuple of int
        Voxels of each label of ``values``.
    """

    kind: str
    values: tuple[int, ...] = ()
    names: Mapping[int, str] = field(default_factory=dict)
    counts: tuple[int, ...] = ()

    @property
    def rarest(self) -> int | None:
        """Return the label with the fewest voxels (the first of them on a tie), or None."""
        if not self.values:
            return None
        return self.values[int(np.argmin(self.counts))]

    def text(self, value: int) -> str:
        """Return the legend text of label ``value``: ``"2: lung"``, or ``"2"`` unnamed."""
        name = self.names.get(value)
        return f"{value}: {name}" if name else str(value)


def check_label_names(names: Any) -> dict[int, str]:
    """Return ``{label value: name}`` from a mapping of whole numbers to strings.

    Raises
    ------
    InvalidParameterError
        Not a mapping, a key that is not a whole number, a name that is not a string.

    Examples
    --------
    >>> check_label_names({1: "body", "2": "lung"})
    {1: 'body', 2: 'lung'}
    """
    if names is None:
        return {}
    if not isinstance(names, Mapping):
        raise InvalidParameterError(
            f"viz: label_names must map label values to names, e.g. {{1: 'body', 2: 'lung'}}; "
            f"got {type(names).__name__}"
        )
    out: dict[int, str] = {}
    for key, name in names.items():
        try:
            value = int(key)
            whole = float(key) == value
        except (TypeError, ValueError):
            whole = False
        if not whole or not isinstance(name, str):
            raise InvalidParameterError(
                f"viz: label_names must map whole-number label values to strings; "
                f"got {key!r}: {name!r}"
            )
        out[value] = name
    return out


def describe_mask(masks: NDArray[Any], label_names: Any = None) -> MaskLabels:
    """Return whether ``masks`` is binary, a label map or probabilities, and its labels.

    Parameters
    ----------
    masks : ndarray
        Any dtype: bool, integers, or floats (whole-number floats are labels).
    label_names : mapping of int to str, optional
        Names of label values.

    Returns
    -------
    MaskLabels

    Raises
    ------
    InvalidParameterError
        Floats that are neither whole numbers nor probabilities in [0, 1] (NaN, logits).

    Examples
    --------
    >>> describe_mask(np.array([0, 2, 5, 2], np.uint8))
    MaskLabels(kind='labels', values=(2, 5), names={}, counts=(2, 1))
    >>> describe_mask(np.array([0.0, 0.3, 0.9], np.float32)).kind
    'probabilities'
    >>> describe_mask(np.array([0, 1], np.int16)).kind
    'binary'
    """
    names = check_label_names(label_names)
    arr = np.asarray(masks)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.all(np.isfinite(arr)):
            raise InvalidParameterError("viz: masks hold NaN or infinite values")
        if not np.array_equal(arr, np.round(arr)):
            lo, hi = float(arr.min()), float(arr.max())
            if lo < 0 or hi > 1:
                raise InvalidParameterError(
                    f"viz: float masks must be probabilities in [0, 1] or whole-number labels; "
                    f"got values {lo:g}..{hi:g}"
                )
            return MaskLabels("probabilities", (), names)
    if arr.dtype in (np.uint8, np.uint16):
        bins = np.bincount(arr.ravel(), minlength=2)
        values = np.flatnonzero(bins)
        counts = bins[values]
    else:
        values, counts = np.unique(arr, return_counts=True)
    keep = values != 0
    labels = tuple(int(v) for v in values[keep].tolist())
    kind = "binary" if set(labels) <= {1} else "labels"
    return MaskLabels(kind, labels, names, tuple(int(n) for n in counts[keep].tolist()))


def mask_focus(masks: NDArray[Any], info: MaskLabels | None) -> NDArray[np.bool_]:
    """Return the voxels a picture of ``masks`` centres on.

    A binary mask's voxels; a label map's rarest label (the smallest structure: a lesion
    among organs); probabilities of at least 0.5 (any nonzero when none reaches it).

    Examples
    --------
    >>> m = np.array([1, 1, 5, 2, 2], np.uint8)
    >>> mask_focus(m, describe_mask(m)).tolist()
    [False, False, True, False, False]
    """
    if info is not None and info.kind == "labels" and info.rarest is not None:
        return np.asarray(masks == info.rarest)
    if info is not None and info.kind == "probabilities":
        sure = np.asarray(masks >= 0.5)
        if sure.any():
            return sure
    return np.asarray(masks != 0)
