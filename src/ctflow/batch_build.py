"""How new batches are built: from in-memory volumes, by concatenation, by selecting items.

The work behind ``CTBatch.from_arrays``, ``CTBatch.concat`` and ``CTBatch.select``
(:class:`~ctflow.batch.CTBatch`), which :mod:`ctflow.batch`, the data structure, calls.

Examples
--------
>>> import numpy as np
>>> from ctflow.batch import CTBatch
>>> a = batch_from_arrays(CTBatch, [np.zeros((2, 4, 4), np.int16)], ids=["a"])
>>> b = batch_from_arrays(CTBatch, [np.ones((3, 4, 4), np.int16)], ids=["b"])
>>> c = concat_batches(CTBatch, [a, b])
>>> c.ids, select_items(c, [1], copy=True).ids
(['a', 'b'], ['b'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ctflow.components import SKYSCRAPER
from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry
from ctflow.io.annotations import read_annotations
from ctflow.ragged import Ragged

if TYPE_CHECKING:
    from ctflow.batch import CTBatch

__all__ = ["batch_from_arrays", "concat_batches", "select_items"]


def batch_from_arrays(
    cls: type[CTBatch],
    images: Sequence[NDArray[Any]],
    *,
    ids: Sequence[str] | None = None,
    spacing: ArrayLike | None = None,
    origin: ArrayLike | None = None,
    direction: ArrayLike | None = None,
    masks: Sequence[NDArray[Any]] | None = None,
    nodules: pd.DataFrame | None = None,
    n_workers: int | None = None,
) -> CTBatch:
    """Build a batch of class ``cls`` from in-memory (Z, Y, X) volumes of any shapes.

    Parameters
    ----------
    cls : type
        The batch class.
    images : sequence of ndarray
        The (Z, Y, X) volumes, one per item.
    ids : sequence of str, optional
        Item ids (default ``"0", "1", ...``).
    spacing, origin : array_like, optional
        (3,) for all items or (N, 3), (z, y, x) mm (default 1 mm; 0).
    direction : array_like, optional
        (3, 3) for all items or (N, 3, 3) (default identity).
    masks : sequence of ndarray, optional
        One mask per item.
    nodules : DataFrame, optional
        Nodules (``id, z, y, x, diameter``, world mm).
    n_workers : int, optional
        Threads for item-parallel actions.

    Returns
    -------
    CTBatch
        The new batch (of class ``cls``).

    Raises
    ------
    InvalidParameterError
        No volume (the batch class checks the ids, geometry, masks and nodules).

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.batch import CTBatch
    >>> b = batch_from_arrays(CTBatch, [np.zeros((2, 4, 4), np.int16)], spacing=(2.0, 1.0, 1.0))
    >>> b.ids, b[0].spacing.tolist()
    (['0'], [2.0, 1.0, 1.0])
    """
    n = len(images)
    if n == 0:
        raise InvalidParameterError("from_arrays: give at least one volume")
    batch = cls([str(i) for i in range(n)] if ids is None else ids, n_workers=n_workers)
    sp = (
        np.ones((n, 3))
        if spacing is None
        else np.broadcast_to(np.asarray(spacing, np.float64), (n, 3))
    )
    org = (
        np.zeros((n, 3))
        if origin is None
        else np.broadcast_to(np.asarray(origin, np.float64), (n, 3))
    )
    dirs = (
        np.tile(np.eye(3), (n, 1, 1))
        if direction is None
        else np.broadcast_to(np.asarray(direction, np.float64), (n, 3, 3))
    )
    geoms = [Geometry(sp[i], org[i], dirs[i]) for i in range(n)]
    arrays = [np.asarray(a) for a in images]
    batch.set_items({"images": arrays, "masks": None if masks is None else list(masks)}, geoms)
    if nodules is not None:
        batch.nodules = read_annotations(nodules)
    return batch


def concat_batches(
    cls: type[CTBatch], batches: Sequence[CTBatch], *, release: bool = False
) -> CTBatch:
    """Return one batch of the items of ``batches``, in order (arrays copied into one buffer).

    Parameters
    ----------
    cls : type
        The batch class when ``batches`` is empty (else the class of the first batch).
    batches : sequence of CTBatch
        The batches; components must be present in all of them or in none.
    release : bool, default False
        Take each component out of ``batches`` once it is copied, so its memory is free for
        the next component's buffer (peak: the items plus one component, not plus all). For
        batches nobody else uses: they are left without voxels.

    Returns
    -------
    CTBatch
        The new batch, with the settings and random state of the first batch and the
        failed, dumped and skipped items of all.

    Raises
    ------
    InvalidParameterError
        Repeated ids.
    InvalidScanError
        A component some batches have and others not.

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.batch import CTBatch
    >>> a = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)], ids=["a"])
    >>> b = CTBatch.from_arrays([np.ones((3, 6, 5), np.int16)], ids=["b"])
    >>> concat_batches(CTBatch, [a, b]).bounds.tolist()
    [0, 2, 5]
    """
    parts = [b for b in batches if len(b) > 0]
    first = batches[0] if batches else None
    out_cls = type(first) if first is not None else cls
    ids = [i for b in parts for i in b.ids]
    out = out_cls(
        ids,
        [s for b in parts for s in b.sources],
        labels=[s for b in parts for s in b.label_sources],
    )
    if first is not None:
        out.n_workers, out.on_error = first.n_workers, first.on_error
        out._seed = first._seed
        out._n_random_calls = max(b._n_random_calls for b in batches)
    out.failed = [f for b in batches for f in b.failed]
    out.dumped = [i for b in batches for i in b.dumped]
    out.skipped = [i for b in batches for i in b.skipped]
    if not parts:
        return out
    out.info = [dict(d) for b in parts for d in b.info]
    out.warnings = [list(w) for b in parts for w in b.warnings]
    out.history = [[dict(e) for e in h] for b in parts for h in b.history]
    out.positions = [p for b in parts for p in b.positions]
    out.spacing = np.concatenate([b.spacing for b in parts])
    out.origin = np.concatenate([b.origin for b in parts])
    out.direction = np.concatenate([b.direction for b in parts])
    out.nodules = pd.concat([b.nodules for b in parts], ignore_index=True)
    for name in SKYSCRAPER:
        have = [b.has(name) for b in parts]
        if not any(have):
            continue
        if not all(have):
            missing = [i for b in parts if not b.has(name) for i in b.ids]
            raise InvalidScanError(f"concat: items {missing} have no {name} while others do")
        views = [v for b in parts for v in b._data[name].items()]
        out._data[name] = Ragged.from_items(views)
        if release:
            del views
            for b in parts:
                del b._data[name]
    if all(b.patches is not None for b in parts):
        out.patches = np.concatenate([b.patches for b in parts if b.patches is not None])
        out.patch_grids = [g for b in parts for g in b.patch_grids]
    return out


def select_items(batch: CTBatch, idx: Sequence[int], *, copy: bool) -> CTBatch:
    """Return the items ``idx`` of ``batch`` as a new batch of the same class and settings.

    Parameters
    ----------
    batch : CTBatch
        The batch to select from.
    idx : sequence of int
        Positions of the items, in the new batch's order.
    copy : bool
        Copy the arrays, or (False) use views of the batch's buffers where possible (one
        item: always a view).

    Returns
    -------
    CTBatch
        The new batch (no failed items; the items' records copied).

    Examples
    --------
    >>> import numpy as np
    >>> from ctflow.batch import CTBatch
    >>> b = CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16), np.ones((3, 4, 4), np.int16)])
    >>> s = select_items(b, [1], copy=False)
    >>> s.ids, bool(np.shares_memory(s[0].images, b[1].images))
    (['1'], True)
    """
    out = batch.derive([batch.ids[i] for i in idx], [batch.sources[i] for i in idx])
    out.label_sources = [batch.label_sources[i] for i in idx]
    out.failed = []
    out.info = [dict(batch.info[i]) for i in idx]
    out.warnings = [list(batch.warnings[i]) for i in idx]
    out.history = [[dict(e) for e in batch.history[i]] for i in idx]
    out.positions = [batch.positions[i] for i in idx]
    out.spacing = batch.spacing[list(idx)].copy()
    out.origin = batch.origin[list(idx)].copy()
    out.direction = batch.direction[list(idx)].copy()
    for name, data in batch._data.items():
        views = [data.item(i) for i in idx]
        if copy:
            views = [np.array(v) for v in views] if len(views) == 1 else views
            out._data[name] = Ragged.from_items(views, dtype=data.dtype, fresh=True)
        else:
            out._data[name] = Ragged.from_items(views, dtype=data.dtype)
    out.nodules = batch.nodules[batch.nodules["id"].isin(out.ids)].reset_index(drop=True)
    return out
