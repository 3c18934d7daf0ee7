"""Feeding a torch DataLoader with training crops, as crops per second.

4 LUNA16-sized scans (the first four pipeline scans) -> load -> unify spacing to 1 mm (linear)
-> HU to [0, 1] (-1000..400, clipped) -> cached -> 16 random 64^3 crops per scan -> random
flips, 3 epochs, everything through a ``torch.utils.data.DataLoader``; one timed call is the
whole 3-epoch run from cold (the caches are emptied before it), so it includes making every
cached item once. "scans/s" of this case are crops/s (``items`` = crops per call).

* **ctflow**: ``PipelineDataset(dataset >> load.unify_spacing.normalize_hu.cache(ram_gb)
  .sample_crops(16, (64, 64, 64)).random_flip(), batch_size=1, n_epochs=3, prefetch=1)`` in
  ``DataLoader(batch_size=None)``, 2 threads in this process.
* **TorchIO**: ``SubjectsDataset`` (``Resample(1)``, ``Clamp`` + ``RescaleIntensity``,
  ``RandomFlip``) -> ``Queue(UniformSampler(64), samples_per_volume=16)`` ->
  ``DataLoader(batch_size=16)``, one pass per epoch (TorchIO caches nothing: every epoch loads
  and resamples again, by design).
* **MONAI**: ``CacheDataset`` (``LoadImaged`` with SimpleITK, ``Spacingd(1 mm)``,
  ``ScaleIntensityRanged`` cached) + ``RandSpatialCropSamplesd(64^3, num_samples=16)`` +
  ``RandFlipd`` x3 -> ``DataLoader(batch_size=1)``, one pass per epoch.

Loader worker processes are not used (``num_workers=0`` everywhere; the work runs on 2
threads in the measured process), so the peak RSS is the whole feed's. Every output is
checked: 192 crops of 64^3 float32 with values in [0, 1].
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Case, Contender, Runner
from benchmarks.peers import monai_sitk_reader, sitk_threads, torch_threads

LO, HI = -1000.0, 400.0
N_SCANS = 4
PER_SCAN = 16
PATCH = 64
EPOCHS = 3


def _inputs(data: Any) -> dict[str, Any]:
    paths, _ = data.pipeline_paths()
    return {
        "paths": [Path(p) for p in sorted(paths)[:N_SCANS]],
        "scratch": tempfile.mkdtemp(prefix="ctflow-bench-feed-"),
    }


class _Tally:
    """Summaries of the crops a training loop received (the loop's only work)."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.float32: list[bool] = []

    def add(self, images: Any) -> None:
        """Note a (N, 1, a, b, c) tensor of crops."""
        for crop in images:
            self.shapes.append(tuple(crop.shape[-3:]))
            self.float32.append(str(crop.dtype) == "torch.float32")
        self.lo.append(float(images.min()))
        self.hi.append(float(images.max()))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "n": np.array([len(self.shapes)]),
            "shapes": np.array(self.shapes, np.int64).reshape(-1, 3),
            "vmin": np.array(self.lo),
            "vmax": np.array(self.hi),
            "float32": np.array(self.float32),
        }


def _finish(tally: _Tally) -> dict[str, np.ndarray]:
    return tally.arrays()


def _ctflow(inp: dict[str, Any], threads: int) -> Runner:
    from torch.utils.data import DataLoader

    import ctflow as cf
    from ctflow.actions import Cache
    from ctflow.interop.torch import PipelineDataset

    torch_threads(1)
    ram_gb = 4.0
    pipe = (
        cf.Pipeline()
        .load()
        .unify_spacing(1.0)
        .normalize_hu(LO, HI)
        .cache(ram_gb=ram_gb)
        .sample_crops(PER_SCAN, (PATCH,) * 3)
        .random_flip()
    )
    dataset = cf.Dataset.from_paths(inp["paths"])

    def make(paths: list[Path]) -> DataLoader:
        ds = PipelineDataset(
            cf.Dataset.from_paths(paths) >> pipe,
            batch_size=1,
            n_epochs=EPOCHS,
            prefetch=1 if threads > 1 else 0,
            n_workers=threads,
            seed=0,
            components=("images",),
        )
        return DataLoader(ds, batch_size=None, num_workers=0)

    def feed(paths: list[Path]) -> _Tally:
        tally = _Tally()
        for batch in make(paths):
            tally.add(batch["images"])
        return tally

    runner = Runner(lambda: feed(inp["paths"]), _finish, warmup=lambda: feed(inp["paths"][:1]))
    runner.before = lambda: Cache(ram_gb).store().clear()  # every timed call starts cold
    runner.info["scans"] = len(dataset)
    return runner


def _torchio(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    sitk_threads(threads)
    import torchio as tio
    from torch.utils.data import DataLoader

    transform = tio.Compose(
        [
            tio.Resample(1.0),
            tio.Clamp(LO, HI),
            tio.RescaleIntensity((0.0, 1.0), in_min_max=(LO, HI)),
            tio.RandomFlip(axes=(0, 1, 2)),
        ]
    )

    def feed(paths: list[Path]) -> _Tally:
        torch.manual_seed(0)
        subjects = [tio.Subject(image=tio.ScalarImage(p)) for p in paths]
        queue = tio.Queue(
            tio.SubjectsDataset(subjects, transform=transform),
            max_length=PER_SCAN * 2,
            samples_per_volume=PER_SCAN,
            sampler=tio.UniformSampler(PATCH),
            num_workers=0,
            shuffle_subjects=True,
            shuffle_patches=True,
            verbose=False,
        )
        tally = _Tally()
        for _ in range(EPOCHS):
            for batch in DataLoader(queue, batch_size=PER_SCAN, num_workers=0):
                tally.add(batch["image"][tio.DATA])
        return tally

    return Runner(lambda: feed(inp["paths"]), _finish, warmup=lambda: feed(inp["paths"][:1]))


def _monai(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    sitk_threads(1)
    from monai import transforms as mt
    from monai.data import CacheDataset, DataLoader
    from monai.utils import set_determinism

    keys = ["image"]
    transform = mt.Compose(
        [
            mt.LoadImaged(keys, reader=monai_sitk_reader(), ensure_channel_first=True),
            mt.Spacingd(keys, pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
            mt.ScaleIntensityRanged(keys, LO, HI, 0.0, 1.0, clip=True),
            mt.RandSpatialCropSamplesd(
                keys, roi_size=(PATCH,) * 3, num_samples=PER_SCAN, random_size=False
            ),
            mt.RandFlipd(keys, prob=0.5, spatial_axis=0),
            mt.RandFlipd(keys, prob=0.5, spatial_axis=1),
            mt.RandFlipd(keys, prob=0.5, spatial_axis=2),
        ]
    )

    def feed(paths: list[Path]) -> _Tally:
        set_determinism(0)
        ds = CacheDataset(
            [{"image": str(p)} for p in paths],
            transform=transform,
            cache_rate=1.0,
            num_workers=threads,
            progress=False,
        )
        tally = _Tally()
        for _ in range(EPOCHS):
            for batch in DataLoader(ds, batch_size=1, shuffle=True, num_workers=0):
                tally.add(batch["image"].as_tensor())
        return tally

    del torch
    return Runner(lambda: feed(inp["paths"]), _finish, warmup=lambda: feed(inp["paths"][:1]))


def check(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> tuple[bool, dict[str, Any]]:
    """Same number and shapes of crops as ctflow."""
    same = int(out["n"][0]) == int(ref["n"][0]) and np.array_equal(
        np.sort(out["shapes"], axis=0), np.sort(ref["shapes"], axis=0)
    )
    return bool(same), {"crops": int(out["n"][0]), "expected": int(ref["n"][0])}


def validate(out: dict[str, np.ndarray]) -> tuple[bool, dict[str, Any]]:
    """16 crops per scan and epoch, 64^3 float32 in [0, 1] (192 crops on the 4 full scans)."""
    n = int(out["n"][0])
    shapes_ok = bool(np.all(out["shapes"] == PATCH))
    lo, hi = float(out["vmin"].min()), float(out["vmax"].max())
    counts_ok = n > 0 and n % (PER_SCAN * EPOCHS) == 0
    ok = counts_ok and shapes_ok and lo >= -1e-6 and hi <= 1 + 1e-6 and bool(out["float32"].all())
    return ok, {"crops": n, "shapes_ok": shapes_ok, "range": [round(lo, 4), round(hi, 4)]}


def _n_crops(profile: Any) -> int:
    return min(N_SCANS, len(profile.pipeline_scans)) * PER_SCAN * EPOCHS


# ---------------------------------------------------------------- crops straight from dumps
DUMP_SCANS = 8
DUMP_CROPS = (2, 16)  # crops per scan visit: a few (lazy pays), many (a full read pays)
LAZY = "load(lazy=True): crops read from the dump"
EAGER = "load(): whole scans read, then cropped"


def _dump_inputs(data: Any) -> dict[str, Any]:
    """The pipeline scans preprocessed once (1 mm, HU window, nodules) and dumped (untimed)."""
    import ctflow as cf

    paths, csv = data.pipeline_paths()
    chosen = [Path(p) for p in sorted(paths)[:DUMP_SCANS]]
    out = Path(tempfile.mkdtemp(prefix="ctflow-bench-dumps-"))
    prep = (
        cf.Pipeline()
        .load()
        .fetch_nodules(csv)
        .unify_spacing(1.0)
        .normalize_hu(LO, HI)
        .dump(out / "items")
    )
    (cf.Dataset.from_paths(chosen) >> prep).run(batch_size=1)
    return {"dumps": sorted((out / "items").iterdir())}


def _from_dumps(lazy: bool, per_scan: int) -> Any:
    def build(inp: dict[str, Any], threads: int) -> Runner:
        from torch.utils.data import DataLoader

        import ctflow as cf
        from ctflow.interop.torch import PipelineDataset

        torch_threads(1)
        pipe = (
            cf.Pipeline()
            .load(lazy=lazy)
            .sample_nodules(per_scan, (PATCH,) * 3, share=0.5, pad_value=0.0)
            .random_flip()
        )

        def feed(dumps: list[Path]) -> _Tally:
            ds = PipelineDataset(
                cf.Dataset.from_paths(dumps) >> pipe,
                batch_size=1,
                n_epochs=1,
                prefetch=1 if threads > 1 else 0,
                n_workers=threads,
                seed=0,
                components=("images",),
            )
            tally = _Tally()
            for batch in DataLoader(ds, batch_size=None, num_workers=0):
                tally.add(batch["images"])
            return tally

        return Runner(lambda: feed(inp["dumps"]), _finish, warmup=lambda: feed(inp["dumps"][:1]))

    return build


def _validate_dumps(out: dict[str, np.ndarray]) -> tuple[bool, dict[str, Any]]:
    """Every crop 64^3 float32 in [0, 1]."""
    shapes_ok = bool(np.all(out["shapes"] == PATCH))
    lo, hi = float(out["vmin"].min()), float(out["vmax"].max())
    ok = shapes_ok and lo >= -1e-6 and hi <= 1 + 1e-6 and bool(out["float32"].all())
    return ok, {"crops": int(out["n"][0]), "range": [round(lo, 4), round(hi, 4)]}


def _dump_case(per_scan: int) -> Case:
    return Case(
        name=f"feed_dumps_{per_scan}",
        title=(
            f"nodule-centred 64^3 crops from dumps into a DataLoader ({DUMP_SCANS} LUNA16-sized "
            f"scans at 1 mm, {per_scan} crops per scan, 1 epoch): load(lazy=True) vs load()"
        ),
        inputs=_dump_inputs,
        contenders=[
            Contender("ctflow", LAZY, 2, _from_dumps(True, per_scan)),
            Contender("ctflow", EAGER, 2, _from_dumps(False, per_scan)),
        ],
        check=check,
        validate=_validate_dumps,
        items=lambda profile: min(DUMP_SCANS, len(profile.pipeline_scans)) * per_scan,
        parts=("pipeline",),
        reference=f"ctflow|{LAZY}|2",
        note="items are crops: the scans/s column is crops/s; dumps written before timing",
    )


CASES = [
    *(_dump_case(n) for n in DUMP_CROPS),
    Case(
        name="feed",
        title="training crops into a torch DataLoader (4 scans, 16 x 64^3 crops, 3 epochs)",
        inputs=_inputs,
        contenders=[
            Contender("ctflow", "PipelineDataset(cache, sample_crops, random_flip)", 2, _ctflow),
            Contender("TorchIO", "Queue(UniformSampler(64), samples_per_volume=16)", 2, _torchio),
            Contender("MONAI", "CacheDataset + RandSpatialCropSamplesd(16)", 2, _monai),
        ],
        check=check,
        validate=validate,
        items=_n_crops,
        parts=("pipeline",),
        note="items are crops: the scans/s column is crops/s; 3 epochs per timed call, cold cache",
        max_repeats=5,
    ),
]
