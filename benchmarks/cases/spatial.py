"""Rotation by 10 degrees about z (the axial plane), bilinear, air (-1000 HU) outside.

ctflow follows ``scipy.ndimage.rotate(reshape=False)``. Each peer gets the same rotation (the
sense was matched once against scipy, and the agreement check would catch a wrong one: the
mean difference of the opposite sense is hundreds of HU). Tools that can only pad with zeros
(torch ``grid_sample``, MONAI) rotate ``image + 1000`` and subtract 1000 afterwards, which is
exact. The comparison region is the central disc of radius 0.45 x the in-plane size, away from
the border ring where "outside" is defined slightly differently by each tool.

``rotate_coronal`` rotates the coronal (z, x) plane, whose spacings differ (1.25 x 0.70 mm on the
full profile), in millimetres: ctflow with ``spacing=``, SimpleITK's ``Euler3DTransform`` (a
rotation by -10 degrees about y is ctflow's +10 degrees in (z, x)) and scipy's
``affine_transform`` with ctflow's index-space matrix ``S^-1 R S``. It is compared on the central
disc (in mm) of radius 0.45 x the smaller extent of the (z, x) plane.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from benchmarks.harness import Case, Contender, Runner, as_numpy, close, xyz_to_zyx
from benchmarks.peers import sitk_image, sitk_threads, tio_image, torch_threads

ANGLE = 10.0
AIR = -1000.0


def _inputs(data: Any) -> dict[str, Any]:
    s = data.scan()
    img = s["images"]
    _, ny, nx = img.shape
    yy, xx = np.ogrid[:ny, :nx]
    r = 0.45 * min(ny, nx)
    disc = ((yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 <= r * r).astype(np.uint8)
    return {"images": img, "geometry": s["geometry"], "disc": disc}


def _bytes(inp: dict[str, Any]) -> int:
    return 6 * int(inp["images"].size)


def _finish(inp: dict[str, Any]) -> Any:
    region = np.broadcast_to(inp["disc"], inp["images"].shape)

    def finish(out: Any) -> dict[str, np.ndarray]:
        return {"out": np.ascontiguousarray(as_numpy(out), np.float32), "region": region}

    return finish


def _coronal_inputs(data: Any) -> dict[str, Any]:
    s = data.scan()
    img, geometry = s["images"], s["geometry"]
    nz, _, nx = img.shape
    sz, _, sx = geometry.spacing
    zz = (np.arange(nz) - (nz - 1) / 2)[:, None] * sz
    xx = (np.arange(nx) - (nx - 1) / 2)[None, :] * sx
    r = 0.45 * min(nz * sz, nx * sx)
    disc = (zz**2 + xx**2 <= r * r).astype(np.uint8)[:, None, :]
    return {"images": img, "geometry": geometry, "disc": disc}


def _ctflow(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.ops.spatial import rotate

    return Runner(
        lambda: rotate(inp["images"], ANGLE, axes=(1, 2), cval=AIR, n_threads=threads),
        _finish(inp),
    )


def _scipy(inp: dict[str, Any], threads: int) -> Runner:
    from scipy import ndimage as ndi

    def run() -> np.ndarray:
        return ndi.rotate(
            inp["images"],
            ANGLE,
            axes=(1, 2),
            reshape=False,
            output=np.float32,
            order=1,
            mode="constant",
            cval=AIR,
        )

    return Runner(run, _finish(inp))


def _scipy_split(inp: dict[str, Any], threads: int) -> Runner:
    from scipy import ndimage as ndi

    img = inp["images"]
    edges = np.linspace(0, img.shape[0], 3).round().astype(int)

    def run() -> np.ndarray:
        out = np.empty(img.shape, np.float32)

        def part(a: int, b: int) -> None:
            ndi.rotate(
                img[a:b],
                ANGLE,
                axes=(1, 2),
                reshape=False,
                output=out[a:b],
                order=1,
                mode="constant",
                cval=AIR,
            )

        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(part, int(a), int(b)) for a, b in itertools.pairwise(edges)]:
                f.result()
        return out

    return Runner(run, _finish(inp))


def _sitk(inp: dict[str, Any], threads: int) -> Runner:
    sitk = sitk_threads(threads)
    image = sitk_image(inp["images"], inp["geometry"])
    size = np.asarray(image.GetSize(), np.float64)
    centre = image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist())
    tr = sitk.Euler3DTransform(centre, 0.0, 0.0, math.radians(ANGLE))

    def run() -> Any:
        return sitk.Resample(image, image, tr, sitk.sitkLinear, AIR, sitk.sitkFloat32)

    return Runner(run, _finish(inp))


def _ctflow_coronal(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.ops.spatial import rotate

    spacing = inp["geometry"].spacing
    return Runner(
        lambda: rotate(
            inp["images"], ANGLE, axes=(0, 2), cval=AIR, n_threads=threads, spacing=spacing
        ),
        _finish(inp),
    )


def _sitk_coronal(inp: dict[str, Any], threads: int) -> Runner:
    sitk = sitk_threads(threads)
    image = sitk_image(inp["images"], inp["geometry"])
    size = np.asarray(image.GetSize(), np.float64)
    centre = image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist())
    tr = sitk.Euler3DTransform(centre, 0.0, -math.radians(ANGLE), 0.0)

    def run() -> Any:
        return sitk.Resample(image, image, tr, sitk.sitkLinear, AIR, sitk.sitkFloat32)

    return Runner(run, _finish(inp))


def _scipy_coronal(inp: dict[str, Any], threads: int) -> Runner:
    from scipy import ndimage as ndi

    img = inp["images"]
    sz, _, sx = inp["geometry"].spacing
    c, s = math.cos(math.radians(ANGLE)), math.sin(math.radians(ANGLE))
    # source index = centre + M (output index - centre), M = S^-1 R S in the (z, x) plane
    m = np.array([[c, 0.0, s * sx / sz], [0.0, 1.0, 0.0], [-s * sz / sx, 0.0, c]])
    centre = (np.asarray(img.shape, np.float64) - 1) / 2

    def run() -> np.ndarray:
        return ndi.affine_transform(
            img,
            m,
            offset=centre - m @ centre,
            output=np.float32,
            order=1,
            mode="constant",
            cval=AIR,
        )

    return Runner(run, _finish(inp))


def _torch(inp: dict[str, Any], threads: int) -> Runner:
    """2-D affine_grid + grid_sample with the slices as the batch (square in-plane grid)."""
    torch = torch_threads(threads)
    import torch.nn.functional as F

    img = inp["images"]
    nz = img.shape[0]
    c, s = math.cos(math.radians(ANGLE)), math.sin(math.radians(ANGLE))
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=torch.float32)

    def run() -> Any:
        t = torch.from_numpy(img).float().add_(-AIR)[:, None]
        grid = F.affine_grid(theta.expand(nz, 2, 3), list(t.shape), align_corners=True)
        out = F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out[:, 0].add_(AIR)

    return Runner(run, _finish(inp))


def _monai(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    from monai.transforms import Rotate

    op = Rotate(
        angle=(0.0, 0.0, math.radians(ANGLE)),
        keep_size=True,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
        dtype=torch.float32,
    )
    t = torch.from_numpy(inp["images"]).permute(2, 1, 0)[None]
    fin = _finish(inp)

    def run() -> Any:
        return op(t.float().add_(-AIR)).add_(AIR)

    return Runner(run, lambda out: fin(xyz_to_zyx(out)))


def _torchio(inp: dict[str, Any], threads: int) -> Runner:
    torch_threads(threads)
    sitk_threads(threads)
    import torchio as tio

    img = tio_image(inp["images"].astype(np.float32), inp["geometry"])
    subject = tio.Subject(img=img)
    op = tio.Affine(
        scales=(1.0, 1.0, 1.0),
        degrees=(0.0, 0.0, -ANGLE),
        translation=(0.0, 0.0, 0.0),
        image_interpolation="linear",
        default_pad_value=AIR,
        center="image",
    )
    fin = _finish(inp)
    return Runner(lambda: op(subject)["img"].data, lambda out: fin(xyz_to_zyx(out)))


ROTATE = Case(
    name="rotate",
    title="Rotate 10 degrees about z, bilinear (int16 -> float32)",
    inputs=_inputs,
    contenders=[
        Contender("ctflow", "ops.spatial.rotate", 1, _ctflow),
        Contender("ctflow", "ops.spatial.rotate", 2, _ctflow),
        Contender("SimpleITK", "Euler3DTransform + Resample", 2, _sitk),
        Contender("scipy.ndimage", "rotate", 1, _scipy),
        Contender("scipy.ndimage", "rotate, 2 z-halves in threads", 2, _scipy_split, "2 (split)"),
        Contender("torch", "affine_grid + grid_sample (2-D, slices as batch)", 2, _torch),
        Contender("MONAI", "Rotate", 2, _monai),
        Contender("TorchIO", "Affine (fixed 10 deg)", 2, _torchio),
    ],
    check=close(max_mean=0.5, max_p999=5.0, region="region"),
    bytes_moved=_bytes,
    note="Compared on the central disc (radius 0.45 x in-plane size).",
)

ROTATE_CORONAL = Case(
    name="rotate_coronal",
    title="Rotate 10 degrees in the coronal (z, x) plane in mm, bilinear (int16 -> float32)",
    inputs=_coronal_inputs,
    contenders=[
        Contender("ctflow", "ops.spatial.rotate(spacing=)", 1, _ctflow_coronal),
        Contender("ctflow", "ops.spatial.rotate(spacing=)", 2, _ctflow_coronal),
        Contender("SimpleITK", "Euler3DTransform + Resample", 2, _sitk_coronal),
        Contender("scipy.ndimage", "affine_transform", 1, _scipy_coronal),
    ],
    check=close(max_mean=0.5, max_p999=5.0, region="region"),
    bytes_moved=_bytes,
    note="Anisotropic plane (z and x spacings differ); compared on the central disc in mm.",
)

CASES = [ROTATE, ROTATE_CORONAL]
