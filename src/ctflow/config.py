r"""Pipelines described in a file (TOML, or YAML with the same structure), for ``ctflow run``.

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
>>> _ = p.write_text('[dataset]\npaths = ["a.mhd"]\n[[actions]]\nname = "load"\n')
>>> spec = read_pipeline_file(p)
>>> spec.pipeline.action_names, spec.run["batch_size"]
(['load'], 1)
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctflow.actions.base import ACTIONS
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
    lines: list[int | None] = field(default_factory=list)

    @property
    def bound(self) -> Pipeline:
        """The pipeline bound to the dataset."""
        if self.dataset is None:
            raise InvalidParameterError(f"{self.path}: no [dataset] section")
        return self.dataset >> self.pipeline

    def where(self, error: BaseException) -> str | None:
        r"""Return ``file:line: action #k 'name'`` of the action a run-time error names.

        Errors raised inside a pipeline carry a note ``in action 'name'``; when that action
        occurs once in the file, this says where it is.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "p.toml"
        >>> _ = p.write_text('[[actions]]\nname = "load"\n\n[[actions]]\nname = "flip"\n')
        >>> spec = read_pipeline_file(p)
        >>> err = ValueError("bad axis")
        >>> err.add_note("ctflow: in action 'flip' of the batch at position 0")
        >>> spec.where(err).endswith("p.toml:4: action #2 'flip'")
        True
        """
        names = self.pipeline.action_names
        for note in getattr(error, "__notes__", []):
            match = re.search(r"in action '([^']+)'", note)
            if match is None or names.count(match.group(1)) != 1:
                continue
            k = names.index(match.group(1))
            line = self.lines[k] if k < len(self.lines) else None
            return f"{self.path}:{line if line is not None else '?'}: action #{k + 1} {names[k]!r}"
        return None


def _action_lines(text: str, is_toml: bool) -> list[int]:
    """Line numbers (1-based) where each action starts, in order."""
    if is_toml:
        pattern = re.compile(r"^\s*\[\[\s*actions\s*\]\]")
    else:
        pattern = re.compile(r"^\s*-\s*name\s*:")
    return [n + 1 for n, line in enumerate(text.splitlines()) if pattern.match(line)]


def _key_line(text: str, section: str, key: str, is_toml: bool) -> int | None:
    """Line number (1-based) of ``key`` inside ``[section]`` (TOML) / ``section:`` (YAML)."""
    lines = text.splitlines()
    if is_toml:
        head = re.compile(rf"^\s*\[\s*{re.escape(section)}\s*\]")
        entry = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        other = re.compile(r"^\s*\[")
    else:
        head = re.compile(rf"^{re.escape(section)}\s*:")
        entry = re.compile(rf"^\s+{re.escape(key)}\s*:")
        other = re.compile(r"^\S")
    inside = False
    for n, line in enumerate(lines):
        if head.match(line):
            inside = True
            continue
        if inside and other.match(line):
            inside = False
        if inside and entry.match(line):
            return n + 1
    return None


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
    """Return a path of the file relative to its folder; URLs (``s3://`` ...) as they are."""
    from ctflow.io.dicomweb import is_dicomweb_url
    from ctflow.io.remote import is_url

    if is_url(value) or is_dicomweb_url(value):
        return value
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

    def at(section: str, key: str) -> str:
        line = _key_line(text, section, key, is_toml)
        return f"{path}:{line}" if line is not None else str(path)

    run: dict[str, Any] = {"batch_size": 1}
    run_section = data.get("run") or {}
    if not isinstance(run_section, dict):
        raise InvalidParameterError(f"{path}: [run] must be a table of settings")
    for key, value in run_section.items():
        kind = _RUN_KEYS.get(key)
        if kind is None:
            raise InvalidParameterError(
                f"{at('run', key)}: [run] has unknown key {key!r}; expected {sorted(_RUN_KEYS)}"
            )
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidParameterError(
                f"{at('run', key)}: [run] {key} must be {kind.__name__}; got {value!r}"
            )
        run[key] = value
    section = data.get("dataset") or {}
    if not isinstance(section, dict):
        raise InvalidParameterError(f"{path}: [dataset] must be a table (glob, paths, ...)")
    for key in section:
        if key not in _DATASET_KEYS:
            raise InvalidParameterError(
                f"{at('dataset', key)}: [dataset] has unknown key {key!r}; "
                f"expected {sorted(_DATASET_KEYS)}"
            )
    annotations = None
    if "annotations" in section:
        from ctflow.io.annotations import read_annotations

        try:
            annotations = read_annotations(_resolve(base, str(section["annotations"])))
        except CTFlowError as exc:
            raise InvalidParameterError(f"{at('dataset', 'annotations')}: {exc}") from None
    dataset = None
    if need_sources and ("glob" in section or "paths" in section):
        dirs = bool(section.get("dirs", False))
        key = "glob" if "glob" in section else "paths"
        try:
            if key == "glob":
                dataset = Dataset.from_glob(_resolve(base, str(section["glob"])), dirs=dirs)
            else:
                dataset = Dataset.from_paths([_resolve(base, str(p)) for p in section["paths"]])
        except CTFlowError as exc:
            raise InvalidParameterError(f"{at('dataset', key)}: {exc}") from None
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
        cls = ACTIONS.get(name)
        if cls is None:
            raise InvalidParameterError(
                f"{where} {name!r}: unknown action; a file may use the registered actions: "
                f"{', '.join(sorted(ACTIONS))}"
            )
        kwargs = {key: value for key, value in entry.items() if key != "name"}
        paths = cls.path_fields()
        for key, value in kwargs.items():
            if value == "@annotations":
                if annotations is None:
                    raise InvalidParameterError(
                        f"{where} {name!r}: '@annotations' needs [dataset] annotations"
                    )
                kwargs[key] = annotations
            elif key in paths and isinstance(value, str):
                kwargs[key] = _resolve(base, value)
        if name == "fetch_nodules" and not kwargs:
            if annotations is None:
                raise InvalidParameterError(
                    f"{where} 'fetch_nodules': give annotations = ... or [dataset] annotations"
                )
            kwargs["annotations"] = annotations
        try:
            action = cls(**kwargs)
        except TypeError as exc:
            params = ", ".join(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
            raise InvalidParameterError(
                f"{where} {name!r}: {str(exc).split('.__init__() ')[-1]}; its parameters: {params}"
            ) from None
        except CTFlowError as exc:
            raise InvalidParameterError(f"{where} {name!r}: {exc}") from None
        pipeline = pipeline.then(action)
    action_lines = [lines[k] if k < len(lines) else None for k in range(len(actions))]
    return PipelineSpec(path, dataset, pipeline, run, annotations, action_lines)
