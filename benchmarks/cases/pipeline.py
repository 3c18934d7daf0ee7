"""The whole LUNA16-style pipeline over a batch of scans, as scans per second.

load .mhd -> unify spacing to 1 mm (linear) -> lung mask -> nodule masks from the annotation
table -> normalise HU to [0, 1] -> 8 training crops per scan (half on nodules) with their nodule
and lung masks -> dump the crops to disk.

* **ctflow**: one :class:`ctflow.Pipeline` run over the dataset, one scan per batch,
  ``n_workers`` threads; with 2 threads two batches run at once (``prefetch=2``), like the
  peers' two scans in flight, and share the 2 threads (one each; a batch running alone gets
  both). On 1 thread: no prefetch.
* **SimpleITK + numpy**, **RadIO-style scipy**, **MONAI Compose** and **TorchIO Compose**: the
  best per-scan composition we could write for each (their own loaders; the lung mask is the
  SimpleITK recipe of :func:`benchmarks.peers.lungs_sitk`, the fastest baseline, for all but
  the scipy one), mapped over the scans by a ``ThreadPoolExecutor(2)`` with the libraries on
  one thread each — on this machine that beat the libraries' own two threads and MONAI/TorchIO
  DataLoader worker processes (which also pay seconds of start-up each run).

Peers dump each crop as three ``.npy`` files; ctflow writes its own format (blosc2 + JSON).
Every output is read back and checked: number and shape of the crops, values in [0, 1], share
of crops holding nodule voxels, lungs present around nodule crops.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.harness import Case, Contender, Interleave, Runner
from benchmarks.peers import (
    geometry_from_ras,
    lungs_scipy,
    lungs_sitk,
    monai_sitk_reader,
    nodule_mask_numpy,
    sample_crops_numpy,
    sitk_threads,
    torch_threads,
)

LO, HI = -1000.0, 400.0
CROPS_PER_SCAN = 8
SHARE = 0.5
#: least share of crops with nodule voxels accepted (peers draw positives at random)
MIN_POSITIVE = 0.3


def pipeline_inputs(paths: list[Path], csv: Path, data: Any) -> dict[str, Any]:
    """Inputs of a pipeline case over ``paths``."""
    table = pd.read_csv(csv)
    return {
        "paths": [Path(p) for p in paths],
        "csv": csv,
        "table": table,
        "crop": tuple(data.profile.crop_shape),
        "min_ml": data.profile.min_lung_ml,
        "scratch": tempfile.mkdtemp(prefix="ctflow-bench-pipe-"),
    }


def _inputs(data: Any) -> dict[str, Any]:
    paths, csv = data.pipeline_paths()
    return pipeline_inputs(paths, csv, data)


def _nodules(inp: dict[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """World (z, y, x) centres and diameters of one scan's nodules."""
    t = inp["table"]
    t = t[t["seriesuid"] == path.stem]
    return t[["coordZ", "coordY", "coordX"]].to_numpy(np.float64), t["diameter_mm"].to_numpy()


def _dst(inp: dict[str, Any]) -> Path:
    return Path(inp["scratch"]) / "out"


def _fresh(dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)


def _save_crops(dst: Path, stem: str, crops: list[list[np.ndarray]]) -> None:
    for k, (img, mask, lungs) in enumerate(crops):
        np.save(dst / f"{stem}_{k}_img.npy", img)
        np.save(dst / f"{stem}_{k}_mask.npy", mask)
        np.save(dst / f"{stem}_{k}_lungs.npy", lungs)


# -- reading the products back (untimed) --------------------------------------------------------
def read_products(dst: Path) -> dict[str, np.ndarray]:
    """Summaries of every dumped crop (ctflow item folders or peers' .npy triples)."""
    triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    folders = [p for p in dst.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if folders:
        from ctflow.io.store import read_item

        for f in sorted(folders):
            c = read_item(f).components
            triples.append((c["images"], c.get("masks"), c.get("lungs")))  # type: ignore[arg-type]
    else:
        for img in sorted(dst.glob("*_img.npy")):
            stem = str(img)[: -len("_img.npy")]
            triples.append(
                (np.load(img), np.load(stem + "_mask.npy"), np.load(stem + "_lungs.npy"))
            )
    shapes = np.array([t[0].shape for t in triples], np.int64).reshape(-1, 3)
    return {
        "n": np.array([len(triples)]),
        "shapes": shapes,
        "vmin": np.array([float(t[0].min()) for t in triples]),
        "vmax": np.array([float(t[0].max()) for t in triples]),
        "positive": np.array([t[1] is not None and bool(np.any(t[1])) for t in triples]),
        "has_lungs": np.array([t[2] is not None and bool(np.any(t[2])) for t in triples]),
        "float32": np.array([t[0].dtype == np.float32 for t in triples]),
    }


def _runner(inp: dict[str, Any], run_all: Any) -> Runner:
    """``run_all(dst, paths)`` over every scan; the warm-up runs the first scan only."""
    dst = _dst(inp)
    paths = inp["paths"]

    def warmup() -> Any:
        _fresh(dst)
        return run_all(dst, paths[:1])

    runner = Runner(lambda: run_all(dst, paths), lambda _: read_products(dst), warmup=warmup)
    runner.before = lambda: _fresh(dst)
    return runner


def validate(out: Any) -> tuple[bool, dict[str, Any]]:
    """A pipeline's products on their own: crops, ranges, nodule share, lungs near nodules."""
    n = int(out["n"][0])
    if n == 0:
        return False, {"crops": 0}
    pos = out["positive"]
    share = float(pos.mean())
    lungs_near = float(out["has_lungs"][pos].mean()) if pos.any() else 0.0
    ok = (
        bool(out["float32"].all())
        and float(out["vmin"].min()) >= 0.0
        and float(out["vmax"].max()) <= 1.0
        and share >= MIN_POSITIVE
        and lungs_near >= 0.9
        and len({tuple(s) for s in out["shapes"]}) == 1
    )
    return ok, {"crops": n, "positive_share": round(share, 3), "lungs_in_nodule_crops": lungs_near}


def check(ref: Any, out: Any) -> tuple[bool, dict[str, Any]]:
    """Same number and shape of crops as ctflow's."""
    same = int(out["n"][0]) == int(ref["n"][0]) and np.array_equal(
        out["shapes"][:1], ref["shapes"][:1]
    )
    return same, {"crops": int(out["n"][0]), "expected": int(ref["n"][0])}


# -- ctflow -------------------------------------------------------------------------------------
def ctflow_pipeline(inp: dict[str, Any], batch_size: int, rotate: bool = False) -> Any:
    """The ctflow pipeline (without the final dump)."""
    import ctflow as cf

    pipe = (
        cf.Pipeline()
        .load()
        .fetch_nodules(inp["csv"])
        .unify_spacing((1.0, 1.0, 1.0), padding="edge", dtype="int16")
        .segment(min_lung_ml=inp["min_ml"])
        .create_mask()
    )
    if rotate:
        pipe = pipe.rotate(10.0, dtype="int16")
    return pipe.normalize_hu(LO, HI).sample_nodules(
        CROPS_PER_SCAN * batch_size, inp["crop"], share=SHARE
    )


def ctflow_builder(batch_size: int, prefetch: int | None = None, rotate: bool = False) -> Any:
    """Build a runner of the ctflow pipeline; per-action times go to ``info["action_s"]``.

    ``prefetch=None`` keeps as many batches in flight as there are threads (1 thread: none).
    """

    def build(inp: dict[str, Any], threads: int) -> Runner:
        ahead = (threads if threads > 1 else 0) if prefetch is None else prefetch
        import ctflow as cf

        pipe = ctflow_pipeline(inp, batch_size, rotate)
        timings: list[dict[str, float]] = []

        def run_all(dst: Path, paths: list[Path]) -> Any:
            ds = cf.Dataset.from_paths(paths)
            report = (ds >> (pipe + cf.Pipeline().dump(dst))).run(
                batch_size=batch_size, n_workers=threads, prefetch=ahead, seed=0
            )
            if report.failed:
                raise RuntimeError(f"ctflow pipeline failed: {report.failed}")
            timings.append(dict(report.timings))
            return report

        runner = _runner(inp, run_all)
        runner.info["action_s"] = timings  # one dict per call; the first is the warm-up
        return runner

    return build


def _crops_to_disk(
    inp: dict[str, Any],
    path: Path,
    dst: Path,
    seed: int,
    volume: np.ndarray,
    lungs: np.ndarray,
    g: Any,
) -> None:
    """The numpy tail of the peer compositions: nodule mask, crops, ``.npy`` files."""
    centres, diam = _nodules(inp, path)
    mask = nodule_mask_numpy(volume.shape, g, centres, diam)
    crops = sample_crops_numpy(
        volume,
        [mask, lungs],
        g.world_to_voxel(centres),
        inp["crop"],
        CROPS_PER_SCAN,
        SHARE,
        np.random.default_rng(seed),
    )
    _save_crops(dst, path.stem, crops)


# -- SimpleITK + numpy --------------------------------------------------------------------------
def sitk_one(inp: dict[str, Any], path: Path, dst: Path, seed: int) -> None:
    """One scan through the SimpleITK + numpy composition."""
    import SimpleITK as sitk

    from ctflow.geometry import Geometry, direction_from_sitk

    img = sitk.ReadImage(str(path))
    size = np.asarray(img.GetSize()) * np.asarray(img.GetSpacing())
    out_size = [int(v) for v in np.floor(size + 0.5)]
    iso = sitk.Resample(
        img,
        out_size,
        sitk.Transform(),
        sitk.sitkLinear,
        img.GetOrigin(),
        (1.0, 1.0, 1.0),
        img.GetDirection(),
        LO,
        sitk.sitkFloat32,
    )
    lungs = sitk.GetArrayFromImage(lungs_sitk(iso, inp["min_ml"]))
    norm = sitk.GetArrayFromImage(sitk.IntensityWindowing(iso, LO, HI, 0.0, 1.0))
    g = Geometry(
        iso.GetSpacing()[::-1], iso.GetOrigin()[::-1], direction_from_sitk(iso.GetDirection())
    )
    _crops_to_disk(inp, path, dst, seed, norm, lungs, g)


def _pool_map(fn: Any, inp: dict[str, Any], dst: Path, paths: list[Path], workers: int) -> None:
    if workers <= 1:
        for k, p in enumerate(paths):
            fn(inp, p, dst, k)
        return
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(fn, inp, p, dst, k) for k, p in enumerate(paths)]:
            f.result()


def _sitk(inp: dict[str, Any], threads: int) -> Runner:
    sitk_threads(1)
    return _runner(inp, lambda dst, paths: _pool_map(sitk_one, inp, dst, paths, threads))


def sitk_sequential(inp: dict[str, Any], threads: int) -> Runner:
    """The SimpleITK composition scan after scan, SimpleITK on ``threads`` threads."""
    sitk_threads(threads)
    return _runner(inp, lambda dst, paths: _pool_map(sitk_one, inp, dst, paths, 1))


# -- RadIO-style scipy ----------------------------------------------------------------------------
def scipy_one(inp: dict[str, Any], path: Path, dst: Path, seed: int) -> None:
    """One scan through the RadIO-style scipy composition (SimpleITK only reads the file)."""
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    from ctflow.geometry import Geometry

    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayViewFromImage(img)
    sp = np.asarray(img.GetSpacing()[::-1])
    shape = np.floor(np.asarray(arr.shape) * sp + 0.5).astype(int)
    iso = ndi.zoom(
        arr,
        shape / np.asarray(arr.shape),
        output=np.float32,
        order=1,
        mode="nearest",
        grid_mode=True,
    )
    lungs = lungs_scipy(iso, (1.0, 1.0, 1.0), inp["min_ml"])
    np.clip(iso, LO, HI, out=iso)
    iso -= np.float32(LO)
    iso /= np.float32(HI - LO)
    g = Geometry(sp * np.asarray(arr.shape) / shape, np.asarray(img.GetOrigin()[::-1]))
    _crops_to_disk(inp, path, dst, seed, iso, lungs, g)


def _scipy(inp: dict[str, Any], threads: int) -> Runner:
    sitk_threads(1)
    return _runner(inp, lambda dst, paths: _pool_map(scipy_one, inp, dst, paths, threads))


# -- MONAI --------------------------------------------------------------------------------------
def _monai(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(1)
    sitk_threads(1)
    import SimpleITK as sitk
    from monai.data import Dataset
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        RandCropByPosNegLabeld,
        ScaleIntensityRanged,
        Spacingd,
    )

    crop_xyz = tuple(int(v) for v in inp["crop"][::-1])

    def add_masks(d: dict[str, Any]) -> dict[str, Any]:
        img = d["image"]  # MetaTensor (1, x, y, z), RAS affine
        zyx = img[0].numpy().transpose(2, 1, 0)
        g = geometry_from_ras(img.affine)
        s = sitk.GetImageFromArray(np.ascontiguousarray(zyx))
        s.SetSpacing([float(v) for v in g.spacing[::-1]])
        lungs = sitk.GetArrayFromImage(lungs_sitk(s, inp["min_ml"]))
        mask = nodule_mask_numpy(zyx.shape, g, d["centres"], d["diameters"])
        d["lungs"] = img.new_tensor(lungs.transpose(2, 1, 0)[None].copy())
        d["label"] = img.new_tensor(mask.transpose(2, 1, 0)[None].copy())
        return d

    compose = Compose(
        [
            LoadImaged("image", reader=monai_sitk_reader(), image_only=True),
            EnsureChannelFirstd("image", channel_dim="no_channel"),
            Spacingd("image", pixdim=(1.0, 1.0, 1.0), mode="bilinear", dtype=torch.float32),
            add_masks,
            ScaleIntensityRanged("image", LO, HI, 0.0, 1.0, clip=True, dtype=torch.float32),
            RandCropByPosNegLabeld(
                keys=["image", "label", "lungs"],
                label_key="label",
                spatial_size=crop_xyz,
                pos=1,
                neg=1,
                num_samples=CROPS_PER_SCAN,
            ),
        ]
    )
    compose.set_random_state(0)
    items = []
    for p in inp["paths"]:
        centres, diam = _nodules(inp, p)
        items.append({"image": str(p), "centres": centres, "diameters": diam, "stem": p.stem})
    ds = Dataset(items, transform=compose)

    def one(k: int, dst: Path) -> None:
        crops = ds[k]
        out = [
            [
                c["image"][0].numpy().transpose(2, 1, 0),
                c["label"][0].numpy().transpose(2, 1, 0).astype(np.uint8),
                c["lungs"][0].numpy().transpose(2, 1, 0).astype(np.uint8),
            ]
            for c in crops
        ]
        _save_crops(dst, items[k]["stem"], out)

    def run_all(dst: Path, paths: list[Path]) -> None:
        with ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(one, k, dst) for k in range(len(paths))]:
                f.result()

    return _runner(inp, run_all)


# -- TorchIO ------------------------------------------------------------------------------------
def _tio_scale(t: Any) -> Any:
    """(x - LO) / (HI - LO) as float32 (TorchIO's RescaleIntensity computes percentiles)."""
    return (t.float() - LO) / (HI - LO)


def _torchio(inp: dict[str, Any], threads: int) -> Runner:
    torch_threads(1)
    sitk = sitk_threads(1)
    import torchio as tio

    crop_xyz = tuple(int(v) for v in inp["crop"][::-1])
    resample = tio.Resample(1.0, image_interpolation="linear")
    normalise = tio.Compose(
        [
            tio.Clamp(LO, HI, include=["image"]),
            tio.Lambda(_tio_scale, types_to_apply=[tio.INTENSITY], include=["image"]),
        ]
    )
    sampler = tio.LabelSampler(crop_xyz, label_name="label", label_probabilities={0: 1, 1: 1})

    def one(k: int, path: Path, dst: Path) -> None:
        subject = resample(tio.Subject(image=tio.ScalarImage(path)))
        image = subject["image"]
        zyx = image.data[0].numpy().transpose(2, 1, 0)
        g = geometry_from_ras(image.affine)
        s = sitk.GetImageFromArray(np.ascontiguousarray(zyx))
        s.SetSpacing([float(v) for v in g.spacing[::-1]])
        lungs = sitk.GetArrayFromImage(lungs_sitk(s, inp["min_ml"]))
        centres, diam = _nodules(inp, path)
        mask = nodule_mask_numpy(zyx.shape, g, centres, diam)
        subject.add_image(
            tio.LabelMap(tensor=mask.transpose(2, 1, 0)[None].copy(), affine=image.affine), "label"
        )
        subject.add_image(
            tio.LabelMap(tensor=lungs.transpose(2, 1, 0)[None].copy(), affine=image.affine), "lungs"
        )
        subject = normalise(subject)
        patches = list(sampler(subject, num_patches=CROPS_PER_SCAN))
        out = [
            [
                p["image"].data[0].numpy().transpose(2, 1, 0).astype(np.float32),
                p["label"].data[0].numpy().transpose(2, 1, 0).astype(np.uint8),
                p["lungs"].data[0].numpy().transpose(2, 1, 0).astype(np.uint8),
            ]
            for p in patches
        ]
        _save_crops(dst, path.stem, out)

    def run_all(dst: Path, paths: list[Path]) -> None:
        with ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(one, k, p, dst) for k, p in enumerate(paths)]:
                f.result()

    return _runner(inp, run_all)


def contenders() -> list[Contender]:
    """ctflow at 1 and 2 threads and the four peer compositions."""
    return [
        Contender("ctflow", "Pipeline, batch_size=1, prefetch=threads", 1, ctflow_builder(1)),
        Contender("ctflow", "Pipeline, batch_size=1, prefetch=threads", 2, ctflow_builder(1)),
        Contender("SimpleITK", "SimpleITK + numpy script, 2 scans in threads", 2, _sitk, "2x1"),
        Contender("scipy.ndimage", "RadIO-style scipy, 2 scans in threads", 2, _scipy, "2x1"),
        Contender("MONAI", "Dataset(Compose) + LoadImaged, 2 scans in threads", 2, _monai, "2x1"),
        Contender(
            "TorchIO", "Resample/Compose + LabelSampler, 2 scans in threads", 2, _torchio, "2x1"
        ),
    ]


PIPELINE = Case(
    name="pipeline",
    title="Whole LUNA16-style pipeline over a batch of scans (load -> ... -> dump crops)",
    inputs=_inputs,
    contenders=contenders(),
    check=check,
    validate=validate,
    parts=("pipeline",),
    max_repeats=5,
    items=lambda profile: len(profile.pipeline_scans),
    note=(
        "One timed call processes all pipeline scans; scans/s = scans / median. Peak memory is "
        "the whole process's working memory over the run (all scans in flight)."
    ),
)

PAIRS = 7
PAIRS_HOW = "Pipeline, batch_size=1, prefetch=threads (pairs)"
PIPELINE_PAIRS = Case(
    name="pipeline_pairs",
    title="Whole pipeline on 1 and 2 threads in alternating pairs, one process",
    inputs=_inputs,
    contenders=[
        Contender(
            "ctflow", "Pipeline, batch_size=1, prefetch=threads (pairs)", n, ctflow_builder(1)
        )
        for n in (1, 2)
    ],
    check=check,
    validate=validate,
    parts=("pipeline",),
    items=lambda profile: len(profile.pipeline_scans),
    min_repeats=PAIRS,
    interleave=Interleave(settle=True),
    note=(
        "The `pipeline` case times 1 and 2 threads in two processes minutes apart, while the "
        "speed of a shared virtual machine drifts by 10-30 % over minutes. Here one process "
        f"runs the same pipeline on 1 and on 2 threads in turn (at least {PAIRS} pairs, "
        "alternating which goes first); each timed run follows an untimed run at the same "
        "thread count, so it finds the buffer pool as a stream of runs at that thread count "
        "leaves it. Each run starts from an empty output folder."
    ),
)

CASES = [PIPELINE, PIPELINE_PAIRS]
