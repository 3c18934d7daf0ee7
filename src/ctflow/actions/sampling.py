"""Sampling actions: training crops centred on nodules and away from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.actions.base import BatchAction
from ctflow.actions.geometry import cut_padded
from ctflow.io.annotations import empty_nodules
from ctflow.validation import as_float, as_int, as_shape, as_spacing

if TYPE_CHECKING:
    from ctflow.batch import CTBatch

__all__ = ["SampleNodules"]


class SampleNodules(BatchAction):
    """Sample a NEW batch of crops: ``share`` centred on nodules, the rest random.

    Items of any shapes give crops to the same batch. Each crop keeps its own geometry (the
    parent's spacing and direction, a shifted origin), the parent's masks and lungs, and the
    nodules that lie inside it; its history is its parent's plus this action with the crop's
    start.

    Parameters
    ----------
    batch_size : int
        Number of crops.
    nodule_size : 3 ints
        Crop shape (z, y, x) in voxels.
    share : float in [0, 1]
        Fraction of crops centred on a nodule (rounded).
    variance : 3 floats, optional
        Variance (voxels²) of a normal jitter of the crop centre around the nodule centre; the
        jitter is limited so the whole nodule stays inside its crop.
    histo : (counts, edges), optional
        ``numpy.histogramdd`` of relative (z, y, x) positions to draw random crop centres from.
    pad_value : float, optional
        Fill for crops reaching outside a scan that is smaller than the crop (default: the
        minimum of that scan's images, i.e. air).

    Returns
    -------
    CTBatch
        The crops. Ids are ``<parent>_<position>_<k>`` and ``info[k]`` records parent, start and
        kind. Random crops never overlap a nodule; when that is impossible fewer random crops
        are returned and a warning is recorded (of the parents and their crops).

    Examples
    --------
    >>> import numpy as np, pandas as pd, ctflow as cf
    >>> ann = pd.DataFrame({"id": ["a"], "z": [20.0], "y": [20.0], "x": [20.0],
    ...                     "diameter": [6.0]})
    >>> b = cf.CTBatch.from_arrays([np.zeros((40, 40, 40), np.int16)], ids=["a"], nodules=ann)
    >>> crops = b.sample_nodules(2, (8, 8, 8), share=1.0)
    >>> crops.images.shape, len(crops.nodules)
    ((16, 8, 8), 2)
    """

    name = "sample_nodules"
    family = "sampling"
    batch_size: int
    nodule_size: Sequence[int] = (32, 64, 64)
    share: float = 0.5
    variance: float | Sequence[float] | None = None
    histo: Any = None
    pad_value: float | None = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        as_int(self.batch_size, "batch_size", self.name, lo=1)
        self._set("nodule_size", as_shape(self.nodule_size, what="nodule_size", where=self.name))
        self._set("share", as_float(self.share, "share", self.name, lo=0.0, hi=1.0))
        if self.variance is not None:
            self._set("variance", as_spacing(self.variance, what="variance", where=self.name))
        if self.histo is not None:
            from ctflow.ops.sampling import check_histo

            check_histo(self.histo, self.name)
        if self.pad_value is not None:
            self._set("pad_value", as_float(self.pad_value, "pad_value", self.name))

    def run(self, batch: CTBatch) -> CTBatch:
        """Plan the crops across the batch and cut them."""
        from ctflow.ops.sampling import extract_crop, sample_crop_starts

        batch.require(self.name, "images")
        crop_shape = tuple(int(v) for v in self.nodule_size)
        rng = batch.rng
        shapes = [tuple(int(v) for v in s) for s in batch.shapes]
        centers, owners, radii = [], [], []
        for i in range(len(batch)):
            item_nods = batch.nodules[batch.nodules["id"] == batch.ids[i]]
            if len(item_nods) == 0:
                continue
            g = batch.geometry(i)
            c = g.world_to_voxel(item_nods[["z", "y", "x"]].to_numpy(np.float64))
            centers.append(c)
            owners.append(np.full(len(c), i))
            radii.append(
                item_nods["diameter"].to_numpy(np.float64)[:, None] / 2 / g.spacing[None, :]
            )
        plan = sample_crop_starts(
            shapes,
            np.concatenate(centers) if centers else np.zeros((0, 3)),
            np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64),
            np.concatenate(radii) if radii else np.zeros((0, 3)),
            batch_size=int(self.batch_size),
            crop_shape=crop_shape,
            share=float(self.share),
            variance=None if self.variance is None else np.asarray(self.variance),
            rng=rng,
            histo=self.histo,
        )
        for message in plan.warnings:
            text = message.removeprefix("sample_crop_starts: ").removeprefix("sample_nodules: ")
            for i in range(len(batch)):
                batch.warn(i, self.name, text)
        fills: dict[int, float] = {}

        def fill_for(i: int, start: NDArray[Any]) -> float:
            """Return the padding value: only computed for crops that reach outside their scan."""
            if self.pad_value is not None:
                return float(self.pad_value)
            inside = np.all(start >= 0) and np.all(start + np.asarray(crop_shape) <= shapes[i])
            if inside:
                return 0.0  # unused: nothing to pad
            if i not in fills:
                fills[i] = float(batch.ragged("images").item(i).min())
            return fills[i]

        # each crop's nodule rows are picked with numpy and taken from the table once at the end
        # (per-crop pandas indexing held the GIL for most of this action)
        table_ids = batch.nodules["id"].to_numpy()
        table_world = batch.nodules[["z", "y", "x"]].to_numpy(np.float64)
        rows_of = {pid: np.flatnonzero(table_ids == pid) for pid in dict.fromkeys(batch.ids)}
        item_geoms = [batch.geometry(i) for i in range(len(batch))]
        pos = batch.position
        ids, sources, geoms, infos, parents = [], [], [], [], []
        names = [c for c in ("images", "masks", "lungs") if batch.has(c)]
        comps: dict[str, list[NDArray[Any]]] = {c: [] for c in names}
        picked: list[NDArray[np.intp]] = []
        owners_of_rows: list[str] = []
        for k, (i, start) in enumerate(zip(plan.items, plan.starts, strict=True)):
            i = int(i)
            crop_id = f"{batch.ids[i]}_{pos}_{k}"
            ids.append(crop_id)
            parents.append(i)
            sources.append(batch.sources[i])
            g = item_geoms[i].shifted(start)
            geoms.append(g)
            for comp in names:
                view = batch.ragged(comp).item(i)
                value = fill_for(i, np.asarray(start)) if comp == "images" else 0
                comps[comp].append(extract_crop(view, start, crop_shape, value))
            infos.append(
                {
                    "parent": batch.ids[i],
                    "start": [int(v) for v in start],
                    "kind": "nodule" if plan.is_nodule[k] else "random",
                }
            )
            candidates = rows_of[batch.ids[i]]
            if candidates.size:
                vox = g.world_to_voxel(table_world[candidates])
                inside = np.all((vox >= -0.5) & (vox <= np.asarray(crop_shape) - 0.5), axis=1)
                picked.append(candidates[inside])
                owners_of_rows.extend([crop_id] * int(inside.sum()))
        out = batch.derive(ids, sources, parents=parents)
        if not ids:
            return out
        out.set_items(comps, geoms, fresh=True)
        if picked:  # rows of the crops' parents were looked at (maybe none inside a crop)
            crops_nodules = batch.nodules.iloc[np.concatenate(picked)].reset_index(drop=True)
            crops_nodules["id"] = owners_of_rows
            out.nodules = crops_nodules
        else:
            out.nodules = empty_nodules()
        out.info = infos
        return out

    def record(self) -> dict[str, Any]:
        """Return the arguments (a ``histo`` is recorded by shape only)."""
        rec = super().record()
        if self.histo is not None:
            rec["args"]["histo"] = "<histogram>"
        rec.pop("replayable", None)  # a crop replays from its start, whatever the histogram
        return rec

    def drawn(self, batch: CTBatch, index: int) -> dict[str, Any]:
        """Return the crop's parent, start (voxels of the parent) and kind."""
        return dict(batch.info[index])

    @classmethod
    def from_record(cls, args: Mapping[str, Any]) -> SampleNodules:
        """Return the action of a record (the histogram is not needed to replay a crop)."""
        kept = {k: v for k, v in args.items() if k != "histo"}
        return cls(**kept)

    def replay(self, batch: CTBatch, drawn: Sequence[Mapping[str, Any]]) -> CTBatch:
        """Cut each item's recorded crop (one crop per item of ``batch``)."""
        from ctflow.actions.base import ItemAction

        shape = tuple(int(v) for v in self.nodule_size)
        pad_value = self.pad_value

        class _Cut(ItemAction):
            def apply(self, item: Any, params: Mapping[str, Any]) -> dict[str, Any]:
                out = cut_padded(item, params["start"], shape)
                if pad_value is not None:
                    from ctflow.ops.sampling import extract_crop

                    out["images"] = extract_crop(item.images, params["start"], shape, pad_value)
                return out

        out = batch.run_items(_Cut(), params=drawn, record=False)
        for i in range(len(out)):
            out.add_history(i, {**self.record(), "params": dict(drawn[i])})
        return out
