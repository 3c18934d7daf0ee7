"""Resampling: unify spacing to 1 mm (linear images, nearest masks) and resize to a fixed shape.

MONAI's rows (``SpatialResample`` / ``Resize``, 2.8 s and 0.56 s here) are measured for the
linear unify-spacing case only, to keep a full run short. Every contender samples the same
output grid: the main scan's 1 mm grid covers exactly its
field of view (see :mod:`benchmarks.data`), so ctflow's centred grid, torch's
``align_corners=False``, scipy's ``grid_mode=True`` and the explicit output grid handed to
SimpleITK, MONAI (``SpatialResample`` to the destination affine) and TorchIO (``Resample`` to a
``(shape, affine)`` target) are the same points. Samples within half a voxel outside the source
take the edge value everywhere (ctflow ``padding="edge"``, scipy ``mode="nearest"``, MONAI
``padding_mode="border"``).
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from benchmarks.harness import Case, Contender, Runner, close, labels, xyz_to_zyx
from benchmarks.peers import (
    meta_tensor,
    ras_affine,
    sitk_image,
    sitk_threads,
    tio_image,
    torch_threads,
)
from ctflow.geometry import Geometry

#: Which volume a case resamples and how.
KINDS = {
    "linear": {"order": 1, "label": False},
    "nearest": {"order": 0, "label": True},
    "resize": {"order": 1, "label": False},
}


def _inputs(kind: str) -> Any:
    def load(data: Any) -> dict[str, Any]:
        s = data.scan()
        img = data.lung_labels() if KINDS[kind]["label"] else s["images"]
        g: Geometry = s["geometry"]
        if kind == "resize":
            shape = tuple(data.profile.resize_shape)
            spacing = g.spacing * np.asarray(img.shape) / np.asarray(shape)
        else:
            spacing = np.ones(3)
            shape = tuple(int(v) for v in np.floor(np.asarray(img.shape) * g.spacing + 0.5))
        out_g = g.resampled(img.shape, shape, spacing)
        return {"images": img, "geometry": g, "shape": shape, "out_geometry": out_g, "kind": kind}

    return load


def _out_dtype(inp: dict[str, Any]) -> Any:
    return np.uint8 if KINDS[inp["kind"]]["label"] else np.float32


def _bytes(inp: dict[str, Any]) -> int:
    out = int(np.prod(inp["shape"])) * np.dtype(_out_dtype(inp)).itemsize
    return int(inp["images"].nbytes) + out


def _plain(out: Any) -> dict[str, np.ndarray]:
    return {"out": np.asarray(out)}


# -- ctflow -------------------------------------------------------------------------------------
def _ctflow(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.ops.resample import resize, unify_spacing

    img, g, kind = inp["images"], inp["geometry"], inp["kind"]
    if kind == "resize":
        return Runner(lambda: resize(img, g, inp["shape"], n_threads=threads)[0], _plain)
    order = KINDS[kind]["order"]

    def run() -> np.ndarray:
        return unify_spacing(img, g, 1.0, order=order, padding="edge", n_threads=threads)[0]

    if not KINDS[kind]["label"]:
        return Runner(run, _plain)

    def finish(out: np.ndarray) -> dict[str, np.ndarray]:
        # the reference also says where a sample sits on an exact half-way tie (see labels())
        ratio = np.asarray(img.shape) / np.asarray(out.shape)
        ties = {}
        for a, name in enumerate(("tie_z", "tie_y", "tie_x")):
            p = (np.arange(out.shape[a]) + 0.5) * ratio[a] - 0.5
            ties[name] = (np.abs(p - np.floor(p) - 0.5) < 1e-6).astype(np.uint8)
        return {"out": out, **ties}

    return Runner(run, finish)


# -- SimpleITK ----------------------------------------------------------------------------------
def _sitk(inp: dict[str, Any], threads: int) -> Runner:
    sitk = sitk_threads(threads)
    from ctflow.geometry import direction_to_sitk

    image = sitk_image(inp["images"], inp["geometry"])
    og: Geometry = inp["out_geometry"]
    label = KINDS[inp["kind"]]["label"]
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    ptype = sitk.sitkUInt8 if label else sitk.sitkFloat32
    size = [int(v) for v in inp["shape"][::-1]]

    def run() -> Any:
        return sitk.Resample(
            image,
            size,
            sitk.Transform(),
            interp,
            [float(v) for v in og.origin[::-1]],
            [float(v) for v in og.spacing[::-1]],
            [float(v) for v in direction_to_sitk(og.direction)],
            0.0 if label else -1000.0,
            ptype,
        )

    return Runner(run, lambda out: {"out": sitk.GetArrayFromImage(out)})


# -- torch --------------------------------------------------------------------------------------
def _torch(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    import torch.nn.functional as F

    img = inp["images"]
    label = KINDS[inp["kind"]]["label"]

    def run() -> Any:
        t = torch.from_numpy(img)[None, None]
        if label:  # integer nearest: the index rule of ITK/ctflow is "nearest-exact"
            return F.interpolate(t, size=inp["shape"], mode="nearest-exact")[0, 0]
        return F.interpolate(t.float(), size=inp["shape"], mode="trilinear", align_corners=False)[
            0, 0
        ]

    return Runner(run, lambda out: {"out": out.numpy()})


# -- scipy --------------------------------------------------------------------------------------
def _scipy_zoom(inp: dict[str, Any], threads: int) -> Runner:
    from scipy import ndimage as ndi

    img = inp["images"]
    zoom = np.asarray(inp["shape"]) / np.asarray(img.shape)
    order = KINDS[inp["kind"]]["order"]
    dtype = _out_dtype(inp)

    def run() -> np.ndarray:
        return ndi.zoom(img, zoom, output=dtype, order=order, mode="nearest", grid_mode=True)

    return Runner(run, _plain)


def _scipy_slabs(inp: dict[str, Any], threads: int) -> Runner:
    """affine_transform (scipy's zoom kernel) on 2 output z-slabs in 2 threads (GIL released)."""
    from scipy import ndimage as ndi

    img = inp["images"]
    shape = inp["shape"]
    ratio = np.asarray(img.shape) / np.asarray(shape)
    p0 = (ratio - 1.0) / 2.0  # source index of output voxel 0 (field of view preserved)
    order = KINDS[inp["kind"]]["order"]
    dtype = _out_dtype(inp)
    edges = np.linspace(0, shape[0], 3).round().astype(int)

    def run() -> np.ndarray:
        out = np.empty(shape, dtype)

        def part(a: int, b: int) -> None:
            offset = p0 + np.array([a * ratio[0], 0.0, 0.0])
            ndi.affine_transform(
                img, ratio, offset, (b - a, *shape[1:]), out[a:b], order, mode="nearest"
            )

        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(part, int(a), int(b)) for a, b in itertools.pairwise(edges)]:
                f.result()
        return out

    return Runner(run, _plain)


# -- MONAI --------------------------------------------------------------------------------------
def _monai(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    label = KINDS[inp["kind"]]["label"]
    mt = meta_tensor(inp["images"], inp["geometry"])
    shape_xyz = tuple(int(v) for v in inp["shape"][::-1])
    if inp["kind"] == "resize":
        from monai.transforms import Resize

        op = Resize(shape_xyz, mode="trilinear", anti_aliasing=False, dtype=torch.float32)
        return Runner(lambda: op(mt), lambda out: {"out": xyz_to_zyx(out)})
    from monai.transforms import SpatialResample

    op = SpatialResample(
        mode="nearest" if label else "bilinear",
        padding_mode="border",
        dtype=torch.float32,
    )
    dst = torch.as_tensor(ras_affine(inp["out_geometry"]), dtype=torch.float64)

    def finish(out: Any) -> dict[str, np.ndarray]:
        arr = xyz_to_zyx(out)
        return {"out": np.rint(arr).astype(np.uint8) if label else arr}

    return Runner(lambda: op(mt, dst_affine=dst, spatial_size=shape_xyz), finish)


# -- TorchIO ------------------------------------------------------------------------------------
def _torchio(inp: dict[str, Any], threads: int) -> Runner:
    torch_threads(threads)
    sitk_threads(threads)
    import torchio as tio

    label = KINDS[inp["kind"]]["label"]
    img = tio_image(inp["images"], inp["geometry"], label=label)
    subject = tio.Subject(img=img)
    shape_xyz = tuple(int(v) for v in inp["shape"][::-1])
    if inp["kind"] == "resize":
        op: Any = tio.Resize(shape_xyz, image_interpolation="linear")
    else:
        op = tio.Resample(
            (shape_xyz, ras_affine(inp["out_geometry"])), image_interpolation="linear"
        )
    return Runner(lambda: op(subject)["img"].data, lambda out: {"out": xyz_to_zyx(out)})


def _contenders(split: bool = True, monai: bool = True) -> list[Contender]:
    """ctflow and the peers; ``split``/``monai`` False drop rows to keep a full run short."""
    out = [
        Contender("ctflow", "ops", 1, _ctflow),
        Contender("ctflow", "ops", 2, _ctflow),
        Contender("SimpleITK", "Resample", 2, _sitk),
        Contender("torch", "F.interpolate", 2, _torch),
        Contender("scipy.ndimage", "zoom(grid_mode=True)", 1, _scipy_zoom),
        Contender("MONAI", "SpatialResample / Resize", 2, _monai),
        Contender("TorchIO", "Resample / Resize", 2, _torchio),
    ]
    if not monai:
        out = [c for c in out if c.tool != "MONAI"]
    if split:
        slabs = Contender(
            "scipy.ndimage", "affine_transform, 2 z-slabs", 2, _scipy_slabs, "2 (split)"
        )
        out.insert(5, slabs)  # after scipy's zoom
    return out


UNIFY_LINEAR = Case(
    name="unify_spacing",
    title="Unify spacing to 1 mm, linear (int16 -> float32)",
    inputs=_inputs("linear"),
    contenders=_contenders(),
    # TorchIO keeps the input dtype (int16 out): up to 1 HU of rounding
    check=close(max_mean=0.5, max_p999=1.0),
    bytes_moved=_bytes,
)

UNIFY_NEAREST = Case(
    name="unify_spacing_mask",
    title="Unify spacing to 1 mm, nearest (uint8 label mask)",
    inputs=_inputs("nearest"),
    contenders=_contenders(split=False, monai=False),
    check=labels(1e-4, ties=True),
    bytes_moved=_bytes,
)

RESIZE = Case(
    name="resize",
    title="Resize to a fixed shape, linear (int16 -> float32)",
    inputs=_inputs("resize"),
    contenders=_contenders(split=False, monai=False),
    check=close(max_mean=0.5, max_p999=1.0),
    bytes_moved=_bytes,
)

CASES = [UNIFY_LINEAR, UNIFY_NEAREST, RESIZE]
