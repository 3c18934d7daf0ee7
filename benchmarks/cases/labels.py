"""Label maps: crops by class, the way back from a crop to the loaded grid, patch inference.

All three cases use the main scan (300 x 512 x 512 int16 on the full profile) and its phantom
label map (:func:`ctflow.synthetic.phantom_labels`: 0 outside the body, 1 body, 2 right lung,
3 left lung, 4 nodules; uint8), made once from the same phantom as the scan and cached next to
it (the ``labels`` folder of the profile's cache: ``labels.npy`` and ``labels.mhd``).

* ``sample_crops_by_class``: ``CTBatch.sample_crops`` with ``ratios={0, 1, 2, 4: 1/4 each}``
  against MONAI ``RandCropByLabelClassesd`` (the same shares, ``num_samples=16``), both on the
  in-memory arrays, both finding the label's voxels inside the timed call (ctflow: one counting
  pass, :class:`ctflow.ops.crop.LabelVoxels`; MONAI: the voxel indices of every class). The
  target (issue): ctflow at least 5x faster.
* ``invert_prediction``: load the scan and its label map, resample to 1 mm, crop a box; the
  cropped label map stands in for a network's prediction. The timed call is the way back onto
  the loaded grid, images (linear) and labels (nearest): ctflow ``invert`` (one resampling
  pass through world coordinates) against MONAI ``Invertd`` over the same ``Spacingd`` +
  ``SpatialCropd`` (it undoes them one by one: pad, then resample). The forward pass runs
  untimed before each call; its seconds are kept in ``info``.
* ``predict_on_scan_gaussian``: sliding-window inference of a cheap identity-like torch model
  over the whole scan (HU scaled to float32), patches 64 x 128 x 128, stride 32 x 64 x 64,
  8 patches per call of the model, Gaussian blending: ctflow ``predict_on_volume`` against
  MONAI ``sliding_window_inference(mode="gaussian", overlap=0.5)``. MONAI gets the volume as
  a contiguous ``(1, 1, Z, Y, X)`` tensor (the window is layout-agnostic; a permuted
  ``(x, y, z)`` view would only slow it down). Both outputs must equal the input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Case, Contender, Runner, as_numpy, close, xyz_to_zyx
from benchmarks.peers import monai_sitk_reader, sitk_threads, torch_threads

#: the shares of ``sample_crops_by_class`` (label 3, the left lung, is not asked for)
RATIOS = {0: 0.25, 1: 0.25, 2: 0.25, 4: 0.25}
N_CLASSES = 5
N_CROPS = 16
CROP = (64, 64, 64)
#: the least share of crops holding nodule voxels (ctflow centres 1/4 of them on nodules)
MIN_NODULE = 0.125
#: ``predict_on_scan_gaussian``: patch, stride (half the patch: overlap 0.5), patches per call
PATCH = (64, 128, 128)
SW_BATCH = 8
HU_LO, HU_HI = -1000.0, 400.0
#: ``invert_prediction``: labels allowed to differ (nearest-neighbour ties on two 1 mm grids a
#: fraction of a voxel apart; or twice what ctflow's round trip changes, if more), and the
#: mean / 99.9th percentile |image difference| in HU
MAX_LABEL_DIFF = 0.01
MAX_IMAGE_MEAN, MAX_IMAGE_P999 = 15.0, 1000.0
#: voxels of the loaded grid next to the crop's faces (either side) that are not compared
SHELL = 2.0


# -- data ---------------------------------------------------------------------------------------
def labels_dir(data: Any) -> Path:
    """Folder of the main scan's label map (``labels.npy``, ``labels.mhd``), made once.

    The label map is drawn from the phantom the main scan was made from: :mod:`benchmarks.data`
    makes it with ``seed=11``; the build checks that the phantom's images are the cached scan's.
    """
    return data._part("labels", lambda d: _build_labels(data, d))


def _build_labels(data: Any, d: Path) -> None:
    from ctflow.io.metaimage import write_metaimage
    from ctflow.synthetic import make_phantom, phantom_labels

    p = data.profile
    scan, _ = make_phantom(p.scan_shape, p.scan_spacing, n_nodules=p.n_nodules, seed=11)
    if not np.array_equal(scan.images, data.scan()["images"]):
        raise RuntimeError("labels: the phantom of seed 11 is not the cached main scan")
    labels = phantom_labels(scan)
    np.save(d / "labels.npy", labels)
    write_metaimage(d / "labels.mhd", labels, scan.geometry)


def _crop_for(shape: tuple[int, ...], wanted: tuple[int, int, int]) -> tuple[int, int, int]:
    """``wanted``, or half the volume on an axis where it does not fit (small profiles)."""
    a, b, c = (w if w <= s // 2 else max(2, s // 2) for w, s in zip(wanted, shape, strict=True))
    return a, b, c


def _central_box(shape: tuple[int, ...], part: tuple[int, ...]) -> tuple[slice, ...]:
    """The central box of twice ``part`` (at most the volume): the cheap warm-ups' input."""
    sides = [min(2 * p, n) for p, n in zip(part, shape, strict=True)]
    return tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(shape, sides, strict=True))


# -- sample_crops_by_class ------------------------------------------------------------------------
def _crop_inputs(data: Any) -> dict[str, Any]:
    s = data.scan()
    images = s["images"]
    return {
        "images": images,
        "geometry": s["geometry"],
        "labels": np.load(labels_dir(data) / "labels.npy"),
        "crop": _crop_for(images.shape, CROP),
        "n": N_CROPS,
    }


def _crop_bytes(inp: dict[str, Any]) -> int:
    # a perfect sampler reads the label map once and writes the crops (images + labels)
    return int(inp["labels"].nbytes) + inp["n"] * int(np.prod(inp["crop"])) * 3


def _finish_crops(inp: dict[str, Any]) -> Any:
    """Check each crop against the volume at its reported start; summarise as arrays.

    Voxels of a crop outside the volume (ctflow centres crops on border voxels too) must hold
    the pad value: the scan's minimum in images, 0 in labels.
    """
    img, lab, crop = inp["images"], inp["labels"], np.asarray(inp["crop"])
    floor = img.min()

    def finish(out: tuple[list[Any], list[Any], np.ndarray]) -> dict[str, Any]:
        crops, masks, starts = out
        content, shapes, centre = [], [], []
        nodule, classes = [], np.zeros(N_CLASSES, np.int64)
        for c, m, st in zip(crops, masks, np.asarray(starts, np.int64).reshape(-1, 3)):
            c, m = as_numpy(c), as_numpy(m)
            shapes.append(tuple(c.shape) == tuple(crop) == tuple(m.shape))
            lo = np.maximum(st, 0)
            hi = np.minimum(st + crop, img.shape)
            want_img = np.full(tuple(crop), floor, img.dtype)
            want_lab = np.zeros(tuple(crop), lab.dtype)
            if np.all(hi > lo):
                src = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
                dst = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, st))
                want_img[dst] = img[src]
                want_lab[dst] = lab[src]
            ok = shapes[-1] and np.array_equal(c, want_img) and np.array_equal(m, want_lab)
            content.append(bool(ok))
            mid = tuple(int(v) for v in st + crop // 2)
            inside = all(0 <= v < n for v, n in zip(mid, img.shape))
            centre.append(int(lab[mid]) if inside else -1)
            nodule.append(bool(np.any(m == 4)))
            classes += np.bincount(np.unique(m), minlength=N_CLASSES)[:N_CLASSES] > 0
        return {
            "n": np.array([len(crops)]),
            "content_ok": np.array(content, bool),
            "shape_ok": np.array(shapes, bool),
            "centre_label": np.array(centre, np.int64),
            "nodule": np.array(nodule, bool),
            "crops_with_class": classes,
        }

    return finish


def _check_crops(ref: Any, out: Any) -> tuple[bool, dict[str, Any]]:
    n = int(out["n"][0])
    share = float(out["nodule"].mean()) if n else 0.0
    centres = np.bincount(out["centre_label"] + 1, minlength=N_CLASSES + 1)
    ok = (
        n == int(ref["n"][0])
        and bool(out["content_ok"].all())
        and bool(out["shape_ok"].all())
        and share >= MIN_NODULE
    )
    return ok, {
        "crops": n,
        "nodule_share": round(share, 3),
        "centre_labels": {str(v): int(c) for v, c in enumerate(centres[1:]) if c},
        "crops_with_label": [int(v) for v in out["crops_with_class"]],
        "content_matches_volume": bool(out["content_ok"].all()),
    }


def _ctflow_crops(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.batch import CTBatch

    g = inp["geometry"]
    batch = CTBatch.from_arrays(
        [inp["images"]],
        ids=["scan"],
        spacing=g.spacing,
        origin=g.origin,
        masks=[inp["labels"]],
        n_workers=threads,
    )
    batch.set_random_state(0, 0)

    def run() -> Any:
        return batch.sample_crops(inp["n"], inp["crop"], ratios=RATIOS)

    def finish(crops: Any) -> dict[str, Any]:
        k = len(crops)
        starts = np.array([info["start"] for info in crops.info])
        images = [crops.get(i, "images") for i in range(k)]
        masks = [crops.get(i, "masks") for i in range(k)]
        out = _finish_crops(inp)((images, masks, starts))
        kinds = [int(info["kind"].split()[1]) for info in crops.info]
        out["kind_matches_centre"] = np.array(kinds) == out["centre_label"]
        return out

    return Runner(run, finish)


def _monai_crops(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    from monai.data import MetaTensor
    from monai.transforms import RandCropByLabelClassesd

    crop_xyz = tuple(int(v) for v in inp["crop"][::-1])
    op = RandCropByLabelClassesd(
        keys=["image", "label"],
        label_key="label",
        spatial_size=crop_xyz,
        ratios=[RATIOS.get(c, 0.0) for c in range(N_CLASSES)],
        num_classes=N_CLASSES,
        num_samples=inp["n"],
    )
    op.set_random_state(0)

    def item_of(box: tuple[slice, ...]) -> dict[str, Any]:
        # channel-first (1, x, y, z) views, voxel-index affine: a crop's translation is its start
        return {
            key: MetaTensor(
                torch.from_numpy(inp[name][box]).permute(2, 1, 0)[None], affine=np.eye(4)
            )
            for key, name in (("image", "images"), ("label", "labels"))
        }

    item = item_of((slice(None),) * 3)
    small = item_of(_central_box(inp["images"].shape, inp["crop"]))

    def run() -> Any:
        return op(item)

    def finish(out: Any) -> dict[str, Any]:
        crops = [xyz_to_zyx(d["image"]) for d in out]
        masks = [xyz_to_zyx(d["label"]) for d in out]
        starts = [np.rint(as_numpy(d["image"].affine)[:3, 3][::-1]).astype(np.int64) for d in out]
        return _finish_crops(inp)((crops, masks, np.array(starts)))

    # a call on the whole map takes seconds and compiles nothing: warm up on a small box
    return Runner(run, finish, warmup=lambda: op(small))


def _validate_crops(out: Any) -> tuple[bool, dict[str, Any]]:
    """ctflow: every crop is centred on a voxel of the label it was drawn for."""
    if "kind_matches_centre" not in out:
        return True, {}
    ok = bool(out["kind_matches_centre"].all())
    return ok, {"centred_on_its_label": ok}


CROPS_BY_CLASS = Case(
    name="sample_crops_by_class",
    title="Crops by class: 16 crops of 64^3 centred on labels 0, 1, 2, 4 (1/4 each), uint8 map",
    inputs=_crop_inputs,
    contenders=[
        Contender("ctflow", "CTBatch.sample_crops(ratios)", 1, _ctflow_crops),
        Contender("ctflow", "CTBatch.sample_crops(ratios)", 2, _ctflow_crops),
        Contender("MONAI", "RandCropByLabelClassesd(num_samples=16)", 2, _monai_crops),
    ],
    check=_check_crops,
    validate=_validate_crops,
    bytes_moved=_crop_bytes,
    note=(
        "Each timed call finds the labels' voxels (ctflow: per-slice counts; MONAI: the voxel "
        "indices of each class) and cuts 16 image + label crops. Checked: count, shape, content "
        "equal to the volume at the reported start (pad value outside it), share of crops "
        f"holding nodule voxels >= {MIN_NODULE}; ctflow's crops are centred on their label. "
        "MONAI warms up on a central box of twice the crop (a call compiles nothing). "
        "Target (issue): ctflow >= 5x faster than MONAI."
    ),
)


# -- invert_prediction ----------------------------------------------------------------------------
def _invert_inputs(data: Any) -> dict[str, Any]:
    from benchmarks.data import geometry_from

    s = data.scan()
    shape_1mm = np.asarray(s["meta"]["shape_1mm"], np.int64)
    start = shape_1mm // 8
    size = shape_1mm - 2 * start
    # the crop box's faces in the loaded grid's continuous voxel indices (ctflow's 1 mm grid;
    # MONAI's 1 mm grid is a fraction of a voxel off: the voxels next to the faces may differ)
    g1 = geometry_from(s["meta"]["geometry_1mm"])
    faces = s["geometry"].world_to_voxel(g1.voxel_to_world(np.stack([start, start + size]) - 0.5))
    return {
        "scan": Path(s["mhd"]),
        "labels": labels_dir(data) / "labels.mhd",
        "labels_npy": labels_dir(data) / "labels.npy",
        "shape": tuple(int(v) for v in s["images"].shape),
        "start": tuple(int(v) for v in start),
        "size": tuple(int(v) for v in size),
        "faces": np.sort(faces, axis=0),
    }


def _invert_bytes(inp: dict[str, Any]) -> int:
    # read the cropped 1 mm image (float32) and labels, write the loaded grid's (float32 + uint8)
    return int(np.prod(inp["size"])) * 5 + int(np.prod(inp["shape"])) * 5


def _box_flags(inp: dict[str, Any], margin: float) -> list[np.ndarray]:
    """Per axis: whether each index of the loaded grid lies inside the box shrunk by margin."""
    lo, hi = inp["faces"]
    return [(np.arange(n) >= a + margin) & (np.arange(n) <= b - margin)
            for n, a, b in zip(inp["shape"], lo, hi, strict=True)]  # fmt: skip


def _finish_invert(inp: dict[str, Any]) -> Any:
    """Labels and images (HU, int16) on the loaded grid, the compared region's flags, and the
    share of the voxels well inside the crop whose label came back unchanged."""
    orig = np.load(inp["labels_npy"], mmap_mode="r")
    fz, fy, fx = _box_flags(inp, SHELL)
    gz, gy, gx = _box_flags(inp, -SHELL)

    def finish(labels: np.ndarray, images: np.ndarray) -> dict[str, Any]:
        kept = total = 0
        for z in np.flatnonzero(fz):
            a, b = labels[z][np.ix_(fy, fx)], orig[z][np.ix_(fy, fx)]
            kept += int(np.count_nonzero(a == b))
            total += a.size
        return {
            "labels": labels,
            "images": images,
            "inside_z": fz, "inside_y": fy, "inside_x": fx,
            "grown_z": gz, "grown_y": gy, "grown_x": gx,
            "kept": np.array([kept / max(total, 1)]),
        }  # fmt: skip

    return finish


def _forward_once(runner: Runner, forward: Any, copy: Any, state: dict[str, Any]) -> None:
    """Run the (slow, untimed) forward pass once; ``before`` hands each call a fresh copy."""
    t0 = time.perf_counter()
    done = forward()
    runner.info["forward_s"] = round(time.perf_counter() - t0, 2)

    def before() -> None:
        state.pop("item", None)
        state["item"] = copy(done)

    runner.before = before


def _ctflow_invert(inp: dict[str, Any], threads: int) -> Runner:
    import ctflow as cf

    ds = cf.Dataset.from_paths({"scan": {"images": inp["scan"], "masks": inp["labels"]}})
    state: dict[str, Any] = {}
    done = _finish_invert(inp)

    def forward() -> Any:
        batch = ds.create_batch(["scan"], n_workers=threads).load()
        return batch.unify_spacing((1.0, 1.0, 1.0)).crop(inp["start"], inp["size"])

    def run() -> Any:
        # the prediction: the cropped label map on the 1 mm grid (masks); outside the crop 0
        return state.pop("item").invert(cval=0.0)

    def finish(batch: Any) -> dict[str, Any]:
        item = batch[0]
        return done(item.masks, np.rint(item.images).astype(np.int16))

    runner = Runner(run, finish)
    _forward_once(runner, forward, lambda b: b.subset([0]), state)
    return runner


def _monai_invert(inp: dict[str, Any], threads: int) -> Runner:
    import copy

    torch = torch_threads(threads)
    sitk_threads(threads)
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Spacingd,
        SpatialCropd,
    )

    keys = ["image", "label"]
    start_xyz = [int(v) for v in inp["start"][::-1]]
    end_xyz = [int(a + n) for a, n in zip(inp["start"][::-1], inp["size"][::-1], strict=True)]
    pre = Compose(
        [
            LoadImaged(keys, reader=monai_sitk_reader(), image_only=True),
            EnsureChannelFirstd(keys, channel_dim="no_channel"),
            Spacingd(
                keys, pixdim=(1.0, 1.0, 1.0), mode=("bilinear", "nearest"), dtype=torch.float32
            ),
            SpatialCropd(keys, roi_start=start_xyz, roi_end=end_xyz),
        ]
    )
    back = Invertd(keys, transform=pre, orig_keys=keys, nearest_interp=[False, True])
    state: dict[str, Any] = {}
    done = _finish_invert(inp)

    def forward() -> Any:
        return pre({"image": str(inp["scan"]), "label": str(inp["labels"])})

    def run() -> Any:
        return back(state.pop("item"))

    def finish(d: Any) -> dict[str, Any]:
        labels = xyz_to_zyx(d["label"]).astype(np.uint8)
        return done(labels, np.rint(xyz_to_zyx(d["image"])).astype(np.int16))

    # nothing to compile, and a call takes seconds: no warm-up call (its time would be the case's)
    runner = Runner(run, finish, warmup=lambda: None)
    _forward_once(runner, forward, copy.deepcopy, state)
    return runner


def _check_invert(ref: Any, out: Any) -> tuple[bool, dict[str, Any]]:
    """Labels and images compared off a shell of ``SHELL`` voxels around the crop's faces."""
    a, b = ref["labels"], out["labels"]
    if a.shape != b.shape or ref["images"].shape != out["images"].shape:
        return False, {"shape": list(b.shape), "expected_shape": list(a.shape)}
    fy, fx = ref["inside_y"][:, None], ref["inside_x"][None, :]
    gy, gx = ref["grown_y"][:, None], ref["grown_x"][None, :]
    n_diff = n = 0
    region = np.zeros(a.shape, np.uint8)
    for z in range(a.shape[0]):
        inside = (fy & fx) if ref["inside_z"][z] else np.zeros_like(fy & fx)
        grown = (gy & gx) if ref["grown_z"][z] else np.zeros_like(gy & gx)
        keep = inside | ~grown  # well inside the box, or well outside it
        region[z] = keep
        n_diff += int(np.count_nonzero((a[z] != b[z]) & keep))
        n += int(np.count_nonzero(keep))
    frac = n_diff / max(n, 1)
    # two nearest-neighbour round trips through grids a fraction of a voxel apart may disagree
    # on about the voxels each changes (label borders): up to twice the reference's losses
    limit = max(MAX_LABEL_DIFF, 2.0 * (1.0 - float(ref["kept"][0])))
    ref_img = {"images": ref["images"], "region": region}
    ok_img, img = close(MAX_IMAGE_MEAN, MAX_IMAGE_P999, key="images", region="region")(ref_img, out)
    return frac <= limit and ok_img, {
        "compared_fraction": round(n / a.size, 3),
        "label_differing_fraction": float(f"{frac:.3g}"),
        "label_limit": float(f"{limit:.3g}"),
        "labels_kept_inside_crop": round(float(out["kept"][0]), 5),
        **{f"image_{k}": v for k, v in img.items()},
    }


INVERT = Case(
    name="invert_prediction",
    title="The way back: a prediction on the cropped 1 mm grid onto the loaded grid",
    inputs=_invert_inputs,
    contenders=[
        Contender("ctflow", "load > unify_spacing(1 mm) > crop | invert()", 2, _ctflow_invert),
        Contender("MONAI", "Compose(Load, Spacingd, SpatialCropd) | Invertd", 2, _monai_invert),
    ],
    check=_check_invert,
    bytes_moved=_invert_bytes,
    max_repeats=5,
    note=(
        "Timed: the inversion only (images linear, labels nearest; 0 outside the crop) of a "
        "fresh copy of the forward result (load > 1 mm > crop, run once, untimed: info "
        "forward_s). MONAI's warm-up call is skipped (nothing to compile). Checked: labels "
        f"equal on all but {100 * MAX_LABEL_DIFF:g} % of the voxels (or twice the share "
        "ctflow's round trip changes), images within "
        f"{MAX_IMAGE_MEAN:g} HU on average, both off {SHELL:g} voxels either side of the "
        "crop's faces (the two 1 mm grids are a fraction of a voxel apart). "
        "Target (issue): ctflow >= 5x faster than MONAI."
    ),
)


# -- predict_on_scan_gaussian ---------------------------------------------------------------------
def _predict_inputs(data: Any) -> dict[str, Any]:
    images = data.scan()["images"]
    vol = (images.astype(np.float32) - np.float32(HU_LO)) / np.float32(HU_HI - HU_LO)
    patch = _crop_for(images.shape, PATCH)
    return {
        "volume": vol,
        "patch": patch,
        "stride": tuple(max(1, p // 2) for p in patch),
    }


def _model(torch: Any) -> Any:
    """A cheap identity-like model: one multiply by a learned-looking scale of 1."""

    class Scale(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1), requires_grad=False)

        def forward(self, x: Any) -> Any:
            return x * self.scale

    return Scale().eval()


def _ctflow_predict(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    from ctflow.ops.patches import predict_on_volume

    model = _model(torch)

    def fn(batch: np.ndarray) -> Any:
        with torch.no_grad():
            return model(torch.from_numpy(batch)[:, None])  # (B, 1, pz, py, px)

    def predict(vol: np.ndarray) -> np.ndarray:
        return predict_on_volume(vol, fn, inp["patch"], inp["stride"], SW_BATCH, blend="gaussian")

    small = np.ascontiguousarray(inp["volume"][_central_box(inp["volume"].shape, inp["patch"])])
    return Runner(
        lambda: predict(inp["volume"]), lambda out: {"out": out}, warmup=lambda: predict(small)
    )


def _monai_predict(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    from monai.inferers import sliding_window_inference

    model = _model(torch)
    x = torch.from_numpy(inp["volume"])[None, None]  # (1, 1, Z, Y, X), contiguous
    box = _central_box(inp["volume"].shape, inp["patch"])
    small = torch.from_numpy(np.ascontiguousarray(inp["volume"][box]))[None, None]

    def predict(vol: Any) -> Any:
        with torch.no_grad():
            return sliding_window_inference(
                vol, inp["patch"], SW_BATCH, model, overlap=0.5, mode="gaussian"
            )

    return Runner(
        lambda: predict(x), lambda out: {"out": as_numpy(out)[0, 0]}, warmup=lambda: predict(small)
    )


def _predict_bytes(inp: dict[str, Any]) -> int:
    # read the float32 volume, write the float32 output (a perfect implementation, 1 pass each)
    return 2 * int(inp["volume"].nbytes)


PREDICT = Case(
    name="predict_on_scan_gaussian",
    title="Sliding-window inference, Gaussian blending: patches 64x128x128, stride 32x64x64",
    inputs=_predict_inputs,
    contenders=[
        Contender("ctflow", "ops.patches.predict_on_volume(blend='gaussian')", 2, _ctflow_predict),
        Contender(
            "MONAI", "sliding_window_inference(mode='gaussian', overlap=0.5)", 2, _monai_predict
        ),
    ],
    check=close(1e-5, 1e-4),
    bytes_moved=_predict_bytes,
    note=(
        f"An identity-like torch model (x * 1) on {SW_BATCH} patches per call, on 2 torch "
        "threads for both; the scan as float32 ((HU + 1000) / 1400). Outputs must equal the "
        "input (|diff| mean <= 1e-5). Both warm up on a central box of twice the patch (a "
        "call on the scan takes seconds and compiles nothing). Peak memory: the harness's "
        "peak extra RSS of each contender."
    ),
)

CASES = [CROPS_BY_CLASS, INVERT, PREDICT]
