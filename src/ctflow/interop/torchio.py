"""A batch item to / from a ``torchio.Subject``.

TorchIO images are ``(C, W, H, D)`` tensors — the (x, y, z) transpose of ctflow's ``(z, y, x)``
with a channel axis — and a 4x4 affine to **RAS** world mm, the affine ``torchio.ScalarImage``
reads from the same file (:mod:`ctflow.interop.affine`). :func:`to_torchio` gives a Subject
with ``image`` (``ScalarImage``), ``label`` (``LabelMap`` of the masks) and ``lungs``
(``LabelMap``) when present, plus the item ``id``; TorchIO transforms (resampling,
augmentation, patch samplers) then work on ctflow's output in the right world frame.
:func:`from_torchio` brings a Subject back as a one-item :class:`~ctflow.batch.CTBatch`.

Masks keep their values both ways: a label map {0, 1, 2, 5} stays {0, 1, 2, 5} (never
binarised), float probabilities stay floats (a ``LabelMap``: TorchIO resamples it with nearest
neighbour and leaves it out of intensity transforms), (C, Z, Y, X) encodings keep their
channels. uint16 / uint32 labels travel as int32 / int64 (what TorchIO does to such arrays
itself: torch cannot flip uint16), and ``subject["ctflow_dtypes"]`` records each mask's dtype so
that :func:`from_torchio` gives it back exactly, also after a transform that returned float32
labels (``RandomAffine``).

Needs TorchIO (and torch).

Examples
--------
>>> import numpy as np, ctflow as cf
>>> b = cf.CTBatch.from_arrays([np.zeros((4, 5, 6), np.int16)], spacing=(2.5, 0.7, 0.8))
>>> subject = to_torchio(b[0])
>>> tuple(subject["image"].shape), subject["image"].spacing
((1, 6, 5, 4), (0.8, 0.7, 2.5))
>>> from_torchio(subject).images.shape
(4, 5, 6)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike

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
from ctflow.interop.affine import _as_numpy, geometry_from_ras_affine, ras_affine, to_xyz, to_zyx

__all__ = ["from_torchio", "to_torchio"]


def to_torchio(
    item: Any,
    *,
    image_key: str = "image",
    label_key: str = "label",
    lungs_key: str = "lungs",
) -> Any:
    """Return a batch item as a ``torchio.Subject``.

    Parameters
    ----------
    item : CTItem
        ``batch[i]``: its ``images`` and, when present, ``masks`` and ``lungs``.
    image_key, label_key, lungs_key : str
        Subject keys of the ScalarImage and the two LabelMaps.

    Returns
    -------
    torchio.Subject
        Images with the item's dtype (int16 HU stays int16; float32 stays float32), masks and
        lungs as ``LabelMap`` s with their values and dtype (uint16 / uint32 as int32 / int64),
        all with the RAS affine; ``subject["id"]`` is the item id and
        ``subject["ctflow_dtypes"]`` the ctflow dtype of each label map (``{"label": "uint8"}``).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> lab = np.zeros((2, 3, 4), np.uint16)
    >>> lab[0, 0, :] = [1, 2, 5, 300]
    >>> b = cf.CTBatch.from_arrays([np.zeros((2, 3, 4), np.int16)], ids=["s1"], masks=[lab])
    >>> s = to_torchio(b[0])
    >>> s["id"], s["label"].data.dtype, s["ctflow_dtypes"]
    ('s1', torch.int32, {'label': 'uint16'})
    >>> sorted(s["label"].data.unique().tolist())
    [0, 1, 2, 5, 300]
    """
    tio = optional_import("torchio", "to_torchio")
    torch = optional_import("torch", "to_torchio")
    if getattr(item, "images", None) is None:
        raise InvalidParameterError(
            f"to_torchio: item {getattr(item, 'id', '?')!r} has no images; load() first"
        )
    affine = ras_affine(item.geometry)

    def tensor(arr: Any) -> Any:
        return torch.from_numpy(np.ascontiguousarray(to_xyz(arr))[None])

    fields: dict[str, Any] = {
        image_key: tio.ScalarImage(tensor=tensor(item.images), affine=affine.copy())
    }
    labels = {
        key: getattr(item, comp, None) for comp, key in (("masks", label_key), ("lungs", lungs_key))
    }
    for key, arr in labels.items():
        if arr is not None:
            data = for_torch(np.ascontiguousarray(spatial_to_xyz(arr)))
            if data.ndim == 3:
                data = data[None]
            fields[key] = tio.LabelMap(tensor=torch.from_numpy(data), affine=affine.copy())
    fields["id"] = item.id
    fields[DTYPES_KEY] = record_dtypes(labels)
    return tio.Subject(**fields)


def from_torchio(
    subject: Any,
    *,
    image_key: str = "image",
    label_key: str = "label",
    lungs_key: str = "lungs",
    item_id: str | None = None,
    label_dtype: DTypeLike | None = None,
) -> Any:
    """Return a ``torchio.Subject`` back as a one-item :class:`~ctflow.batch.CTBatch`.

    Parameters
    ----------
    subject : torchio.Subject
        With a single-channel image under ``image_key`` and optional label maps (one channel,
        or several for a (C, Z, Y, X) mask encoding) on the image's grid.
    image_key, label_key, lungs_key : str
        Subject keys to read.
    item_id : str, optional
        Id of the item (default: ``subject["id"]`` if present, else "0").
    label_dtype : dtype-like, optional
        dtype of ``masks`` (e.g. ``"uint8"`` for a label file TorchIO read as float). Default:
        the dtype :func:`to_torchio` recorded in ``subject["ctflow_dtypes"]``, else integer
        labels as uint8 (uint16 above 255) and floats as they are.

    Returns
    -------
    CTBatch
        (z, y, x) images (dtype kept), ``masks`` / ``lungs`` with their label values (never
        binarised) in their ctflow dtype, LPS geometry from the image's affine.

    Raises
    ------
    InvalidParameterError
        A missing image, several image channels, label maps on another grid.
    InvalidScanError
        Labels that cannot go back to their integer dtype exactly (non-whole values: a label
        map resampled with linear interpolation).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((2, 3, 4), np.int16)], origin=(1.0, 2.0, 3.0))
    >>> from_torchio(to_torchio(b[0])).origin.tolist()
    [[1.0, 2.0, 3.0]]
    >>> lab = np.array([[[0, 1, 2, 5]] * 3] * 2, np.uint8)
    >>> c = cf.CTBatch.from_arrays([np.zeros((2, 3, 4), np.int16)], masks=[lab])
    >>> back = from_torchio(to_torchio(c[0]))
    >>> back.masks.dtype, np.unique(back.masks).tolist()
    (dtype('uint8'), [0, 1, 2, 5])
    """
    if image_key not in subject:
        raise InvalidParameterError(
            f"from_torchio: no {image_key!r} in the subject; keys: {sorted(map(str, subject))}"
        )
    image = subject[image_key]
    geometry = geometry_from_ras_affine(image.affine)
    record = subject.get(DTYPES_KEY)
    volumes = {}
    for comp, key in (("images", image_key), ("masks", label_key), ("lungs", lungs_key)):
        if key not in subject:
            continue
        img = subject[key]
        data = _as_numpy(img.data)
        if data.ndim != 4 or (data.shape[0] != 1 and comp != "masks"):
            raise InvalidParameterError(
                f"from_torchio: {key!r} must have one channel (1, W, H, D); got {data.shape}"
            )
        if not np.allclose(np.asarray(img.affine), np.asarray(image.affine), atol=1e-4):
            raise InvalidParameterError(
                f"from_torchio: {key!r} has another affine than {image_key!r}; resample it first"
            )
        if comp == "images":
            volumes[comp] = to_zyx(data[0])
            continue
        vol = spatial_to_zyx(data[0] if data.shape[0] == 1 else data)
        dtype = label_dtype if comp == "masks" and label_dtype is not None else None
        if dtype is None:
            dtype = recorded_dtype(record, key)
        volumes[comp] = mask_from_peer(vol, dtype, f"from_torchio: {key!r}")

    ident = item_id if item_id is not None else str(subject.get("id", "0"))
    return batch_from_volumes(volumes, geometry, ident)
