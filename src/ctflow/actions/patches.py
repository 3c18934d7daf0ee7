"""Patch actions: cut items into patches, put predictions back, predict on whole scans."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctflow.actions.base import BatchAction
from ctflow.errors import InvalidParameterError
from ctflow.validation import as_choice, as_int, as_shape

if TYPE_CHECKING:
    from ctflow.batch import CTBatch

__all__ = ["GetPatches", "LoadFromPatches", "PredictOnScan"]

_COMPONENTS = ("images", "masks", "lungs")


def _stride(value: Any, patch: tuple[int, int, int], where: str) -> tuple[int, int, int] | None:
    """``stride`` checked: None, or 3 positive integers at most ``patch`` on every axis.

    :func:`ctflow.ops.patches_grid.patch_grid` refuses a larger stride too (it would leave
    voxels no patch covers); checked here so the pipeline is refused when it is written.
    """
    if value is None:
        return None
    stride = as_shape(value, what="stride", where=where)
    if any(s > p for s, p in zip(stride, patch, strict=True)):
        raise InvalidParameterError(
            f"{where}: stride must be at most the patch shape {patch} on every axis (so that "
            f"every voxel is covered); got {value!r}"
        )
    return stride


def _pad_value(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return as_choice(value, ("edge",), "pad_value", where)
    from ctflow.validation import as_float

    return as_float(value, "pad_value", where)


class GetPatches(BatchAction):
    """Cut every item into patches covering all of it, into ``batch.patches``.

    ``batch.patches`` is one array ``(Σ n_i, pz, py, px)`` (items in order, patches in
    :class:`ctflow.ops.patches.PatchGrid` order) and ``batch.patch_grids`` the grids, so a
    network's outputs on the patches can be put back with ``load_from_patches``. Items may
    have any shapes.

    Parameters
    ----------
    shape : int or 3 ints (z, y, x)
        Patch shape in voxels, positive (one number is used on every axis). Required.
    stride : int or 3 ints (z, y, x), optional
        Step between patch starts, positive, at most the patch shape on every axis. Default
        None: the patch shape (no overlap).
    component : {"images", "masks", "lungs"}, default "images"
        The component cut into patches.
    pad_value : float or "edge", default "edge"
        How each item's end is padded up to the patch grid: its last slice repeated ("edge"),
        or a constant (a finite number, which must fit an integer dtype).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((8, 8, 8), np.int16)] * 2)
    >>> b.get_patches((4, 4, 4)).patches.shape
    (16, 4, 4, 4)
    """

    name = "get_patches"
    family = "patches"
    shape: ArrayLike
    stride: ArrayLike | None = None
    component: str = "images"
    pad_value: Any = "edge"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        shape = as_shape(self.shape, where=self.name)
        self._set("shape", shape)
        self._set("stride", _stride(self.stride, shape, self.name))
        as_choice(self.component, _COMPONENTS, "component", self.name)
        self._set("pad_value", _pad_value(self.pad_value, self.name))

    def run(self, batch: CTBatch) -> CTBatch:
        """Cut every item."""
        from ctflow.ops.patches import get_patches

        batch.require(self.name, self.component)
        parts, grids = [], []
        data = batch.ragged(self.component)
        for i in range(len(batch)):
            p, g = get_patches(data.item(i), self.shape, self.stride, pad_value=self.pad_value)
            parts.append(p)
            grids.append(g)
        batch.patches = np.concatenate(parts) if parts else None
        batch.patch_grids = grids
        return batch


class LoadFromPatches(BatchAction):
    """Put patches (default: ``batch.patches``) back into ``dst``, averaging overlaps.

    ``patches`` must be in the order ``get_patches`` produced (e.g. a network's predictions
    on them); the result is float32 in ``dst`` ("masks", "lungs" or "images").

    Parameters
    ----------
    patches : ndarray (n, pz, py, px), optional
        The patches of every item of the batch together, as many as its patch grids hold
        (checked when run). Default None: ``batch.patches``.
    dst : {"images", "masks", "lungs"}, default "masks"
        The component that receives the volumes: per voxel, the mean of the patches covering it.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> img = np.arange(512, dtype=np.int16).reshape(8, 8, 8)
    >>> b = cf.CTBatch.from_arrays([img]).get_patches((4, 4, 4), (2, 2, 2))
    >>> bool(np.array_equal(b.load_from_patches(dst="masks").masks, img))
    True
    """

    name = "load_from_patches"
    family = "patches"
    patches: NDArray[Any] | None = None
    dst: str = "masks"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        if self.patches is not None:
            arr = np.asarray(self.patches)
            if arr.ndim != 4:
                raise self.invalid("patches", "an array (n, pz, py, px) or None", arr.shape)
            self._set("patches", arr)
        as_choice(self.dst, _COMPONENTS, "dst", self.name)

    def run(self, batch: CTBatch) -> CTBatch:
        """Assemble every item's patches."""
        from ctflow.ops.patches import assemble_patches

        grids = batch.patch_grids
        if not grids:
            raise InvalidParameterError("load_from_patches: call get_patches() first")
        source = batch.patches if self.patches is None else self.patches
        total = sum(g.n_patches for g in grids)
        if source is None or source.ndim != 4 or len(source) != total:
            got = None if source is None else source.shape
            raise InvalidParameterError(
                f"load_from_patches: expected {total} patches (n, pz, py, px) for this batch's "
                f"grids; got {got}"
            )
        volumes, k = [], 0
        for g in grids:
            volumes.append(assemble_patches(source[k : k + g.n_patches], g))
            k += g.n_patches
        batch.set_component(self.dst, volumes)
        return batch


class PredictOnScan(BatchAction):
    """Run ``fn`` (e.g. a network) over patches of every item; blend the outputs into ``dst``.

    Patches are cut on demand, ``batch_size`` at a time, so whole scans work with a model that
    only takes small inputs (:func:`ctflow.ops.patches.predict_on_volume` does the work; see
    its docstring for the parameters and the peak memory). ``fn`` gets an array
    ``(B, pz, py, px)`` in the component's dtype and returns ``(B, pz, py, px)`` (one channel)
    or ``(B, C, pz, py, px)`` (C channels, e.g. a softmax), as numpy or torch. Items run one
    after another (models are rarely thread-safe).

    What lands in ``dst``: float32 probabilities ``(Z, Y, X)`` per item for one channel (a
    ``(B, 1, ...)`` output counts as one), ``(C, Z, Y, X)`` per item for C > 1 (this needs a
    batch whose components take channels); or, with ``output="labels"``, uint8 labels
    ``(Z, Y, X)``: the argmax over the channels, or ``>= threshold`` for one channel.

    ``blend`` defaults to ``"mean"``, the plain average this action always did: without
    overlap (``stride`` = ``patch_shape``, the default) the two blends give the same arrays
    anyway, and with overlap the default keeps the predictions of existing pipelines, and the
    replay of item histories recorded before ``blend`` existed, unchanged. For a convolutional
    segmentation network with overlapping patches pass ``blend="gaussian"`` (what nnU-Net
    always does): a network sees less context at a patch's edges, so its centre should count
    more; flips (e.g. ``flips=((2,), (1,), (1, 2))``) add test-time augmentation.

    Parameters
    ----------
    fn : callable
        ``fn(batch) -> predictions``, as described above (numpy or torch output; every call
        must give the same number of channels). Required.
    patch_shape : int or 3 ints (z, y, x)
        Shape of the patches ``fn`` gets, positive (one number is used on every axis).
        Required.
    stride : int or 3 ints (z, y, x), optional
        Step between patch starts, positive, at most the patch shape on every axis. Default
        None: the patch shape (no overlap).
    batch_size : int, default 8
        Patches per call of ``fn`` (>= 1).
    component : {"images", "masks", "lungs"}, default "images"
        The component the patches are cut from.
    dst : {"images", "masks", "lungs"}, default "masks"
        The component that receives the prediction.
    pad_value : float or "edge", default "edge"
        How each item's end is padded up to the patch grid: its last slice repeated ("edge"),
        or a constant (a finite number, which must fit an integer dtype).
    blend : {"mean", "gaussian"}, default "mean"
        How overlapping outputs are averaged: uniformly, or weighted by a Gaussian centred on
        each patch.
    sigma_scale : float or 3 floats (z, y, x), default 0.125
        Sigma of the Gaussian as a fraction of the patch size, each > 0; used by
        ``blend="gaussian"`` only (checked always).
    flips : sequence of axis tuples, default ()
        Flip test-time augmentation: each tuple (non-empty, distinct axes 0-2, negatives count
        back, no tuple twice) is one more pass of ``fn`` on flipped patches, averaged in.
    output : {"probabilities", "labels"}, default "probabilities"
        float32 blended outputs, or uint8 labels (uint16 above 256 channels): the argmax over
        the channels, or ``>= threshold`` for one channel.
    threshold : float, default 0.5
        Threshold of one-channel labels (``output="labels"`` only); any finite number.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.ones((8, 8, 8), np.int16)])
    >>> float(b.predict_on_scan(lambda x: x * 0.5, (4, 4, 4)).masks.max())
    0.5
    >>> img = np.linspace(-1, 1, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    >>> b = cf.CTBatch.from_arrays([img])
    >>> two = lambda x: np.stack([-x, x], axis=1)  # channel 1 wins where x > 0
    >>> b.predict_on_scan(two, 4, 2, blend="gaussian", flips=[(2,)], output="labels")
    ... # doctest: +ELLIPSIS
    CTBatch(n=1, ...)
    >>> b.masks.dtype, bool(np.array_equal(b.masks, img > 0))
    (dtype('uint8'), True)
    """

    name = "predict_on_scan"
    family = "patches"
    fn: Callable[[NDArray[Any]], Any]
    patch_shape: ArrayLike
    stride: ArrayLike | None = None
    batch_size: int = 8
    component: str = "images"
    dst: str = "masks"
    pad_value: Any = "edge"
    blend: str = "mean"
    sigma_scale: Any = 0.125
    flips: Sequence[Sequence[int]] = ()
    output: str = "probabilities"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        from ctflow.ops.patches_predict import as_flips
        from ctflow.validation import as_float

        if not callable(self.fn):
            raise self.invalid("fn", "a callable (B, pz, py, px) -> (B, [C,] pz, py, px)", self.fn)
        patch = as_shape(self.patch_shape, what="patch_shape", where=self.name)
        self._set("patch_shape", patch)
        self._set("stride", _stride(self.stride, patch, self.name))
        as_int(self.batch_size, "batch_size", self.name, lo=1)
        as_choice(self.component, _COMPONENTS, "component", self.name)
        as_choice(self.dst, _COMPONENTS, "dst", self.name)
        self._set("pad_value", _pad_value(self.pad_value, self.name))
        as_choice(self.blend, ("mean", "gaussian"), "blend", self.name)
        self._set("sigma_scale", _sigma_scale(self.sigma_scale, self.name))
        self._set("flips", as_flips(self.flips, self.name))
        as_choice(self.output, ("probabilities", "labels"), "output", self.name)
        self._set("threshold", as_float(self.threshold, "threshold", self.name))

    def run(self, batch: CTBatch) -> CTBatch:
        """Predict on every item, one after another."""
        from ctflow.ops.patches_predict import predict_on_volume

        batch.require(self.name, self.component)
        data = batch.ragged(self.component)
        volumes = []
        for i, item_id in enumerate(batch.ids):
            try:
                volumes.append(
                    predict_on_volume(
                        data.item(i),
                        self.fn,
                        self.patch_shape,
                        self.stride,
                        self.batch_size,
                        pad_value=self.pad_value,
                        blend=self.blend,  # type: ignore[arg-type]
                        sigma_scale=self.sigma_scale,
                        flips=self.flips,
                        output=self.output,  # type: ignore[arg-type]
                        threshold=self.threshold,
                    )
                )
            except Exception as exc:
                exc.add_note(f"ctflow: in action 'predict_on_scan' on item {item_id!r} (#{i})")
                raise
        batch.set_component(self.dst, volumes)
        return batch


def _sigma_scale(value: Any, where: str) -> float | tuple[float, float, float]:
    """``sigma_scale`` checked: a positive float, or 3 (z, y, x) kept as a tuple."""
    from ctflow.ops.patches_predict import as_sigma_scale

    sigmas = as_sigma_scale(value, where)
    return sigmas if isinstance(value, Sequence | np.ndarray) else sigmas[0]
