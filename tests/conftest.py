"""Shared fixtures: synthetic phantoms written to real files, and the real-data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of small real CT files (``../shared/data/real``); skip when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real CT data folder {REAL_DATA} is absent (it sits beside the repo in CI)")
    return REAL_DATA


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """Four small LUNA16-like phantoms (.mhd/.raw) and annotations.csv; session-wide, read-only."""
    from ctflow.synthetic import make_dataset

    dst = tmp_path_factory.mktemp("phantoms")
    return make_dataset(dst, n_scans=4, shape=(40, 64, 64), seed=7)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
