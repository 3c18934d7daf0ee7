"""The tutorials in docs/tutorials run as a user would run them (small sizes: --quick)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"

pytestmark = pytest.mark.timeout(300)

# the PACS tutorial starts its own Orthanc (apt-get install orthanc orthanc-dicomweb)
ORTHANC = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")

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
    "pacs_segmentation.py": [
        "stored a phantom CT study: 24 instances by STOW-RS",
        "load -> reorient -> unify_spacing -> normalize_hu -> predict_on_scan -> invert",
        "prediction (24, 96, 96) voxels on the series' grid, labels [0 1 2]",
        "wrote seg/prediction.dcm referencing 24 CT instances",
        "stored 1 SEG instance by STOW-RS: http://127.0.0.1:",
        "the PACS lists the SEG series: True",
        "the SEG the PACS gives back is the file sent: True",
        "segments read back: {1: 'body', 2: 'lung'}",
        "labels read back equal the prediction: True",
    ],
}


def test_every_tutorial_is_tested():
    assert sorted(p.name for p in TUTORIALS.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_tutorial_runs(script, tmp_path):
    if script == "pacs_segmentation.py" and ORTHANC is None:
        pytest.skip(
            "the Orthanc binary is absent: the PACS tutorial needs a DICOMweb server (apt-get "
            "install orthanc orthanc-dicomweb)"
        )
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
    if script == "pacs_segmentation.py":  # the SEG written, and the same file back from the PACS
        seg = (tmp_path / "seg" / "prediction.dcm").read_bytes()
        assert seg[128:132] == b"DICM"
        assert (tmp_path / "seg_back" / "part-00001.dcm").read_bytes() == seg
