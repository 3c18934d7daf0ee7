"""Random geometric augmentation (affine, elastic) and fused geometric pipelines.

All three cases are interleaved (:class:`~benchmarks.harness.Interleave`): ctflow and its peers
run in ONE worker process, their timed calls in rotating rounds, so a drifting host speed hits
every contender alike.

``random_affine`` and ``random_elastic`` transform a 1 mm int16 chest phantom (256^3 on the full
profile, made by :func:`ctflow.synthetic.make_phantom` at 1 mm) on 2 threads:

* **ctflow**: ``batch.random_affine(degrees=10, scales=0.1, translation_mm=5)`` /
  ``batch.random_elastic(control_points=7, max_displacement_mm=7.5)`` on a one-item batch with
  ``n_workers=2`` (int16 in, float32 out, air = -1000 HU outside); each timed call draws new
  parameters (the batch's random state moves on).
* **TorchIO**: ``RandomAffine(degrees=10, scales=0.1, translation=5)`` /
  ``RandomElasticDeformation(num_control_points=7, max_displacement=7.5)`` on a float32
  ``ScalarImage`` (SimpleITK resampling underneath; torch and SimpleITK on 2 threads).
* **MONAI**: ``RandAffine(prob=1, rotate_range=10 deg, scale_range=0.1, translate_range=5)`` /
  ``Rand3DElastic(sigma_range=(5, 7), magnitude_range=(50, 150), prob=1)`` — MONAI's 3-D elastic
  transform (a dense Gaussian-smoothed random field, not a B-spline on control points; the
  closest MONAI has in 3-D: ``RandGridDistortion`` only stretches whole rows and columns) — on
  a (1, Z, Y, X) float32 tensor, ``padding_mode="zeros"``. The tensor holds ``HU + 1000`` (made
  once, untimed), so zero padding is air, and ``finish`` subtracts 1000 again.

The tools draw different transforms, so peers cannot agree voxel by voxel. The agreement
check therefore asks, of every output: the same shape; a mean and standard deviation of HU
close to ctflow's (same anatomy, air outside); still correlated with the untransformed scan but
not equal to it (it is the input moved, not something else). ctflow's own output is checked
exactly (untimed, in ``finish``): SimpleITK resamples the input through the transform ctflow
recorded — the 4x4 ``world`` map of ``random_affine`` as an ``AffineTransform``; the drawn
B-spline coefficients of ``random_elastic`` as a ``BSplineTransform`` on the same control grid
(ITK's, which TorchIO uses too) — and the two must agree to a small fraction of a HU.

``pipeline_fused`` runs the LUNA16-style chain load -> ``unify_spacing(1 mm)`` ->
``normalize_hu`` -> ``central_crop(256^3)`` (or the largest cube every pipeline scan holds on a
small profile) -> dump over the ``pipeline`` scans: ctflow fused (the default: resampling and
crop in one pass, only the crop's voxels are ever computed) and with ``Pipeline(fuse=False)``
(the whole 1 mm volume, then the crop), one scan per batch, 2 threads, two batches in flight;
and the SimpleITK + numpy script (read, ``Resample`` to 1 mm, ``IntensityWindowing``, numpy
crop, ``np.save``) over the scans in a ``ThreadPoolExecutor(2)``, SimpleITK on one thread each,
as the ``pipeline`` case maps its peers. The script resamples onto ctflow's centred 1 mm grid,
so the crops are compared voxel by voxel (on a 4x subsampled lattice).
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Case, Contender, Interleave, Runner, as_numpy, close, xyz_to_zyx
from benchmarks.peers import sitk_image, sitk_threads, tio_image, torch_threads

AIR = -1000.0
SEED = 0
#: edge of the phantom cube (1 mm voxels) per data profile
CUBE = {"full": 256, "quick": 64, "tiny": 32}
DEGREES = 10.0
SCALES = 0.1
TRANSLATION_MM = 5.0
CONTROL_POINTS = 7
MAX_DISPLACEMENT_MM = 7.5
#: largest |mean| and relative |std| differences from ctflow's output (HU, fraction)
MEAN_HU = 60.0
STD_FRACTION = 0.15
#: ctflow against SimpleITK with ctflow's drawn transform: mean and largest |difference|, HU
SITK_MEAN_HU = 0.01
SITK_MAX_HU = 0.5
LO, HI = -1000.0, 400.0
#: edge of the pipeline's central crop on the full profile
CROP = 256
SUB = 4  # subsampling of the dumped crops for the voxel-wise comparison


# -- the 1 mm phantom -------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _phantom(n: int) -> tuple[np.ndarray, Any]:
    """An (n, n, n) int16 chest phantom at 1 mm and its geometry (made once per process)."""
    from ctflow.synthetic import make_phantom

    scan, _ = make_phantom((n, n, n), (1.0, 1.0, 1.0), n_nodules=2, seed=17)
    images = np.ascontiguousarray(scan.images, dtype=np.int16)
    images.setflags(write=False)  # shared by every contender of the process
    return images, scan.geometry


def _cube(profile: Any) -> int:
    return CUBE.get(profile.name, 64)


def _max_displacement(n: int) -> float:
    """7.5 mm, or less on small profiles, where 7.5 mm could fold the volume."""
    from ctflow.ops.warp import FOLDING_K

    step = (n + 0.25) / (CONTROL_POINTS - 3)  # control spacing, mm (1 mm voxels)
    return float(min(MAX_DISPLACEMENT_MM, round(0.9 * step / FOLDING_K, 2)))


def _inputs(data: Any) -> dict[str, Any]:
    n = _cube(data.profile)
    images, geometry = _phantom(n)
    return {"images": images, "geometry": geometry, "max_mm": _max_displacement(n)}


def _bytes(inp: dict[str, Any]) -> int:
    return 6 * int(inp["images"].size)  # int16 in, float32 out


def _summary(inp: dict[str, Any], out: np.ndarray) -> dict[str, np.ndarray]:
    """The output and what the check compares of it (all untimed)."""
    src = inp["images"]
    a = out.astype(np.float64, copy=False).ravel()
    b = src.astype(np.float64).ravel()
    corr = float(np.corrcoef(a[::7], b[::7])[0, 1])
    moved = float(np.mean(np.abs(out.astype(np.float32) - src) > 1.0))
    return {
        "out": np.ascontiguousarray(out, dtype=np.float32),
        "stats": np.array([a.mean(), a.std(), corr, moved]),
    }


def _sitk_vs(out: np.ndarray, ref: Any) -> dict[str, np.ndarray]:
    d = np.abs(out.astype(np.float32) - as_numpy(ref).astype(np.float32))
    return {"sitk_diff": np.array([float(d.mean(dtype=np.float64)), float(d.max())])}


def check(ref: Any, out: Any) -> tuple[bool, dict[str, Any]]:
    """Same shape, similar HU statistics, a moved copy of the input; ctflow = SimpleITK."""
    a, b = ref["out"], out["out"]
    if a.shape != b.shape:
        return False, {"shape": list(b.shape), "expected_shape": list(a.shape)}
    mean_r, std_r = float(ref["stats"][0]), float(ref["stats"][1])
    mean, std, corr, moved = (float(v) for v in out["stats"])
    metrics: dict[str, Any] = {
        "mean_hu_diff": round(mean - mean_r, 2),
        "std_ratio": round(std / std_r, 3),
        "corr_with_input": round(corr, 3),
        "moved_fraction": round(moved, 3),
    }
    ok = (
        abs(mean - mean_r) <= MEAN_HU
        and abs(std / std_r - 1.0) <= STD_FRACTION
        and 0.2 <= corr < 0.9999
        and moved >= 0.02
    )
    if "sitk_diff" in out:
        d_mean, d_max = (float(v) for v in out["sitk_diff"])
        metrics["vs_sitk_same_transform"] = [round(d_mean, 5), round(d_max, 4)]
        ok = ok and d_mean <= SITK_MEAN_HU and d_max <= SITK_MAX_HU
    return ok, metrics


# -- random_affine ------------------------------------------------------------------------------
def _sitk_affine(world: Any) -> Any:
    """A SimpleITK transform of a (z, y, x) 4x4 world map (output point -> input point)."""
    import SimpleITK as sitk

    xyz = np.eye(4)[[2, 1, 0, 3]]
    w = xyz @ np.asarray(world, np.float64) @ xyz
    t = sitk.AffineTransform(3)
    t.SetMatrix(w[:3, :3].ravel().tolist())
    t.SetTranslation(w[:3, 3].tolist())
    return t


def _ctflow_runner(inp: dict[str, Any], threads: int, call: Any, reference: Any) -> Runner:
    """ctflow's ``call(batch)`` on a one-item batch, new draws each call.

    ``reference(params)`` is the SimpleITK transform of the drawn parameters. The timed call
    includes ``CTBatch.from_arrays`` (it wraps the array, no copy).
    """
    import ctflow as cf

    geometry = inp["geometry"]
    position = itertools.count()

    def run() -> Any:
        # batch actions work in place: a new batch (no copy of the volume) per call
        batch = cf.CTBatch.from_arrays(
            [inp["images"]], spacing=geometry.spacing, origin=geometry.origin, n_workers=threads
        )
        batch.set_random_state(SEED, next(position))
        return call(batch)

    def finish(out: Any) -> dict[str, np.ndarray]:
        sitk = sitk_threads(threads)
        arr = np.asarray(out.get(0, "images"))
        params = out.history[0][-1]["params"]
        image = sitk_image(inp["images"], inp["geometry"])
        ref = sitk.Resample(image, image, reference(params), sitk.sitkLinear, AIR, sitk.sitkFloat32)
        return {**_summary(inp, arr), **_sitk_vs(arr, ref)}

    return Runner(run, finish)


def _ctflow_affine(inp: dict[str, Any], threads: int) -> Runner:
    return _ctflow_runner(
        inp,
        threads,
        lambda b: b.random_affine(degrees=DEGREES, scales=SCALES, translation_mm=TRANSLATION_MM),
        lambda params: _sitk_affine(params["world"]),
    )


def _torchio_runner(inp: dict[str, Any], threads: int, op: Any) -> Runner:
    torch_threads(threads)
    sitk_threads(threads)
    img = tio_image(inp["images"].astype(np.float32), inp["geometry"])
    return Runner(lambda: op(img).data, lambda out: _summary(inp, xyz_to_zyx(out)))


def _torchio_affine(inp: dict[str, Any], threads: int) -> Runner:
    import torchio as tio

    op = tio.RandomAffine(degrees=DEGREES, scales=SCALES, translation=TRANSLATION_MM)
    return _torchio_runner(inp, threads, op)


def _monai_runner(inp: dict[str, Any], threads: int, op: Any) -> Runner:
    torch = torch_threads(threads)
    op.set_random_state(SEED)
    shifted = torch.from_numpy(inp["images"].astype(np.float32) - np.float32(AIR))[None]

    def finish(out: Any) -> dict[str, np.ndarray]:
        return _summary(inp, as_numpy(out)[0] + np.float32(AIR))

    return Runner(lambda: op(shifted), finish)


def _monai_affine(inp: dict[str, Any], threads: int) -> Runner:
    from monai.transforms import RandAffine

    rad = float(np.deg2rad(DEGREES))
    op = RandAffine(
        prob=1.0,
        rotate_range=(rad,) * 3,
        scale_range=(SCALES,) * 3,
        translate_range=(TRANSLATION_MM,) * 3,
        padding_mode="zeros",
    )
    return _monai_runner(inp, threads, op)


RANDOM_AFFINE = Case(
    name="random_affine",
    title="Random affine augmentation (10 deg, 10 % scale, 5 mm) of a 1 mm cube, bilinear",
    inputs=_inputs,
    contenders=[
        Contender(
            "ctflow",
            "batch.random_affine(degrees=10, scales=0.1, translation_mm=5)",
            2,
            _ctflow_affine,
        ),
        Contender(
            "TorchIO", "RandomAffine(degrees=10, scales=0.1, translation=5)", 2, _torchio_affine
        ),
        Contender(
            "MONAI", "RandAffine(prob=1, 10 deg, 0.1, 5 vox), zeros padding", 2, _monai_affine
        ),
    ],
    check=check,
    bytes_moved=_bytes,
    parts=(),
    interleave=Interleave(),
    note=(
        "Every tool draws its own transform, so peers are checked for HU statistics and for "
        "being a moved copy of the input; ctflow equals SimpleITK resampling through the "
        "transform it recorded (`vs_sitk_same_transform`: mean and largest |difference|, HU)."
    ),
)


# -- random_elastic -----------------------------------------------------------------------------
def _sitk_bspline(params: Any, geometry: Any) -> Any:
    """ITK's cubic B-spline transform with ctflow's drawn coefficients and control grid.

    ctflow's field lives in the frame ``index * spacing``; with the identity direction (the
    phantom's) that is world minus origin, so the grid is shifted by the origin. ITK puts the
    first control point one grid step before the transform domain's origin.
    """
    import SimpleITK as sitk

    coef = np.asarray(params["coef"], np.float64)  # (3, cz, cy, cx), components z, y, x
    origin = np.asarray(params["grid_origin"], np.float64) + geometry.origin
    step = np.asarray(params["grid_step"], np.float64)
    n = np.asarray(coef.shape[1:])
    mesh = n - 3
    t = sitk.BSplineTransform(3, 3)
    t.SetTransformDomainOrigin((origin + step)[::-1].tolist())
    t.SetTransformDomainPhysicalDimensions((step * mesh)[::-1].tolist())
    t.SetTransformDomainMeshSize([int(v) for v in mesh[::-1]])
    t.SetTransformDomainDirection(np.eye(3).ravel().tolist())
    # parameters: the x components of every control point (x fastest), then y, then z
    t.SetParameters(np.concatenate([coef[2].ravel(), coef[1].ravel(), coef[0].ravel()]).tolist())
    return t


def _ctflow_elastic(inp: dict[str, Any], threads: int) -> Runner:
    return _ctflow_runner(
        inp,
        threads,
        lambda b: b.random_elastic(
            control_points=CONTROL_POINTS, max_displacement_mm=inp["max_mm"]
        ),
        lambda params: _sitk_bspline(params, inp["geometry"]),
    )


def _torchio_elastic(inp: dict[str, Any], threads: int) -> Runner:
    import torchio as tio

    op = tio.RandomElasticDeformation(
        num_control_points=CONTROL_POINTS, max_displacement=inp["max_mm"]
    )
    return _torchio_runner(inp, threads, op)


def _monai_elastic(inp: dict[str, Any], threads: int) -> Runner:
    from monai.transforms import Rand3DElastic

    op = Rand3DElastic(
        sigma_range=(5.0, 7.0), magnitude_range=(50.0, 150.0), prob=1.0, padding_mode="zeros"
    )
    return _monai_runner(inp, threads, op)


RANDOM_ELASTIC = Case(
    name="random_elastic",
    title="Random elastic deformation (B-spline, 7 control points, 7.5 mm) of a 1 mm cube",
    inputs=_inputs,
    contenders=[
        Contender(
            "ctflow",
            "batch.random_elastic(control_points=7, max_displacement_mm=7.5)",
            2,
            _ctflow_elastic,
        ),
        Contender(
            "TorchIO",
            "RandomElasticDeformation(num_control_points=7, max_displacement=7.5)",
            2,
            _torchio_elastic,
        ),
        Contender(
            "MONAI",
            "Rand3DElastic(sigma_range=(5, 7), magnitude_range=(50, 150)), zeros padding",
            2,
            _monai_elastic,
        ),
    ],
    check=check,
    bytes_moved=_bytes,
    parts=(),
    interleave=Interleave(),
    note=(
        "MONAI's 3-D elastic transform is a dense Gaussian-smoothed random field (no control "
        "points); ctflow and TorchIO draw B-spline control points the same way. On small "
        "profiles the largest displacement is lowered below the folding limit of the control "
        "grid. ctflow equals SimpleITK's `BSplineTransform` with its drawn coefficients "
        "(`vs_sitk_same_transform`, HU)."
    ),
)


# -- pipeline_fused -----------------------------------------------------------------------------
def _crop_edge(profile: Any) -> int:
    """256, or the largest cube every pipeline scan holds at 1 mm."""
    _, ny, nx = profile.scan_shape
    _, sy, sx = profile.scan_spacing
    extents = [np.floor(z * dz + 0.5) for z, dz in profile.pipeline_scans]
    extents += [np.floor(ny * sy + 0.5), np.floor(nx * sx + 0.5)]
    return int(min(CROP, *extents))


def _fused_inputs(data: Any) -> dict[str, Any]:
    paths, _ = data.pipeline_paths()
    return {
        "paths": [Path(p) for p in paths],
        "crop": (_crop_edge(data.profile),) * 3,
        "scratch": tempfile.mkdtemp(prefix="ctflow-bench-fused-"),
    }


def _fresh(dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)


def read_crops(dst: Path) -> dict[str, np.ndarray]:
    """The dumped crops (ctflow item folders or ``.npy`` files), sorted by scan, summarised."""
    crops: list[np.ndarray] = []
    folders = sorted(p for p in dst.iterdir() if p.is_dir() and not p.name.startswith("."))
    if folders:
        from ctflow.io.store import read_item

        crops = [np.asarray(read_item(f).components["images"]) for f in folders]
    else:
        crops = [np.load(f) for f in sorted(dst.glob("*.npy"))]
    return {
        "n": np.array([len(crops)]),
        "shapes": np.array([c.shape for c in crops], np.int64).reshape(-1, 3),
        "float32": np.array([c.dtype == np.float32 for c in crops]),
        "range": np.array([[float(c.min()), float(c.max())] for c in crops]).reshape(-1, 2),
        "out": np.stack([c[::SUB, ::SUB, ::SUB] for c in crops]).astype(np.float32),
    }


_close_crops = close(max_mean=1e-3, max_p999=5e-3)


def check_crops(ref: Any, out: Any) -> tuple[bool, dict[str, Any]]:
    """Same crops as ctflow's fused pipeline: number, shape, [0, 1] float32, voxel values."""
    if int(out["n"][0]) != int(ref["n"][0]) or not np.array_equal(out["shapes"], ref["shapes"]):
        return False, {"crops": int(out["n"][0]), "expected": int(ref["n"][0])}
    ok, metrics = _close_crops(ref, out)
    in_range = bool(out["float32"].all()) and out["range"].min() >= 0 and out["range"].max() <= 1
    return ok and in_range, {"crops": int(out["n"][0]), **metrics}


def _chain_runner(inp: dict[str, Any], run_all: Any) -> Runner:
    """``run_all(dst, paths)`` over every scan; the warm-up runs the first scan only."""
    dst = Path(inp["scratch"]) / "out"
    paths = inp["paths"]

    def warmup() -> Any:
        _fresh(dst)
        return run_all(dst, paths[:1])

    runner = Runner(lambda: run_all(dst, paths), lambda _: read_crops(dst), warmup=warmup)
    runner.before = lambda: _fresh(dst)
    return runner


def _ctflow_chain(fuse: bool, sync: bool = True) -> Any:
    def build(inp: dict[str, Any], threads: int) -> Runner:
        import ctflow as cf

        pipe = (
            cf.Pipeline(fuse=fuse)
            .load()
            .unify_spacing((1.0, 1.0, 1.0), padding="edge", dtype="int16")
            .normalize_hu(LO, HI)
            .central_crop(inp["crop"])
        )
        timings: list[dict[str, float]] = []

        def run_all(dst: Path, paths: list[Path]) -> Any:
            whole = pipe + cf.Pipeline(fuse=fuse).dump(dst, sync=sync)
            report = (cf.Dataset.from_paths(paths) >> whole).run(
                batch_size=1, n_workers=threads, prefetch=threads, seed=SEED
            )
            if report.failed:
                raise RuntimeError(f"ctflow pipeline failed: {report.failed}")
            timings.append(dict(report.timings))
            return report

        runner = _chain_runner(inp, run_all)
        runner.info["planned"] = [a.label for a in pipe.planned]
        runner.info["action_s"] = timings  # one dict per call; the first is the warm-up
        return runner

    return build


def sitk_chain_one(
    path: Path, dst: Path, crop: tuple[int, int, int], durable: bool = False
) -> None:
    """One scan through the SimpleITK + numpy script (ctflow's centred 1 mm grid).

    ``durable``: the ``.npy`` file is fsynced before the call returns (ctflow's default dump
    fsyncs its files too).
    """
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    size = np.asarray(img.GetSize(), np.float64)
    spacing = np.asarray(img.GetSpacing(), np.float64)
    new_size = np.maximum(1, np.floor(size * spacing + 0.5))
    direction = np.asarray(img.GetDirection(), np.float64).reshape(3, 3)
    # the 1 mm grid centred on the scan's centre
    origin = np.asarray(img.GetOrigin()) + direction @ (
        (size - 1) / 2 * spacing - (new_size - 1) / 2
    )
    iso = sitk.Resample(
        img,
        [int(v) for v in new_size],
        sitk.Transform(),
        sitk.sitkLinear,
        origin.tolist(),
        (1.0, 1.0, 1.0),
        img.GetDirection(),
        LO,
        sitk.sitkFloat32,
    )
    windowed = sitk.IntensityWindowing(iso, LO, HI, 0.0, 1.0)
    norm = sitk.GetArrayViewFromImage(windowed)  # a view: `windowed` must outlive it
    start = [(n - c) // 2 for n, c in zip(norm.shape, crop, strict=True)]
    box = tuple(slice(s, s + c) for s, c in zip(start, crop, strict=True))
    with open(dst / f"{path.stem}.npy", "wb") as f:
        np.save(f, np.ascontiguousarray(norm[box]))
        if durable:
            f.flush()
            os.fsync(f.fileno())


def _sitk_chain(durable: bool = False) -> Any:
    def build(inp: dict[str, Any], threads: int) -> Runner:
        sitk_threads(1)

        def run_all(dst: Path, paths: list[Path]) -> None:
            with ThreadPoolExecutor(threads) as pool:
                jobs = [pool.submit(sitk_chain_one, p, dst, inp["crop"], durable) for p in paths]
                for f in jobs:
                    f.result()
            if durable:  # the files' folder entries too, as ctflow's dump
                fd = os.open(dst, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

        return _chain_runner(inp, run_all)

    return build


FUSED_HOW = "Pipeline (fused), batch_size=1, prefetch=2"
PIPELINE_FUSED = Case(
    name="pipeline_fused",
    title="load -> unify_spacing(1 mm) -> normalize_hu -> central_crop(256^3) -> dump, fused",
    inputs=_fused_inputs,
    contenders=[
        Contender("ctflow", FUSED_HOW, 2, _ctflow_chain(True)),
        Contender(
            "ctflow", "Pipeline(fuse=False), batch_size=1, prefetch=2", 2, _ctflow_chain(False)
        ),
        Contender(
            "ctflow",
            "Pipeline (fused), dump(sync=False): no fsync, like the script",
            2,
            _ctflow_chain(True, sync=False),
        ),
        Contender(
            "SimpleITK", "SimpleITK + numpy script, 2 scans in threads", 2, _sitk_chain(), "2x1"
        ),
        Contender(
            "SimpleITK",
            "SimpleITK + numpy script, 2 scans in threads, files fsynced like ctflow's dump",
            2,
            _sitk_chain(durable=True),
            "2x1",
        ),
    ],
    check=check_crops,
    reference=f"ctflow|{FUSED_HOW}|2",
    parts=("pipeline",),
    items=lambda profile: len(profile.pipeline_scans),
    interleave=Interleave(),
    note=(
        "Fused, ctflow computes only the crop's voxels in one resampling pass "
        "(`unify_spacing + central_crop`, then `normalize_hu` on the crop); `fuse=False` "
        "resamples the whole scan first. ctflow's dump fsyncs every item (durable once `run` "
        "returns); the script's plain `np.save` does not, which `dump(sync=False)` matches; "
        "the script's durable variant fsyncs its files and their folder like ctflow. One "
        "timed call processes all pipeline scans. The "
        "script resamples onto ctflow's centred 1 mm grid, so the crops are compared voxel by "
        f"voxel (every {SUB}th voxel per axis)."
    ),
)

CASES = [RANDOM_AFFINE, RANDOM_ELASTIC, PIPELINE_FUSED]
