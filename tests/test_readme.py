"""The README's Python examples run, in order, as a new user would paste them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.timeout(300)
def test_readme_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    res = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=280
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "done 4, failed 0" in res.stdout
    crops = [p for p in (tmp_path / "crops").iterdir() if (p / "meta.json").is_file()]
    assert len(crops) == 16  # one batch of 4 scans -> 16 crops
    inverted = sorted(p.name for p in (tmp_path / "out").iterdir() if (p / "meta.json").is_file())
    scans = [*(tmp_path / "luna").glob("*.mhd"), *(tmp_path / "luna").glob("*.nii.gz")]
    assert len(scans) == 4
    assert inverted == sorted(p.name.split(".nii")[0].removesuffix(".mhd") for p in scans)
