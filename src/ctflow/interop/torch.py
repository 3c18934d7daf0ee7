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
     "ids": [str, ...],
     "history": [[{"action": ..., "args": ..., "params": ...}, ...], ...]}  # per item

Masks keep their values and dtype: a label map {0, 1, 2, 5} stays {0, 1, 2, 5} (uint8), float
probabilities stay float; (C, Z, Y, X) masks (``one_hot``) are (N, C, Z, Y, X) already. The one
exception is forced by torch, which cannot flip or add uint16 / uint32 tensors: those become
int32 / int64 (exact, a copy), as TorchIO and MONAI convert them.

Tensors share memory with the batch (``torch.from_numpy``: no copy). ``mode="batch"`` needs
items of one shape (use ``resize``, ``central_crop``, ``unify_spacing(shape=...)`` or
``sample_nodules``); a batch of items of different shapes is refused with a clear error. For
such batches use ``mode="list"`` (the same dict, but ``images`` / ``masks`` / ``lungs`` are
lists of per-item (1, Z, Y, X) tensors) or ``mode="item"`` (one dict per item, with ``id``,
and ``history`` as a JSON string, so that the default collate keeps it: ``json.loads`` it).

``DataLoader(num_workers=k)``: the run is planned once, as ``gen_batch`` plans it (same seed,
same shuffles, same batches at the same positions), and each worker runs its own share of the
planned batches (see :class:`PipelineDataset`), so no item is produced twice and, for a fixed
seed, the batches and crops of a run do not depend on ``k``.

Training-batch queue (``crops_per_batch``): crops of ``mix_scans`` ctflow batches are pooled
and training batches of ``crops_per_batch`` crops are drawn from the pool in a seeded shuffled
order, so each training batch mixes crops of several scans (TorchIO's ``Queue``, RadIO's
``combine_crops``). ``pin_memory=True`` hands out page-locked tensors, ready for
``.to("cuda", non_blocking=True)``; without CUDA it is a no-op.

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

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ctflow.errors import InvalidParameterError, MissingDependencyError
from ctflow.interop._labels import for_torch

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess without torch
    raise MissingDependencyError(
        "ctflow.interop.torch needs the optional package 'torch', which is not installed: "
        "pip install 'ctflow[torch]' (torch + MONAI + TorchIO)"
    ) from _exc

__all__ = ["PipelineDataset", "batch_to_tensors"]

_ALLOWED = ("images", "masks", "lungs")
_LISTS = ("ids", "history")  # per-item Python lists of a batch dict (not tensors)


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
    along either way, and so do ``ids`` and each item's ``history`` (its records of the
    actions applied, :mod:`ctflow.history`).

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
    out["history"] = [[dict(e) for e in h] for h in batch.history]
    return out


def _split(tensors: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One dict per item (``mode="item"``)."""
    for k, item_id in enumerate(tensors["ids"]):
        item = {name: value[k] for name, value in tensors.items() if name not in _LISTS}
        item["id"] = item_id
        item["history"] = json.dumps(tensors["history"][k], default=repr)
        yield item


def _cuda_available() -> bool:
    """Whether page-locked memory can be had (it needs a CUDA device; a CPU build raises)."""
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - a broken CUDA install: no pinning
        return False


def _pin(value: Any) -> Any:
    """``value`` with its tensors (also inside lists) in page-locked memory."""
    if isinstance(value, torch.Tensor):
        return value.pin_memory()
    if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
        return [v.pin_memory() for v in value]
    return value


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidParameterError(
            f"PipelineDataset: {name} must be a positive integer; got {value!r}"
        )
    return int(value)


def _concat(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Join the crops of several batch dicts (tensors concatenated, lists joined)."""
    out: dict[str, Any] = {}
    for name in parts[0]:
        if name in _LISTS:
            out[name] = [v for p in parts for v in p[name]]
        else:
            out[name] = torch.cat([p[name] for p in parts]) if len(parts) > 1 else parts[0][name]
    return out


def _take(tensors: dict[str, Any], index: np.ndarray) -> dict[str, Any]:
    """Return the crops ``index`` of a batch dict, in that order."""
    rows = torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64))
    return {
        name: [value[i] for i in index.tolist()] if name in _LISTS else value[rows]
        for name, value in tensors.items()
    }


class PipelineDataset(IterableDataset[dict[str, Any]]):
    """A ``torch.utils.data.IterableDataset`` over a bound pipeline's batches.

    Parameters
    ----------
    pipeline : Pipeline
        A pipeline bound to a dataset (``dataset >> pipeline``).
    batch_size : int
        Items per ctflow batch (scans per batch, before crop sampling).
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
    pin_memory : bool, default False
        Hand out tensors in page-locked (pinned) memory, for fast asynchronous copies to a GPU.
        Pinning needs CUDA: when ``torch.cuda.is_available()`` is false (a CPU-only build, no
        device) it is a no-op and tensors stay in ordinary memory (:attr:`pins` says which).
        Inside ``DataLoader`` worker processes the tensors are not pinned either (CUDA cannot
        start in a forked worker, and tensors reach the main process through shared memory,
        unpinned): pass ``DataLoader(..., pin_memory=True)`` there, which pins them in the main
        process.
    crops_per_batch : int, optional
        Turn on the crop queue (``mode="batch"`` only): the crops of ``mix_scans`` consecutive
        ctflow batches (each holding the crops of its scans, e.g. after ``sample_crops``) are
        pooled, shuffled with a generator seeded by the run's seed and the positions of those
        batches, and handed out as training batches of ``crops_per_batch`` crops; the crops
        left over join the next pool, and the last training batch of the run holds what
        remains (it may be smaller). Every crop is used exactly once per pass, and a training
        batch mixes crops of up to ``mix_scans`` ctflow batches. All crops must share a shape.
    mix_scans : int, default 1
        ctflow batches pooled by the crop queue (with ``batch_size=1``: scans per pool). The
        queue holds at most ``mix_scans`` batches of crops plus fewer than ``crops_per_batch``
        left-over crops at once.

    Notes
    -----
    **Sharding across DataLoader workers.** With ``DataLoader(ds, num_workers=k)``, ``k > 1``,
    every worker plans the whole run exactly as :meth:`~ctflow.Pipeline.gen_batch` would
    (:func:`ctflow.runs.plan_batches`: the same shuffles, the same batches at the same
    positions) and runs only its share: the batch whose first item is item ``i`` of the
    dataset (in the dataset's order) goes to worker ``(i // batch_size) % k``. Without
    shuffling, that is batch ``p`` to worker ``p % k``, and each worker always sees the same
    items; with ``batch_size=1`` it is item ``i`` to worker ``i % k`` in every epoch, shuffled
    or not, so a ``cache()`` in the pipeline holds each item in one worker only. (With
    ``shuffle`` and ``batch_size > 1`` batches change members every epoch, so an item may be
    made by several workers; give ``cache(dir=...)`` to share the made items.)

    Every batch is seeded from the run's ``seed`` and its position in the run
    (:meth:`ctflow.CTBatch.set_random_state`), in whichever process it runs, so for a fixed
    ``seed`` the batches, crops and augmentations of a run are the same for ``num_workers``
    0, 1, 2, ...; only the order in which the loader hands them out may differ (without the
    queue and without shuffling the loader's round robin gives the very order of
    ``num_workers=0``). With the crop queue each worker pools its own batches, so the crops
    of an epoch are the same for every ``k`` but their grouping into training batches is not.
    With ``seed=None`` and ``shuffle=True`` the workers share one shuffle, drawn from the
    loader's base seed (``torch.utils.data.get_worker_info().seed``), so they still split the
    items without overlap.

    Examples
    --------
    >>> import tempfile, numpy as np, ctflow as cf
    >>> from ctflow.io.metaimage import write_metaimage
    >>> d = tempfile.mkdtemp()
    >>> for n in ("a", "b", "c"):
    ...     arr = np.arange(512, dtype=np.int16).reshape(8, 8, 8)
    ...     p = write_metaimage(f"{d}/{n}.mhd", arr, cf.Geometry((1, 1, 1)))
    >>> crops = cf.Pipeline().load().sample_crops(4, (4, 4, 4))
    >>> pipe = cf.Dataset.from_glob(f"{d}/*.mhd") >> crops
    >>> ds = PipelineDataset(pipe, batch_size=1, seed=0, crops_per_batch=6, mix_scans=3)
    >>> [tuple(b["images"].shape) for b in ds]
    [(6, 1, 4, 4, 4), (6, 1, 4, 4, 4)]
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
        pin_memory: bool = False,
        crops_per_batch: int | None = None,
        mix_scans: int = 1,
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
        if not isinstance(pin_memory, bool | np.bool_):
            raise InvalidParameterError(
                f"PipelineDataset: pin_memory must be True or False; got {pin_memory!r}"
            )
        if crops_per_batch is not None:
            crops_per_batch = _positive(crops_per_batch, "crops_per_batch")
            if mode != "batch":
                raise InvalidParameterError(
                    f"PipelineDataset: crops_per_batch (the crop queue) needs mode='batch' "
                    f"(crops of one shape, stacked); got mode={mode!r}"
                )
        mix_scans = _positive(mix_scans, "mix_scans")
        _positive(batch_size, "batch_size")
        self.pipeline = pipeline
        self.components = tuple(components)
        self.mode = mode
        self.channel_dim = channel_dim
        self.pin_memory = bool(pin_memory)
        self.crops_per_batch = crops_per_batch
        self.mix_scans = mix_scans
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

    @property
    def pins(self) -> bool:
        """Whether tensors handed out in this process are pinned (asked for, and CUDA is there).

        Examples
        --------
        >>> import ctflow as cf
        >>> ds = PipelineDataset(cf.Dataset({"a": "a.mhd"}) >> cf.Pipeline(), pin_memory=True)
        >>> ds.pins
        False
        """
        return self.pin_memory and get_worker_info() is None and _cuda_available()

    # ---------------------------------------------------------------- the run
    def _shard(self) -> Iterable[tuple[int, list[str]]] | None:
        """Plan this worker's ``(position, ids)`` (``None``: no sharding, run gen_batch)."""
        info = get_worker_info()
        if info is None or info.num_workers <= 1:
            return None
        from ctflow.runs import plan_batches

        kw = self.run_kwargs
        k, me = int(info.num_workers), int(info.id)
        ids = list(self.pipeline.dataset.ids)
        index = {item: n for n, item in enumerate(ids)}
        size = int(kw["batch_size"])
        shuffle = kw["shuffle"]
        if shuffle is True and kw["seed"] is None:
            shuffle = int(info.seed - info.id) % 2**63  # the loader's base seed: one shuffle
        plan = plan_batches(
            ids,
            size,
            shuffle=shuffle,
            n_epochs=kw["n_epochs"],
            drop_last=kw["drop_last"],
            seed=kw["seed"],
        )
        return ((p, chunk) for p, chunk in plan if (index[chunk[0]] // size) % k == me)

    def _batches(self) -> Iterator[Any]:
        """Yield the processed ctflow batches of this process."""
        plan = self._shard()
        if plan is None:
            yield from self.pipeline.gen_batch(**self.run_kwargs)
            return
        from ctflow import memory
        from ctflow.engines import resolve_engine
        from ctflow.runs import RunOptions

        kw = self.run_kwargs
        options = RunOptions(
            kw["prefetch"], kw["on_error"], kw["seed"], kw["n_workers"], keep_batch=True
        )
        runner = resolve_engine(kw["engine"])
        with memory.run_scope():
            for outcome in runner.run_batches(
                self.pipeline.dataset, self.pipeline.planned, plan, options
            ):
                if outcome.error is not None:
                    raise outcome.error
                if outcome.batch is not None and len(outcome.batch) > 0:
                    yield outcome.batch

    def _queue(self, batches: Iterator[Any]) -> Iterator[dict[str, Any]]:
        """Training batches of ``crops_per_batch`` crops mixed from ``mix_scans`` batches."""
        size = int(self.crops_per_batch or 1)
        seed = self.run_kwargs["seed"]
        pool: list[dict[str, Any]] = []
        positions: list[int] = []
        left: dict[str, Any] | None = None
        shape: tuple[int, ...] | None = None
        where = ""

        def drain(final: bool) -> Iterator[dict[str, Any]]:
            nonlocal left
            parts = ([left] if left is not None else []) + pool
            if not parts:
                return
            crops = _concat(parts)
            n = len(crops["ids"])
            if seed is None:
                rng = np.random.default_rng()
            else:  # 0x51 tags the queue's draws apart from the batches' own ones
                rng = np.random.default_rng(
                    np.random.SeedSequence(seed, spawn_key=(0x51, *positions))
                )
            order = rng.permutation(n)
            full = n - n % size if not final else n
            for start in range(0, full, size):
                yield _take(crops, order[start : start + size])
            left = _take(crops, order[full:]) if full < n else None
            pool.clear()
            positions.clear()

        for batch in batches:
            tensors = batch_to_tensors(batch, self.components, channel_dim=self.channel_dim)
            here = tuple(tensors["images"].shape[1:])
            if shape is None:
                shape, where = here, f"batch {batch.position} {batch.ids[:1]}"
            elif here != shape:
                raise InvalidParameterError(
                    f"PipelineDataset: the crop queue needs crops of one shape, but "
                    f"{where} has crops of shape {shape} and batch {batch.position} "
                    f"{batch.ids[:1]} has {here}; crop to one shape (sample_crops, "
                    f"sample_nodules, central_crop, resize)"
                )
            pool.append(tensors)
            positions.append(int(batch.position))
            if len(pool) == self.mix_scans:
                yield from drain(final=False)
        yield from drain(final=True)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Iterate over the batches (or items, or training batches of the crop queue)."""
        pin = self.pins  # (forked workers get fresh thread pools: ctflow.threads at-fork hook)
        out: Iterator[dict[str, Any]]
        if self.crops_per_batch is not None:
            out = self._queue(self._batches())
        else:
            out = self._plain(self._batches())
        for tensors in out:
            if pin:
                tensors = {name: _pin(value) for name, value in tensors.items()}
            yield tensors

    def _plain(self, batches: Iterator[Any]) -> Iterator[dict[str, Any]]:
        for batch in batches:
            tensors = batch_to_tensors(
                batch, self.components, channel_dim=self.channel_dim, stack=self.mode == "batch"
            )
            if self.mode != "item":
                yield tensors
            else:
                yield from _split(tensors)

    def __repr__(self) -> str:
        """Return a readable summary."""
        queue = ""
        if self.crops_per_batch is not None:
            queue = f", crops_per_batch={self.crops_per_batch}, mix_scans={self.mix_scans}"
        return (
            f"PipelineDataset({len(self.pipeline.dataset)} items, "
            f"batch_size={self.run_kwargs['batch_size']}, mode={self.mode!r}, "
            f"components={list(self.components)}{queue}"
            f"{', pin_memory=True' if self.pin_memory else ''})"
        )
