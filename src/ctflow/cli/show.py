"""``ctflow show PATH``: a PNG of slices and a MIP with overlays, in world millimetres.

A mask (``--mask FILE`` or a dump item's ``masks``) is drawn by what it holds
(:mod:`ctflow.viz`): binary in red, a label map with one colour per label value and a legend
(``--label-names 1=body,2=lung`` names them), probabilities as a heat overlay with a contour
at 0.5. Label values are never binarised.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.cli.common import LocalSource, _cores, _item_id, _print_warnings, _read_scan


def _load_for_show(source: str, fmt: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """images, geometry, masks, lungs, nodules of a scan or dump item (a path or a URL)."""
    from ctflow.cli.common import local_source

    with local_source(source) as src:
        return _read_for_show(src, fmt, args)


def _read_for_show(src: LocalSource, fmt: str | None, args: argparse.Namespace) -> dict[str, Any]:
    from ctflow.io.reader import detect_format

    path = src.path
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
    _print_warnings("show", scan.info, src.shown)
    return {
        "id": _item_id(Path(path)),
        "images": scan.images,
        "geometry": scan.geometry,
        "masks": None,
        "lungs": None,
        "nodules": None,
    }


def parse_label_names(text: str | None) -> dict[int, str]:
    """Return ``{label: name}`` from ``--label-names`` text: ``"1=body,2=lung"``.

    Raises
    ------
    InvalidParameterError
        An entry that is not ``VALUE=NAME`` with a whole-number value and a name, or a value
        named twice.

    Examples
    --------
    >>> parse_label_names("1=body, 2=left lung,5=lesion")
    {1: 'body', 2: 'left lung', 5: 'lesion'}
    >>> parse_label_names(None)
    {}
    """
    from ctflow.errors import InvalidParameterError

    out: dict[int, str] = {}
    if not text:
        return out
    for entry in text.split(","):
        value, sep, name = entry.partition("=")
        value, name = value.strip(), name.strip()
        if not sep or not name or not value.lstrip("-").isdigit():
            raise InvalidParameterError(
                f"--label-names must be VALUE=NAME pairs separated by commas, e.g. "
                f"1=body,2=lung; got {entry.strip()!r} in {text!r}"
            )
        if int(value) in out:
            raise InvalidParameterError(f"--label-names names label {int(value)} twice: {text!r}")
        out[int(value)] = name
    return out


def _mask_note(masks: np.ndarray) -> str:
    """``mask: N voxels`` (binary, as always), with each label's voxels for a label map."""
    from ctflow.viz_panels import describe_mask

    info = describe_mask(masks)
    if info.kind == "probabilities":
        return f"mask: probabilities, {int(np.count_nonzero(masks >= 0.5))} voxels >= 0.5"
    note = f"mask: {int(np.count_nonzero(masks))} voxels"
    if info.kind == "labels":
        per = ", ".join(f"{v}: {n}" for v, n in zip(info.values, info.counts, strict=True))
        note += f" in labels {{{per}}}"
    return note


def _cmd_show(args: argparse.Namespace) -> int:
    import ctflow as cf
    from ctflow.cli.common import local_destination, use_storage_options
    from ctflow.viz import show_scan

    use_storage_options(args, [args.path, args.mask, args.annotations, args.out])
    path = args.path
    data = _load_for_show(path, args.fmt, args)
    item_id = args.id or data["id"]
    label_names = parse_label_names(getattr(args, "label_names", None))
    images, geometry = data["images"], data["geometry"]
    notes = []
    nodules = data["nodules"]
    if nodules is not None and not args.annotations:
        notes.append(f"{len(nodules)} stored nodule(s)")
    for comp in ("masks", "lungs"):
        if data[comp] is not None:
            notes.append(f"stored {comp}: {int(np.count_nonzero(data[comp]))} voxels")
    if data["masks"] is not None and data["masks"].ndim == 4:  # (C, Z, Y, X): one_hot
        raise cf.InvalidScanError(
            f"{path}: the stored masks have {data['masks'].shape[0]} channels (C, Z, Y, X); "
            f"show draws one label map: dump after argmax(), or show the label file (--mask)"
        )
    if args.annotations:
        table = _read_table(args.annotations)
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
        label = _read_label(args.mask)
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
        masks = label.images  # label values as stored (never binarised)
        notes.append(_mask_note(masks))
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
        label_names=label_names,
        title=f"{item_id}: {images.shape} voxels, spacing "
        f"({', '.join(f'{v:.3g}' for v in geometry.spacing)}) mm",
    )
    out = args.out or f"{item_id}.png"
    with local_destination(out) as png:
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png)
    print(f"wrote {out} ({'; '.join(notes) if notes else 'no overlays'})")
    return 0


def _read_table(source: str) -> Any:
    """Read the ``--annotations`` table (a path or a URL)."""
    from ctflow.cli.common import local_source
    from ctflow.io.annotations import read_annotations

    with local_source(source) as src:
        return read_annotations(src.path)


def _read_label(source: str) -> Any:
    """Read the ``--mask`` label volume (a path or a URL)."""
    from ctflow.cli.common import local_source
    from ctflow.io.reader import read_scan

    with local_source(source) as src:
        return read_scan(src.path)
