"""What ctflow decides on its own reaches the user: per item in ``report.warnings``, in
``ctflow run``'s output and in the dump's ``meta.json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import ctflow as cf
from ctflow.geometry import Geometry
from ctflow.io.dicom_writer import write_dicom_series
from ctflow.synthetic import make_phantom


def _gappy_series(folder: Path) -> Path:
    """A DICOM series with slice 3 of 8 missing and a stray text file."""
    vol = np.random.default_rng(0).integers(-1000, 400, (8, 12, 14)).astype(np.int16)
    write_dicom_series(folder, vol, Geometry((2.0, 0.7, 0.7), (-30.0, -20.0, -10.0)), skip=[3])
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def test_uneven_series_and_skipped_files_are_warnings_of_the_run_and_the_dump(tmp_path):
    _gappy_series(tmp_path / "scans" / "gappy")
    scan, _ = make_phantom((16, 32, 32), (2.0, 1.0, 1.0), n_nodules=0, seed=1)
    cf.io.metaimage.write_metaimage(tmp_path / "scans" / "plain.mhd", scan.images, scan.geometry)
    ds = cf.Dataset.from_paths(
        {"gappy": tmp_path / "scans" / "gappy", "plain": tmp_path / "scans" / "plain.mhd"}
    )
    pipe = ds >> cf.Pipeline().load(allow_uneven=True).create_mask().dump(tmp_path / "out")
    report = pipe.run(batch_size=2)
    assert report.done == ["gappy", "plain"] and not report.failed
    by_item: dict[str, list[str]] = {}
    for item_id, message in report.warnings:
        by_item.setdefault(item_id, []).append(message)
    gappy = " | ".join(by_item["gappy"])
    assert "load: missing slice" in gappy and "resampled onto a regular grid" in gappy
    assert "load: 1 file(s) of the folder not read (notes.txt: not a DICOM file" in gappy
    assert "create_mask: the item has no nodules" in gappy
    assert by_item["plain"] == [
        "create_mask: the item has no nodules: its mask is all zero (none annotated, or no "
        "fetch_nodules before create_mask)"
    ]
    assert "warnings 4" in report.summary() and "WARNING gappy: load: missing slice" in (
        report.summary()
    )
    meta = json.loads((tmp_path / "out" / "gappy" / "meta.json").read_text())
    assert meta["warnings"] == by_item["gappy"]
    # a reload carries the item's record on
    again = cf.Dataset.from_paths({"gappy": tmp_path / "out" / "gappy"}).create_batch(["gappy"])
    assert again.load().warnings == [by_item["gappy"]]


def test_ctflow_run_prints_the_warnings(tmp_path):
    _gappy_series(tmp_path / "scans" / "gappy")
    (tmp_path / "p.toml").write_text(
        '[dataset]\npaths = ["scans/gappy"]\ndirs = true\n\n'
        '[[actions]]\nname = "load"\nallow_uneven = true\n\n'
        '[[actions]]\nname = "reorient"\ncode = "RAS"\n\n'
        '[[actions]]\nname = "dump"\ndst = "out"\n'
    )
    res = subprocess.run(
        [sys.executable, "-m", "ctflow.cli", "run", "p.toml", "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=240,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "WARNING gappy: load: missing slice" in res.stdout
    assert "WARNING gappy: load: 1 file(s) of the folder not read" in res.stdout
    meta = json.loads((tmp_path / "out" / "gappy" / "meta.json").read_text())
    assert np.diag(meta["direction"]).tolist() == [1.0, -1.0, -1.0]  # reoriented from the file


def test_lungs_not_found_and_crops_without_nodules_are_warned():
    head = np.full((12, 40, 40), -1000, np.int16)
    head[:, 8:32, 8:32] = 40  # a soft-tissue block without air inside: no lungs
    batch = cf.CTBatch.from_arrays([head], ids=["head"])
    batch.segment()
    assert batch.warnings == [
        ["segment: no lungs found: the lung mask is empty (is this a chest CT?)"]
    ]
    scan, _ = make_phantom((40, 64, 64), (2.0, 3.0, 3.0), n_nodules=0, seed=2)
    chest = cf.CTBatch.from_arrays([scan.images], ids=["c"], spacing=scan.geometry.spacing)
    chest.set_random_state(0, 0)
    chest.segment()
    found = float(chest.lungs.sum()) * 18.0 / 1000  # ml: a small phantom's lungs
    assert 0 < found < cf.actions.anatomy.PLAUSIBLE_LUNG_ML
    assert chest.warnings[0] == [
        f"segment: only {found:.0f} ml of lung found (adult lungs hold 3-7 l): the scan may "
        f"not be a chest CT, or shows only part of the lungs"
    ]
    crops = chest.sample_nodules(4, (8, 16, 16), share=0.5)
    assert any("no nodule inside any scan" in w for w in chest.warnings[0])
    assert all(any("all 4 crops are random" in w for w in ws) for ws in crops.warnings)


def test_warnings_of_crops_are_reported_under_their_scan(tmp_path):
    scan, _ = make_phantom((24, 48, 48), (2.0, 0.8, 0.8), n_nodules=0, seed=2)
    cf.io.metaimage.write_metaimage(tmp_path / "c.mhd", scan.images, scan.geometry)
    ds = cf.Dataset.from_paths([tmp_path / "c.mhd"])
    pipe = ds >> cf.Pipeline().load().fetch_nodules(
        pd.DataFrame(columns=["id", "z", "y", "x", "diameter"])
    ).sample_nodules(3, (8, 16, 16), share=1.0)
    report = pipe.run(seed=0)
    assert report.done == ["c"]
    assert [i for i, _ in report.warnings] == ["c"]
    assert "sample_nodules: share=1.0 asks for 3 nodule crops" in report.warnings[0][1]
