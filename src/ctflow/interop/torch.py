"""Feed a PyTorch training loop from a ctflow pipeline, on the fly.

:class:`PipelineDataset` is a ``torch.utils.data.IterableDataset`` over
:meth:`ctflow.Pipeline.gen_batch`: every processed batch becomes a dict of tensors. ctflow
already batches and parallelises inside a batch, so the usual loader is
``DataLoader(ds, batch_size=None)`` (``mode="batch"``, the default). With ``mode="item"`` the
dataset yields one item at a time, for a ``DataLoader(batch_size=...)`` that collates.

What a batch becomes (``mode="batch"``)::

    {"images": tensor (N, 1, Z, Y, X),   # the batch's dtype (float32 after normalize_hu)
     "masks":  tensor (N, 1, Z, Y, X),   # the masks' dtype, when present (and asked for)
     "lungs":  tensor (N, 1, Z, Y, X),   # uint8, when present (and asked for)
     "spacing": tensor (N, 3), "origin": tensor (N, 3),   # (z, y, x) mm, float64
     "direction": tensor (N, 3, 3),                        # axis cosines, (z, y, x)
     "shapes": tensor (N, 3),                              # (Z, Y, X) of each item, int64
     "ids": [str, ...]}

Masks keep their values and dtype: a label map {0, 1, 2, 5} stays {0, 1, 2, 5} (uint8), float
probabilities stay float; (C, Z, Y, X) masks (``one_hot``) are (N, C, Z, Y, X) already. The one
exception is forced by torch, which cannot flip or add uint16 / uint32 tensors: those become
int32 / int64 (exact, a copy), as TorchIO and MONAI convert them.

Tensors share memory with the batch (``torch.from_numpy``: no copy). ``mode="batch"`` needs
items of one shape (use ``resize``, ``central_crop``, ``unify_spacing(shape=...)`` or
``sample_nodules``); a batch of items of different shapes is refused with a clear error. For
such batches use ``mode="list"`` (the same dict, but ``images`` / ``masks`` / ``lungs`` are
lists of per-item (1, Z, Y, X) tensors) or ``mode="item"`` (one dict per item, with ``id``).

``DataLoader(num_workers=k)``: each worker runs the pipeline on its own share of the dataset
(ids ``worker::k``), seeded with ``seed + worker``, so no item is produced twice.

This module imports torch (``import ctflow`` never does); without torch, importing it raises
:class:`~ctflow.errors.MissingDependencyError` saying what to install.

Examples
--------
>>> import tempfile, numpy as np, ctflow as cf
>>> from ctflow.io.metaimage import write_metaimage
>>> d = tempfile.mkdtemp()
>>> for n in ("a", "b", "c"):
...     p = write_metaimage(f"{d}/{n}.mhd", np.zeros((2, 4, 4), np.int16), cf.Geometry((1, 1, 1)))
>>> pipe = cf.Dataset.from_glob(f"{d}/*.mhd") >> cf.Pipeline().load().normalize_hu()
>>> ds = PipelineDataset(pipe, batch_size=2)
>>> [(tuple(b["images"].shape), b["ids"]) for b in ds]
[((2, 1, 2, 4, 4), ['a', 'b']), ((1, 1, 2, 4, 4), ['c'])]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ctflow.errors import InvalidParameterError, MissingDependencyError
from ctflow.interop._labels import for_torch

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess without torch
    raise MissingDependencyError(
        "ctflow.interop.torch needs PyTorch, which is not installed (pip install torch, or "
        "pip install 'ctflow[bench]' for torch + MONAI + TorchIO)"
    ) from _exc

__all__ = ["PipelineDataset", "batch_to_tensors"]

_ALLOWED = ("images", "masks", "lungs")


def batch_to_tensors(
    batch: Any,
    components: Sequence[str] = _ALLOWED,
    *,
    channel_dim: bool = True,
    stack: bool = True,
) -> dict[str, Any]:
    """Return a processed batch as a dict of torch tensors (layout: the module docstring).

    Components the batch does not have are left out; ``images`` is required. With
    ``stack=True`` every item must have the same shape (one (N, 1, Z, Y, X) tensor per
    component); ``stack=False`` gives a list of per-item (1, Z, Y, X) tensors instead, for
    items of any shapes. Geometry (``spacing``, ``origin``, ``direction``) and ``shapes`` come
    along either way.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((2, 3, 3), np.float32)] * 2, ids=["p", "q"])
    >>> t = batch_to_tensors(b)
    >>> tuple(t["images"].shape), t["images"].dtype, t["ids"], tuple(t["direction"].shape)
    ((2, 1, 2, 3, 3), torch.float32, ['p', 'q'], (2, 3, 3))
    >>> r = cf.CTBatch.from_arrays([np.zeros((2, 3, 3), np.float32), np.zeros((4, 5, 6))])
    >>> [tuple(x.shape) for x in batch_to_tensors(r, stack=False)["images"]]
    [(1, 2, 3, 3), (1, 4, 5, 6)]
    >>> lab = np.zeros((2, 3, 3), np.uint16)
    >>> lab[0, 0] = [2, 5, 300]
    >>> m = batch_to_tensors(cf.CTBatch.from_arrays([lab * 0], masks=[lab]))["masks"]
    >>> m.dtype, m.unique().tolist()
    (torch.int32, [0, 2, 5, 300])
    """
    unknown = [c for c in components if c not in _ALLOWED]
    if unknown:
        raise InvalidParameterError(
            f"batch_to_tensors: unknown components {unknown}; choose from {list(_ALLOWED)}"
        )
    if not batch.has("images"):
        raise InvalidParameterError(
            f"batch_to_tensors: batch {batch.ids} has no images; the pipeline must load() them"
        )
    if stack and not batch.uniform:
        shapes = ", ".join(f"{i!r} {tuple(s)}" for i, s in zip(batch.ids, batch.shapes.tolist()))
        raise InvalidParameterError(
            f"batch_to_tensors: the items have different shapes ({shapes}) and cannot be "
            f"stacked into one tensor; pass stack=False (PipelineDataset(mode='list' or "
            f"'item')) for per-item tensors, or make the shapes agree in the pipeline (resize, "
            f"central_crop, unify_spacing(shape=...), sample_nodules)"
        )
    out: dict[str, Any] = {}
    for comp in components:
        if not batch.has(comp):
            continue
        if stack:
            arr = for_torch(batch.unstack(comp))
            add = channel_dim and arr.ndim == 4  # (N, C, Z, Y, X) masks have their channels
            out[comp] = torch.from_numpy(arr[:, None] if add else arr)
        else:
            views = [for_torch(v) for v in batch.ragged(comp).items()]
            out[comp] = [
                torch.from_numpy(v[None] if channel_dim and v.ndim == 3 else v) for v in views
            ]
    out["spacing"] = torch.from_numpy(np.ascontiguousarray(batch.spacing))
    out["origin"] = torch.from_numpy(np.ascontiguousarray(batch.origin))
    out["direction"] = torch.from_numpy(np.ascontiguousarray(batch.direction))
    out["shapes"] = torch.from_numpy(np.ascontiguousarray(batch.shapes))
    out["ids"] = list(batch.ids)
    return out


def _split(tensors: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One dict per item (``mode="item"``)."""
    for k, item_id in enumerate(tensors["ids"]):
        item = {name: value[k] for name, value in tensors.items() if name != "ids"}
        item["id"] = item_id
        yield item


class PipelineDataset(IterableDataset):
    """A ``torch.utils.data.IterableDataset`` over a bound pipeline's batches.

    Parameters
    ----------
    pipeline : Pipeline
        A pipeline bound to a dataset (``dataset >> pipeline``).
    batch_size : int
        Items per ctflow batch.
    components : sequence of str, default ("images", "masks")
        Which skyscraper components to hand over (those a batch lacks are left out).
    mode : {"batch", "list", "item"}, default "batch"
        Yield whole batches as stacked tensors (use ``DataLoader(batch_size=None)``; items
        must share a shape), whole batches with per-item tensor lists (items of any shapes),
        or single items (any shapes; for a ``DataLoader(batch_size=...)`` with a collate that
        suits them).
    channel_dim : bool, default True
        Add the channel axis: (N, 1, Z, Y, X).
    shuffle, n_epochs, drop_last, prefetch, on_error, seed, engine, n_workers
        Passed to :meth:`ctflow.Pipeline.gen_batch` (``n_epochs=None``: endless).
    """

    def __init__(
        self,
        pipeline: Any,
        batch_size: int = 1,
        *,
        components: Sequence[str] = ("images", "masks"),
        mode: str = "batch",
        channel_dim: bool = True,
        shuffle: bool | int = False,
        n_epochs: int | None = 1,
        drop_last: bool = False,
        prefetch: int = 0,
        on_error: str = "raise",
        seed: int | None = None,
        engine: Any = "local",
        n_workers: int | None = None,
    ) -> None:
        super().__init__()
        if getattr(pipeline, "dataset", None) is None:
            raise InvalidParameterError(
                "PipelineDataset: the pipeline has no dataset; pass `dataset >> pipeline`"
            )
        if mode not in ("batch", "list", "item"):
            raise InvalidParameterError(
                f"PipelineDataset: mode must be 'batch', 'list' or 'item'; got {mode!r}"
            )
        unknown = [c for c in components if c not in _ALLOWED]
        if unknown or "images" not in components:
            raise InvalidParameterError(
                f"PipelineDataset: components must include 'images' and come from "
                f"{list(_ALLOWED)}; got {list(components)}"
            )
        self.pipeline = pipeline
        self.components = tuple(components)
        self.mode = mode
        self.channel_dim = channel_dim
        self.run_kwargs = {
            "batch_size": batch_size,
            "shuffle": shuffle,
            "n_epochs": n_epochs,
            "drop_last": drop_last,
            "prefetch": prefetch,
            "on_error": on_error,
            "seed": seed,
            "engine": engine,
            "n_workers": n_workers,
        }

    def _worker_pipeline(self) -> tuple[Any, dict[str, Any]]:
        info = get_worker_info()
        kwargs = dict(self.run_kwargs)
        if info is None or info.num_workers <= 1:
            return self.pipeline, kwargs
        dataset = self.pipeline.dataset
        ids = dataset.ids[info.id :: info.num_workers]
        if kwargs["seed"] is not None:
            kwargs["seed"] = int(kwargs["seed"]) + int(info.id)
        if not ids:
            return None, kwargs
        return self.pipeline.bind(dataset.subset(ids)), kwargs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Iterate over the items."""
        pipeline, kwargs = self._worker_pipeline()
        if pipeline is None:
            return
        for batch in pipeline.gen_batch(**kwargs):
            tensors = batch_to_tensors(
                batch, self.components, channel_dim=self.channel_dim, stack=self.mode == "batch"
            )
            if self.mode != "item":
                yield tensors
            else:
                yield from _split(tensors)

    def __repr__(self) -> str:
        """Return a readable summary."""
        return (
            f"PipelineDataset({len(self.pipeline.dataset)} items, "
            f"batch_size={self.run_kwargs['batch_size']}, mode={self.mode!r}, "
            f"components={list(self.components)})"
        )
