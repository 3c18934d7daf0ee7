"""``ctflow run PIPELINE.toml``: a pipeline file, validated before any work.

The pipeline file may be a URL (fetched first; it must then name its sources and outputs by
absolute paths or URLs), and it may name URLs (``s3://...`` sources, ``dump`` destinations, a
``cache`` folder): ``--storage-options`` is set for the protocol of each of them, and given to
the dataset so that Dask workers have it too.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from ctflow.cli.common import LocalSource, _human_size, _tree_size

#: anything that looks like a URL in a pipeline file's text (``is_url`` keeps the fsspec ones)
_URL_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"',\]]+")


def _dump_targets(pipeline: Any) -> list[str]:
    """Destinations (folders or URLs) of the pipeline's ``dump`` actions."""
    out = []
    from ctflow.actions import Dump

    for action in pipeline.actions:
        if isinstance(action, Dump):
            out.append(str(action.dst))
    return out


def urls_in(text: str) -> list[str]:
    r"""Return the fsspec URLs a pipeline file's text names (DICOMweb and file:// left out).

    Examples
    --------
    >>> urls_in('glob = "s3://b/scans/*.mhd"\\nengine = "tcp://sched:8786"\\ndst = "/out"')
    ['s3://b/scans/*.mhd', 'tcp://sched:8786']
    """
    from ctflow.io.remote import is_url

    return [url for url in _URL_TEXT.findall(text) if is_url(url)]


def _output_line(dst: str) -> str:
    """``output: DST: N items, N files, SIZE`` of a dump destination (a folder or a URL)."""
    from ctflow.io.remote import is_url

    if is_url(dst):
        from ctflow.cli.common import remote_tree_size

        size, n_files, n_items = remote_tree_size(dst)
        if not n_files:
            return f"output: {dst}: nothing written"
        return f"output: {dst}: {n_items} items, {n_files} files, {_human_size(size)}"
    path = Path(dst)
    if not path.exists():
        return f"output: {dst}: nothing written"
    size, n_files = _tree_size(path)
    n_items = sum(1 for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    return f"output: {dst}: {n_items} items, {n_files} files, {_human_size(size)}"


def _inside_fetched(spec: Any, folder: str) -> list[str]:
    """Return the sources and action paths of a fetched file that resolved beside its copy."""
    values = list(spec.dataset.sources.values()) if spec.dataset is not None else []
    for action in spec.pipeline.actions:
        values.extend(str(getattr(action, name)) for name in action.path_fields())
    return [v[len(folder) + 1 :] for v in values if v.startswith(folder + "/")]


def _read_spec(src: LocalSource, args: argparse.Namespace) -> Any:
    """Read and check the pipeline file; set the storage options for the URLs it names."""
    import ctflow as cf
    from ctflow.cli.common import parse_storage_options, use_storage_options
    from ctflow.config import read_pipeline_file

    try:
        text = Path(src.path).read_text(errors="replace")
    except OSError:  # read_pipeline_file says what is wrong with it
        text = ""
    use_storage_options(args, urls_in(text))
    rule = (
        f"{args.pipeline}: a pipeline file read from a URL must name its sources and outputs "
        f"by absolute paths or URLs"
    )
    try:
        spec = read_pipeline_file(src.path)
    except cf.CTFlowError as exc:
        folder = src.local_folder
        if folder is not None and f"{folder}/" in str(exc).replace(src.path, ""):
            raise cf.InvalidParameterError(f"{rule}; a relative one failed: {exc}") from exc
        raise
    if src.local_folder is not None:
        relative = _inside_fetched(spec, src.local_folder)
        if relative:
            raise cf.InvalidParameterError(f"{rule}; relative: {', '.join(relative[:5])}")
    options = parse_storage_options(args.storage_options)
    if options is not None and spec.dataset is not None:
        spec.dataset.storage_options = dict(options)  # set in every worker too
    return spec


def _cmd_run(args: argparse.Namespace) -> int:
    from ctflow.cli.common import local_source, use_storage_options

    use_storage_options(args, [args.pipeline])
    with local_source(args.pipeline) as src:
        return _run(src, args)


def _engine(spec: Any, engine_name: str) -> object:
    import ctflow as cf

    if engine_name == "dask":
        return cf.DaskEngine()
    if engine_name.startswith(("tcp://", "tls://", "ucx://")):
        return cf.DaskEngine(engine_name)
    if engine_name != "local":
        raise cf.InvalidParameterError(
            f"{spec.path}: [run] engine must be 'local', 'dask' or a scheduler address; "
            f"got {engine_name!r}"
        )
    return "local"


def _run(src: LocalSource, args: argparse.Namespace) -> int:
    """Run the pipeline file read from ``src``; print the report; return the exit code."""
    import ctflow as cf

    spec = _read_spec(src, args)
    pipeline = spec.bound
    run = dict(spec.run)
    engine_name = str(run.pop("engine", "local"))
    engine = _engine(spec, engine_name)
    if args.quiet:
        run["progress"] = False
    else:
        run.setdefault("progress", True)
    print(f"ctflow run {args.pipeline}: {len(pipeline.dataset or [])} items, engine {engine_name}")
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
        print(_output_line(dst))
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
