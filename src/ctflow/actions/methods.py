"""The built-in actions as methods with real signatures, shared by ``Pipeline`` and ``CTBatch``.

``pipeline.unify_spacing(...)`` appends a :class:`~ctflow.actions.UnifySpacing` to a pipeline;
``batch.unify_spacing(...)`` runs it on the batch now. Both come from :class:`ActionMethods`:
each method builds the action object (which checks every value at once) and hands it to
``_then``. So IDEs complete the names and show the parameters, and a type checker rejects a
misspelt action or a wrong type. The full description of each action is its class's docstring
(:mod:`ctflow.actions`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ctflow.actions.anatomy import CropToLungs, Segment
from ctflow.actions.annotations import (
    BinarizeMask,
    CreateMask,
    FetchNodules,
    FetchNodulesFromMask,
    LidcMasks,
)
from ctflow.actions.augment_geometry import RandomAffine, RandomElastic, RandomFlip
from ctflow.actions.augmentation import ApplyNoise, Cutout
from ctflow.actions.augmentation_intensity import (
    RandomBiasField,
    RandomBlur,
    RandomContrast,
    RandomGamma,
    RandomNoise,
)
from ctflow.actions.base import Action
from ctflow.actions.cache import Cache
from ctflow.actions.geometry_crop import CentralCrop, Crop, Pad
from ctflow.actions.geometry_flip_rotate import Flip, Rotate
from ctflow.actions.geometry_resample import Reorient, Resize, UnifySpacing
from ctflow.actions.intensity import NormalizeHU
from ctflow.actions.inverse import Invert
from ctflow.actions.io import Dump, Load
from ctflow.actions.labels import Argmax, OneHot
from ctflow.actions.patches import GetPatches, LoadFromPatches, PredictOnScan
from ctflow.actions.projections import MakeXIP
from ctflow.actions.sampling import SampleCrops, SampleNodules

__all__ = ["ActionMethods"]


class ActionMethods:
    """One method per built-in action; subclasses say what ``_then(action)`` does."""

    def _then(self, action: Action) -> Self:
        raise NotImplementedError

    # ------------------------------------------------------------------ I/O
    def load(
        self,
        fmt: str | None = None,
        components: Sequence[str] | None = None,
        series_uid: str | None = None,
        allow_uneven: bool = False,
        allow_external_data: bool = False,
        verify: bool = True,
        lazy: bool = False,
    ) -> Self:
        """Load every item from its source (:class:`~ctflow.actions.Load`)."""
        return self._then(
            Load(fmt, components, series_uid, allow_uneven, allow_external_data, verify, lazy)
        )

    def cache(self, ram_gb: float | None = None, dir: str | os.PathLike[str] | None = None) -> Self:
        """Keep items as made so far; later epochs start here (:class:`~ctflow.actions.Cache`)."""
        return self._then(Cache(ram_gb, dir))

    def dump(
        self,
        dst: str | os.PathLike[str],
        components: Sequence[str] | None = None,
        skip_existing: bool = False,
        compression: str = "lz4",
        sync: bool = True,
    ) -> Self:
        """Write every item to ``dst/<id>/`` (:class:`~ctflow.actions.Dump`)."""
        return self._then(Dump(dst, components, skip_existing, compression, sync))

    # ------------------------------------------------------------------ geometry
    def reorient(self, code: str = "LPS") -> Self:
        """Permute/flip axes to an orientation code, exactly (:class:`~ctflow.actions.Reorient`)."""
        return self._then(Reorient(code))

    def unify_spacing(
        self,
        spacing: float | Sequence[float] = (1.0, 1.0, 1.0),
        shape: Sequence[int | None] | None = None,
        order: int = 1,
        padding: str = "reflect",
        dtype: Any = None,
        anti_alias: bool = False,
        labels_interpolation: str = "nearest",
    ) -> Self:
        """Resample to ``spacing`` mm (:class:`~ctflow.actions.UnifySpacing`)."""
        return self._then(
            UnifySpacing(spacing, shape, order, padding, dtype, anti_alias, labels_interpolation)
        )

    def resize(
        self,
        shape: Sequence[int] = (128, 256, 256),
        order: int = 1,
        dtype: Any = None,
        anti_alias: bool = False,
        labels_interpolation: str = "nearest",
    ) -> Self:
        """Resample to ``shape`` voxels, same field of view (:class:`~ctflow.actions.Resize`)."""
        return self._then(Resize(shape, order, dtype, anti_alias, labels_interpolation))

    def rotate(
        self,
        angle: float,
        axes: Sequence[int] = (1, 2),
        random: bool = False,
        order: int = 1,
        cval: float = -1000.0,
        dtype: Any = None,
        labels_interpolation: str = "nearest",
    ) -> Self:
        """Rotate by ``angle`` degrees in a plane, in mm (:class:`~ctflow.actions.Rotate`)."""
        return self._then(Rotate(angle, axes, random, order, cval, dtype, labels_interpolation))

    def flip(self, axis: int | Sequence[int] = 0) -> Self:
        """Reverse voxel order along axes; world positions kept (:class:`~ctflow.actions.Flip`)."""
        return self._then(Flip(axis))

    def crop(self, start: Sequence[int], shape: Sequence[int]) -> Self:
        """Cut a box of voxels out of every item (:class:`~ctflow.actions.Crop`)."""
        return self._then(Crop(start, shape))

    def central_crop(self, shape: Sequence[int]) -> Self:
        """Cut a box around every item's centre (:class:`~ctflow.actions.CentralCrop`)."""
        return self._then(CentralCrop(shape))

    def pad(self, shape: Sequence[int], mode: str = "constant", value: float = -1000.0) -> Self:
        """Pad every item up to ``shape`` (:class:`~ctflow.actions.Pad`)."""
        return self._then(Pad(shape, mode, value))

    def invert(
        self,
        labels_interpolation: str = "nearest",
        order: int = 1,
        cval: float = -1000.0,
        dtype: Any = None,
    ) -> Self:
        """Resample back onto the loaded grid, in one pass (:class:`~ctflow.actions.Invert`)."""
        return self._then(Invert(labels_interpolation, order, cval, dtype))

    # ------------------------------------------------------------------ intensity
    def normalize_hu(
        self,
        min_hu: float = -1000.0,
        max_hu: float = 400.0,
        dtype: str = "float32",
        inplace: bool = True,
    ) -> Self:
        """Clip HU to a window and scale to [0, 1] (:class:`~ctflow.actions.NormalizeHU`)."""
        return self._then(NormalizeHU(min_hu, max_hu, dtype, inplace))

    def apply_noise(self, sigma: float = 10.0, kind: str = "gaussian") -> Self:
        """Add zero-mean noise, drawn per item (:class:`~ctflow.actions.ApplyNoise`)."""
        return self._then(ApplyNoise(sigma, kind))

    def cutout(
        self,
        shape: Sequence[int],
        start: Sequence[int] | None = None,
        n_boxes: int = 1,
        fill: Any = "min",
    ) -> Self:
        """Fill random boxes with one value (:class:`~ctflow.actions.Cutout`)."""
        return self._then(Cutout(shape, start, n_boxes, fill))

    def random_flip(self, axes: int | Sequence[int] = (0, 1, 2), p: float = 0.5) -> Self:
        """Flip along each axis with probability ``p`` (:class:`~ctflow.actions.RandomFlip`)."""
        return self._then(RandomFlip(axes, p))

    def random_affine(
        self,
        degrees: float | Sequence[float] = 10.0,
        scales: float | Sequence[float] = 0.1,
        shear: float | Sequence[float] = 0.0,
        translation_mm: float | Sequence[float] = 0.0,
        isotropic: bool = False,
        p: float = 1.0,
        order: int = 1,
        cval: float = -1000.0,
        dtype: Any = None,
        labels_interpolation: str = "nearest",
    ) -> Self:
        """Random 3-D rotation, scaling, shear, shift (:class:`~ctflow.actions.RandomAffine`)."""
        return self._then(
            RandomAffine(
                degrees,
                scales,
                shear,
                translation_mm,
                isotropic,
                p,
                order,
                cval,
                dtype,
                labels_interpolation,
            )
        )

    def random_elastic(
        self,
        control_points: int = 7,
        max_displacement_mm: float = 7.5,
        locked_borders: int = 2,
        p: float = 1.0,
        order: int = 1,
        cval: float = -1000.0,
        dtype: Any = None,
        labels_interpolation: str = "nearest",
    ) -> Self:
        """Random smooth deformation (:class:`~ctflow.actions.RandomElastic`)."""
        return self._then(
            RandomElastic(
                control_points,
                max_displacement_mm,
                locked_borders,
                p,
                order,
                cval,
                dtype,
                labels_interpolation,
            )
        )

    # ------------------------------------------------------------------ random intensity
    def random_gamma(
        self,
        log_gamma: float | Sequence[float] = (-0.3, 0.3),
        hu_range: Sequence[float] = (-1000.0, 400.0),
        p: float = 1.0,
    ) -> Self:
        """Gamma-correct a HU window, drawn per item (:class:`~ctflow.actions.RandomGamma`)."""
        return self._then(RandomGamma(log_gamma, hu_range, p))

    def random_contrast(
        self,
        factor: Sequence[float] = (0.75, 1.25),
        shift_hu: float | Sequence[float] = (-50.0, 50.0),
        window: Sequence[float] = (-1000.0, 400.0),
        p: float = 1.0,
    ) -> Self:
        """Scale and shift a HU window, drawn per item (:class:`~ctflow.actions.RandomContrast`)."""
        return self._then(RandomContrast(factor, shift_hu, window, p))

    def random_blur(self, std_mm: float | Sequence[float] = (0.0, 1.0), p: float = 1.0) -> Self:
        """Gaussian blur, std in mm drawn per item (:class:`~ctflow.actions.RandomBlur`)."""
        return self._then(RandomBlur(std_mm, p))

    def random_bias_field(
        self, coefficients: float | Sequence[float] = 0.5, order: int = 3, p: float = 1.0
    ) -> Self:
        """Smooth random field on attenuation (:class:`~ctflow.actions.RandomBiasField`)."""
        return self._then(RandomBiasField(coefficients, order, p))

    def random_noise(
        self, std_hu: float | Sequence[float] = (0.0, 25.0), p: float = 1.0, kind: str = "gaussian"
    ) -> Self:
        """Add noise in HU, std drawn per item (:class:`~ctflow.actions.RandomNoise`)."""
        return self._then(RandomNoise(std_hu, p, kind))

    # ------------------------------------------------------------------ anatomy
    def segment(
        self,
        threshold: float = -320.0,
        min_lung_ml: float = 15.0,
        fill_holes: bool = True,
        closing_mm: float = 5.0,
        blank: bool = False,
        blank_value: float = -1000.0,
    ) -> Self:
        """Segment the lungs into ``lungs`` (:class:`~ctflow.actions.Segment`)."""
        return self._then(
            Segment(threshold, min_lung_ml, fill_holes, closing_mm, blank, blank_value)
        )

    def crop_to_lungs(
        self, margin_mm: float | Sequence[float] = 10.0, shape: Sequence[int] | None = None
    ) -> Self:
        """Crop every item to its lungs (:class:`~ctflow.actions.CropToLungs`)."""
        return self._then(CropToLungs(margin_mm, shape))

    # ------------------------------------------------------------------ projections
    def make_xip(
        self,
        depth: int = 3,
        stride: int = 2,
        mode: str = "max",
        projection: str = "axial",
        padding: str | None = None,
    ) -> Self:
        """Sliding-window MIP / MinIP / mean / median (:class:`~ctflow.actions.MakeXIP`)."""
        return self._then(MakeXIP(depth, stride, mode, projection, padding))

    # ------------------------------------------------------------------ annotations
    def fetch_nodules(self, annotations: str | os.PathLike[str] | pd.DataFrame) -> Self:
        """Take the items' nodules from a LUNA16 table (:class:`~ctflow.actions.FetchNodules`)."""
        return self._then(FetchNodules(annotations))

    def create_mask(self, mode: str = "ellipsoid") -> Self:
        """Draw the nodules into ``masks`` (:class:`~ctflow.actions.CreateMask`)."""
        return self._then(CreateMask(mode))

    def binarize_mask(self, threshold: float = 0.5, labels: Sequence[int] | None = None) -> Self:
        """Threshold ``masks`` into 0/1 (:class:`~ctflow.actions.BinarizeMask`)."""
        return self._then(BinarizeMask(threshold, labels))

    def one_hot(
        self,
        n_classes: int | None = None,
        values: Sequence[int] | None = None,
        dtype: Any = "uint8",
    ) -> Self:
        """Label map -> one channel per class (:class:`~ctflow.actions.OneHot`)."""
        return self._then(OneHot(n_classes, values, dtype))

    def argmax(self, values: Sequence[int] | None = None) -> Self:
        """Channels -> label map of the largest channel (:class:`~ctflow.actions.Argmax`)."""
        return self._then(Argmax(values))

    def lidc_masks(
        self,
        db: str | os.PathLike[str],
        clevel: float = 0.5,
        reader: int | None = None,
        labels: str = "nodule",
        edges: str = "exclude",
        id_column: str = "series_instance_uid",
        min_annotators: int = 1,
        min_diameter: float | None = None,
    ) -> Self:
        """Nodule masks from LIDC contours (:class:`~ctflow.actions.LidcMasks`)."""
        return self._then(
            LidcMasks(db, clevel, reader, labels, edges, id_column, min_annotators, min_diameter)
        )

    def fetch_nodules_from_mask(self) -> Self:
        """Nodules from the mask's components (:class:`~ctflow.actions.FetchNodulesFromMask`)."""
        return self._then(FetchNodulesFromMask())

    # ------------------------------------------------------------------ sampling
    def sample_nodules(
        self,
        batch_size: int,
        nodule_size: Sequence[int] = (32, 64, 64),
        share: float = 0.5,
        variance: float | Sequence[float] | None = None,
        histo: Any = None,
        pad_value: float | None = None,
    ) -> Self:
        """Crop a new batch on and off nodules (:class:`~ctflow.actions.SampleNodules`)."""
        return self._then(SampleNodules(batch_size, nodule_size, share, variance, histo, pad_value))

    def sample_crops(
        self,
        batch_size: int,
        shape: Sequence[int],
        ratios: Mapping[int, float] | None = None,
        pad_value: float | None = None,
    ) -> Self:
        """Crop a new batch centred on voxels of labels (:class:`~ctflow.actions.SampleCrops`)."""
        return self._then(SampleCrops(batch_size, shape, ratios, pad_value))

    # ------------------------------------------------------------------ patches
    def get_patches(
        self,
        shape: ArrayLike,
        stride: ArrayLike | None = None,
        component: str = "images",
        pad_value: Any = "edge",
    ) -> Self:
        """Cut every item into patches (:class:`~ctflow.actions.GetPatches`)."""
        return self._then(GetPatches(shape, stride, component, pad_value))

    def load_from_patches(self, patches: NDArray[Any] | None = None, dst: str = "masks") -> Self:
        """Put patches back, averaging overlaps (:class:`~ctflow.actions.LoadFromPatches`)."""
        return self._then(LoadFromPatches(patches, dst))

    def predict_on_scan(
        self,
        fn: Callable[[NDArray[Any]], Any],
        patch_shape: ArrayLike,
        stride: ArrayLike | None = None,
        batch_size: int = 8,
        component: str = "images",
        dst: str = "masks",
        pad_value: Any = "edge",
        blend: str = "mean",
        sigma_scale: float | Sequence[float] = 0.125,
        flips: Sequence[Sequence[int]] = (),
        output: str = "probabilities",
        threshold: float = 0.5,
    ) -> Self:
        """Run a model over patches of every item (:class:`~ctflow.actions.PredictOnScan`).

        ``blend="gaussian"`` weights patch centres more, ``flips`` adds flip test-time
        augmentation, ``output="labels"`` gives argmax / ``>= threshold`` labels.
        """
        return self._then(
            PredictOnScan(
                fn,
                patch_shape,
                stride,
                batch_size,
                component,
                dst,
                pad_value,
                blend,
                sigma_scale,
                flips,
                output,
                threshold,
            )
        )
