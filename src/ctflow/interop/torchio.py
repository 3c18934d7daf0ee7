"""A batch item to / from a ``torchio.Subject``.

TorchIO images are ``(C, W, H, D)`` tensors — the (x, y, z) transpose of ctflow's ``(z, y, x)``
with a channel axis — and a 4x4 affine to **RAS** world mm, the affine ``torchio.ScalarImage``
reads from the same file (:mod:`ctflow.interop.affine`). :func:`to_torchio` gives a Subject
with ``image`` (``ScalarImage``), ``label`` (``LabelMap`` of the nodule masks) and ``lungs``
(``LabelMap``) when present, plus the item ``id``; TorchIO transforms (resampling,
augmentation, patch samplers) then work on ctflow's output in the right world frame.
:func:`from_torchio` brings a Subject back as a one-item :class:`~ctflow.batch.CTBatch`.

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

from ctflow.errors import InvalidParameterError
from ctflow.interop._batch import batch_from_volumes
from ctflow.interop._deps import optional_import
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
        Images with the item's dtype (int16 HU stays int16; float32 stays float32), masks as
        uint8 label maps, all with the RAS affine; ``subject["id"]`` is the item id.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((2, 3, 4), np.int16)], ids=["s1"])
    >>> to_torchio(b[0])["id"]
    's1'
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
    for comp, key in (("masks", label_key), ("lungs", lungs_key)):
        arr = getattr(item, comp, None)
        if arr is not None:
            fields[key] = tio.LabelMap(tensor=tensor(arr), affine=affine.copy())
    fields["id"] = item.id
    return tio.Subject(**fields)


def from_torchio(
    subject: Any,
    *,
    image_key: str = "image",
    label_key: str = "label",
    lungs_key: str = "lungs",
    item_id: str | None = None,
) -> Any:
    """Return a ``torchio.Subject`` back as a one-item :class:`~ctflow.batch.CTBatch`.

    Parameters
    ----------
    subject : torchio.Subject
        With a single-channel image under ``image_key`` and optional label maps.
    image_key, label_key, lungs_key : str
        Subject keys to read.
    item_id : str, optional
        Id of the item (default: ``subject["id"]`` if present, else "0").

    Returns
    -------
    CTBatch
        (z, y, x) images (dtype kept), ``masks`` / ``lungs`` as uint8, LPS geometry from the
        image's affine.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((2, 3, 4), np.int16)], origin=(1.0, 2.0, 3.0))
    >>> from_torchio(to_torchio(b[0])).origin.tolist()
    [[1.0, 2.0, 3.0]]
    """
    if image_key not in subject:
        raise InvalidParameterError(
            f"from_torchio: no {image_key!r} in the subject; keys: {sorted(map(str, subject))}"
        )
    image = subject[image_key]
    geometry = geometry_from_ras_affine(image.affine)
    volumes = {}
    for comp, key in (("images", image_key), ("masks", label_key), ("lungs", lungs_key)):
        if key not in subject:
            continue
        img = subject[key]
        data = _as_numpy(img.data)
        if data.ndim != 4 or data.shape[0] != 1:
            raise InvalidParameterError(
                f"from_torchio: {key!r} must have one channel (1, W, H, D); got {data.shape}"
            )
        if not np.allclose(np.asarray(img.affine), np.asarray(image.affine), atol=1e-4):
            raise InvalidParameterError(
                f"from_torchio: {key!r} has another affine than {image_key!r}; resample it first"
            )
        vol = to_zyx(data[0])
        volumes[comp] = vol if comp == "images" else (vol > 0).astype(np.uint8)

    ident = item_id if item_id is not None else str(subject.get("id", "0"))
    return batch_from_volumes(volumes, geometry, ident)
