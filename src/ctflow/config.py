"""Pipelines described in a file (TOML, or YAML with the same structure), for ``ctflow run``.

::

    [dataset]
    glob = "luna/subset*/*.mhd"        # or paths = [...]; dirs = true for DICOM series folders
    annotations = "luna/annotations.csv"

    [run]
    batch_size = 4
    n_workers = 2
    engine = "local"       # or "tcp://scheduler:8786" for Dask, or "dask" (local cluster)
    on_error = "skip"
    seed = 0
    prefetch = 1

    [[actions]]
    name = "load"

    [[actions]]
    name = "unify_spacing"
    spacing = [1.0, 1.0, 1.0]

Everything is validated before any work starts; errors name the file, the line and the action.
An action argument given as the string ``"@annotations"`` is replaced by the dataset's
annotations table (``fetch_nodules`` gets it automatically when no argument is given).
Relative paths are relative to the pipeline file's folder.

Examples
--------
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "p.toml"
>>> _ = p.write_text('[dataset]\\npaths = ["a.mhd"]\\n[[actions]]\\nname = "load"\\n')
>>> spec = read_pipeline_file(p)
>>> spec.pipeline.action_names, spec.run["batch_size"]
(['load'], 1)
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctflow.dataset import Dataset
from ctflow.errors import CTFlowError, InvalidParameterError
from ctflow.pipeline import Pipeline

__all__ = ["PipelineSpec", "read_pipeline_file"]

_RUN_KEYS = {
    "batch_size": int,
    "n_workers": int,
    "engine": str,
    "on_error": str,
    "seed": int,
    "prefetch": int,
    "shuffle": bool,
    "n_epochs": int,
    "drop_last": bool,
    "progress": bool,
}
_DATASET_KEYS = {"glob", "paths", "dirs", "annotations"}


@dataclass
class PipelineSpec:
    """A validated pipeline file: the dataset, the pipeline and the run arguments."""

    path: Path
    dataset: Dataset | None
    pipeline: Pipeline
    run: dict[str, Any] = field(default_factory=dict)
    annotations: Any = None

    @property
    def bound(self) -> Pipeline:
        """The pipeline bound to the dataset."""
        if self.dataset is None:
            raise InvalidParameterError(f"{self.path}: no [dataset] section")
        return self.dataset >> self.pipeline


def _action_lines(text: str, is_toml: bool) -> list[int]:
    """Line numbers (1-based) where each action starts, in order."""
    if is_toml:
        pattern = re.compile(r"^\s*\[\[\s*actions\s*\]\]")
    else:
        pattern = re.compile(r"^\s*-\s*name\s*:")
    return [n + 1 for n, line in enumerate(text.splitlines()) if pattern.match(line)]


def _parse(path: Path) -> tuple[dict[str, Any], str, bool]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidParameterError(f"{path}: cannot read the pipeline file ({exc})") from exc
    is_toml = path.suffix.lower() == ".toml"
    if is_toml:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidParameterError(f"{path}: invalid TOML: {exc}") from exc
    else:
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - pyyaml comes with dask
            raise InvalidParameterError(f"{path}: YAML needs pyyaml (pip install pyyaml)") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidParameterError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidParameterError(f"{path}: expected a table with [dataset], [run], [[actions]]")
    return data, text, is_toml


def _resolve(base: Path, value: str) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else base / p)


def read_pipeline_file(path: str | os.PathLike[str], *, need_sources: bool = True) -> PipelineSpec:
    """Read and validate a pipeline file (no work is done).

    Parameters
    ----------
    path : path
        ``.toml`` or ``.yaml``/``.yml`` file.
    need_sources : bool, default True
        Resolve the dataset glob now (an empty match is an error).

    Raises
    ------
    InvalidParameterError
        Naming the file, line and action of the first problem.
    """
    path = Path(path)
    data, text, is_toml = _parse(path)
    base = path.resolve().parent
    unknown = set(data) - {"dataset", "run", "actions"}
    if unknown:
        raise InvalidParameterError(
            f"{path}: unknown sections {sorted(unknown)}; expected dataset, run, actions"
        )
    run: dict[str, Any] = {"batch_size": 1}
    for key, value in (data.get("run") or {}).items():
        kind = _RUN_KEYS.get(key)
        if kind is None:
            raise InvalidParameterError(
                f"{path}: [run] has unknown key {key!r}; expected {sorted(_RUN_KEYS)}"
            )
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidParameterError(
                f"{path}: [run] {key} must be {kind.__name__}; got {value!r}"
            )
        run[key] = value
    section = data.get("dataset") or {}
    unknown = set(section) - _DATASET_KEYS
    if unknown:
        raise InvalidParameterError(
            f"{path}: [dataset] has unknown keys {sorted(unknown)}; "
            f"expected {sorted(_DATASET_KEYS)}"
        )
    annotations = None
    if "annotations" in section:
        from ctflow.io.annotations import read_annotations

        annotations = read_annotations(_resolve(base, str(section["annotations"])))
    dataset = None
    if need_sources and ("glob" in section or "paths" in section):
        dirs = bool(section.get("dirs", False))
        if "glob" in section:
            dataset = Dataset.from_glob(_resolve(base, str(section["glob"])), dirs=dirs)
        else:
            dataset = Dataset.from_paths([_resolve(base, str(p)) for p in section["paths"]])
    actions = data.get("actions") or []
    if not isinstance(actions, list) or not actions:
        raise InvalidParameterError(f"{path}: give at least one [[actions]] entry")
    lines = _action_lines(text, is_toml)
    pipeline = Pipeline()
    for k, entry in enumerate(actions):
        line = lines[k] if k < len(lines) else "?"
        where = f"{path}:{line}: action #{k + 1}"
        if not isinstance(entry, dict) or "name" not in entry:
            raise InvalidParameterError(f"{where}: each action needs a name")
        name = str(entry["name"])
        kwargs = {key: value for key, value in entry.items() if key != "name"}
        for key, value in kwargs.items():
            if value == "@annotations":
                if annotations is None:
                    raise InvalidParameterError(
                        f"{where} {name!r}: '@annotations' needs [dataset] annotations"
                    )
                kwargs[key] = annotations
            elif key in ("dst", "annotations") and isinstance(value, str):
                kwargs[key] = _resolve(base, value)
        if name == "fetch_nodules" and not kwargs:
            if annotations is None:
                raise InvalidParameterError(
                    f"{where} 'fetch_nodules': give annotations = ... or [dataset] annotations"
                )
            kwargs["annotations"] = annotations
        try:
            pipeline = getattr(pipeline, name)(**kwargs)
        except CTFlowError as exc:
            raise InvalidParameterError(f"{where} {name!r}: {exc}") from None
    return PipelineSpec(path, dataset, pipeline, run, annotations)
