"""A dataset mixing good and broken scans of every format through ``Pipeline().load().dump()``
with ``on_error="skip"``: every broken item is reported with its reason (the typed error naming
its file), every good item is dumped with the voxels and geometry ``read_scan`` gives directly.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

import ctflow as cf
from ctflow.io.reader import read_scan
from ctflow.io.store import read_item

pytestmark = pytest.mark.timeout(120)

IN_PLANE = (9, 11)  # every good scan shares (Y, X), so they stack in one batch


def _image(z: int, seed: int, dtype=np.int16) -> sitk.Image:
    arr = np.random.default_rng(seed).integers(-1024, 2000, size=(z, *IN_PLANE)).astype(dtype)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.8, 2.0 + seed / 10))
    img.SetOrigin((-100.0 + seed, 20.5, -300.25))
    c, s = np.cos(0.1 * seed), np.sin(0.1 * seed)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    return img


def _dicom_folder(folder: Path, n: int, *, gap: bool = False) -> Path:
    folder.mkdir()
    stored = np.random.default_rng(n).integers(0, 3000, size=(n, *IN_PLANE))
    for k in range(n):
        if gap and k == n // 2:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = "1.2.3.7"
        ds.Modality = "CT"
        ds.ImagePositionPatient = ["-50", "-60", f"{2.5 * k:g}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["0.8", "0.7"]
        ds.Rows, ds.Columns = IN_PLANE
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        ds.PixelData = stored[k].astype("<i2").tobytes()
        ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)
    (folder / "notes.txt").write_text("a file that is not DICOM: skipped and reported")
    return folder


@pytest.fixture()
def mixed(tmp_path) -> tuple[dict[str, Path], dict[str, str]]:
    """Good and broken sources; returns ({id: path}, {broken id: text the reason must hold})."""
    src = tmp_path / "src"
    src.mkdir()
    good = {
        "g_mhd": src / "g_mhd.mhd",
        "g_zraw": src / "g_zraw.mhd",
        "g_mha": src / "g_mha.mha",
        "g_nii": src / "g_nii.nii",
        "g_niigz": src / "g_niigz.nii.gz",
        "g_nrrd": src / "g_nrrd.nrrd",
    }
    for k, (name, path) in enumerate(good.items()):
        compress = name in ("g_zraw", "g_nrrd")
        sitk.WriteImage(_image(4 + k, k), str(path), useCompression=compress)
    good["g_dicom"] = _dicom_folder(src / "g_dicom", 5)

    broken: dict[str, Path] = {}
    reasons: dict[str, str] = {}
    sitk.WriteImage(_image(5, 20), str(src / "b_trunc.mhd"))
    raw = (src / "b_trunc.raw").read_bytes()
    (src / "b_trunc.raw").write_bytes(raw[:-10])
    broken["b_trunc"], reasons["b_trunc"] = src / "b_trunc.mhd", "CorruptFileError: "
    nan = sitk.GetArrayFromImage(_image(4, 21, np.float32))
    nan[1, 1, 1] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(src / "b_nan.nii.gz"))
    broken["b_nan"], reasons["b_nan"] = src / "b_nan.nii.gz", "InvalidScanError: "
    (src / "b_giant.nrrd").write_bytes(
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 50000 50000 50000\nendian: little\n"
        b"encoding: gzip\nspacings: 1 1 1\n\n" + gzip.compress(bytes(100))
    )
    broken["b_giant"], reasons["b_giant"] = src / "b_giant.nrrd", "MAX_VOXELS_BYTES"
    (src / "b_png.nii").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(400))
    broken["b_png"], reasons["b_png"] = src / "b_png.nii", "not a NIfTI file"
    broken["b_absent"], reasons["b_absent"] = src / "b_absent.mhd", "no such file"
    broken["b_gap"] = _dicom_folder(src / "b_gap", 7, gap=True)
    reasons["b_gap"] = "missing slice"
    (src / "b_empty").mkdir()
    broken["b_empty"], reasons["b_empty"] = src / "b_empty", "no DICOM files"
    (src / "b_junk.bin").write_bytes(bytes(range(256)) * 3)
    broken["b_junk"], reasons["b_junk"] = src / "b_junk.bin", "not an image file"
    # interleave good and broken so every batch holds both
    ids = [i for pair in zip(sorted(good), sorted(broken)) for i in pair]
    ids += sorted(broken)[len(good) :]
    sources = {i: (good | broken)[i] for i in ids}
    return sources, reasons


def test_broken_items_are_reported_and_all_good_items_dumped(tmp_path, mixed):
    sources, reasons = mixed
    dst = tmp_path / "dump"
    ds = cf.Dataset.from_paths(sources)
    report = (ds >> cf.Pipeline().load().dump(dst)).run(
        batch_size=3, on_error="skip", n_workers=2, seed=0
    )
    failed = dict(report.failed)
    assert set(failed) == set(reasons)
    for item_id, must in reasons.items():
        reason = failed[item_id]
        assert reason.startswith("load: "), reason
        assert must in reason, (item_id, reason)
        assert Path(sources[item_id]).name in reason, (item_id, reason)  # the file is named
    good = sorted(set(sources) - set(reasons))
    assert sorted(report.done) == good
    assert sorted(p.name for p in dst.iterdir()) == good  # nothing half-written for broken ones
    for item_id in good:
        item = read_item(dst / item_id)
        direct = read_scan(sources[item_id])
        np.testing.assert_array_equal(item.components["images"], direct.images)
        assert item.components["images"].dtype == np.int16
        np.testing.assert_allclose(item.geometry.affine, direct.geometry.affine, atol=1e-12)


def test_skipped_dicom_files_are_kept_in_the_batch_info(tmp_path, mixed):
    sources, _ = mixed
    batch = cf.Dataset.from_paths({"g_dicom": sources["g_dicom"]}).create_batch(["g_dicom"]).load()
    (skipped,) = batch.info[0]["skipped"]
    assert Path(skipped["file"]).name == "notes.txt" and "not a DICOM file" in skipped["reason"]
    with pytest.raises(cf.CTFlowError) as info:
        cf.Dataset.from_paths({"b": sources["b_gap"]}).create_batch(["b"]).load()
    assert isinstance(info.value, cf.InvalidScanError) and "missing slice" in str(info.value)


def test_dumped_dicom_item_keeps_the_series_geometry(tmp_path, mixed):
    sources, _ = mixed
    dst = tmp_path / "d"
    ds = cf.Dataset.from_paths({"g_dicom": sources["g_dicom"]})
    (ds >> cf.Pipeline().load().dump(dst)).run(batch_size=1)
    item = read_item(dst / "g_dicom")
    assert item.geometry.spacing.tolist() == [2.5, 0.8, 0.7]
    assert item.geometry.origin.tolist() == [0.0, -60.0, -50.0]
    assert item.components["images"].shape == (5, *IN_PLANE)
    first = pydicom.dcmread(sources["g_dicom"] / "IM0000")
    np.testing.assert_array_equal(
        item.components["images"][0], first.pixel_array.astype(np.int32) - 1024
    )
