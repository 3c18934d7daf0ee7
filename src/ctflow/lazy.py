"""Items loaded lazily from ctflow dumps: crops read straight from the stored blocks.

``load(lazy=True)`` on a dataset of dumps reads each item's ``meta.json`` and no voxels: the
batch gets the items' geometry, nodule tables, warnings and history, and each item's
``info["lazy"]`` says where its arrays are (the dump folder, the stored components with their
shapes and dtypes). ``sample_nodules`` and ``sample_crops`` plan their crops on those shapes and
read each crop with :func:`ctflow.io.store.read_crop`, which decompresses only the blosc2
blocks the crop touches: a 64³ crop of a dumped 300x512x512 scan reads 64 planes of it,
not the 300 — and a dump's arrays never have to fit in memory. Dumps on object storage
(``s3://`` ...) are read the same way: ``meta.json`` at load, then the chunks under the crops
by byte ranges (:mod:`ctflow.io.store.ranged`). The crops are equal, voxel for voxel, to
crops cut from the fully loaded items with the same seed.

Two things read more than the crop: a crop that reaches outside its scan without a
``pad_value`` is padded with the scan's minimum, read once per item from the whole images
(give ``pad_value``, e.g. -1024 HU or 0 after a window, to avoid it); and class-balanced
``sample_crops(ratios=...)`` reads each item's label map whole (``masks`` only, not images)
to draw voxels of each label. Any other action on a lazy batch is refused with a message
saying so: ``load()`` without ``lazy`` reads the voxels.

Examples
--------
>>> import tempfile, numpy as np, ctflow as cf
>>> d = tempfile.mkdtemp()
>>> b = cf.CTBatch.from_arrays([np.arange(4000, dtype=np.int16).reshape(10, 20, 20)], ids=["a"])
>>> b = b.dump(d)
>>> lazy = cf.Dataset.from_glob(f"{d}/*", dirs=True).create_batch(["a"]).load(lazy=True)
>>> lazy.has("images"), item_shapes(lazy, "example")
(False, [(10, 20, 20)])
>>> crops = lazy.sample_crops(2, (4, 4, 4))
>>> crops.images.shape
(8, 4, 4)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.errors import InvalidParameterError
from ctflow.io.remote import is_url

if TYPE_CHECKING:
    from ctflow.batch import CTBatch

__all__ = [
    "LAZY_HINT",
    "is_lazy",
    "item_shapes",
    "lazy_components",
    "lazy_record",
    "read_crops",
    "read_whole",
    "slabs",
]

COMPONENTS = ("images", "masks", "lungs")

#: What an action that needs voxels says about a lazy batch.
LAZY_HINT = (
    "the items were loaded with load(lazy=True), which reads no voxels: only sample_nodules "
    "and sample_crops read (crops) from the dumps; call load() without lazy for this action"
)


def lazy_record(
    source: str | os.PathLike[str],
    meta: Mapping[str, Any],
    components: Sequence[str] | None,
    verify: bool,
) -> dict[str, Any]:
    """Return an item's ``info["lazy"]``: its dump folder and the stored arrays to read from.

    Examples
    --------
    >>> meta = {"components": {"images": {"shape": [2, 3, 4], "dtype": "<i2"}}}
    >>> lazy_record("/d/a", meta, None, True)
    {'path': '/d/a', 'components': {'images': {'shape': [2, 3, 4], 'dtype': 'int16'}}, \
'verify': True}
    """
    stored = meta.get("components") or {}
    wanted = [c for c in COMPONENTS if c in stored and (components is None or c in components)]
    return {
        "path": os.fspath(source),
        "components": {
            c: {
                "shape": [int(v) for v in stored[c]["shape"]],
                "dtype": np.dtype(stored[c]["dtype"]).name,
            }
            for c in wanted
        },
        "verify": bool(verify),
    }


def _lazy(batch: CTBatch, i: int) -> dict[str, Any] | None:
    info = batch.info[i] if i < len(batch.info) else {}
    lazy = info.get("lazy")
    return lazy if isinstance(lazy, dict) else None


def _stored(batch: CTBatch, i: int, component: str) -> dict[str, Any]:
    """Return item ``i``'s ``info["lazy"]``, checked to hold ``component``."""
    lazy = _lazy(batch, i)
    if lazy is None or component not in lazy["components"]:
        raise InvalidParameterError(
            f"lazy crops: item {batch.ids[i]!r} has no lazily loaded {component}"
        )
    return lazy


def is_lazy(batch: CTBatch) -> bool:
    """Return True when the batch's items were loaded with ``load(lazy=True)`` (no voxels)."""
    return (
        len(batch) > 0
        and not batch.has("images")
        and all(_lazy(batch, i) is not None for i in range(len(batch)))
    )


def item_shapes(batch: CTBatch, what: str) -> list[tuple[int, int, int]]:
    """Return every item's (Z, Y, X): from the images, or from the dumps of a lazy batch.

    Raises
    ------
    InvalidParameterError
        The batch has no images and is not lazy (``what`` names the action).
    """
    if not batch.has("images") and is_lazy(batch):
        out = []
        for i in range(len(batch)):
            comps = _lazy(batch, i)["components"]  # type: ignore[index]
            if "images" not in comps:
                raise InvalidParameterError(
                    f"{what}: item {batch.ids[i]!r} was loaded lazily without images "
                    f"(load(lazy=True, components=...) must include 'images')"
                )
            z, y, x = (int(v) for v in comps["images"]["shape"])
            out.append((z, y, x))
        return out
    batch.require(what, "images")
    return [(int(z), int(y), int(x)) for z, y, x in batch.shapes]


def lazy_components(batch: CTBatch) -> list[str]:
    """Return the components every item of a lazy batch has stored (and was asked to read)."""
    names = [set(_lazy(batch, i)["components"]) for i in range(len(batch))]  # type: ignore[index]
    common = set.intersection(*names) if names else set()
    if any(n != common for n in names):
        raise InvalidParameterError(
            f"lazy crops: the items' dumps hold different components "
            f"({dict(zip(batch.ids, (sorted(n) for n in names), strict=True))}); load them "
            f"with load(lazy=True, components=[...]) naming the ones all of them have"
        )
    return [c for c in COMPONENTS if c in common]


def slabs(z_ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge plane ranges ``[z0, z1)`` that overlap or touch into disjoint slabs, in order.

    Examples
    --------
    >>> slabs([(10, 20), (0, 5), (15, 30), (30, 31), (40, 40)])
    [(0, 5), (10, 31)]
    """
    out: list[tuple[int, int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in z_ranges if b > a):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def read_crops(
    batch: CTBatch,
    i: int,
    component: str,
    starts: Sequence[ArrayLike],
    shape: Sequence[int],
    fill: float,
) -> list[NDArray[Any]]:
    """Read several crops of one lazy item: each stored plane they touch is decompressed once.

    The crops' plane ranges are merged into slabs of whole planes (:func:`slabs`), each slab
    is read once (:func:`ctflow.io.store.read_crop`), and the crops are cut from the slabs: a
    dump's blocks are whole planes, so this reads exactly the planes under the crops — at most
    the whole item, however many crops it gives; each crop equals
    :func:`ctflow.ops.crop.extract_crop` of the loaded array.
    """
    from ctflow.io.store import read_crop
    from ctflow.ops.crop import extract_crop

    lazy = _stored(batch, i, component)
    spec = lazy["components"][component]
    z, y, x = (int(v) for v in spec["shape"])
    dtype = np.dtype(spec["dtype"])
    sts = [np.asarray(s, dtype=np.int64) for s in starts]
    depth = int(shape[0])
    ranges = [(max(0, int(s[0])), min(z, int(s[0]) + depth)) for s in sts]
    read: list[tuple[int, int, NDArray[Any]]] = []
    planes = _remote_planes(lazy, component) if is_url(lazy["path"]) else None
    for a, b in slabs(ranges):
        if planes is not None:
            slab = planes(a, b)
        else:
            slab, _ = read_crop(lazy["path"], [a, 0, 0], [b - a, y, x], component,
                                verify=lazy["verify"])  # fmt: skip
        read.append((a, b, slab))
    out = []
    for st, (a, b) in zip(sts, ranges, strict=True):
        if b <= a:  # the crop lies beyond the stored planes: all fill
            out.append(np.full(tuple(shape), np.asarray(fill).astype(dtype), dtype=dtype))
            continue
        z0, _, slab = next(r for r in read if r[0] <= a and b <= r[1])
        out.append(extract_crop(slab, st - np.array([z0, 0, 0]), shape, fill))
    return out


def _remote_planes(lazy: Mapping[str, Any], component: str) -> Callable[[int, int], NDArray[Any]]:
    """Return ``planes(z0, z1)`` of an item on object storage.

    By byte ranges when the dump recorded where its chunks lie
    (:mod:`ctflow.io.store.ranged`), else from the whole array, fetched once.
    """
    from ctflow.errors import CorruptFileError
    from ctflow.io.store.ranged import read_planes, read_remote_meta

    url, verify = str(lazy["path"]), bool(lazy["verify"])
    _, comps = read_remote_meta(url)
    comp = comps.get(component)
    if comp is None:
        raise CorruptFileError(f"{url}: the item no longer has {component} (rewritten?)")
    if comp.ranges is not None:
        return lambda a, b: read_planes(url, comp, a, b, verify=verify)
    whole = _read_whole(url, component, verify)  # a dump from before ranges were recorded
    return lambda a, b: whole[a:b]


def _read_whole(source: str, component: str, verify: bool) -> NDArray[Any]:
    """Read one whole component of a dumped item (fetched first when it is a URL)."""
    from ctflow.io.remote import fetch
    from ctflow.io.store import read_item

    if not is_url(source):
        return read_item(source, [component], verify=verify).components[component]
    with fetch(source) as local:
        return read_item(local, [component], verify=verify).components[component]


def read_whole(batch: CTBatch, i: int, component: str) -> NDArray[Any]:
    """Read a lazy item's whole component (a label map to draw voxels from, a minimum)."""
    lazy = _stored(batch, i, component)
    return _read_whole(str(lazy["path"]), component, bool(lazy["verify"]))
