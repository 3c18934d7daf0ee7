"""A batch item to / from a MONAI-style dict: ``image``, ``label``, ``affine``.

MONAI's ``LoadImaged(keys, ensure_channel_first=True)`` gives, for each key, a channel-first
``(1, X, Y, Z)`` array (the (x, y, z) transpose of ctflow's ``(z, y, x)``) whose ``affine`` maps
(x, y, z) voxel indices to **RAS** world mm (:mod:`ctflow.interop.affine`). :func:`to_monai`
makes exactly that from a batch item — same voxels, same affine — so MONAI transforms and
networks take ctflow's output as if MONAI had loaded the file; :func:`from_monai` brings such a
dict back as a one-item :class:`~ctflow.batch.CTBatch` (LPS geometry, (z, y, x) arrays).

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
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError
from ctflow.interop._batch import batch_from_volumes
from ctflow.interop._deps import optional_import
from ctflow.interop.affine import _as_numpy, geometry_from_ras_affine, ras_affine, to_xyz, to_zyx

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
        ``(X, Y, Z)``.
    meta_tensor : bool, default False
        Values as MONAI ``MetaTensor`` (with ``.affine`` and ``filename_or_obj``) instead of numpy
        arrays; needs MONAI.

    Returns
    -------
    dict
        ``image`` (and ``label`` / ``lungs`` when present): (x, y, z)-ordered views of the item's
        arrays, dtype unchanged; ``affine``: the 4x4 RAS affine (float64); ``spacing``: (x, y, z)
        mm; ``id``: the item id; ``filename_or_obj``: its source.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((2, 3, 4), np.int16)], origin=(1.0, 2.0, 3.0))
    >>> to_monai(b[0], channel_first=False)["affine"][:3, 3].tolist()
    [-3.0, -2.0, 1.0]
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
        value: Any = to_xyz(arr)
        if channel_first:
            value = value[None]
        if meta_tensor:
            value = _meta_tensor(value, affine, item)
        out[keys[comp]] = value
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
) -> Any:
    """Return a MONAI-style dict back as a one-item :class:`~ctflow.batch.CTBatch`.

    Parameters
    ----------
    data : mapping
        ``image`` (numpy array, torch tensor or MONAI MetaTensor; ``(1, X, Y, Z)`` or
        ``(X, Y, Z)``), optionally ``label`` / ``lungs`` on the same grid, and the affine: the
        ``affine`` key, else the image's ``.affine`` (MetaTensor), else
        ``data["<image_key>_meta_dict"]["affine"]`` (MONAI < 0.9).
    image_key, label_key, lungs_key : str
        Keys to read.
    channel_first : bool, default True
        Arrays have a leading channel axis of size 1.
    item_id : str, optional
        Id of the item (default: ``data["id"]``, else "0").

    Returns
    -------
    CTBatch
        One item: (z, y, x) images (dtype kept), ``masks`` (uint8) from the label, ``lungs``
        (uint8), LPS geometry from the affine.

    Raises
    ------
    InvalidParameterError
        A missing key or affine, arrays of the wrong rank, more than one channel.

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
    affine = data.get("affine")
    if affine is None:
        affine = getattr(image, "affine", None)
    if affine is None:
        meta = data.get(f"{image_key}_meta_dict") or {}
        affine = meta.get("affine") if isinstance(meta, Mapping) else None
    if affine is None:
        raise InvalidParameterError(
            f"from_monai: no affine: give data['affine'], a MetaTensor {image_key!r} or "
            f"data['{image_key}_meta_dict']['affine']"
        )
    geometry = geometry_from_ras_affine(affine)
    volumes: dict[str, NDArray[Any]] = {}
    for comp, key in zip(
        ("images", "masks", "lungs"), (image_key, label_key, lungs_key), strict=True
    ):
        if key not in data or data[key] is None:
            continue
        arr = _spatial(_as_numpy(data[key]), key, channel_first)
        volumes[comp] = to_zyx(arr) if comp == "images" else (to_zyx(arr) > 0).astype(np.uint8)
    shape = volumes["images"].shape
    for comp, arr in volumes.items():
        if arr.shape != shape:
            raise InvalidParameterError(
                f"from_monai: {comp} has shape {arr.shape[::-1]} (x, y, z); "
                f"the image has {shape[::-1]}"
            )
    ident = item_id if item_id is not None else str(data.get("id", "0"))
    return batch_from_volumes(volumes, geometry, ident)


def _spatial(arr: NDArray[Any], key: str, channel_first: bool) -> NDArray[Any]:
    if channel_first:
        if arr.ndim != 4 or arr.shape[0] != 1:
            raise InvalidParameterError(
                f"from_monai: {key!r} must be (1, X, Y, Z) with channel_first=True; "
                f"got shape {arr.shape}"
            )
        return arr[0]
    if arr.ndim != 3:
        raise InvalidParameterError(f"from_monai: {key!r} must be (X, Y, Z); got {arr.shape}")
    return arr
