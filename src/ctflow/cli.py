"""The ``ctflow`` command.

Sub-commands (``ctflow COMMAND --help`` for each)
-------------------------------------------------
``ctflow demo``
    Make a small synthetic LUNA16-like dataset, run the standard preprocessing pipeline over it
    (load -> fetch nodules -> unify spacing -> normalise HU -> nodule masks -> nodule crops ->
    dump) with a progress bar, print the report, and write a PNG preview.
``ctflow run PIPELINE.toml``
    Run a pipeline described in a TOML/YAML file (validated before any work starts; errors name
    the line and the action), with a progress bar (items/s, ETA) and a final report (done /
    failed / skipped, time per action, output size); exit code 1 when items failed (unless
    ``--allow-failures``).
``ctflow info PATH``
    Shape, dtype, geometry, orientation, HU range of a scan file, DICOM folder or ctflow dump
    item; for DICOM folders also every series found and the files skipped (with reasons).
``ctflow show PATH``
    A PNG with axial / coronal / sagittal slices and a MIP, world-mm axes, with the lungs
    (``--lungs``), a label volume (``--mask``) and annotated nodules (``--annotations``)
    overlaid.
``ctflow convert SRC DST``
    Convert between NIfTI, MetaImage, NRRD and the ctflow format (geometry preserved).
``ctflow bench``
    Run the benchmark suite (from a source checkout).

Exit codes: 0 success, 1 a ctflow error (message on stderr) or failed items, 2 usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_parser", "main"]

_SCAN_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz", ".nrrd", ".nhdr")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _human_size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} GiB"  # pragma: no cover


def _tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``."""
    if path.is_file():
        return path.stat().st_size, 1
    total = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += (Path(root) / name).stat().st_size
                files += 1
            except OSError:  # pragma: no cover - removed while walking
                pass
    return total, files


# ---------------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    import ctflow as cf
    from ctflow.synthetic import make_dataset
    from ctflow.viz import show_slice

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


# ---------------------------------------------------------------------------------- run
def _dump_targets(pipeline: Any) -> list[Path]:
    """Destination folders of the pipeline's ``dump`` actions."""
    out = []
    for call in pipeline.actions:
        if call.name != "dump":
            continue
        dst = call.kwargs.get("dst", call.args[0] if call.args else None)
        if dst is not None:
            out.append(Path(dst))
    return out


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
    if args.quiet:
        run["progress"] = False
    else:
        run.setdefault("progress", True)
    print(f"ctflow run {spec.path}: {len(pipeline.dataset or [])} items, engine {engine_name}")
    print("  " + repr(spec.pipeline).replace("\n", "\n  "))
    try:
        report = pipeline.run(engine=engine, **run)
    except cf.CTFlowError as exc:
        where = spec.where(exc)
        if where is None:
            raise
        raise type(exc)(f"{where}: {exc}") from exc
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    print(report.summary())
    if report.skipped:
        shown = ", ".join(report.skipped[:10]) + (" ..." if len(report.skipped) > 10 else "")
        print(f"skipped (already in the output): {shown}")
    for dst in _dump_targets(spec.pipeline):
        if dst.exists():
            size, n_files = _tree_size(dst)
            n_items = sum(1 for p in dst.iterdir() if p.is_dir() and not p.name.startswith("."))
            print(f"output: {dst}: {n_items} items, {n_files} files, {_human_size(size)}")
        else:
            print(f"output: {dst}: nothing written")
    if report.failed and not args.allow_failures:
        print(
            f"ctflow run: {len(report.failed)} item(s) failed (exit code 1; "
            "--allow-failures to exit 0)",
            file=sys.stderr,
        )
        return 1
    return 0


# ---------------------------------------------------------------------------------- info
def _orientation_code(direction: np.ndarray[Any, Any]) -> str:
    """ITK's 3-letter code (x, y, z voxel axes) of the direction, e.g. "LPS"; "(oblique)"
    added when an axis is more than ~2.5 degrees off the world axes."""
    from ctflow.ops.orient import orientation_code

    code = orientation_code(direction)
    oblique = bool(np.any(np.abs(direction).max(axis=0) < 0.999))
    return f"{code}, oblique" if oblique else code


def _print_scan_summary(images: np.ndarray[Any, Any], geometry: Any) -> None:
    g = geometry
    shape = tuple(int(v) for v in images.shape)
    print(f"shape:       {shape} (z, y, x), {images.dtype}")
    print(f"spacing:     {tuple(round(float(v), 6) for v in g.spacing)} mm (z, y, x)")
    print(f"origin:      {tuple(round(float(v), 4) for v in g.origin)} mm (z, y, x), LPS")
    ident = np.allclose(g.direction, np.eye(3))
    direction = "identity" if ident else str(g.direction.round(6).tolist())
    print(f"direction:   {direction} (orientation {_orientation_code(g.direction)})")
    corners = np.array(
        [[a, b, c] for a in (0, shape[0] - 1) for b in (0, shape[1] - 1) for c in (0, shape[2] - 1)]
    )
    world = g.voxel_to_world(corners)
    lo, hi = world.min(axis=0), world.max(axis=0)
    box = ", ".join(f"{n} {a:.1f}..{b:.1f}" for n, a, b in zip("zyx", lo, hi, strict=True))
    print(f"extent:      {box} mm (voxel centres)")
    size = np.asarray(shape) * g.spacing
    print(f"size:        {tuple(round(float(v), 1) for v in size)} mm")
    flat = images.reshape(-1)
    sample = flat[:: max(1, flat.size // 2_000_000)]
    p1, p50, p99 = np.percentile(sample, [1, 50, 99])
    print(
        f"values:      min {images.min()} max {images.max()} "
        f"mean {float(images.mean(dtype=np.float64)):.1f}; "
        f"percentiles 1/50/99: {p1:.0f} / {p50:.0f} / {p99:.0f}"
    )
    air = float(np.count_nonzero(sample < -400)) / max(sample.size, 1)
    print(f"             {100 * air:.0f} % of voxels below -400 HU")


def _print_info_value(key: str, value: Any) -> None:
    if isinstance(value, list | tuple) and value and isinstance(value[0], dict):
        print(f"{key}: {len(value)}")
        for entry in value[:50]:
            print("  - " + ", ".join(f"{k}={v}" for k, v in entry.items()))
        if len(value) > 50:
            print(f"  ... and {len(value) - 50} more")
    elif isinstance(value, list | tuple):
        print(f"{key}: {len(value)}" if len(value) > 5 else f"{key}: {list(value)}")
        if len(value) > 5:
            for entry in value[:50]:
                print(f"  - {entry}")
    else:
        print(f"{key + ':':<12} {value}")


def _read_scan(path: Path, kind: str, args: argparse.Namespace) -> Any:
    """``read_scan`` with the command's DICOM options (``--allow-uneven``)."""
    import ctflow as cf

    if kind == "dicom" and getattr(args, "allow_uneven", False):
        return cf.read_scan(path, kind, allow_uneven=True)
    return cf.read_scan(path, kind)


def _print_warnings(command: str, info: dict[str, Any]) -> None:
    from ctflow.batch import _reader_warnings

    for message in _reader_warnings(info):
        print(f"ctflow {command}: warning: {message}", file=sys.stderr)


def _cmd_info(args: argparse.Namespace) -> int:
    from ctflow.errors import CTFlowError
    from ctflow.io.reader import detect_format

    path = Path(args.path)
    kind = args.fmt or detect_format(path)
    print(f"source:      {path}")
    print(f"format:      {kind}")
    read_error: CTFlowError | None = None
    if kind == "dicom":
        from ctflow.io.dicom import scan_dicom_folder

        series = scan_dicom_folder(path)
        print(f"series:      {len(series)} found")
        for s in series:
            print(
                f"  - {s.uid or '(no uid)'}: {s.n_files} files, modality {s.modality or '?'}, "
                f"{s.rows}x{s.cols}, thickness {s.slice_thickness}, "
                f"localizers {s.n_localizers}, description {s.description!r}"
            )
    if kind == "ctflow":
        from ctflow.io.store import read_item

        item = read_item(path)
        print(f"id:          {item.id}")
        comps = ", ".join(f"{k} {v.dtype}" for k, v in item.components.items())
        print(f"components:  {comps}")
        print(f"nodules:     {len(item.nodules)}")
        print(f"from:        {item.source}")
        _print_scan_summary(item.components["images"], item.geometry)
        return 0
    try:
        scan = _read_scan(path, kind, args)
    except CTFlowError as exc:
        if kind != "dicom":
            raise
        read_error = exc
    if kind == "dicom":
        # what the reader left out of the volume: non-DICOM files, localizers, other series
        skipped = series.skipped if read_error is not None else scan.skipped
        print(f"skipped:     {len(skipped)} files")
        for entry in skipped[:50]:
            print(f"  - {Path(entry['file']).name}: {entry['reason']}")
    if read_error is not None:
        print(f"volume:      not readable: {read_error}")
        return 1
    _print_scan_summary(scan.images, scan.geometry)
    for key, value in scan.info.items():
        if key in ("format",) or (kind == "dicom" and key in ("series", "skipped")):
            continue
        _print_info_value(key, value)
    return 0


# ---------------------------------------------------------------------------------- show
def _item_id(path: Path) -> str:
    from ctflow.dataset import _stem

    return _stem(path, path.is_dir())


def _load_for_show(path: Path, fmt: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """images, geometry, masks, lungs, nodules of a scan or dump item."""
    from ctflow.io.reader import detect_format

    kind = fmt or detect_format(path)
    if kind == "ctflow":
        from ctflow.io.store import read_item

        item = read_item(path)
        return {
            "id": item.id,
            "images": item.components["images"],
            "geometry": item.geometry,
            "masks": item.components.get("masks"),
            "lungs": item.components.get("lungs"),
            "nodules": item.nodules,
        }
    scan = _read_scan(path, kind, args)
    _print_warnings("show", scan.info)
    return {
        "id": _item_id(path),
        "images": scan.images,
        "geometry": scan.geometry,
        "masks": None,
        "lungs": None,
        "nodules": None,
    }


def _cmd_show(args: argparse.Namespace) -> int:
    import ctflow as cf
    from ctflow.viz import show_scan

    path = Path(args.path)
    data = _load_for_show(path, args.fmt, args)
    item_id = args.id or data["id"]
    images, geometry = data["images"], data["geometry"]
    notes = []
    nodules = data["nodules"]
    if nodules is not None and not args.annotations:
        notes.append(f"{len(nodules)} stored nodule(s)")
    for comp in ("masks", "lungs"):
        if data[comp] is not None:
            notes.append(f"stored {comp}: {int(np.count_nonzero(data[comp]))} voxels")
    if args.annotations:
        table = cf.read_annotations(args.annotations)
        nodules = table[table["id"] == item_id]
        if len(nodules) == 0:
            ids = sorted(set(table["id"]))
            shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
            print(
                f"ctflow show: warning: {args.annotations} has no nodule for id {item_id!r} "
                f"(ids: {shown}); pass --id",
                file=sys.stderr,
            )
        notes.append(f"{len(nodules)} annotated nodule(s)")
    masks = data["masks"]
    if args.mask:
        label = cf.read_scan(args.mask)
        if label.images.shape != images.shape:
            raise cf.InvalidScanError(
                f"{args.mask}: the mask has shape {label.images.shape}; "
                f"the scan {path} has {images.shape} (they must share the grid)"
            )
        if not np.allclose(label.geometry.origin, geometry.origin, atol=1e-3) or not np.allclose(
            label.geometry.spacing, geometry.spacing, atol=1e-4
        ):
            raise cf.InvalidScanError(
                f"{args.mask}: the mask's geometry {label.geometry!r} differs from the scan's "
                f"{geometry!r}"
            )
        masks = (label.images > 0).astype(np.uint8)
        notes.append(f"mask: {int(masks.sum())} voxels")
    lungs = data["lungs"]
    if args.lungs:
        from ctflow.ops.lungs import segment_lungs

        t0 = time.perf_counter()
        lungs = segment_lungs(images, geometry, n_threads=_cores())
        ml = float(lungs.sum()) * float(np.prod(geometry.spacing)) / 1000.0
        notes.append(f"lungs: {ml:.0f} mL ({time.perf_counter() - t0:.1f} s)")
    window: tuple[float, float] | None = (-1000.0, 400.0)
    if args.window:
        window = (float(args.window[0]), float(args.window[1]))
    if args.window_none:
        window = None
    fig = show_scan(
        images,
        geometry,
        masks=masks,
        lungs=lungs,
        nodules=nodules,
        center=args.center,
        window=window,
        mip_mm=args.mip_mm,
        title=f"{item_id}: {images.shape} voxels, spacing "
        f"({', '.join(f'{v:.3g}' for v in geometry.spacing)}) mm",
    )
    out = Path(args.out) if args.out else Path(f"{item_id}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out} ({'; '.join(notes) if notes else 'no overlays'})")
    return 0


# ---------------------------------------------------------------------------------- convert
def _is_scan_file(path: Path) -> bool:
    return path.name.lower().endswith(_SCAN_SUFFIXES)


def write_scan_file(
    path: Path, images: np.ndarray[Any, Any], geometry: Any, *, compress: bool = False
) -> Path:
    """Write a scan file whose format follows the suffix (.mhd/.mha/.nii/.nii.gz/.nrrd)."""
    if not path.name.lower().endswith((".nrrd", ".nhdr")):
        from ctflow.io.writer import write_scan

        return write_scan(path, images, geometry, compress=compress and "mh" in path.suffix)
    # NRRD: ITK's writer (ctflow.io.writer covers MetaImage and NIfTI)
    import SimpleITK as sitk

    from ctflow.errors import CorruptFileError
    from ctflow.geometry import direction_to_sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(images))
    img.SetSpacing([float(v) for v in geometry.spacing[::-1]])
    img.SetOrigin([float(v) for v in geometry.origin[::-1]])
    img.SetDirection(direction_to_sitk(geometry.direction))
    try:
        sitk.WriteImage(img, str(path), useCompression=True)
    except RuntimeError as exc:
        raise CorruptFileError(f"{path}: cannot write ({str(exc).strip()[:200]})") from exc
    return path


def _cmd_convert(args: argparse.Namespace) -> int:
    import ctflow as cf
    from ctflow.io.reader import detect_format
    from ctflow.io.store import read_item, write_item

    src, dst = Path(args.src), Path(args.dst)
    if args.orient is not None:  # a bad code fails before anything is read
        from ctflow.ops.orient import orientation_transform

        orientation_transform(np.eye(3), args.orient)
    kind = args.fmt or detect_format(src)
    nodules = None
    components: dict[str, Any]
    if kind == "ctflow":
        item = read_item(src)
        components, geometry, nodules = item.components, item.geometry, item.nodules
    else:
        scan = _read_scan(src, kind, args)
        _print_warnings("convert", scan.info)
        components, geometry = {"images": scan.images}, scan.geometry
    if args.orient is not None:
        from ctflow.ops.orient import reorient

        reoriented = {}
        for name, arr in components.items():
            view, new_geometry = reorient(arr, geometry, args.orient)
            reoriented[name] = np.ascontiguousarray(view)
        components, geometry = reoriented, new_geometry
    to = args.to or ("file" if _is_scan_file(dst) else "ctflow")
    if to == "ctflow":
        if args.component != "images":
            raise cf.InvalidParameterError(
                "convert: --component applies to writing one scan file; a ctflow item keeps "
                "every component"
            )
        if nodules is not None and "id" not in nodules.columns:
            nodules = nodules.assign(id=dst.name)
        written = write_item(
            dst.parent, dst.name, components, geometry, nodules=nodules, source=str(src)
        )
        assert written is not None
        out = written
    elif to == "file":
        if not _is_scan_file(dst):
            raise cf.UnsupportedFormatError(
                f"convert: cannot tell the output format of {dst}; use a name ending in "
                f"{', '.join(_SCAN_SUFFIXES[:5])} or a folder name for the ctflow format"
            )
        arr = components.get(args.component)
        if arr is None:
            raise cf.InvalidParameterError(
                f"convert: {src} has no component {args.component!r}; it has {sorted(components)}"
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        out = write_scan_file(dst, arr, geometry, compress=args.compress)
    else:  # pragma: no cover - argparse restricts choices
        raise cf.InvalidParameterError(f"convert: --to must be 'file' or 'ctflow'; got {to!r}")
    size, _ = _tree_size(out)
    arr = components["images"]
    print(f"{src} ({kind}) -> {out} ({_human_size(size)}): {arr.shape} {arr.dtype}, {geometry!r}")
    return 0


# ---------------------------------------------------------------------------------- bench
def find_benchmarks(start: Path | None = None) -> Path | None:
    """The source checkout's root (holding ``benchmarks/run.py``) above ``start``, or None."""
    here = (start or Path(__file__)).resolve()
    for folder in [here, *here.parents][:5]:
        if (folder / "benchmarks" / "run.py").is_file() and (folder / "pyproject.toml").is_file():
            return folder
    return None


def _cmd_bench(args: argparse.Namespace) -> int:
    root = find_benchmarks()
    if root is None:
        print(
            "ctflow bench: the benchmark suite lives in ctflow's source checkout (benchmarks/), "
            "which this installation does not have. Clone the repository and run `make bench` "
            "(or `ctflow bench` from the checkout's environment).",
            file=sys.stderr,
        )
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module("benchmarks.run")
    main = module.main
    forwarded = [a for a in args.args if a != "--"]
    result = main(forwarded) if inspect.signature(main).parameters else main()
    return int(result or 0)


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ctflow`` command."""
    parser = argparse.ArgumentParser(
        prog="ctflow",
        description="Fast, correct CT preprocessing pipelines for deep learning.",
        epilog="`ctflow COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the preprocessing pipeline on a small synthetic dataset",
        description="Make synthetic LUNA16-like scans, preprocess them to nodule crops in the "
        "ctflow format, print the report and write preview.png.",
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument(
        "--n-scans", type=int, default=6, help="number of synthetic scans (default 6)"
    )
    demo.add_argument("--size", type=int, default=256, help="in-plane size in voxels (default 256)")
    demo.add_argument("--z", type=int, default=120, help="slices per scan (default 120)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser(
        "run",
        help="run a pipeline described in a TOML or YAML file",
        description="Validate a pipeline file, run it with a progress bar and print a report. "
        "Exit code 1 when items failed, unless --allow-failures.",
    )
    run.add_argument("pipeline", help="the pipeline file (.toml, .yaml)")
    run.add_argument("--allow-failures", action="store_true", help="exit 0 even if items failed")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    info = sub.add_parser(
        "info",
        help="print geometry, shape, HU range, DICOM series and skipped files of a scan",
        description="Describe a scan file, a DICOM series folder or a ctflow dump item.",
    )
    info.add_argument("path", help="a scan file, DICOM series folder or ctflow dump item")
    info.add_argument(
        "--fmt", default=None, help="force a format (mhd, nifti, nrrd, dicom, ctflow)"
    )
    info.add_argument(
        "--allow-uneven",
        action="store_true",
        help="DICOM folders: resample missing slices / uneven spacing onto a regular grid "
        "(reported as a warning) instead of refusing the series",
    )
    info.set_defaults(func=_cmd_info)

    show = sub.add_parser(
        "show",
        help="write a PNG: 3 slices + a MIP with lungs, masks and nodules overlaid",
        description="Draw axial, coronal and sagittal slices through the largest nodule (or "
        "--center) and an axial MIP, in world millimetres, with overlays.",
    )
    show.add_argument("path", help="a scan file, DICOM series folder or ctflow dump item")
    show.add_argument("--out", default=None, help="PNG to write (default: ID.png)")
    show.add_argument(
        "--annotations", default=None, help="LUNA16-style nodule CSV (world mm) to overlay"
    )
    show.add_argument(
        "--id", default=None, help="the scan's id in the annotations (default: the file stem)"
    )
    show.add_argument("--lungs", action="store_true", help="segment and overlay the lungs")
    show.add_argument(
        "--mask", default=None, help="a label volume on the same grid to overlay (e.g. a lesion)"
    )
    show.add_argument(
        "--center",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=None,
        help="world point (mm, LPS) where the slices cross (default: the largest nodule)",
    )
    show.add_argument(
        "--window",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="grey-level window in HU (default -1000 400)",
    )
    show.add_argument(
        "--auto-window",
        dest="window_none",
        action="store_true",
        help="use the data's range (for normalised images)",
    )
    show.add_argument(
        "--mip-mm", type=float, default=20.0, help="MIP slab thickness in mm (default 20)"
    )
    show.add_argument("--fmt", default=None, help="force the input format")
    show.add_argument(
        "--allow-uneven",
        action="store_true",
        help="DICOM folders: resample missing slices / uneven spacing onto a regular grid "
        "(reported as a warning) instead of refusing the series",
    )
    show.set_defaults(func=_cmd_show)

    convert = sub.add_parser(
        "convert",
        help="convert a scan between NIfTI, MetaImage, NRRD and the ctflow format",
        description="Read SRC (any format ctflow reads) and write DST: a .mhd/.mha/.nii/"
        ".nii.gz/.nrrd file, or a ctflow item folder (any other name). Geometry is kept.",
    )
    convert.add_argument("src", help="scan file, DICOM folder or ctflow item")
    convert.add_argument("dst", help="output file (format from the suffix) or ctflow item folder")
    convert.add_argument(
        "--to",
        choices=("file", "ctflow"),
        default=None,
        help="output kind (default: 'file' for scan suffixes, else 'ctflow')",
    )
    convert.add_argument(
        "--component",
        default="images",
        choices=("images", "masks", "lungs"),
        help="which component of a ctflow item to write to a scan file (default images)",
    )
    convert.add_argument(
        "--compress", action="store_true", help="zlib-compressed MetaImage data (.zraw)"
    )
    convert.add_argument("--fmt", default=None, help="force the input format")
    convert.add_argument(
        "--allow-uneven",
        action="store_true",
        help="DICOM folders: resample missing slices / uneven spacing onto a regular grid "
        "(reported as a warning) instead of refusing the series",
    )
    convert.add_argument(
        "--orient",
        default=None,
        metavar="CODE",
        help="reorient the axes to a 3-letter DICOM code (e.g. LPS, RAS) before writing: "
        "exact (axes permuted/flipped, no interpolation), world positions kept",
    )
    convert.set_defaults(func=_cmd_convert)

    bench = sub.add_parser(
        "bench",
        help="run the benchmark suite (source checkout)",
        description="Run benchmarks/run.py of ctflow's source checkout; every argument after "
        "`bench` is passed to it (`ctflow bench --list`, `ctflow bench --quick`; "
        "`ctflow bench -- --help` for its options).",
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for benchmarks.run")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ctflow`` command; returns the exit code."""
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["bench"] and raw[1:2] not in (["-h"], ["--help"]):
        # everything after `bench` belongs to the benchmark suite's own options
        args = argparse.Namespace(command="bench", version=False, func=_cmd_bench, args=raw[1:])
    else:
        args = parser.parse_args(raw)
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
    except KeyboardInterrupt:  # pragma: no cover - interactive
        print("ctflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # pragma: no cover - `ctflow info x | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
