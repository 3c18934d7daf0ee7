"""``ctflow convert SRC DST``: between MetaImage, NIfTI, NRRD and the ctflow format."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.cli.common import SCAN_SUFFIXES, _human_size, _print_warnings, _read_scan, _tree_size


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
                f"{', '.join(SCAN_SUFFIXES[:5])} or a folder name for the ctflow format"
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
