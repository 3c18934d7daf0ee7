"""Peer plumbing: thread settings, SimpleITK / MONAI / TorchIO conversions, baseline lung masks.

Everything here is the "best composition we could write" for a peer, used by several cases:

* :func:`lungs_scipy` — a RadIO-style scipy.ndimage lung mask: threshold, 3-D labelling, drop
  the components touching the in-plane border (outside air), keep the two largest, a binary
  closing, then per-slice hole filling.
* :func:`lungs_sitk` — the same recipe with SimpleITK's multi-threaded filters
  (``ConnectedComponent``, ``LabelShapeStatistics``, ``BinaryMorphologicalClosing``,
  ``BinaryFillhole``).
* :class:`SitkMonaiReader` — a MONAI ``ImageReader`` backed by SimpleITK, because MONAI's own
  MetaImage reader needs the ``itk`` package, which the ``bench`` extra does not install.

Peers see (x, y, z) arrays with RAS affines, as their own loaders produce them; ctflow's
(z, y, x) LPS geometry is converted by :func:`ras_affine`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ctflow.geometry import Geometry, direction_to_sitk

#: HU below which a voxel is air-like (the same threshold as ctflow's default).
AIR_HU = -320
#: Iterations of a 3x3x3 closing in the baselines (about 2 mm at 1 mm voxels).
CLOSING_ITERATIONS = 2


# -- threads ------------------------------------------------------------------------------------
def torch_threads(n: int) -> Any:
    """Import torch and set its intra-op threads."""
    import torch

    torch.set_num_threads(int(n))
    return torch


def sitk_threads(n: int) -> Any:
    """Import SimpleITK and set its default number of threads."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))
    return sitk


# -- conversions --------------------------------------------------------------------------------
def sitk_image(arr: np.ndarray, geometry: Geometry) -> Any:
    """SimpleITK image of a (z, y, x) array with ctflow geometry."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(v) for v in geometry.spacing[::-1]])
    img.SetOrigin([float(v) for v in geometry.origin[::-1]])
    img.SetDirection([float(v) for v in direction_to_sitk(geometry.direction)])
    return img


def ras_affine(geometry: Geometry) -> np.ndarray:
    """4x4 RAS affine of the (x, y, z)-ordered array of a ctflow (z, y, x) LPS geometry."""
    d_xyz = geometry.direction[::-1, ::-1] * geometry.spacing[::-1][None, :]
    flip = np.diag([-1.0, -1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = flip @ d_xyz
    aff[:3, 3] = flip @ geometry.origin[::-1]
    return aff


def to_xyz_tensor(arr: np.ndarray) -> Any:
    """(1, x, y, z) torch tensor view of a (z, y, x) array (no copy)."""
    import torch

    return torch.from_numpy(arr).permute(2, 1, 0).unsqueeze(0)


def meta_tensor(arr: np.ndarray, geometry: Geometry) -> Any:
    """MONAI MetaTensor (1, x, y, z) with the RAS affine, as MONAI's loaders produce."""
    from monai.data import MetaTensor

    return MetaTensor(to_xyz_tensor(arr), affine=ras_affine(geometry))


def tio_image(arr: np.ndarray, geometry: Geometry, label: bool = False) -> Any:
    """TorchIO ScalarImage / LabelMap of a (z, y, x) array."""
    import torchio as tio

    cls = tio.LabelMap if label else tio.ScalarImage
    return cls(tensor=to_xyz_tensor(arr), affine=ras_affine(geometry))


def monai_sitk_reader() -> Any:
    """A MONAI ``ImageReader`` reading with SimpleITK (what ``ITKReader`` does with ``itk``)."""
    import SimpleITK as sitk
    from monai.data import ImageReader
    from monai.utils import MetaKeys, SpaceKeys

    class SitkMonaiReader(ImageReader):  # type: ignore[misc]
        def verify_suffix(self, filename: Any) -> bool:
            return str(filename).endswith((".mhd", ".mha"))

        def read(self, data: Any, **kwargs: Any) -> Any:
            name = data[0] if isinstance(data, list | tuple) else data
            return sitk.ReadImage(str(name))

        def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
            arr = sitk.GetArrayFromImage(img).T  # (x, y, z), as ITKReader returns
            d = np.asarray(img.GetDirection(), np.float64).reshape(3, 3)
            aff = np.eye(4)
            aff[:3, :3] = d @ np.diag(img.GetSpacing())
            aff[:3, 3] = img.GetOrigin()
            aff[:2] *= -1  # LPS -> RAS
            meta = {
                MetaKeys.ORIGINAL_AFFINE: aff,
                MetaKeys.AFFINE: aff.copy(),
                MetaKeys.SPATIAL_SHAPE: np.asarray(arr.shape),
                MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
                "spacing": np.asarray(img.GetSpacing()),
            }
            return arr, meta

    return SitkMonaiReader()


# -- lung masks (baselines) -------------------------------------------------------------------
def _border_labels(lab: np.ndarray) -> np.ndarray:
    """Labels touching the in-plane (y/x) border of any slice (the z faces are not used)."""
    faces = [lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]]
    return np.unique(np.concatenate([f.ravel() for f in faces]))


def _two_largest(sizes: np.ndarray, voxel_ml: float, min_ml: float) -> list[int]:
    order = np.argsort(sizes)[::-1][:2]
    return [int(lab) for lab in order if sizes[lab] > 0 and sizes[lab] * voxel_ml >= min_ml]


def lungs_scipy(img: np.ndarray, spacing: Any, min_ml: float = 15.0) -> np.ndarray:
    """RadIO-style lung mask with scipy.ndimage (single-threaded); uint8 0/1."""
    air = img < AIR_HU
    lab, n = ndi.label(air)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    sizes[_border_labels(lab)] = 0
    keep = _two_largest(sizes, float(np.prod(spacing)) / 1000.0, min_ml)
    mask = np.isin(lab, keep)
    del lab
    st = ndi.generate_binary_structure(3, 3)
    mask = ndi.binary_dilation(mask, st, iterations=CLOSING_ITERATIONS)
    mask = ndi.binary_erosion(mask, st, iterations=CLOSING_ITERATIONS, border_value=1)
    for z in range(mask.shape[0]):
        mask[z] = ndi.binary_fill_holes(mask[z])
    return mask.view(np.uint8)


def lungs_sitk(image: Any, min_ml: float = 15.0) -> Any:
    """The same recipe with SimpleITK filters on a SimpleITK image; returns a uint8 image.

    Components are sorted by size with ``RelabelComponent``; the closing is
    ``GrayscaleMorphologicalClosing`` with a box, which gives the same mask as
    ``BinaryMorphologicalClosing`` in about 60 % of its time here (its box path is separable).
    """
    import SimpleITK as sitk

    air = sitk.BinaryThreshold(image, -32768.0, AIR_HU - 0.5, 1, 0)
    relabel = sitk.RelabelComponentImageFilter()
    lab = relabel.Execute(sitk.ConnectedComponent(air, False))
    sizes = np.asarray([0, *relabel.GetSizeOfObjectsInPixels()], np.int64)
    border = _border_labels(sitk.GetArrayViewFromImage(lab))
    sizes[border[border < sizes.size]] = 0
    keep = _two_largest(sizes, float(np.prod(image.GetSpacing())) / 1000.0, min_ml)
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    for k in keep:
        mask = sitk.Or(mask, sitk.BinaryThreshold(lab, k, k, 1, 0))
    r = CLOSING_ITERATIONS
    mask = sitk.GrayscaleMorphologicalClosing(mask, [r, r, r], sitk.sitkBox, True)
    return sitk.BinaryFillhole(mask, False, 1)


def nodule_mask_numpy(
    shape: tuple[int, int, int], geometry: Geometry, centers: np.ndarray, diameters: np.ndarray
) -> np.ndarray:
    """RadIO-style sphere masks: per nodule, its voxel box and a distance test in world mm.

    Axis-aligned geometries only (identity direction), as RadIO assumed.
    """
    mask = np.zeros(shape, np.uint8)
    sp, org = geometry.spacing, geometry.origin
    for c, d in zip(centers, diameters):
        r = d / 2.0
        lo = np.maximum(np.ceil((c - r - org) / sp - 1e-3), 0).astype(int)
        hi = np.minimum(np.floor((c + r - org) / sp + 1e-3) + 1, shape).astype(int)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = (org[a] + np.arange(lo[a], hi[a]) * sp[a] - c[a] for a in range(3))
        dist2 = zz[:, None, None] ** 2 + yy[None, :, None] ** 2 + xx[None, None, :] ** 2
        box = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        box |= (dist2 <= r * r).view(np.uint8)
    return mask


def geometry_from_ras(affine: Any) -> Geometry:
    """ctflow (z, y, x) LPS geometry of the (x, y, z) array a RAS ``affine`` describes."""
    a = np.asarray(affine, np.float64)[:3]
    flip = np.diag([-1.0, -1.0, 1.0])
    m = flip @ a[:, :3]  # LPS world from (x, y, z) voxel
    spacing_xyz = np.linalg.norm(m, axis=0)
    d_xyz = m / spacing_xyz[None, :]
    return Geometry(spacing_xyz[::-1], (flip @ a[:, 3])[::-1], d_xyz[::-1, ::-1])


def sample_crops_numpy(
    images: np.ndarray,
    others: list[np.ndarray],
    centres_vox: np.ndarray,
    crop: tuple[int, int, int],
    n: int,
    share: float,
    rng: np.random.Generator,
) -> list[list[np.ndarray]]:
    """RadIO-style crops: ``round(n * share)`` centred on random nodules, the rest uniform.

    Returns ``[[image crop, *other crops], ...]``; crops are copies, shifted inside the volume.
    """
    crop_arr = np.asarray(crop)
    hi = np.maximum(np.asarray(images.shape) - crop_arr, 0)
    out = []
    n_pos = round(n * share) if len(centres_vox) else 0
    for k in range(n):
        if k < n_pos:
            c = centres_vox[rng.integers(len(centres_vox))]
            st = np.clip(np.floor(c + 0.5).astype(np.int64) - crop_arr // 2, 0, hi)
        else:
            st = np.array([rng.integers(0, h + 1) for h in hi])
        box = tuple(slice(int(a), int(a + s)) for a, s in zip(st, crop_arr))
        out.append([images[box].copy(), *[o[box].copy() for o in others]])
    return out
