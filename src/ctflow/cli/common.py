"""Helpers shared by the ``ctflow`` commands: sizes, cores, reading a scan with the options."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["SCAN_SUFFIXES"]

SCAN_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz", ".nrrd", ".nhdr")


def _cores() -> int:
    from ctflow.system import cpu_count

    return cpu_count()


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


def _read_scan(path: Path, kind: str, args: argparse.Namespace) -> Any:
    """``read_scan`` with the command's DICOM options (``--allow-uneven``)."""
    import ctflow as cf

    if kind == "dicom" and getattr(args, "allow_uneven", False):
        return cf.read_scan(path, kind, allow_uneven=True)
    return cf.read_scan(path, kind)


def _print_warnings(command: str, info: dict[str, Any]) -> None:
    from ctflow.actions.io import reader_warnings

    for message in reader_warnings(info):
        print(f"ctflow {command}: warning: {message}", file=sys.stderr)


def _item_id(path: Path) -> str:
    from ctflow.dataset import _stem

    return _stem(path, path.is_dir())
