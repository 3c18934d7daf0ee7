"""``ctflow demo``: synthetic scans of mixed sizes -> nodule crops, report, preview."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ctflow.errors import MissingDependencyError


def _cmd_demo(args: argparse.Namespace) -> int:
    import ctflow as cf
    from ctflow.io.remote import is_url
    from ctflow.synthetic import make_dataset

    if is_url(args.out):
        raise cf.InvalidParameterError(
            f"demo: --out must be a local folder (the demo writes its scans, crops and preview "
            f"there); got the URL {args.out}: `ctflow convert` or a pipeline's dump() writes to "
            f"URLs"
        )
    out = Path(args.out).resolve()
    t_start = time.perf_counter()
    print(f"ctflow {cf.__version__} demo — writing to {out}")
    shape = (args.z, args.size, args.size)
    print(
        f"1/4 making {args.n_scans} synthetic LUNA16-like scans of mixed sizes around {shape}, "
        "stored LPS and RAS (.mhd/.raw, .nii.gz + annotations.csv)"
    )
    paths, annotations_csv = make_dataset(
        out / "scans", n_scans=args.n_scans, shape=shape, seed=args.seed, mixed=True
    )
    annotations = cf.read_annotations(annotations_csv)
    ds = cf.Dataset.from_paths(paths)
    print(f"    {len(ds)} scans, {len(annotations)} nodules annotated")

    spacing = (1.0, 1.0, 1.0)
    prep = (
        cf.Pipeline()
        .load()  # scans of any size share a batch
        .reorient("LPS")  # one orientation for the network, exact (axes flipped, no resampling)
        .fetch_nodules(annotations)
        .unify_spacing(spacing, order=1)  # 1 mm; each scan keeps its own field of view
        .normalize_hu(-1000, 400)
        .create_mask()
        .sample_nodules(batch_size=8, nodule_size=(32, 48, 48), share=0.5, variance=(4, 9, 9))
        .dump(out / "crops")
    )
    print("2/4 pipeline:")
    print("    " + repr(prep).replace("\n", "\n    "))
    report = (ds >> prep).run(
        batch_size=2, shuffle=False, prefetch=1, progress=True, on_error="skip", seed=args.seed
    )
    print("3/4 report:")
    print("    " + report.summary().replace("\n", "\n    "))
    n_crops = sum(1 for p in (out / "crops").iterdir() if p.is_dir() and not p.name.startswith("."))
    print(f"    {n_crops} crops written to {out / 'crops'}")

    print("4/4 preview: the scan with the most nodules, at 1 mm, slice through a nodule")
    try:
        from ctflow.viz import show_slice
    except MissingDependencyError as exc:  # a core install: pictures are the [viz] extra
        print(f"    preview skipped: {exc}")
        print(f"done in {time.perf_counter() - t_start:.1f} s")
        return 0 if not report.failed else 1
    counts = annotations["id"].value_counts()
    scan_id = str(counts.index[0]) if len(counts) else ds.ids[0]
    view = (
        cf.Pipeline()
        .load()
        .reorient("LPS")  # show_slice draws the array as stored: LPS is the radiological view
        .fetch_nodules(annotations)
        .unify_spacing(spacing)
        .create_mask()
    )
    batch = view.execute(ds.create_batch([scan_id]))
    item = batch[0]
    nodules = [tuple(r) for r in item.nodules[["z", "y", "x", "diameter"]].to_numpy(np.float64)]
    z = None
    if nodules:
        z = int(np.rint(item.world_to_voxel(np.array(nodules[0][:3]))[0]))
    assert item.images is not None
    fig = show_slice(
        item.images,
        masks=item.masks,
        geometry=item.geometry,
        z=z,
        nodules=nodules,
        title=f"{scan_id[-12:]}: nodule mask (red) and annotation (yellow)",
    )
    png = out / "preview.png"
    fig.savefig(png)
    print(f"    preview: {png}")
    print(f"done in {time.perf_counter() - t_start:.1f} s")
    return 0 if not report.failed else 1
