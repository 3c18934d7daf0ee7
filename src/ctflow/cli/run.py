"""``ctflow run PIPELINE.toml``: a pipeline file, validated before any work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ctflow.cli.common import _human_size, _tree_size


def _dump_targets(pipeline: Any) -> list[Path]:
    """Destination folders of the pipeline's ``dump`` actions."""
    out = []
    from ctflow.actions import Dump

    for action in pipeline.actions:
        if isinstance(action, Dump):
            out.append(Path(action.dst))
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
    if report.stopped:
        print(
            "ctflow run: stopped by Ctrl-C; run it again with dump(..., skip_existing=True) to "
            "finish",
            file=sys.stderr,
        )
        return 130
    if report.failed and not args.allow_failures:
        print(
            f"ctflow run: {len(report.failed)} item(s) failed (exit code 1; "
            "--allow-failures to exit 0)",
            file=sys.stderr,
        )
        return 1
    return 0
