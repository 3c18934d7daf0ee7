"""A DICOM folder on object storage: every object's head first, then the chosen series whole.

Against a real S3 API server on loopback (moto in server mode, the ``s3`` fixture). The
reference is the DICOM reader on the same files on the local disk; that only heads of the
other objects travel is checked by recording the reads ctflow asks its file system for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

import ctflow as cf
from ctflow.errors import CorruptFileError
from ctflow.geometry import Geometry
from ctflow.io.dicom import read_dicom_series
from ctflow.io.dicom_writer import write_dicom_series
from ctflow.io.remote import HEAD_BYTES, filesystem, set_storage_options

pytest.importorskip("s3fs", reason="s3fs is the [s3] extra (installed with dev)")

BUCKET = "ctflow-test"


def _study(folder: Path, seed: int) -> tuple[list[Path], list[Path]]:
    """A 10-slice CT series, a 4-slice CT series and a text file in one folder (slices of
    128 KiB, twice HEAD_BYTES)."""
    rng = np.random.default_rng(seed)
    main = rng.integers(-1000, 1500, (10, 256, 256)).astype(np.int16)
    other = rng.integers(-1000, 1500, (4, 256, 256)).astype(np.int16)
    a = write_dicom_series(folder / "tmp-a", main, Geometry((2.0, 0.7, 0.7)), description="main")
    b = write_dicom_series(folder / "tmp-b", other, Geometry((5.0, 0.7, 0.7)), description="thick")
    out_a, out_b = [], []
    for files, out, tag in ((a, out_a, "a"), (b, out_b, "b")):
        for p in files:
            target = folder / f"{tag}-{p.name}"
            p.rename(target)
            out.append(target)
        files[0].parent.rmdir()
    (folder / "README.txt").write_text("exported by a PACS\n")
    assert out_a[0].stat().st_size > 2 * HEAD_BYTES
    return out_a, out_b


def _upload(fs: Any, folder: Path, url_path: str) -> None:
    for f in sorted(folder.iterdir()):
        fs.put_file(str(f), f"{url_path}/{f.name}")


def _recording(monkeypatch: pytest.MonkeyPatch, url: str) -> dict[str, list[Any]]:
    """Record the ranged reads and whole-object gets ctflow asks its file system for."""
    fs = filesystem(url)
    seen: dict[str, list[Any]] = {"ranges": [], "get": []}
    ranges, get = fs.cat_ranges, fs.get

    def cat_ranges(paths: list[str], starts: Any, ends: Any, **kw: Any) -> Any:
        seen["ranges"] += list(zip(paths, starts, ends, strict=True))
        return ranges(paths, starts, ends, **kw)

    def whole(rpaths: Any, lpaths: Any, **kw: Any) -> Any:
        seen["get"] += list(rpaths) if isinstance(rpaths, list) else [rpaths]
        return get(rpaths, lpaths, **kw)

    monkeypatch.setattr(fs, "cat_ranges", cat_ranges)
    monkeypatch.setattr(fs, "get", whole)
    return seen


def test_a_study_folder_on_s3_reads_heads_then_the_chosen_series(s3, tmp_path, monkeypatch):
    fs, options = s3
    main, _ = _study(tmp_path / "study", 1)
    _upload(fs, tmp_path / "study", f"{BUCKET}/dicom/study")
    url = f"s3://{BUCKET}/dicom/study"
    set_storage_options("s3", options)
    seen = _recording(monkeypatch, url)
    ds = cf.Dataset.from_paths({"study": url}, storage_options=options)
    got = ds.create_batch(["study"]).load()
    ref = read_dicom_series(tmp_path / "study")
    np.testing.assert_array_equal(got.images, ref.images)
    np.testing.assert_array_equal(got[0].origin, ref.geometry.origin)
    np.testing.assert_array_equal(got[0].spacing, ref.geometry.spacing)
    assert any("2 CT series" in w for w in got.warnings[0])
    heads = {Path(p).name: e - s for p, s, e in seen["ranges"]}
    assert sorted(heads) == sorted(p.name for p in (tmp_path / "study").iterdir())
    assert max(heads.values()) <= HEAD_BYTES
    fetched_whole = sorted(Path(p).name for p in seen["get"])
    assert fetched_whole == sorted(p.name for p in main)  # the thick series: heads only


def test_files_the_fast_header_pass_declines_are_fetched_whole(s3, tmp_path, monkeypatch):
    fs, options = s3
    main, _ = _study(tmp_path / "study", 2)
    ds = pydicom.dcmread(main[3])  # one slice deflated: pydicom must read it
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(main[3], enforce_file_format=True)
    _upload(fs, tmp_path / "study", f"{BUCKET}/dicom/deflated")
    url = f"s3://{BUCKET}/dicom/deflated"
    set_storage_options("s3", options)
    got = cf.Dataset.from_paths({"s": url}, storage_options=options).create_batch(["s"]).load()
    np.testing.assert_array_equal(got.images, read_dicom_series(tmp_path / "study").images)


def test_a_damaged_slice_on_s3_is_named(s3, tmp_path):
    fs, options = s3
    main, _ = _study(tmp_path / "study", 3)
    main[6].write_bytes(main[6].read_bytes()[:-1000])  # cut inside its pixel data
    _upload(fs, tmp_path / "study", f"{BUCKET}/dicom/damaged")
    url = f"s3://{BUCKET}/dicom/damaged"
    ds = cf.Dataset.from_paths({"s": url}, storage_options=options)
    with pytest.raises(CorruptFileError, match=main[6].name):
        ds.create_batch(["s"]).load()
