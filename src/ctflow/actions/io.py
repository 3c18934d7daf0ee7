"""Reading and writing items: ``load`` and ``dump``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctflow.actions.base import ItemAction
from ctflow.errors import InvalidParameterError, UnsupportedFormatError
from ctflow.io.remote import is_url
from ctflow.validation import as_bool, as_choice, as_path

if TYPE_CHECKING:
    from ctflow.batch import CTBatch
    from ctflow.item import CTItem

__all__ = ["COMPONENTS", "Dump", "Load", "grid_record", "reader_warnings"]

#: The components a batch stores one buffer each.
COMPONENTS = ("images", "masks", "lungs")
_FORMATS = ("mhd", "nifti", "nrrd", "dicom", "ctflow", "sitk")


def reader_warnings(info: Mapping[str, Any]) -> list[str]:
    """Return what a reader decided on its own, one line each.

    That is ``info["warnings"]`` and the files of a DICOM folder that were not read.

    Examples
    --------
    >>> reader_warnings({"warnings": ["a gap"], "skipped": [{"file": "/d/x.txt", "reason": "?"}]})
    ['a gap', '1 file(s) of the folder not read (x.txt: ?)']
    """
    out = [str(w) for w in info.get("warnings") or []]
    skipped = info.get("skipped") or []
    if skipped:
        shown = "; ".join(
            f"{Path(str(s.get('file', s))).name}: {s.get('reason', '')}"
            if isinstance(s, Mapping)
            else str(s)
            for s in skipped[:5]
        )
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        out.append(f"{len(skipped)} file(s) of the folder not read ({shown}{more})")
    return out


def _components(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        as_choice(name, COMPONENTS, "components", where)
    return names


def grid_record(shape: Sequence[int], geometry: Any) -> dict[str, Any]:
    """Return a grid (shape + geometry) as JSON, for an item's history (``invert`` reads it).

    Examples
    --------
    >>> from ctflow.geometry import Geometry
    >>> grid_record((2, 3, 4), Geometry((2.0, 1.0, 1.0)))["shape"]
    [2, 3, 4]
    """
    return {"shape": [int(v) for v in shape], **geometry.as_dict()}


def _read_labels(path: str, scan: Any, n_threads: int) -> Any:
    """Return the label file ``path`` on ``scan``'s grid (nearest neighbour, labels kept).

    A DICOM SEG is put on the scan's grid by its frames' positions
    (:func:`ctflow.io.dicom.read_dicom_seg`), an RT Structure Set is rasterised on it
    (:func:`ctflow.io.dicom.read_rtstruct`), another DICOM object is refused, and any other
    file is read as a scan. What the DICOM readers decide on their own (an ROI without
    contours ...) is added to ``scan.info["label_warnings"]``.
    """
    from ctflow.io.dicom.rtstruct import read_rtstruct
    from ctflow.io.dicom.seg import dicom_label_kind, read_dicom_seg
    from ctflow.io.reader import read_scan
    from ctflow.labels import labels_on_grid

    kind = dicom_label_kind(path)
    if kind is None:
        stored = read_scan(path)
        labels, geometry = stored.images, stored.geometry
    else:
        dicom = (
            read_dicom_seg(path, reference=scan)
            if kind == "seg"
            else read_rtstruct(path, scan.geometry, scan.images.shape)
        )
        labels, geometry = dicom.labels, dicom.geometry
        scan.info.setdefault("label_warnings", []).extend(dicom.warnings)
    return labels_on_grid(
        labels,
        geometry,
        scan.geometry,
        scan.images.shape,
        where=f"label file {path}",
        n_threads=n_threads,
    )


class Load(ItemAction):
    """Load every item from its source (a file, a DICOM folder or a ctflow dump).

    Arrays keep their stored orientation; the direction matrix carries it, so world positions
    equal SimpleITK's for the same file (see :mod:`ctflow.io.reader`); ``reorient`` brings
    them to one orientation. Items may have any shapes.

    Parameters
    ----------
    fmt : {"mhd", "nifti", "nrrd", "dicom", "ctflow", "sitk"}, optional
        Force a format; default None: inferred from the source. "sitk" reads through SimpleITK
        what the native readers refuse on purpose (Analyze, ASCII NRRD, ...). With
        ``lazy=True`` only None or "ctflow" is allowed.
    components : sequence of str, optional
        For ctflow dumps: which of ``images``, ``masks``, ``lungs`` to read (one name is
        accepted too; default None: all stored). Dumps also restore the nodule table,
        warnings and history.
    series_uid : str, optional
        DICOM folders: the series to read (default None: the CT series with most slices).
    allow_uneven : bool, default False
        DICOM folders: resample missing slices / uneven spacing onto a regular grid instead
        of refusing the series (reported as a warning of the item).
    allow_external_data : bool, default False
        MetaImage / NRRD headers (also read with ``fmt="sitk"``): read data files they name
        outside their own folder (``ElementDataFile = /elsewhere/x.raw``, ``data file:
        ../x.raw``). By default such an item fails with an error saying so (a header cannot
        make ctflow read other files); set True only for headers you trust. Ignored for the
        formats whose files name no other file (NIfTI, DICOM, ctflow dumps), so a mixed
        dataset loads with one setting.
    verify : bool, default True
        ctflow dumps: check every compressed chunk against its CRC-32 in ``meta.json``, so a
        damaged file is a ``CorruptFileError`` naming the file and the chunk; False skips the
        check for speed (see :mod:`ctflow.io.store`).
    lazy : bool, default False
        ctflow dumps only: read ``meta.json`` (geometry, nodules, history, the stored arrays'
        shapes) and no voxels. ``sample_nodules`` and ``sample_crops`` then read each crop
        straight from the dump, decompressing only the blocks the crop touches
        (:func:`ctflow.io.store.read_crop`); any other action needs a plain ``load()``. See
        :mod:`ctflow.lazy`.

    Notes
    -----
    An item with a label file (``Dataset.from_paths({id: {"images": ..., "masks": ...}})``,
    ``Dataset.from_glob(..., masks="labels/{id}.nii.gz")``) gets it in ``masks``: put on the
    scan's grid with nearest neighbour when the grids differ (another stored orientation,
    spacing, origin or extent), label values kept (uint8, or uint16 above 255)
    (:func:`ctflow.labels.labels_on_grid`).

    Examples
    --------
    >>> import tempfile, numpy as np, ctflow as cf
    >>> from ctflow.io.metaimage import write_metaimage
    >>> p = write_metaimage(f"{tempfile.mkdtemp()}/s1.mhd", np.zeros((2, 4, 4), np.int16),
    ...                     cf.Geometry((2.0, 1.0, 1.0)))
    >>> cf.Dataset.from_paths([p]).create_batch(["s1"]).load().images.shape
    (2, 4, 4)
    """

    name = "load"
    family = "io"
    lazy_ok = True
    fmt: str | None = None
    components: Sequence[str] | None = None
    series_uid: str | None = None
    allow_uneven: bool = False
    allow_external_data: bool = False
    verify: bool = True
    lazy: bool = False

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        if self.fmt is not None:
            as_choice(self.fmt, _FORMATS, "fmt", self.name)
        as_bool(self.lazy, "lazy", self.name)
        if self.lazy and self.fmt not in (None, "ctflow"):
            raise self.invalid("fmt", "None or 'ctflow' with lazy=True (dumps only)", self.fmt)
        self._set("components", _components(self.components, self.name))
        if self.series_uid is not None and not isinstance(self.series_uid, str):
            raise self.invalid("series_uid", "a str or None", self.series_uid)
        as_bool(self.allow_uneven, "allow_uneven", self.name)
        as_bool(self.allow_external_data, "allow_external_data", self.name)
        as_bool(self.verify, "verify", self.name)

    def make_params(self, item: CTItem) -> dict[str, Any]:
        """Return the source read (recorded so the history says where the voxels came from)."""
        if item.label_source is None:
            return {"source": item.source}
        return {"source": item.source, "labels": item.label_source}

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Read one item's source (a path, or an fsspec URL: fetched, then read)."""
        from ctflow.io.reader import detect_format, read_scan

        source = params.get("source", item.source)
        if source is None:
            raise InvalidParameterError(f"load: item {item.id!r} has no source path")
        label_source = params.get("labels", item.label_source)
        if is_url(source) or (label_source is not None and is_url(label_source)):
            return _fetched(self, item, source, label_source)
        kind = detect_format(source) if self.fmt is None else self.fmt
        if self.lazy:
            if kind != "ctflow":
                raise InvalidParameterError(
                    f"load: lazy=True reads ctflow dumps only; item {item.id!r} is a {kind} "
                    f"source ({source}): dump the items first, or load() them without lazy"
                )
            return _lazy_item(source, self.components, self.verify)
        if kind == "ctflow":
            from ctflow.io.store import read_item

            stored = read_item(source, self.components, verify=self.verify)
            out: dict[str, Any] = dict(stored.components)
            out["geometry"] = stored.geometry
            out["nodules"] = stored.nodules
            out["_recorded_warnings"] = stored.warnings  # "action: message" as recorded
            out["_recorded_history"] = stored.history
            shape = stored.components["images"].shape if "images" in stored.components else None
            if shape is not None:
                out["_record"] = {"grid": grid_record(shape, stored.geometry)}
            return out
        dicom_kw: dict[str, Any] = {}
        if kind == "dicom":
            dicom_kw = {"series_uid": self.series_uid, "allow_uneven": self.allow_uneven}
        elif kind == "dicomweb":  # a series on a DICOMweb server: its URL names the series
            dicom_kw = {"allow_uneven": self.allow_uneven}
        elif kind in ("mhd", "nrrd", "sitk"):
            dicom_kw = {"allow_external_data": self.allow_external_data}
        scan = read_scan(source, kind, **dicom_kw)
        out = {
            "images": scan.images,
            "geometry": scan.geometry,
            "info": scan.info,
            "warnings": reader_warnings(scan.info),
        }
        if label_source is not None:
            out["masks"] = _read_labels(label_source, scan, item.n_threads)
        out["_record"] = {"grid": grid_record(scan.images.shape, scan.geometry)}
        return out


def _fetched(load: Load, item: CTItem, source: str, label_source: str | None) -> dict[str, Any]:
    """Load an item whose source (or label file) is an fsspec URL: fetch, read, forget."""
    from contextlib import ExitStack

    from ctflow.io.remote import fetch

    if load.lazy:
        if not is_url(source) or load.fmt not in (None, "ctflow"):
            raise InvalidParameterError(
                f"load: lazy=True reads ctflow dumps only; item {item.id!r} is at {source}"
            )
        try:
            return _lazy_remote_item(source, load.components, load.verify)
        except UnsupportedFormatError as exc:
            raise InvalidParameterError(
                f"load: lazy=True reads ctflow dumps only; item {item.id!r} at {source} is not "
                "one (no meta.json): dump the items first, or load() them without lazy"
            ) from exc
    with ExitStack() as stack:
        # a DICOM folder: the objects' heads first, then only the chosen series' slices
        heads = load.fmt in (None, "dicom")
        local = str(stack.enter_context(fetch(source, heads=heads))) if is_url(source) else source
        labels = label_source
        if label_source is not None and is_url(label_source):
            labels = str(stack.enter_context(fetch(label_source)))
        try:
            out = load.apply(item, {"source": local, "labels": labels})
        except Exception as exc:
            exc.add_note(f"ctflow: item {item.id!r} was fetched from {source}")
            raise
    out["warnings"] = [str(w).replace(local, source) for w in out.get("warnings", [])]
    return out


def _lazy_remote_item(url: str, components: Sequence[str] | None, verify: bool) -> dict[str, Any]:
    """Return what ``load(lazy=True)`` gives an item on object storage (its meta.json only)."""
    from ctflow.io.store.ranged import read_remote_meta
    from ctflow.io.store.reader import _check_size, _stored_item

    meta, comps = read_remote_meta(url)
    for comp in comps.values():
        if components is None or comp.name in components:
            _check_size(url.rstrip("/"), comp)
    return _lazy_item(url, components, verify, _stored_item(meta, {}, url.rstrip("/")))


def _lazy_item(
    source: str, components: Sequence[str] | None, verify: bool, stored: Any = None
) -> dict[str, Any]:
    """Return what ``load(lazy=True)`` gives an item: its record and where its voxels are."""
    from ctflow.io.store import read_item
    from ctflow.lazy import lazy_record

    if stored is None:
        stored = read_item(source, [], verify=verify)  # meta.json only
    lazy = lazy_record(source, stored.meta, components, verify)
    out: dict[str, Any] = {
        "geometry": stored.geometry,
        "nodules": stored.nodules,
        "info": {"lazy": lazy},
        "_recorded_warnings": stored.warnings,
        "_recorded_history": stored.history,
    }
    if "images" in lazy["components"]:
        shape = lazy["components"]["images"]["shape"]
        out["_record"] = {"grid": grid_record(shape, stored.geometry)}
    return out


def _dump_to_url(dump: Dump, item: CTItem, comps: dict[str, Any], dst: str) -> bool:
    """Write one item to object storage: locally first, then arrays, then ``meta.json``."""
    import tempfile

    from ctflow.io.remote import exists, upload_item

    url = f"{dst.rstrip('/')}/{item.id}"
    if dump.skip_existing and exists(f"{url}/meta.json"):
        return False
    with tempfile.TemporaryDirectory(prefix="ctflow-upload-") as tmp:
        dump.write(tmp, item, comps, skip_existing=False, sync=False)  # a copy to upload
        upload_item(Path(tmp) / item.id, url)
    return True


class Dump(ItemAction):
    """Write every item to ``<dst>/<id>/`` in the ctflow format (blosc2 + ``meta.json``).

    Writing is atomic per item; ``skip_existing=True`` leaves complete items alone so an
    interrupted run can be resumed. ``dst`` may be an fsspec URL (``s3://bucket/dumps``): each
    item is written locally, then uploaded, its arrays first and ``meta.json`` last
    (:mod:`ctflow.io.remote`). ``batch.dumped`` / ``batch.skipped`` list the ids.
    ``compression`` is ``"lz4"`` (fastest to load back) or ``"zstd"`` (~20 % smaller).
    ``sync=False`` skips the ``fsync`` of each item (still atomic for other processes; after a
    power failure an item may be missing or refused by its checksums): for scratch outputs
    that can be written again. ``meta.json`` holds the item's geometry, nodules, warnings and
    history.

    Parameters
    ----------
    dst : str or path
        The output folder (made absolute) or fsspec URL; each item goes to ``<dst>/<id>/``.
        Required.
    components : sequence of str, optional
        Which of "images", "masks", "lungs" to write (one name is accepted too); the images
        are always written. Default None: all three (those the item holds).
    skip_existing : bool, default False
        Leave an item whose complete dump is already there alone (listed in
        ``batch.skipped``), so an interrupted run can be resumed.
    compression : {"lz4", "zstd"}, default "lz4"
        The blosc2 codec: lz4 loads back fastest, zstd is about 20 % smaller.
    sync : bool, default True
        ``fsync`` every written item; False skips it (faster, still atomic for other
        processes, but a power failure may lose the item).

    Examples
    --------
    >>> import tempfile, numpy as np, ctflow as cf
    >>> d = tempfile.mkdtemp()
    >>> b = cf.CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)], ids=["a"]).dump(d)
    >>> b.dumped
    ['a']
    """

    name = "dump"
    family = "io"
    dst: str | os.PathLike[str]
    components: Sequence[str] | None = None
    skip_existing: bool = False
    compression: str = "lz4"
    sync: bool = True

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._set("dst", as_path(self.dst, "dst", self.name))
        self._set("components", _components(self.components, self.name))
        as_bool(self.skip_existing, "skip_existing", self.name)
        as_choice(self.compression, ("lz4", "zstd"), "compression", self.name)
        as_bool(self.sync, "sync", self.name)

    def __call__(self, batch: CTBatch) -> CTBatch:
        """Write every item; fill ``batch.dumped`` and ``batch.skipped``.

        Writing does not change an item, so it is not recorded in its history: a dump written
        twice is byte-identical.
        """
        out = batch.run_items(self, record=False)
        for i, item_id in enumerate(out.ids):
            written = out.info[i].pop("_dump", None)
            if written is True:
                out.dumped.append(item_id)
            elif written is False:
                out.skipped.append(item_id)
        return out

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Write one item."""
        if item.images is None:
            raise InvalidParameterError(f"dump: item {item.id!r} has no images; load() first")
        wanted = COMPONENTS if self.components is None else self.components
        comps = {c: getattr(item, c) for c in wanted}
        comps["images"] = item.images
        dst = str(self.dst)
        if is_url(dst):
            return {"info": {"_dump": _dump_to_url(self, item, comps, dst)}}
        written = self.write(dst, item, comps, skip_existing=self.skip_existing)
        return {"info": {"_dump": written}}

    def write(
        self,
        dst: str,
        item: CTItem,
        comps: dict[str, Any],
        *,
        skip_existing: bool,
        sync: bool | None = None,
    ) -> bool:
        """Write one item's ``comps`` to the local folder ``dst``; False when left alone."""
        from ctflow.io.store import write_item

        written = write_item(
            dst,
            item.id,
            comps,
            item.geometry,
            nodules=item.nodules,
            source=item.source,
            skip_existing=skip_existing,
            compression=self.compression,
            warnings=item.warnings,
            history=item.history,
            sync=self.sync if sync is None else sync,
        )
        return written is not None
