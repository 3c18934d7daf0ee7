"""The ``ctflow`` command, run as a subprocess like a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ctflow as cf
from ctflow.io import store
from ctflow.io.metaimage import write_metaimage

pytestmark = pytest.mark.timeout(300)


def ctflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctflow.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=240,
    )


def test_help_for_every_command():
    top = ctflow("--help")
    assert top.returncode == 0 and "demo" in top.stdout and "run" in top.stdout
    for cmd in ("demo", "run", "info"):
        res = ctflow(cmd, "--help")
        assert res.returncode == 0, res.stderr
        assert "usage: ctflow " + cmd in res.stdout


def _scans(folder: Path, n: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        arr = np.full((4, 8, 8), -500 + k, np.int16)
        write_metaimage(folder / f"s{k}.mhd", arr, cf.Geometry((2.0, 1.0, 1.0), (k, 0.0, 0.0)))


def test_run_pipeline_file_with_a_failing_item(tmp_path):
    _scans(tmp_path / "scans")
    (tmp_path / "scans" / "s1.raw").write_bytes(b"\x00" * 10)  # truncated data: s1 must fail
    (tmp_path / "p.toml").write_text(
        """
[dataset]
glob = "scans/*.mhd"

[run]
batch_size = 2
on_error = "skip"
seed = 0

[[actions]]
name = "load"

[[actions]]
name = "normalize_hu"
min_hu = -1000
max_hu = 400

[[actions]]
name = "dump"
dst = "out"
"""
    )
    res = ctflow("run", "p.toml", "--quiet", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED s1" in res.stdout and "done 2" in res.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s0", "s2"]
    item = store.read_item(tmp_path / "out" / "s2")
    np.testing.assert_allclose(item.components["images"], (-498 + 1000) / 1400, rtol=1e-6)
    ok = ctflow("run", "p.toml", "--quiet", "--allow-failures", cwd=tmp_path)
    assert ok.returncode == 0


def test_malformed_pipeline_file_names_line_and_action(tmp_path):
    _scans(tmp_path / "scans", 1)
    (tmp_path / "bad.toml").write_text(
        """[dataset]
glob = "scans/*.mhd"

[[actions]]
name = "load"

[[actions]]
name = "unify_spacng"
spacing = [1, 1, 1]
"""
    )
    res = ctflow("run", "bad.toml", cwd=tmp_path)
    assert res.returncode == 1
    assert "bad.toml:7: action #2 'unify_spacng'" in res.stderr
    assert "unknown action" in res.stderr and "unify_spacing" in res.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "bad2.toml").write_text(
        '[dataset]\nglob = "scans/*.mhd"\n[run]\nbatch_size = "four"\n'
    )
    res = ctflow("run", "bad2.toml", cwd=tmp_path)
    assert res.returncode == 1 and "batch_size must be int" in res.stderr
    (tmp_path / "bad3.toml").write_text("[dataset\n")
    res = ctflow("run", "bad3.toml", cwd=tmp_path)
    assert res.returncode == 1 and "invalid TOML" in res.stderr


def test_info_prints_geometry(tmp_path):
    _scans(tmp_path, 1)
    res = ctflow("info", str(tmp_path / "s0.mhd"))
    assert res.returncode == 0, res.stderr
    assert "(4, 8, 8)" in res.stdout and "spacing:   (2.0, 1.0, 1.0)" in res.stdout
    missing = ctflow("info", str(tmp_path / "nope.mhd"))
    assert missing.returncode == 1 and "nope.mhd" in missing.stderr
