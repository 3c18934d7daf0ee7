"""Nodule masks (spheres from world-mm annotations) and nodule crop sampling, on the 1 mm scan.

No peer rasterises spheres from (centre, diameter) annotations, so the mask baseline is the
RadIO-style numpy code everyone writes (:func:`benchmarks.peers.nodule_mask_numpy`). Crop
sampling is compared with the samplers users reach for: MONAI ``RandCropByPosNegLabeld`` and
TorchIO ``LabelSampler`` (both need a label volume: the nodule mask), and a numpy script.

Sampling is random, so crops cannot be compared voxel by voxel. Instead every contender's crops
are checked in the worker against the volume at the position the tool reports (MONAI: the
crop's affine; TorchIO: the patch location), and the count, shape and share of crops that hold
nodule voxels are checked against what was asked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from benchmarks.harness import Case, Contender, Runner, as_numpy, labels
from benchmarks.peers import nodule_mask_numpy, torch_threads

#: Share of nodule-centred crops asked for, and the least share of crops with nodule voxels
#: accepted (MONAI and TorchIO draw positives with probability 1/2 per crop).
SHARE = 0.5
MIN_POSITIVE = 0.25


def _mask_inputs(data: Any) -> dict[str, Any]:
    s = data.scan_1mm()
    return {
        "shape": s["images"].shape,
        "geometry": s["geometry"],
        "centers": s["centers"],
        "diameters": s["diameters"],
    }


def _ctflow_mask(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.ops.masks import create_mask

    def run() -> np.ndarray:
        return create_mask(inp["shape"], inp["geometry"], inp["centers"], inp["diameters"])

    return Runner(run, lambda out: {"out": out})


def _numpy_mask(inp: dict[str, Any], threads: int) -> Runner:
    def run() -> np.ndarray:
        return nodule_mask_numpy(inp["shape"], inp["geometry"], inp["centers"], inp["diameters"])

    return Runner(run, lambda out: {"out": out})


MASKS = Case(
    name="create_mask",
    title="Nodule masks: spheres from world-mm annotations on the 1 mm grid (uint8)",
    inputs=_mask_inputs,
    contenders=[
        Contender("ctflow", "ops.masks.create_mask", 1, _ctflow_mask),
        Contender("numpy", "RadIO-style: box per nodule + distance test", 1, _numpy_mask),
    ],
    check=labels(1e-6),
    bytes_moved=lambda inp: int(np.prod(inp["shape"])),
    note="Bandwidth bound: writing the mask once (1 byte per voxel).",
)


# -- crop sampling ------------------------------------------------------------------------------
def _crop_inputs(data: Any) -> dict[str, Any]:
    s = data.scan_1mm()
    return {
        "images": s["images"],
        "geometry": s["geometry"],
        "nodule_mask": s["nodule_mask"],
        "centers": s["centers"],
        "diameters": s["diameters"],
        "crop": tuple(data.profile.crop_shape),
        "n": data.profile.n_crops,
    }


def _crop_bytes(inp: dict[str, Any]) -> int:
    return 2 * inp["n"] * int(np.prod(inp["crop"])) * (inp["images"].itemsize + 1)


def _finish_crops(inp: dict[str, Any]) -> Any:
    """Check each crop against the volume at its reported start; summarise as arrays."""
    img, mask, crop = inp["images"], inp["nodule_mask"], np.asarray(inp["crop"])

    def finish(out: tuple[list[np.ndarray], list[np.ndarray], np.ndarray]) -> dict[str, Any]:
        crops, masks, starts = out
        content, positive, shapes = [], [], []
        for c, m, st in zip(crops, masks, np.asarray(starts, np.int64).reshape(-1, 3)):
            c, m = as_numpy(c), as_numpy(m)
            shapes.append(tuple(c.shape) == tuple(crop))
            inside = np.all(st >= 0) and np.all(st + crop <= img.shape)
            box = tuple(slice(int(a), int(a + n)) for a, n in zip(st, crop))
            content.append(
                bool(
                    inside
                    and np.array_equal(c, img[box])
                    and np.array_equal(m != 0, mask[box] != 0)
                )
            )
            positive.append(bool(np.any(m)))
        return {
            "n": np.array([len(crops)]),
            "content_ok": np.array(content, bool),
            "shape_ok": np.array(shapes, bool),
            "positive": np.array(positive, bool),
        }

    return finish


def _check_crops(ref: Any, out: Any) -> tuple[bool, dict[str, Any]]:
    n = int(out["n"][0])
    pos = float(out["positive"].mean()) if n else 0.0
    ok = (
        n == int(ref["n"][0])
        and bool(out["content_ok"].all())
        and bool(out["shape_ok"].all())
        and pos >= MIN_POSITIVE
    )
    return ok, {
        "crops": n,
        "positive_share": round(pos, 3),
        "content_matches_volume": bool(out["content_ok"].all()),
    }


def _ctflow_crops(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.batch import CTBatch

    g = inp["geometry"]
    table = pd.DataFrame(
        {
            "id": "scan",
            "z": inp["centers"][:, 0],
            "y": inp["centers"][:, 1],
            "x": inp["centers"][:, 2],
            "diameter": inp["diameters"],
        }
    )
    batch = CTBatch.from_arrays(
        [inp["images"]],
        ids=["scan"],
        spacing=g.spacing,
        origin=g.origin,
        masks=[inp["nodule_mask"]],
        nodules=table,
        n_workers=threads,
    )
    batch.set_random_state(0, 0)

    def run() -> Any:
        crops = batch.sample_nodules(inp["n"], inp["crop"], share=SHARE)
        starts = np.array([info["start"] for info in crops.info])
        k = len(crops)
        return (
            [crops.get(i, "images") for i in range(k)],
            [crops.get(i, "masks") for i in range(k)],
            starts,
        )

    return Runner(run, _finish_crops(inp))


def _numpy_crops(inp: dict[str, Any], threads: int) -> Runner:
    img, mask, crop = inp["images"], inp["nodule_mask"], np.asarray(inp["crop"])
    centres = inp["geometry"].world_to_voxel(inp["centers"])
    rng = np.random.default_rng(0)
    hi = np.asarray(img.shape) - crop

    def run() -> Any:
        starts = []
        n_pos = round(inp["n"] * SHARE)
        for k in range(inp["n"]):
            if k < n_pos and len(centres):
                c = centres[rng.integers(len(centres))]
                st = np.clip(np.floor(c + 0.5).astype(np.int64) - crop // 2, 0, hi)
            else:
                st = np.array([rng.integers(0, h + 1) for h in hi])
            starts.append(st)
        boxes = [tuple(slice(int(a), int(a + n)) for a, n in zip(st, crop)) for st in starts]
        return [img[b].copy() for b in boxes], [mask[b].copy() for b in boxes], np.array(starts)

    return Runner(run, _finish_crops(inp))


def _monai_crops(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    from monai.data import MetaTensor
    from monai.transforms import RandCropByPosNegLabeld

    crop_xyz = tuple(int(v) for v in inp["crop"][::-1])
    op = RandCropByPosNegLabeld(
        keys=["image", "label"],
        label_key="label",
        spatial_size=crop_xyz,
        pos=1,
        neg=1,
        num_samples=inp["n"],
    )
    op.set_random_state(0)
    # voxel-index affine: a crop's translation is its start (x, y, z)
    item = {
        "image": MetaTensor(
            torch.from_numpy(inp["images"]).permute(2, 1, 0)[None], affine=np.eye(4)
        ),
        "label": MetaTensor(
            torch.from_numpy(inp["nodule_mask"]).permute(2, 1, 0)[None], affine=np.eye(4)
        ),
    }

    def run() -> Any:
        return op(item)

    def finish(out: Any) -> dict[str, Any]:
        crops = [np.ascontiguousarray(as_numpy(d["image"])[0].transpose(2, 1, 0)) for d in out]
        masks = [np.ascontiguousarray(as_numpy(d["label"])[0].transpose(2, 1, 0)) for d in out]
        starts = [np.rint(as_numpy(d["image"].affine)[:3, 3][::-1]).astype(np.int64) for d in out]
        return _finish_crops(inp)((crops, masks, np.array(starts)))

    return Runner(run, finish)


def _tio_crops(inp: dict[str, Any], threads: int) -> Runner:
    torch_threads(threads)
    import torchio as tio

    from benchmarks.peers import tio_image

    subject = tio.Subject(
        img=tio_image(inp["images"], inp["geometry"]),
        label=tio_image(inp["nodule_mask"], inp["geometry"], label=True),
    )
    crop_xyz = tuple(int(v) for v in inp["crop"][::-1])
    sampler = tio.LabelSampler(crop_xyz, label_name="label", label_probabilities={0: 1, 1: 1})
    torch_threads(threads).manual_seed(0)

    def run() -> Any:
        return list(sampler(subject, num_patches=inp["n"]))

    def finish(out: Any) -> dict[str, Any]:
        crops = [np.ascontiguousarray(as_numpy(p["img"].data)[0].transpose(2, 1, 0)) for p in out]
        masks = [np.ascontiguousarray(as_numpy(p["label"].data)[0].transpose(2, 1, 0)) for p in out]
        starts = [as_numpy(p[tio.LOCATION])[:3][::-1].astype(np.int64) for p in out]
        return _finish_crops(inp)((crops, masks, np.array(starts)))

    return Runner(run, finish)


CROPS = Case(
    name="sample_crops",
    title="Nodule crop sampling: half nodule-centred, half random crops from the 1 mm scan",
    inputs=_crop_inputs,
    contenders=[
        Contender("ctflow", "CTBatch.sample_nodules", 1, _ctflow_crops),
        Contender("numpy", "RadIO-style slicing", 1, _numpy_crops),
        Contender("MONAI", "RandCropByPosNegLabeld(pos=1, neg=1)", 2, _monai_crops),
        Contender("TorchIO", "LabelSampler({0: 1, 1: 1})", 2, _tio_crops),
    ],
    check=_check_crops,
    bytes_moved=_crop_bytes,
    note=(
        "Crops with images and nodule masks. Checked: count, shape, content equal to the volume "
        f"at the reported start, share of crops holding nodule voxels >= {MIN_POSITIVE}."
    ),
)

CASES = [MASKS, CROPS]
