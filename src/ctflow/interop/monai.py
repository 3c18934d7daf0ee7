"""A batch item to / from a MONAI-style dict: ``image``, ``label``, ``affine``.

MONAI's ``LoadImaged(keys, ensure_channel_first=True)`` gives, for each key, a channel-first
``(1, X, Y, Z)`` array (the (x, y, z) transpose of ctflow's ``(z, y, x)``) whose ``affine`` maps
(x, y, z) voxel indices to **RAS** world mm (:mod:`ctflow.interop.affine`). :func:`to_monai`
makes exactly that from a batch item — same voxels, same affine — so MONAI transforms and
networks take ctflow's output as if MONAI had loaded the file; :func:`from_monai` brings such a
dict back as a one-item :class:`~ctflow.batch.CTBatch` (LPS geometry, (z, y, x) arrays).

Masks keep their values both ways: a label map {0, 1, 2, 5} stays {0, 1, 2, 5} (never
binarised), float probabilities stay floats, (C, Z, Y, X) encodings become MONAI's
channel-first (C, X, Y, Z). ``d["ctflow_dtypes"]`` records each mask's ctflow dtype, so that
:func:`from_monai` gives labels back exactly in their dtype after MONAI transforms that return
them as float32 (``Spacingd(mode="nearest")`` does), and refuses labels blended by linear
interpolation.

MONAI's transforms read the geometry from ``MetaTensor`` values, not from ``d["affine"]``: use
``meta_tensor=True`` before spatial transforms (``Spacingd``, ``Orientationd``, crops);
:func:`from_monai` then takes the image MetaTensor's own (updated) affine.

MONAI itself is needed only for ``meta_tensor=True`` (MONAI ``MetaTensor`` values) and when
the input holds MetaTensors; plain dicts of numpy arrays need nothing but numpy.

Examples
--------
>>> import numpy as np, ctflow as cf
>>> b = cf.CTBatch.from_arrays([np.zeros((4, 5, 6), np.int16)], spacing=(2.5, 0.7, 0.7))
>>> d = to_monai(b[0])
>>> d["image"].shape, d["image"].dtype, d["affine"][2, 2]
((1, 6, 5, 4), dtype('int16'), np.float64(2.5))
>>> from_monai(d).images.shape
(4, 5, 6)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ctflow.deps import optional_import
from ctflow.errors import InvalidParameterError
from ctflow.interop._batch import batch_from_volumes
from ctflow.interop._labels import (
    DTYPES_KEY,
    for_torch,
    mask_from_peer,
    record_dtypes,
    recorded_dtype,
    spatial_to_xyz,
    spatial_to_zyx,
)
from ctflow.interop.affine import _as_numpy, geometry_from_ras_affine, ras_affine

__all__ = ["from_monai", "to_monai"]

_COMPONENTS = (("images", "image"), ("masks", "label"), ("lungs", "lungs"))


def to_monai(
    item: Any,
    *,
    image_key: str = "image",
    label_key: str = "label",
    lungs_key: str = "lungs",
    channel_first: bool = True,
    meta_tensor: bool = False,
) -> dict[str, Any]:
    """Return a batch item as a MONAI-style dict.

    Parameters
    ----------
    item : CTItem
        ``batch[i]``: its ``images`` and, when present, ``masks`` and ``lungs``.
    image_key, label_key, lungs_key : str
        Dict keys for images, nodule masks and lung masks.
    channel_first : bool, default True
        ``(1, X, Y, Z)`` arrays (as ``LoadImaged(..., ensure_channel_first=True)``), else
        ``(X, Y, Z)``. (C, Z, Y, X) masks are always (C, X, Y, Z).
    meta_tensor : bool, default False
        Values as MONAI ``MetaTensor`` (with ``.affine`` and ``filename_or_obj``) instead of numpy
        arrays; needs MONAI. Needed by MONAI's spatial transforms, which read the geometry from
        the MetaTensor.

    Returns
    -------
    dict
        ``image`` (and ``label`` / ``lungs`` when present): (x, y, z)-ordered views of the item's
        arrays, dtype unchanged (MetaTensors: uint16 / uint32 labels as int32 / int64, which
        torch can transform); ``affine``: the 4x4 RAS affine (float64); ``spacing``: (x, y, z)
        mm; ``id``: the item id; ``filename_or_obj``: its source; ``ctflow_dtypes``: the ctflow
        dtype of ``label`` / ``lungs``.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((2, 3, 4), np.int16)], origin=(1.0, 2.0, 3.0))
    >>> to_monai(b[0], channel_first=False)["affine"][:3, 3].tolist()
    [-3.0, -2.0, 1.0]
    >>> lab = np.zeros((2, 3, 4), np.uint16)
    >>> lab[1, 2, :] = [1, 2, 5, 300]
    >>> c = cf.CTBatch.from_arrays([np.zeros((2, 3, 4), np.int16)], masks=[lab])
    >>> d = to_monai(c[0])
    >>> d["label"].dtype, np.unique(d["label"]).tolist(), d["ctflow_dtypes"]
    (dtype('uint16'), [0, 1, 2, 5, 300], {'label': 'uint16'})
    """
    if getattr(item, "images", None) is None:
        raise InvalidParameterError(
            f"to_monai: item {getattr(item, 'id', '?')!r} has no images; load() first"
        )
    affine = ras_affine(item.geometry)
    keys = {"images": image_key, "masks": label_key, "lungs": lungs_key}
    out: dict[str, Any] = {}
    for comp, _ in _COMPONENTS:
        arr = getattr(item, comp, None)
        if arr is None:
            continue
        value: Any = spatial_to_xyz(arr)
        if channel_first and arr.ndim == 3:
            value = value[None]
        if meta_tensor:
            value = _meta_tensor(value if comp == "images" else for_torch(value), affine, item)
        out[keys[comp]] = value
    out[DTYPES_KEY] = record_dtypes(
        {label_key: getattr(item, "masks", None), lungs_key: getattr(item, "lungs", None)}
    )
    out["affine"] = affine
    out["spacing"] = item.geometry.spacing[::-1].copy()
    out["id"] = item.id
    out["filename_or_obj"] = getattr(item, "source", None) or ""
    return out


def _meta_tensor(value: NDArray[Any], affine: NDArray[np.float64], item: Any) -> Any:
    torch = optional_import("torch", "to_monai(meta_tensor=True)")
    data = optional_import("monai.data", "to_monai(meta_tensor=True)")
    tensor = torch.from_numpy(np.ascontiguousarray(value))
    meta = {
        "filename_or_obj": getattr(item, "source", None) or "",
        "spatial_shape": np.asarray(value.shape[-3:]),
        "original_affine": affine.copy(),
    }
    return data.MetaTensor(tensor, affine=torch.from_numpy(affine.copy()), meta=meta)


def from_monai(
    data: Mapping[str, Any],
    *,
    image_key: str = "image",
    label_key: str = "label",
    lungs_key: str = "lungs",
    channel_first: bool = True,
    item_id: str | None = None,
    label_dtype: DTypeLike | None = None,
) -> Any:
    """Return a MONAI-style dict back as a one-item :class:`~ctflow.batch.CTBatch`.

    Parameters
    ----------
    data : mapping
        ``image`` (numpy array, torch tensor or MONAI MetaTensor; ``(1, X, Y, Z)`` or
        ``(X, Y, Z)``), optionally ``label`` / ``lungs`` on the same grid (``label`` may have
        C channels: a (C, Z, Y, X) encoding), and the affine: the image's ``.affine``
        (MetaTensor: MONAI's transforms keep it up to date), else the ``affine`` key, else
        ``data["<image_key>_meta_dict"]["affine"]`` (MONAI < 0.9).
    image_key, label_key, lungs_key : str
        Keys to read.
    channel_first : bool, default True
        Arrays have a leading channel axis of size 1.
    item_id : str, optional
        Id of the item (default: ``data["id"]``, else "0").
    label_dtype : dtype-like, optional
        dtype of ``masks`` (e.g. ``"uint8"`` for a label file ``LoadImaged`` read as float32).
        Default: the dtype :func:`to_monai` recorded in ``data["ctflow_dtypes"]``, else integer
        labels as uint8 (uint16 above 255) and floats as they are.

    Returns
    -------
    CTBatch
        One item: (z, y, x) images (dtype kept), ``masks`` from the label and ``lungs`` with their
        label values (never binarised) in their ctflow dtype, LPS geometry from the affine.

    Raises
    ------
    InvalidParameterError
        A missing key or affine, arrays of the wrong rank, more than one image channel, a
        label MetaTensor on another grid than the image.
    InvalidScanError
        Labels that cannot go back to their integer dtype exactly (non-whole values: a label
        map resampled with linear interpolation).

    Examples
    --------
    >>> import numpy as np
    >>> d = {"image": np.zeros((1, 6, 5, 4), np.float32), "affine": np.diag([-1.0, -1, 2, 1])}
    >>> b = from_monai(d)
    >>> b.images.shape, b.spacing[0].tolist()
    ((4, 5, 6), [2.0, 1.0, 1.0])
    """
    if image_key not in data:
        raise InvalidParameterError(
            f"from_monai: no {image_key!r} in the dict; keys: {sorted(map(str, data))}"
        )
    image = data[image_key]
    affine = getattr(image, "affine", None)  # a MetaTensor's: spatial transforms update it
    if affine is None:
        affine = data.get("affine")
    if affine is None:
        meta = data.get(f"{image_key}_meta_dict") or {}
        affine = meta.get("affine") if isinstance(meta, Mapping) else None
    if affine is None:
        raise InvalidParameterError(
            f"from_monai: no affine: give data['affine'], a MetaTensor {image_key!r} or "
            f"data['{image_key}_meta_dict']['affine']"
        )
    geometry = geometry_from_ras_affine(affine)
    record = data.get(DTYPES_KEY)
    volumes: dict[str, NDArray[Any]] = {}
    for comp, key in zip(
        ("images", "masks", "lungs"), (image_key, label_key, lungs_key), strict=True
    ):
        if key not in data or data[key] is None:
            continue
        own = getattr(data[key], "affine", None)
        if (
            comp != "images"
            and own is not None
            and not np.allclose(_as_numpy(own), _as_numpy(affine), atol=1e-4)
        ):
            raise InvalidParameterError(
                f"from_monai: {key!r} has another affine than {image_key!r}; resample it onto "
                f"the image's grid first"
            )
        arr = spatial_to_zyx(_spatial(_as_numpy(data[key]), key, channel_first, comp == "masks"))
        if comp == "images":
            volumes[comp] = arr
            continue
        dtype = label_dtype if comp == "masks" and label_dtype is not None else None
        if dtype is None:
            dtype = recorded_dtype(record, key)
        volumes[comp] = mask_from_peer(arr, dtype, f"from_monai: {key!r}")
    shape = volumes["images"].shape
    for comp, arr in volumes.items():
        if arr.shape[-3:] != shape:
            raise InvalidParameterError(
                f"from_monai: {comp} has shape {arr.shape[-3:][::-1]} (x, y, z); "
                f"the image has {shape[::-1]}"
            )
    ident = item_id if item_id is not None else str(data.get("id", "0"))
    return batch_from_volumes(volumes, geometry, ident)


def _spatial(arr: NDArray[Any], key: str, channel_first: bool, channels: bool) -> NDArray[Any]:
    """(X, Y, Z), or (C, X, Y, Z) when ``channels`` allows several."""
    if channels and arr.ndim == 4 and arr.shape[0] > 1:
        return arr
    if channel_first:
        if arr.ndim != 4 or arr.shape[0] != 1:
            raise InvalidParameterError(
                f"from_monai: {key!r} must be (1, X, Y, Z) with channel_first=True; "
                f"got shape {arr.shape}"
            )
        return arr[0, ...]
    if arr.ndim != 3:
        raise InvalidParameterError(f"from_monai: {key!r} must be (X, Y, Z); got {arr.shape}")
    return arr
