"""``ctflow info PATH``: geometry, orientation, extent, values; DICOM series and skipped files."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.cli.common import LocalSource, _read_scan


def _orientation_code(direction: np.ndarray[Any, Any]) -> str:
    """Return ITK's 3-letter code (x, y, z voxel axes) of the direction, e.g. "LPS".

    ", oblique" is added when an axis is more than ~2.5 degrees off the world axes.
    """
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


def _print_info_value(key: str, value: Any, shown: Callable[[str], str] = str) -> None:
    """Print one ``info`` entry; ``shown`` names a fetched copy by its URL."""
    lines: list[str] = []
    if isinstance(value, list | tuple) and value and isinstance(value[0], dict):
        lines.append(f"{key}: {len(value)}")
        lines.extend("  - " + ", ".join(f"{k}={v}" for k, v in e.items()) for e in value[:50])
        if len(value) > 50:
            lines.append(f"  ... and {len(value) - 50} more")
    elif isinstance(value, list | tuple):
        lines.append(f"{key}: {len(value)}" if len(value) > 5 else f"{key}: {list(value)}")
        if len(value) > 5:
            lines.extend(f"  - {entry}" for entry in value[:50])
    else:
        lines.append(f"{key + ':':<12} {value}")
    for line in lines:
        print(shown(line))


def _cmd_info(args: argparse.Namespace) -> int:
    from ctflow.cli.common import local_source, use_storage_options

    use_storage_options(args, [args.path])
    print(f"source:      {args.path}")
    with local_source(args.path) as src:
        return _describe(src, args)


def _describe(src: LocalSource, args: argparse.Namespace) -> int:
    """Print what ``ctflow info`` says of a source (a URL's fetched copy named by its URL)."""
    from ctflow.errors import CTFlowError
    from ctflow.io.reader import detect_format

    path = src.path
    kind = args.fmt or detect_format(path)
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
        print(f"volume:      not readable: {src.shown(str(read_error))}")
        return 1
    _print_scan_summary(scan.images, scan.geometry)
    for key, value in scan.info.items():
        if key in ("format",) or (kind == "dicom" and key in ("series", "skipped")):
            continue
        _print_info_value(key, value, src.shown)
    return 0
