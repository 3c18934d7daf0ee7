"""The ``ctflow`` command.

Sub-commands
------------
``ctflow demo``
    Make a small synthetic LUNA16-like dataset, run the standard preprocessing pipeline over it
    (load -> fetch nodules -> unify spacing -> normalise HU -> nodule masks -> nodule crops ->
    dump) with a progress bar, print the report, and write a PNG preview.
``ctflow run PIPELINE.toml``
    Run a pipeline described in a TOML/YAML file (validated before any work starts), with a
    progress bar and a final report; exit code 1 when items failed (unless
    ``--allow-failures``).
``ctflow info PATH``
    Shape, dtype, geometry and HU range of a scan file, DICOM folder or ctflow dump item.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    import ctflow as cf
    from ctflow.synthetic import make_dataset
    from ctflow.viz import show_slice

    out = Path(args.out).resolve()
    t_start = time.perf_counter()
    print(f"ctflow {cf.__version__} demo — writing to {out}")
    shape = (args.z, args.size, args.size)
    print(
        f"1/4 making {args.n_scans} synthetic LUNA16-like scans {shape} "
        "(.mhd/.raw + annotations.csv)"
    )
    _, annotations_csv = make_dataset(
        out / "scans", n_scans=args.n_scans, shape=shape, seed=args.seed
    )
    annotations = cf.read_annotations(annotations_csv)
    ds = cf.Dataset.from_glob(str(out / "scans" / "*.mhd"))
    print(f"    {len(ds)} scans, {len(annotations)} nodules annotated")

    spacing = (1.0, 1.0, 1.0)
    prep = (
        cf.Pipeline()
        .load()
        .fetch_nodules(annotations)
        # a common in-plane size so scans of different fields of view share a batch
        .unify_spacing(spacing, shape=(None, args.size, args.size), order=1)
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
    counts = annotations["id"].value_counts()
    scan_id = str(counts.index[0]) if len(counts) else ds.ids[0]
    view = cf.Pipeline().load().fetch_nodules(annotations).unify_spacing(spacing).create_mask()
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


def _cmd_run(args: argparse.Namespace) -> int:
    import ctflow as cf
    from ctflow.config import read_pipeline_file

    spec = read_pipeline_file(args.pipeline)
    pipeline = spec.bound
    run = dict(spec.run)
    engine_name = str(run.pop("engine", "local"))
    engine: object = "local"
    if engine_name == "dask":
        engine = cf.DaskEngine()
    elif engine_name.startswith(("tcp://", "tls://", "ucx://")):
        engine = cf.DaskEngine(engine_name)
    elif engine_name != "local":
        raise cf.InvalidParameterError(
            f"{spec.path}: [run] engine must be 'local', 'dask' or a scheduler address; "
            f"got {engine_name!r}"
        )
    run.setdefault("progress", not args.quiet)
    print(f"ctflow run {spec.path}: {len(pipeline.dataset or [])} items")
    print("  " + repr(spec.pipeline).replace("\n", "\n  "))
    try:
        report = pipeline.run(engine=engine, **run)
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    print(report.summary())
    if report.failed and not args.allow_failures:
        return 1
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import ctflow as cf

    scan = cf.read_scan(args.path, args.fmt)
    img = scan.images
    g = scan.geometry
    print(f"source:    {scan.source}")
    print(f"shape:     {scan.shape} (z, y, x), {img.dtype}")
    print(f"spacing:   {tuple(round(float(v), 6) for v in g.spacing)} mm (z, y, x)")
    print(f"origin:    {tuple(round(float(v), 4) for v in g.origin)} mm (z, y, x), LPS")
    print(f"direction: {g.direction.round(6).tolist()}")
    print(
        f"values:    min {img.min()} max {img.max()} mean {float(img.mean(dtype=np.float64)):.1f}"
    )
    for key, value in scan.info.items():
        print(f"{key + ':':<10} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ctflow`` command."""
    parser = argparse.ArgumentParser(
        prog="ctflow", description="Fast, correct CT preprocessing pipelines for deep learning."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser(
        "demo", help="run the preprocessing pipeline on a small synthetic dataset"
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument(
        "--n-scans", type=int, default=6, help="number of synthetic scans (default 6)"
    )
    demo.add_argument("--size", type=int, default=256, help="in-plane size in voxels (default 256)")
    demo.add_argument("--z", type=int, default=120, help="slices per scan (default 120)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_cmd_demo)
    run = sub.add_parser("run", help="run a pipeline described in a TOML or YAML file")
    run.add_argument("pipeline", help="the pipeline file (.toml, .yaml)")
    run.add_argument("--allow-failures", action="store_true", help="exit 0 even if items failed")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)
    info = sub.add_parser("info", help="print geometry, shape and value range of a scan")
    info.add_argument("path", help="a scan file, DICOM series folder or ctflow dump item")
    info.add_argument(
        "--fmt", default=None, help="force a format (mhd, nifti, nrrd, dicom, ctflow)"
    )
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ctflow`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ctflow import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    from ctflow.errors import CTFlowError

    try:
        return int(args.func(args))
    except CTFlowError as exc:
        print(f"ctflow: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
