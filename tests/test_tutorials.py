"""The tutorials in docs/tutorials run as a user would run them (small sizes: --quick)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"

pytestmark = pytest.mark.timeout(300)

# script -> lines its output must contain (what the tutorial shows the reader)
EXPECTED = {
    "luna16_crops.py": ["done 3, failed 0", "crops on disk", "picture of crop"],
    "custom_parallel_action.py": ["inside the border: 0.0", "1 thread(s):", "2 thread(s):"],
    "train_pytorch.py": ["step   3  loss", "validation", "saved"],
    "dask_cluster.py": ["dask engine: DaskEngine(", "identical to the local run: True"],
    "segment_labels.py": [
        "step  59  loss",
        "load -> reorient -> unify_spacing -> normalize_hu -> predict_on_scan -> invert",
        "prediction on the scan's grid: True",
        "dice body",
        "dice right lung",
        "dice left lung",
    ],
}


def test_every_tutorial_is_tested():
    assert sorted(p.name for p in TUTORIALS.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_tutorial_runs(script, tmp_path):
    argv = [sys.executable, str(TUTORIALS / script), "--quick"]
    if script != "custom_parallel_action.py":  # the others write files: keep them in tmp
        argv += ["--out", str(tmp_path)]
    res = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=240,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for line in EXPECTED[script]:
        assert line in res.stdout, (line, res.stdout[-3000:])
    if script == "luna16_crops.py":
        assert (tmp_path / "crop.png").read_bytes()[:4] == b"\x89PNG"
    if script == "train_pytorch.py":
        assert (tmp_path / "tiny_nodule_net.pt").stat().st_size > 0
