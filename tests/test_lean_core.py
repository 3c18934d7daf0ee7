"""A core install (``pip install ctflow``, no extras) runs the demo and says what each extra is for.

The check builds a fresh virtual environment that holds ctflow and exactly the distributions its
core requirements need — the closure of ``pyproject.toml``'s ``dependencies``, resolved through
the installed packages' own metadata, linked into the environment (no network) — so neither
SimpleITK, dask.distributed, matplotlib, torch nor nibabel can be imported there.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
NOT_IN_CORE = ("SimpleITK", "distributed", "dask", "matplotlib", "torch", "nibabel", "highdicom")


def _core_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def _closure(requirements: list[Requirement]) -> dict[str, md.Distribution]:
    """Every installed distribution the requirements need, recursively (extras not taken)."""
    found: dict[str, md.Distribution] = {}
    todo = list(requirements)
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = req.name.lower().replace("_", "-")
        if key in found:
            continue
        dist = md.distribution(req.name)
        found[key] = dist
        todo.extend(Requirement(r) for r in dist.requires or [])
    return found


def test_the_core_requirements_hold_none_of_the_extras():
    names = {r.name.lower() for r in _core_requirements()}
    assert not names & {n.lower() for n in NOT_IN_CORE}
    assert {"numpy", "scipy", "numba", "pydicom", "blosc2", "pandas", "tqdm", "fsspec"} <= names


@pytest.fixture(scope="module")
def core_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("core-env")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    site = root / "site"
    site.mkdir()
    for dist in _closure(_core_requirements()).values():
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = base / top
            if src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
    python = root / "venv" / "bin" / "python"
    lib = next((root / "venv" / "lib").glob("python3*")) / "site-packages"
    (lib / "ctflow-core.pth").write_text(f"{site}\n{ROOT / 'src'}\n")
    return python


def _run(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_a_core_install_runs_the_demo_without_the_extras(core_python, tmp_path):
    done = _run(
        core_python,
        f"""
        import importlib.util, sys
        missing = [m for m in {NOT_IN_CORE!r} if importlib.util.find_spec(m) is None]
        print("missing", sorted(missing))
        from ctflow.cli import main
        sys.exit(main(["demo", "--out", {str(tmp_path / "demo")!r}, "--n-scans", "2",
                       "--size", "96", "--z", "48"]))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"missing {sorted(NOT_IN_CORE)}" in done.stdout  # none of them is there
    assert "preview skipped" in done.stdout and "pip install 'ctflow[viz]'" in done.stdout
    assert (tmp_path / "demo" / "crops").is_dir()


@pytest.mark.slow
def test_each_missing_extra_names_its_pip_line(core_python, tmp_path):
    done = _run(
        core_python,
        """
        import numpy as np, ctflow as cf
        from ctflow.io.metaimage import write_metaimage
        p = write_metaimage("s.mhd", np.zeros((2, 4, 4), np.int16), cf.Geometry((1, 1, 1)))
        batch = cf.Dataset.from_paths([p]).create_batch(["s"]).load()
        calls = {
            "sitk": lambda: cf.read_scan(p, "sitk"),
            "dask": lambda: (cf.Dataset.from_paths([p]) >> cf.Pipeline().load()).run(
                engine=cf.DaskEngine()
            ),
            "viz": lambda: batch.show(),
            "torch": lambda: __import__("ctflow.interop.torch"),
        }
        for extra, call in calls.items():
            try:
                call()
                print(extra, "no error")
            except cf.MissingDependencyError as exc:
                print(extra, "->", exc)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    for extra in ("sitk", "dask", "viz", "torch"):
        assert f"pip install 'ctflow[{extra}]'" in lines[extra], done.stdout
