"""A core install (``pip install ctflow``, no extras) runs the demo and says what each extra is for.

The check builds a real wheel of the project with its build backend (``pip wheel --no-deps``,
without build isolation when the backend is installed), installs it with ``--no-deps`` into a
fresh virtual environment, and gives that environment exactly the distributions the core
requirements need — the closure of ``pyproject.toml``'s ``dependencies``, resolved through the
installed packages' own metadata, linked into the environment (no network) — so neither
SimpleITK, dask.distributed, matplotlib, torch nor nibabel can be imported there. The wheel's
metadata, its files and its console script are checked too.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
NOT_IN_CORE = ("SimpleITK", "distributed", "dask", "matplotlib", "torch", "nibabel", "highdicom")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _core_requirements() -> list[Requirement]:
    return [Requirement(r) for r in _project()["project"]["dependencies"]]


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


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_the_core_requirements_hold_none_of_the_extras():
    names = {r.name.lower() for r in _core_requirements()}
    assert not names & {n.lower() for n in NOT_IN_CORE}
    assert {"numpy", "scipy", "numba", "pydicom", "blosc2", "pandas", "tqdm", "fsspec"} <= names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the checkout, built by its build backend (``[build-system]``)."""
    out = tmp_path_factory.mktemp("wheel")
    backend = _project()["build-system"]["build-backend"].split(".")[0]
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)]
    if importlib.util.find_spec(backend) is not None:  # offline: the installed backend
        cmd.insert(4, "--no-build-isolation")
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    wheels = sorted(out.glob("ctflow-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _metadata(wheel: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """Return the wheel's METADATA headers, its Requires-Dist and its Provides-Extra lines."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(zf.read(name).decode())
    return (
        dict(message.items()),
        message.get_all("Requires-Dist") or [],
        message.get_all("Provides-Extra") or [],
    )


def test_the_wheel_requires_the_core_only_and_the_rest_under_extras(wheel):
    headers, requires, extras = _metadata(wheel)
    project = _project()["project"]
    assert headers["Name"] == "ctflow" and headers["Version"] == project["version"]
    unconditional = [Requirement(r) for r in requires if Requirement(r).marker is None]
    core = {_key(r.name): r.specifier for r in _core_requirements()}
    assert {_key(r.name): r.specifier for r in unconditional} == core
    for text in requires:
        req = Requirement(text)
        if req.marker is not None:  # only ever an extra's requirement
            assert "extra ==" in str(req.marker), text
            assert not req.marker.evaluate({"extra": ""}), text
    assert sorted(extras) == sorted(project["optional-dependencies"])
    extra_only = {_key(Requirement(r).name) for r in requires} - set(core)
    assert {_key(n) for n in ("SimpleITK", "dask", "matplotlib", "torch", "nibabel")} <= extra_only


def test_the_wheel_holds_every_module_py_typed_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(
            zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    source = ROOT / "src"
    modules = {
        p.relative_to(source).as_posix()
        for p in (source / "ctflow").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    packages = {m for m in modules if m.endswith("/__init__.py")}
    assert len(packages) >= 10  # ctflow and its subpackages (io, io/store, actions, cli ...)
    assert modules <= names, sorted(modules - names)[:10]
    assert "ctflow/py.typed" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "[console_scripts]" in entry_points and "ctflow = ctflow.cli:main" in entry_points


@pytest.fixture(scope="module")
def core_env(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh venv: the wheel installed with --no-deps, the core closure linked beside it."""
    root = tmp_path_factory.mktemp("core-env")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = root / "site"
    site.mkdir()
    for dist in _closure(_core_requirements()).values():
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = base / top
            if src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
    lib = next((venv / "lib").glob("python3*")) / "site-packages"
    (lib / "ctflow-core.pth").write_text(f"{site}\n")
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--no-cache-dir", "-q", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    return venv


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_installed_wheel_is_what_runs_and_its_requirements_are_met(core_env, tmp_path):
    done = _run(
        core_env,
        f"""
        import importlib.util, ctflow
        missing = [m for m in {NOT_IN_CORE!r} if importlib.util.find_spec(m) is None]
        print("missing", sorted(missing))
        print("file", ctflow.__file__)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"missing {sorted(NOT_IN_CORE)}" in done.stdout  # none of them is there
    installed = next(line[5:] for line in done.stdout.splitlines() if line.startswith("file "))
    assert Path(installed).is_relative_to(core_env) and "site-packages" in installed
    # the linked core closure satisfies every unconditional requirement of the wheel
    check = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(core_env / "bin" / "python"), "check"],
        capture_output=True, text=True, timeout=300, env=_clean_env(),
    )  # fmt: skip
    problems = [line for line in check.stdout.splitlines() if line.startswith("ctflow ")]
    assert not problems, check.stdout


@pytest.mark.slow
def test_the_console_script_runs_the_demo_without_the_extras(core_env, tmp_path):
    done = subprocess.run(
        [str(core_env / "bin" / "ctflow"), "demo", "--out", str(tmp_path / "demo"),
         "--n-scans", "2", "--size", "96", "--z", "48"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "preview skipped" in done.stdout and "pip install 'ctflow[viz]'" in done.stdout
    crops = [p for p in (tmp_path / "demo" / "crops").iterdir() if (p / "meta.json").is_file()]
    assert crops, done.stdout


@pytest.mark.slow
def test_each_missing_extra_names_its_pip_line(core_env, tmp_path):
    done = _run(
        core_env,
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
