"""``ctflow convert SRC DST``: between MetaImage, NIfTI, NRRD and the ctflow format."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.cli.common import (
    SCAN_SUFFIXES,
    LocalSource,
    _human_size,
    _print_warnings,
    _read_scan,
    _tree_size,
)
from ctflow.io.remote import is_url


def _is_scan_file(path: Path) -> bool:
    return path.name.lower().endswith(SCAN_SUFFIXES)


def write_scan_file(
    path: Path, images: np.ndarray[Any, Any], geometry: Any, *, compress: bool = False
) -> Path:
    """Write a scan file whose format follows the suffix (.mhd/.mha/.nii/.nii.gz/.nrrd)."""
    if not path.name.lower().endswith((".nrrd", ".nhdr")):
        from ctflow.io.writer import write_scan

        return write_scan(path, images, geometry, compress=compress and "mh" in path.suffix)
    # NRRD: ITK's writer (ctflow.io.writer covers MetaImage and NIfTI)
    from ctflow.deps import optional_import
    from ctflow.errors import CorruptFileError
    from ctflow.geometry import direction_to_sitk

    sitk = optional_import("SimpleITK", "writing NRRD files")

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
    from ctflow.cli.common import local_source, use_storage_options

    use_storage_options(args, [args.src, args.dst])
    if args.orient is not None:  # a bad code fails before anything is read
        from ctflow.ops.orient import orientation_transform

        orientation_transform(np.eye(3), args.orient)
    with local_source(args.src) as src:
        kind, components, geometry, nodules = _read_source(src, args)
    if args.orient is not None:
        components, geometry = _reoriented(components, geometry, args.orient)
    size, out = _write_output(args, components, geometry, nodules)
    arr = components["images"]
    print(
        f"{args.src} ({kind}) -> {out} ({_human_size(size)}): {arr.shape} {arr.dtype}, {geometry!r}"
    )
    return 0


def _named(source: str) -> str:
    """Return how a source is named in records and messages: a URL as given, a path as a Path."""
    return source if is_url(source) else str(Path(source))


def _read_source(
    src: LocalSource, args: argparse.Namespace
) -> tuple[str, dict[str, Any], Any, Any]:
    """Return the format, components, geometry and nodule table (or None) of the source."""
    from ctflow.io.reader import detect_format
    from ctflow.io.store import read_item

    kind = args.fmt or detect_format(src.path)
    if kind == "ctflow":
        item = read_item(src.path)
        return kind, dict(item.components), item.geometry, item.nodules
    scan = _read_scan(src.path, kind, args)
    _print_warnings("convert", scan.info, src.shown)
    return kind, {"images": scan.images}, scan.geometry, None


def _reoriented(components: dict[str, Any], geometry: Any, code: str) -> tuple[dict[str, Any], Any]:
    """Return every component with its axes brought to ``code`` (exact), and the new geometry."""
    from ctflow.ops.orient import reorient

    out = {}
    new_geometry = geometry
    for name, arr in components.items():
        view, new_geometry = reorient(arr, geometry, code)
        out[name] = np.ascontiguousarray(view)
    return out, new_geometry


def _write_output(
    args: argparse.Namespace, components: dict[str, Any], geometry: Any, nodules: Any
) -> tuple[int, str]:
    """Write DST (a path, or a URL: written locally, then uploaded); its size and name."""
    import ctflow as cf
    from ctflow.cli.common import local_destination
    from ctflow.io.remote import local_stem
    from ctflow.io.store import write_item

    dst = str(args.dst)
    name = local_stem(dst) if is_url(dst) else Path(dst).name
    to = args.to or ("file" if _is_scan_file(Path(name)) else "ctflow")
    if to == "ctflow" and args.component != "images":
        raise cf.InvalidParameterError(
            "convert: --component applies to writing one scan file; a ctflow item keeps "
            "every component"
        )
    if to == "file" and not _is_scan_file(Path(name)):
        raise cf.UnsupportedFormatError(
            f"convert: cannot tell the output format of {dst}; use a name ending in "
            f"{', '.join(SCAN_SUFFIXES[:5])} or a folder name for the ctflow format"
        )
    arr = components.get(args.component)
    if to == "file" and arr is None:
        raise cf.InvalidParameterError(
            f"convert: {args.src} has no component {args.component!r}; it has {sorted(components)}"
        )
    with local_destination(dst) as local:
        if to == "ctflow":
            if nodules is not None and "id" not in nodules.columns:
                nodules = nodules.assign(id=name)
            written = write_item(
                local.parent,
                local.name,
                components,
                geometry,
                nodules=nodules,
                source=_named(args.src),
            )
            assert written is not None
            out = written
        else:
            local.parent.mkdir(parents=True, exist_ok=True)
            assert arr is not None  # checked above
            out = write_scan_file(local, arr, geometry, compress=args.compress)
        size, _ = _tree_size(out)
    return size, dst if is_url(dst) else str(out)
