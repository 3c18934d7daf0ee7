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

Sources and destinations (``info``, ``show``, ``convert``, ``run``, and the pipeline file of
``run``) may be fsspec URLs (``s3://``, ``gs://``, ``az://``, ``http(s)://``), with their options
from ``--storage-options JSON|@FILE`` or from fsspec's own configuration (``FSSPEC_S3='{...}'``)
and the storage's usual credentials (see :mod:`ctflow.cli.common`); credentials are never
printed.

Exit codes: 0 success, 1 a ctflow error (message on stderr) or failed items, 2 usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ctflow.cli.bench import _cmd_bench, find_benchmarks
from ctflow.cli.common import add_storage_options
from ctflow.cli.convert import _cmd_convert, write_scan_file
from ctflow.cli.demo import _cmd_demo
from ctflow.cli.info import _cmd_info
from ctflow.cli.run import _cmd_run
from ctflow.cli.show import _cmd_show

__all__ = ["build_parser", "find_benchmarks", "main", "write_scan_file"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``ctflow`` command."""
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
    demo.add_argument(
        "--out", default="demo_output", help="local output folder (default: demo_output)"
    )
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
    run.add_argument("pipeline", help="the pipeline file (.toml, .yaml; a path or a URL)")
    run.add_argument("--allow-failures", action="store_true", help="exit 0 even if items failed")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_storage_options(run)
    run.set_defaults(func=_cmd_run)

    info = sub.add_parser(
        "info",
        help="print geometry, shape, HU range, DICOM series and skipped files of a scan",
        description="Describe a scan file, a DICOM series folder or a ctflow dump item.",
    )
    info.add_argument(
        "path", help="a scan file, DICOM series folder or ctflow dump item (a path or a URL)"
    )
    info.add_argument(
        "--fmt", default=None, help="force a format (mhd, nifti, nrrd, dicom, ctflow)"
    )
    info.add_argument(
        "--allow-uneven",
        action="store_true",
        help="DICOM folders: resample missing slices / uneven spacing onto a regular grid "
        "(reported as a warning) instead of refusing the series",
    )
    add_storage_options(info)
    info.set_defaults(func=_cmd_info)

    show = sub.add_parser(
        "show",
        help="write a PNG: 3 slices + a MIP with lungs, masks and nodules overlaid",
        description="Draw axial, coronal and sagittal slices through the largest nodule (or "
        "--center) and an axial MIP, in world millimetres, with overlays.",
    )
    show.add_argument(
        "path", help="a scan file, DICOM series folder or ctflow dump item (a path or a URL)"
    )
    show.add_argument("--out", default=None, help="PNG to write, a path or a URL (default: ID.png)")
    show.add_argument(
        "--annotations",
        default=None,
        help="LUNA16-style nodule CSV (world mm) to overlay (a path or a URL)",
    )
    show.add_argument(
        "--id", default=None, help="the scan's id in the annotations (default: the file stem)"
    )
    show.add_argument("--lungs", action="store_true", help="segment and overlay the lungs")
    show.add_argument(
        "--mask",
        default=None,
        help="a label volume on the same grid to overlay (e.g. a lesion; a path or a URL): "
        "binary in red, a label map with one colour per label and a legend, probabilities as "
        "a heat overlay",
    )
    show.add_argument(
        "--label-names",
        default=None,
        metavar="V=NAME,...",
        help="names of mask label values for the legend, e.g. 1=body,2=lung",
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
    add_storage_options(show)
    show.set_defaults(func=_cmd_show)

    convert = sub.add_parser(
        "convert",
        help="convert a scan between NIfTI, MetaImage, NRRD and the ctflow format",
        description="Read SRC (any format ctflow reads) and write DST: a .mhd/.mha/.nii/"
        ".nii.gz/.nrrd file, or a ctflow item folder (any other name). Geometry is kept.",
    )
    convert.add_argument("src", help="scan file, DICOM folder or ctflow item (a path or a URL)")
    convert.add_argument(
        "dst",
        help="output file (format from the suffix) or ctflow item folder (a path or a URL)",
    )
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
    add_storage_options(convert)
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
