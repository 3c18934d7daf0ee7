"""Tutorial 1 — LUNA16-style preprocessing: scans + nodule table -> training crops on disk.

Run it:  python docs/tutorials/luna16_crops.py [--out DIR] [--quick]

With real LUNA16 data, replace the first step by your folder and its annotations.csv:
``cf.Dataset.from_glob("luna/subset*/*.mhd")`` and ``cf.read_annotations("luna/annotations.csv")``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import ctflow as cf
from ctflow.synthetic import make_dataset
from ctflow.viz import show_item


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tutorial_output/luna16", help="working folder")
    parser.add_argument("--quick", action="store_true", help="tiny data (what CI runs)")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # 1. Data: LUNA16-like scans (.mhd/.raw, world-mm geometry) and annotations.csv
    #    (seriesuid, coordX, coordY, coordZ, diameter_mm — world LPS millimetres).
    n_scans, shape = (3, (48, 128, 128)) if args.quick else (8, (160, 320, 320))
    make_dataset(out / "luna", n_scans=n_scans, shape=shape, seed=0)
    dataset = cf.Dataset.from_glob(str(out / "luna" / "*.mhd"))  # id = file stem = seriesuid
    annotations = cf.read_annotations(out / "luna" / "annotations.csv")
    print(f"{len(dataset)} scans, {len(annotations)} annotated nodules")
    print(annotations.head())

    # 2. The pipeline: a lazy value; nothing runs yet, every action is checked now.
    crop = (16, 32, 32) if args.quick else (32, 64, 64)
    prep = (
        cf.Pipeline()
        .load()  # int16 HU + geometry (spacing, origin, direction)
        .fetch_nodules(annotations)  # this batch's rows of the table, world mm
        .unify_spacing((1.0, 1.0, 1.0), shape=(None, *shape[1:]))  # 1 mm voxels, common Y, X
        .create_mask()  # nodule spheres -> masks (uint8), in world mm
        .normalize_hu(-1000, 400)  # clip and scale to [0, 1] float32
        .sample_nodules(batch_size=8, nodule_size=crop, share=0.5, variance=(4, 9, 9))
        .dump(out / "crops", skip_existing=True)  # atomic per item: safe to resume
    )
    print(prep)

    # 3. Run it over the whole dataset: items in parallel inside each batch, one batch
    #    prefetched, failures reported instead of stopping the run.
    report = (dataset >> prep).run(batch_size=2, prefetch=1, progress=True, on_error="skip", seed=0)
    print(report.summary())
    assert not report.failed, report.failed

    # 4. Read the crops back: every dump item is a folder (meta.json + <component>.<hash>.b2nd).
    crops = cf.Dataset.from_glob(str(out / "crops" / "*"), dirs=True)
    batch = crops.create_batch(crops.ids[:8]).load()
    print(f"{len(crops)} crops on disk; a batch of 8: {batch}")
    x = batch.unstack("images")  # (N, Z, Y, X) view, float32 in [0, 1]
    y = batch.unstack("masks").reshape(len(batch), -1).max(axis=1)  # 1 = crop shows a nodule
    print(f"images {x.shape} {x.dtype}; nodule crops in this batch: {int(y.sum())}")
    assert x.dtype == np.float32 and x.shape[1:] == crop

    # 5. Look at one nodule crop: slices and MIP in world mm, mask and annotation overlaid.
    k = int(np.argmax(y)) if y.any() else 0
    fig = show_item(batch[k], window=(0.0, 1.0), mip_mm=8)
    fig.savefig(out / "crop.png")
    print(f"picture of crop {batch.ids[k]}: {out / 'crop.png'}")


if __name__ == "__main__":
    main()
