"""Sampling actions: training crops centred on nodules and away from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.actions.base import BatchAction
from ctflow.actions.geometry_crop import cut_padded
from ctflow.errors import InvalidScanError
from ctflow.io.annotations import empty_nodules
from ctflow.validation import as_float, as_int, as_shape, as_spacing

if TYPE_CHECKING:
    from ctflow.batch import CTBatch

__all__ = ["SampleCrops", "SampleNodules", "cut_crops"]

COMPONENTS = ("images", "masks", "lungs")


def cut_crops(
    batch: CTBatch,
    items: Sequence[int] | NDArray[Any],
    starts: Sequence[Any] | NDArray[Any],
    crop_shape: Sequence[int],
    kinds: Sequence[str],
    pad_value: float | None = None,
    ids: Sequence[str] | None = None,
) -> CTBatch:
    """Return a new batch of crops: crop ``k`` of item ``items[k]`` at voxel ``starts[k]``.

    Every component is cut (images padded with ``pad_value`` or their item's minimum, masks
    and lungs with 0, where a crop leaves its item); each crop gets its own geometry (the
    parent's spacing and direction, a shifted origin), the nodules inside it, ``info`` naming
    parent, start and ``kinds[k]``, and its parent's warnings and history. Ids are
    ``<parent>_<batch position>_<k>`` (or ``ids``). Items loaded with ``load(lazy=True)``
    give crops read from their dumps (:mod:`ctflow.lazy`), equal to crops of the loaded items.
    """
    from ctflow.lazy import is_lazy, item_shapes, lazy_components, read_crops, read_whole
    from ctflow.ops.sampling import extract_crop

    lazy = is_lazy(batch)  # items loaded with load(lazy=True): crops come from their dumps
    shapes = item_shapes(batch, "crops")
    fills: dict[int, float] = {}

    def fill_for(i: int, start: NDArray[Any]) -> float:
        """Return the padding value: only computed for crops that reach outside their scan."""
        if pad_value is not None:
            return float(pad_value)
        inside = np.all(start >= 0) and np.all(start + np.asarray(crop_shape) <= shapes[i])
        if inside:
            return 0.0  # unused: nothing to pad
        if i not in fills:
            whole = read_whole(batch, i, "images") if lazy else batch.ragged("images").item(i)
            fills[i] = float(whole.min())
        return fills[i]

    # each crop's nodule rows are picked with numpy and taken from the table once at the end
    # (per-crop pandas indexing held the GIL for most of this action)
    table_ids = batch.nodules["id"].to_numpy()
    table_world = batch.nodules[["z", "y", "x"]].to_numpy(np.float64)
    rows_of = {pid: np.flatnonzero(table_ids == pid) for pid in dict.fromkeys(batch.ids)}
    item_geoms = [batch.geometry(i) for i in range(len(batch))]
    pos = batch.position
    given_ids = None if ids is None else list(ids)
    ids, sources, geoms, infos, parents = [], [], [], [], []
    names = lazy_components(batch) if lazy else [c for c in COMPONENTS if batch.has(c)]
    comps: dict[str, list[NDArray[Any]]] = {c: [] for c in names}
    picked: list[NDArray[np.intp]] = []
    owners_of_rows: list[str] = []
    from_dumps: dict[str, dict[int, NDArray[Any]]] = {c: {} for c in names}
    if lazy:  # each item's crops together: every stored plane under them is read once
        by_item: dict[int, list[int]] = {}
        for k, i in enumerate(items):
            by_item.setdefault(int(i), []).append(k)
        for i, ks in by_item.items():
            sts = [np.asarray(starts[k], dtype=np.int64) for k in ks]
            size = np.asarray(crop_shape)
            leaving = [st for st in sts if np.any(st < 0) or np.any(st + size > shapes[i])]
            image_fill = fill_for(i, leaving[0]) if leaving else 0.0  # one value per item
            for comp in names:
                fill = image_fill if comp == "images" else 0
                crops = read_crops(batch, i, comp, sts, crop_shape, fill)
                from_dumps[comp].update(zip(ks, crops, strict=True))
    for k, (i, start) in enumerate(zip(items, starts, strict=True)):
        i = int(i)
        start = np.asarray(start, dtype=np.int64)
        crop_id = f"{batch.ids[i]}_{pos}_{k}" if given_ids is None else given_ids[k]
        ids.append(crop_id)
        parents.append(i)
        sources.append(batch.sources[i])
        g = item_geoms[i].shifted(start)
        geoms.append(g)
        for comp in names:
            value = fill_for(i, start) if comp == "images" else 0
            if lazy:
                comps[comp].append(from_dumps[comp].pop(k))
            else:
                view = batch.ragged(comp).item(i)
                comps[comp].append(extract_crop(view, start, crop_shape, value))
        infos.append({"parent": batch.ids[i], "start": [int(v) for v in start], "kind": kinds[k]})
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


def _replay_crops(
    action: BatchAction, batch: CTBatch, drawn: Sequence[Mapping[str, Any]], shape: Any, pad: Any
) -> CTBatch:
    """Cut each item's recorded crop (one crop per item of ``batch``)."""
    from ctflow.actions.base import ItemAction
    from ctflow.lazy import is_lazy

    crop_shape = tuple(int(v) for v in shape)
    if is_lazy(batch):  # read each recorded crop from the item's dump
        starts = [np.asarray(d["start"], dtype=np.int64) for d in drawn]
        kinds = [str(d.get("kind", "")) for d in drawn]
        keep_info = [dict(i) for i in batch.info]
        out = cut_crops(batch, range(len(batch)), starts, crop_shape, kinds, pad, ids=batch.ids)
        out.info = [{k: v for k, v in i.items() if k != "lazy"} for i in keep_info]
        for i in range(len(out)):
            out.add_history(i, {**action.record(), "params": dict(drawn[i])})
        return out

    class _Cut(ItemAction):
        def apply(self, item: Any, params: Mapping[str, Any]) -> dict[str, Any]:
            out = cut_padded(item, params["start"], crop_shape)
            if pad is not None:
                from ctflow.ops.sampling import extract_crop

                out["images"] = extract_crop(item.images, params["start"], crop_shape, pad)
            return out

    out = batch.run_items(_Cut(), params=drawn, record=False)
    for i in range(len(out)):
        out.add_history(i, {**action.record(), "params": dict(drawn[i])})
    return out


class SampleNodules(BatchAction):
    """Sample a NEW batch of crops: ``share`` centred on nodules, the rest random.

    Items of any shapes give crops to the same batch. Each crop keeps its own geometry (the
    parent's spacing and direction, a shifted origin), the parent's masks and lungs, and the
    nodules that lie inside it; its history is its parent's plus this action with the crop's
    start.

    Parameters
    ----------
    batch_size : int
        Number of crops asked for (>= 1). Required.
    nodule_size : 3 ints, default (32, 64, 64)
        Crop shape (z, y, x) in voxels, positive (one number is used on every axis).
    share : float in [0, 1], default 0.5
        Fraction of crops centred on a nodule: ``floor(batch_size * share + 0.5)`` of them.
    variance : float or 3 floats, optional
        Variance (voxels², positive; one number for every axis) of a normal jitter of the crop
        centre around the nodule centre; the jitter is limited so the whole nodule stays
        inside its crop. Default None: no jitter.
    histo : (counts, edges), optional
        ``numpy.histogramdd`` of relative (z, y, x) positions to draw random crop centres from
        (checked when the action is written). Default None: uniform.
    pad_value : float, optional
        Fill for crops reaching outside a scan that is smaller than the crop (default None: the
        minimum of that scan's images, i.e. air); any finite number. Masks and lungs get 0.

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
    #: crops chosen from the nodule table and shapes, never from voxel values, cut as whole
    #: voxels: a voxel-wise action before it may run on the crops instead (actions.fusion_crops)
    intensity_blind = True
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
        from ctflow.lazy import item_shapes
        from ctflow.ops.sampling import sample_crop_starts

        shapes = item_shapes(batch, self.name)  # loaded, or lazy: read from the dumps
        crop_shape = tuple(int(v) for v in self.nodule_size)
        rng = batch.rng
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
        kinds = ["nodule" if flag else "random" for flag in plan.is_nodule]
        return cut_crops(batch, plan.items, plan.starts, crop_shape, kinds, self.pad_value)

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
        return _replay_crops(self, batch, drawn, self.nodule_size, self.pad_value)


def _split_counts(n: int, shares: Sequence[float]) -> list[int]:
    """``n`` split by ``shares`` (largest remainders), summing to ``n``."""
    total = float(sum(shares))
    exact = [n * s / total for s in shares]
    counts = [int(np.floor(e)) for e in exact]
    order = sorted(range(len(shares)), key=lambda k: exact[k] - counts[k], reverse=True)
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    return counts


class SampleCrops(BatchAction):
    """Sample a NEW batch of crops, centred on voxels of each label in given shares.

    With ``ratios={label: share}`` the crops are split among the labels by their shares (0 =
    background), and each crop is centred on a uniformly random voxel of its label in an
    item that has it, chosen uniformly — like MONAI's ``RandCropByLabelClasses`` and TorchIO's
    ``LabelSampler``. Voxels are drawn from per-slice label counts, never from a list of every
    voxel (:class:`ctflow.ops.crop.LabelVoxels`), so a 300x512x512 label map costs one counting
    pass. Labels absent from every item of the batch give their crops to the others (with a
    warning). With no ratios, crops are uniformly random (inside their item when it is larger
    than the crop). Crops keep geometry, masks, lungs, nodules, ids, warnings and history
    like ``sample_nodules``' (``info[k]["kind"]`` is ``"label <v>"`` or ``"random"``).

    Parameters
    ----------
    batch_size : int
        Number of crops (>= 1). Required.
    shape : 3 ints
        Crop shape (z, y, x) in voxels, positive (one number is used on every axis). Required.
    ratios : dict of int to float, optional
        Share of crops per label: labels are integers in [0, 65535] (digit strings too),
        shares finite numbers >= 0 with a positive sum (normalised; a 0 share gets no crops).
        Default None: uniformly random crops.
    pad_value : float, optional
        Fill for crops reaching outside their scan (default None: that scan's minimum, i.e.
        air; masks and lungs get 0); any finite number.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((20, 20, 20), np.int16)])
    >>> masks = np.zeros((20, 20, 20), np.uint8); masks[5:8, 5:8, 5:8] = 3
    >>> b = b.set_component("masks", [masks])
    >>> crops = b.sample_crops(4, (4, 4, 4), ratios={3: 1.0})
    >>> [int(c.masks[2, 2, 2]) for c in crops]      # every crop's centre voxel has label 3
    [3, 3, 3, 3]
    """

    name = "sample_crops"
    family = "sampling"
    #: crops chosen from label maps and shapes, never from voxel values (actions.fusion_crops)
    intensity_blind = True
    batch_size: int
    shape: Sequence[int]
    ratios: Mapping[int, float] | None = None
    pad_value: float | None = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        as_int(self.batch_size, "batch_size", self.name, lo=1)
        self._set("shape", as_shape(self.shape, where=self.name))
        if self.ratios is not None:
            if not isinstance(self.ratios, Mapping) or not self.ratios:
                raise self.invalid("ratios", "a dict {label: share} or None", self.ratios)
            ratios = {}
            for label, share in self.ratios.items():
                key = as_int(int(label) if isinstance(label, str) and label.isdigit() else label,
                             "ratios label", self.name, lo=0, hi=65535)  # fmt: skip
                ratios[key] = as_float(share, f"ratios[{key}]", self.name, lo=0.0)
            if sum(ratios.values()) <= 0:
                raise self.invalid("ratios", "shares with a positive sum", self.ratios)
            self._set("ratios", ratios)
        if self.pad_value is not None:
            self._set("pad_value", as_float(self.pad_value, "pad_value", self.name))

    def run(self, batch: CTBatch) -> CTBatch:
        """Draw the crops' centres and cut them."""
        from ctflow.lazy import is_lazy, item_shapes, read_whole
        from ctflow.ops.crop import LabelVoxels

        shapes = np.asarray(item_shapes(batch, self.name), dtype=np.int64).reshape(-1, 3)
        crop = tuple(int(v) for v in self.shape)
        half = np.asarray(crop) // 2
        rng = batch.rng
        n = len(batch)
        items: list[int] = []
        starts: list[NDArray[np.int64]] = []
        kinds: list[str] = []
        if self.ratios is None:
            for _ in range(int(self.batch_size)):
                i = int(rng.integers(n))
                room = shapes[i] - np.asarray(crop)  # < 0: the crop is larger: centre it
                lo = np.where(room < 0, room // 2, 0)
                hi = np.where(room < 0, room // 2, room)
                starts.append(rng.integers(lo, hi + 1))
                items.append(i)
                kinds.append("random")
            return cut_crops(batch, items, starts, crop, kinds, self.pad_value)
        from ctflow.errors import InvalidParameterError
        from ctflow.labels import to_labels

        if is_lazy(batch):  # the label maps are read whole (not the images)
            maps = [read_whole(batch, i, "masks") for i in range(n)]
        else:
            batch.require(self.name, "masks")
            maps = [batch.ragged("masks").item(i) for i in range(n)]
        for i, m in enumerate(maps):
            if m.ndim != 3:
                raise InvalidParameterError(
                    f"sample_crops: the masks of item {batch.ids[i]!r} hold {m.shape[0]} "
                    f"channels; crops by class need one label map: call argmax() first"
                )
            if m.dtype not in (np.uint8, np.uint16):  # bool, other ints, integer floats
                maps[i] = to_labels(m, f"sample_crops: the masks of item {batch.ids[i]!r}")
        voxels = [LabelVoxels(m, batch.threads()) for m in maps]
        wanted = {label: share for label, share in self.ratios.items() if share > 0}
        present = {lab: [i for i in range(n) if voxels[i].count(lab)] for lab in wanted}
        missing = sorted(lab for lab, owners in present.items() if not owners)
        if missing:
            for i in range(n):
                batch.warn(
                    i,
                    self.name,
                    f"label(s) {missing} are in no item of the batch: their crops go to the "
                    f"other labels",
                )
        labels = [lab for lab in wanted if present[lab]]
        if not labels:
            raise InvalidScanError(
                f"sample_crops: none of the labels {sorted(wanted)} is in the batch's masks "
                f"({batch.ids})"
            )
        counts = _split_counts(int(self.batch_size), [wanted[lab] for lab in labels])
        plan = [lab for lab, c in zip(labels, counts, strict=True) for _ in range(c)]
        for lab in plan:
            owners = present[lab]
            i = owners[int(rng.integers(len(owners)))]
            centre = voxels[i].draw(lab, rng)
            items.append(i)
            starts.append(centre - half)
            kinds.append(f"label {lab}")
        return cut_crops(batch, items, starts, crop, kinds, self.pad_value)

    def drawn(self, batch: CTBatch, index: int) -> dict[str, Any]:
        """Return the crop's parent, start (voxels of the parent) and kind."""
        return dict(batch.info[index])

    @classmethod
    def from_record(cls, args: Mapping[str, Any]) -> SampleCrops:
        """Return the action of a record (JSON turned the ratios' labels into strings)."""
        kept = dict(args)
        if kept.get("ratios"):
            kept["ratios"] = {int(k): v for k, v in kept["ratios"].items()}
        return cls(**kept)

    def replay(self, batch: CTBatch, drawn: Sequence[Mapping[str, Any]]) -> CTBatch:
        """Cut each item's recorded crop (one crop per item of ``batch``)."""
        return _replay_crops(self, batch, drawn, self.shape, self.pad_value)
